"""Make the README's screenshot of the `ldmkit serve` web page (docs/images/serve.png).

Starts `ldmkit serve` with the shipped default model on a free port (a temporary --data-dir), fills the
gallery through the API, then drives headless Debian chromium (Selenium, no driver download): types a
prompt, presses Ctrl+Enter, queues a second job and takes the screenshot while the first one samples, with
its live x0 preview showing.

    .venv/bin/python scripts/serve_screenshot.py [OUT.png]      (default: docs/images/serve.png)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

GALLERY = [("a red heart", 3), ("a grinning face with sunglasses", 11),
           ("a cartoon face: light skin, short black hair, sunglasses, a big smile", 5)]
PROMPT = "cartoon avatar of a person with dark skin and long blonde hair, wearing a blue shirt, smiling"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def wait_job(port: int, job_id: str, timeout: float = 600) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        job = api(port, f"/api/v1/jobs/{job_id}")
        if job["status"] in ("succeeded", "failed", "cancelled", "interrupted"):
            return job
        time.sleep(0.5)
    raise RuntimeError(f"job {job_id} did not finish")


def shrink_png(data: bytes, out: Path) -> None:
    """Write the screenshot as a 256-colour PNG (about a quarter of the size; text and images stay clear)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)


def main(out: Path) -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = open(Path(tmp) / "serve.log", "wb")
        server = subprocess.Popen([sys.executable, "-m", "ldmkit", "serve", "--port", str(port), "--data-dir",
                                   str(Path(tmp) / "data")], stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(600):
                try:
                    api(port, "/api/v1/health")
                    break
                except OSError:
                    if server.poll() is not None:
                        raise RuntimeError((Path(tmp) / "serve.log").read_text()[-2000:]) from None
                    time.sleep(0.5)
            for prompt, seed in GALLERY:
                job = api(port, "/api/v1/jobs", {"prompt": prompt, "seed": seed, "num_images": 2})
                assert wait_job(port, job["id"])["status"] == "succeeded"
            options = webdriver.ChromeOptions()
            options.binary_location = "/usr/bin/chromium"
            for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1400",
                        "--hide-scrollbars", "--force-color-profile=srgb"):
                options.add_argument(arg)
            driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
            try:
                driver.get(f"http://127.0.0.1:{port}/")
                wait = WebDriverWait(driver, 120, poll_frequency=0.05)
                wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery-items figure img"))
                prompt = driver.find_element(By.ID, "prompt")
                prompt.send_keys(PROMPT)
                driver.find_element(By.ID, "seed").clear()
                driver.find_element(By.ID, "seed").send_keys("42")
                count = driver.find_element(By.ID, "num_images")
                count.clear()
                count.send_keys("4")
                driver.execute_script("document.getElementById('preview_every').value = '1'")
                prompt.send_keys(Keys.CONTROL, Keys.ENTER)
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#queue li[data-status="running"]'))
                prompt.clear()
                prompt.send_keys("a red heart")
                driver.find_element(By.ID, "steps").send_keys("30")  # other settings: not in the first's batch
                prompt.send_keys(Keys.CONTROL, Keys.ENTER)  # waits behind the first: the queue panel shows it
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#queue li[data-status="queued"]'))
                running = '#queue li[data-status="running"] button.link'
                driver.find_element(By.CSS_SELECTOR, running).click()  # the progress panel follows it again
                wait.until(lambda d: float(d.find_element(By.ID, "job-progress").get_attribute("value")) >= 0.5)
                time.sleep(1.0)  # let every gallery image finish loading
                shrink_png(driver.get_screenshot_as_png(), out)
            finally:
                driver.quit()
        finally:
            server.terminate()
            server.wait(30)
            log.close()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs/images/serve.png"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main(target))

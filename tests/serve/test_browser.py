"""The web page in a real browser: Selenium driving Debian's chromium (headless) against a real `ldmkit serve`
process with a tiny model and a token. No browser or driver is downloaded: both paths are given explicitly.

In CI (CI=true) a missing chromium, chromedriver or selenium fails the test; elsewhere it is skipped.
LDMKIT_SCREENSHOT=path also writes the final screenshot there (scripts/serve_screenshot.py makes the README's).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from ldmkit.cli import main  # noqa: E402

from .serve_fixtures import TOKEN, Server  # noqa: E402

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
STEPS = 60  # long enough on the tiny model (~50 ms a step with a preview each) to see several previews
LONG = 900  # steps of a job that is still running while the test cancels the one queued behind it


def browser_or_skip():
    """A headless chromium WebDriver; pytest.fail in CI when something is missing, skip elsewhere."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        message = f"the browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-extensions", "--no-first-run", "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = tmp_path_factory.mktemp("model") / "tiny"
    assert main(["model", "init", "--preset", "tiny", str(model)]) == 0
    srv = Server(model, tmp_path_factory.mktemp("srv") / "data", "--max-queue", "8").start()
    yield srv
    srv.kill()


@pytest.fixture()
def browser(server):
    driver = browser_or_skip()
    yield driver
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]]
    driver.quit()
    assert not errors, errors  # a script error on the page fails the test (the first 401 asks for the token)


def wait_for(driver, condition, timeout=60.0, what="condition"):
    """Poll `condition(driver)` until it is truthy (an element redrawn meanwhile counts as not yet)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                         ).until(condition, f"timed out: {what}")


def set_field(driver, field_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.ID, field_id)
    element.clear()
    element.send_keys(value)


def click(driver, selector: str) -> None:
    """Click the element `selector` finds, again if its panel was redrawn in between."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(20):
        try:
            return driver.find_element(By.CSS_SELECTOR, selector).click()
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{selector} kept changing")


def generate(driver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.find_element(By.ID, "prompt").send_keys(Keys.CONTROL, Keys.ENTER)


def test_page_generates_shows_previews_gallery_reuse_and_cancel(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(f"http://127.0.0.1:{server.port}/")
    # the server has a token: the page asks for it once and keeps it for the session
    dialog = wait_for(d, lambda d: d.find_element(By.ID, "token-dialog"), what="token dialog")
    wait_for(d, lambda d: dialog.get_attribute("open") is not None, what="token dialog open")
    d.find_element(By.ID, "token-input").send_keys(TOKEN)
    d.find_element(By.ID, "token-ok").click()
    wait_for(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", what="page ready")
    assert d.execute_script("return sessionStorage.getItem('ldmkit.token')") == TOKEN
    samplers = [o.get_attribute("value") for o in Select(d.find_element(By.ID, "sampler")).options]
    assert "dpmpp_2m" in samplers and "euler" in samplers  # the form is built from /capabilities
    assert d.find_element(By.ID, "preview-field").get_attribute("hidden") is None  # the server sends previews

    # type a prompt, press Ctrl+Enter, see the preview change, then the final image
    set_field(d, "prompt", "a red circle <b>not bold</b>")
    set_field(d, "steps", str(STEPS))
    set_field(d, "seed", "1234")
    Select(d.find_element(By.ID, "sampler")).select_by_value("euler")
    d.execute_script("document.getElementById('preview_every').value = '1'")
    generate(d)
    preview = d.find_element(By.ID, "preview")
    sources = set()

    def previews_changed(_):
        src = preview.get_attribute("src") or ""
        if src.startswith("data:image/"):
            sources.add(src)
        return len(sources) >= 2
    wait_for(d, previews_changed, what="two different previews")
    assert int(preview.get_attribute("data-previews")) >= 2
    card = wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#results figure.card"), what="final image")[0]
    image_id = card.get_attribute("data-image-id")
    job = server.job(card.get_attribute("data-job-id"))
    assert job["status"] == "succeeded" and job["images"][0]["id"] == image_id and job["seeds"] == ["1234"]
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
    wait_for(d, lambda d: d.execute_script(loaded, card.find_element(By.TAG_NAME, "img")), what="image loaded")
    assert "<b>not bold</b>" in card.find_element(By.CSS_SELECTOR, ".prompt").text  # inserted as text, not HTML
    assert not d.find_elements(By.CSS_SELECTOR, "figure.card b")

    # the image is in the gallery, with its parameters; "reuse these settings" fills the form
    selector = f'#gallery-items figure[data-image-id="{image_id}"]'
    wait_for(d, lambda d: "euler" in d.find_element(By.CSS_SELECTOR, selector).text, what="image in the gallery")
    assert "1234" in d.find_element(By.CSS_SELECTOR, selector).text
    wait_for(d, lambda d: (d.find_element(By.CSS_SELECTOR, f"{selector} a[download]").get_attribute("href") or ""
                           ).startswith("blob:"), what="download link")  # a token server: images come via fetch
    set_field(d, "prompt", "something else")
    set_field(d, "steps", "3")
    set_field(d, "seed", "-1")
    Select(d.find_element(By.ID, "sampler")).select_by_value("ddim")
    click(d, f"{selector} button.reuse")
    value = lambda field: d.find_element(By.ID, field).get_attribute("value")  # noqa: E731
    assert value("prompt") == "a red circle <b>not bold</b>"
    assert (value("steps"), value("seed"), value("sampler"), value("num_images")) == (str(STEPS), "1234", "euler", "1")
    assert (value("width"), value("height")) == (str(job["resolved"]["width"]), str(job["resolved"]["height"]))

    # a PNG's parameters are read in the page (no upload); "use these settings" fills the form
    png = tmp_path / "made.png"
    png.write_bytes(server.request("GET", job["images"][0]["url"])[1])
    set_field(d, "prompt", "something else")
    d.find_element(By.ID, "png-file").send_keys(str(png))
    wait_for(d, lambda d: "Seed: 1234" in d.find_element(By.ID, "png-text").text, what="PNG parameters")
    click(d, "#png-use")
    assert (value("prompt"), value("seed"), value("sampler")) == ("a red circle <b>not bold</b>", "1234", "euler")

    # img2img: the PNG as the start image, strength 0.5
    d.find_element(By.ID, "init_image").send_keys(str(png))
    wait_for(d, lambda d: d.find_element(By.ID, "init-thumb").get_attribute("src").startswith("data:image/png"),
             what="start image")
    d.execute_script("const s = document.getElementById('strength'); s.value = '0.5';"
                     "s.dispatchEvent(new Event('input'))")
    set_field(d, "steps", "4")
    generate(d)
    new_card = f'#results figure.card:not([data-job-id="{job["id"]}"])'
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, new_card), what="img2img image")
    made = server.job(d.find_element(By.CSS_SELECTOR, new_card).get_attribute("data-job-id"))
    assert made["status"] == "succeeded" and made["settings"]["strength"] == 0.5 and made["settings"]["init_image"]
    click(d, "#init-clear")

    # queue two jobs (the second cannot share the first's batch: other steps) and cancel the queued one
    set_field(d, "prompt", "a long job")
    set_field(d, "steps", str(LONG))
    d.execute_script("document.getElementById('preview_every').value = '0'")
    generate(d)
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, '#queue li[data-status="running"]'), what="a running job")
    set_field(d, "prompt", "a queued job")
    set_field(d, "steps", str(LONG - 1))
    generate(d)
    queued = '#queue li[data-status="queued"]'
    wait_for(d, lambda d: "a queued job" in d.find_element(By.CSS_SELECTOR, queued).text, what="a queued job")
    queued_id = d.find_element(By.CSS_SELECTOR, queued).get_attribute("data-job-id")
    wait_for(d, lambda d: "position 1" in d.find_element(By.CSS_SELECTOR, queued).text, what="its position")
    click(d, f'#queue li[data-job-id="{queued_id}"] button.cancel')
    assert server.wait(queued_id, timeout=30)["status"] == "cancelled"
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, f'#queue li[data-job-id="{queued_id}"]'
                                                           '[data-status="cancelled"]'), what="cancelled in the queue")
    running_id = d.find_element(By.CSS_SELECTOR, '#queue li[data-status="running"]').get_attribute("data-job-id")
    assert running_id != queued_id
    d.save_screenshot(str(tmp_path / "serve.png"))
    assert (tmp_path / "serve.png").stat().st_size > 10_000
    if os.environ.get("LDMKIT_SCREENSHOT"):
        shutil.copyfile(tmp_path / "serve.png", os.environ["LDMKIT_SCREENSHOT"])
    click(d, f'#queue li[data-job-id="{running_id}"] button.cancel')  # and stop the long one within a step
    assert server.wait(running_id, timeout=30)["status"] == "cancelled"


def test_page_routes_serve_fixed_files_and_only_the_page_without_token(server):
    """GET / and the listed /static/ files load without the token (the page asks for it); everything else,
    unknown static names and traversal forms included, still needs it and never reaches the file system."""
    from ldmkit.serve.page import FILES

    got, html, headers = server.request("GET", "/", auth=False)
    assert got == 200 and headers["content-type"].startswith("text/html") and b'src="/static/app.js"' in html
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    for name, kind in FILES.items():
        got, body, headers = server.request("GET", f"/static/{name}", auth=False)
        assert got == 200 and headers["content-type"].startswith(kind) and body, name
        assert b"innerHTML" not in body and b"http://" not in body and b"https://" not in body, name  # no CDN
    assert server.request("GET", "/api/v1/health", auth=False)[0] == 401
    for path in ("/static/nope.js", "/static/index.html", "/static/..%2fpage.py", "/static/%2e%2e/app.py",
                 "/static/app.js/../../page.py", "/static/..\\page.py", "/static/"):
        assert server.request("GET", path, auth=False)[0] == 401, path
        got, body, _ = server.request("GET", path)
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        assert got == 404 and b"import" not in content, path

"""Open WebUI and SillyTavern, as they call an A1111 server, against a real `ldmkit serve` (loopback, no token,
so every header is sent exactly as those clients send it).

What the clients send and read, from their source (read with the search tool):

Open WebUI, backend/open_webui/routers/images.py (open-webui/open-webui @ 02530d50), automatic1111 branch:
- verify_url, get_image_model: GET /sdapi/v1/options with header `authorization: ''` (no auth configured);
  reads options['sd_model_checkpoint'].
- get_models: GET /sdapi/v1/sd-models; reads model['title'] (the id) and model['model_name'].
- set_image_model: GET /sdapi/v1/options, sets options['sd_model_checkpoint'] = model and POSTs the WHOLE
  options dict back to /sdapi/v1/options; raise_for_status.
- image_generations: POST /sdapi/v1/txt2img {prompt, batch_size: n, width, height, [steps], [negative_prompt]}
  merged with the admin's AUTOMATIC1111_PARAMS dict (e.g. cfg_scale, sampler_name, scheduler); no status check:
  reads res['images'] (each bare base64: no ',' -> decoded as image/png) and res['info'] (kept as metadata).

SillyTavern, src/endpoints/stable-diffusion.js (SillyTavern/SillyTavern @ 02903fdd), every call with
`Authorization: getBasicAuthHeader(auth)` ("Basic " + base64 of the user's "user:pass"; "" when unset):
- /ping: GET /sdapi/v1/options, needs 200. /samplers, /schedulers: GET, read x.name. /models: GET sd-models,
  reads x.title. /upscalers: GET /sdapi/v1/upscalers and /sdapi/v1/latent-upscale-modes, read x.name.
  /vaes: GET /sdapi/v1/sd-vae (or Forge's sd-modules), needs an array, reads x.model_name.
  /get-model: GET options, reads sd_model_checkpoint.
- /set-model: POST /sdapi/v1/options {sd_model_checkpoint}, then polls GET /sdapi/v1/progress until
  progress === 0.0 and state.job_count === 0.
- /generate: GET options (Forge is detected by a 'forge_preset' key), then POSTs the browser's body unchanged
  to /sdapi/v1/txt2img (it still holds `url` and `auth`); the browser reads data.images[0] as a PNG. When the
  browser hangs up, it POSTs /sdapi/v1/interrupt (no body, no Content-Type) and aborts the txt2img call.
- The browser's body (public/scripts/extensions/stable-diffusion/index.js, generateAutoImage; defaults from
  its defaultSettings). The upstream copy in the search index (@ 41ac2c07) is an older one (no scheduler, seed,
  override_settings); the current shape below is from copies of the current function in SillyTavern forks and
  extensions found by exact-string search (one cites "official index.js generateAutoImage L3830-3845"):
  getSdRequestBody() {url, auth}, prompt, negative_prompt, sampler_name ('DDIM'),
  scheduler ('normal'), steps, cfg_scale, width, height, restore_faces, enable_hr, hr_upscaler ('Latent'),
  hr_scale, hr_additional_modules: [], denoising_strength (0.7), hr_second_pass_steps, seed (left out when -1),
  override_settings {CLIP_stop_at_last_layers, sd_vae (left out when unset)},
  override_settings_restore_afterwards: true, clip_skip, save_images: true, send_images: true,
  do_not_save_grid: false, do_not_save_samples: false; with ADetailer on, alwayson_scripts.ADetailer.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from PIL import Image  # noqa: E402

from ldmkit.cli import main  # noqa: E402

from .serve_fixtures import Server  # noqa: E402

pytestmark = pytest.mark.slow
OPEN_WEBUI = {"authorization": ""}
SILLYTAVERN = {"Authorization": "Basic " + base64.b64encode(b"").decode()}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("clients")
    assert main(["model", "init", "--preset", "tiny", str(root / "tiny")]) == 0
    srv = Server(root / "tiny", root / "data", token=None).start()  # loopback: A1111 clients send no Bearer token
    yield srv
    srv.kill()


def call(srv: Server, method: str, path: str, headers: dict, body=None, timeout: float = 120):
    """One request with exactly the client's headers (+ Host, + Content-Type for a JSON body, as fetch/aiohttp)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    h = {"Host": f"127.0.0.1:{srv.port}", **headers}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=h)
    resp = conn.getresponse()
    status, content = resp.status, resp.read()
    conn.close()
    return status, json.loads(content) if content else None


def is_png(b64: str) -> bool:
    return "," not in b64 and Image.open(io.BytesIO(base64.b64decode(b64))).format == "PNG"


def sillytavern_body(**changes) -> dict:
    body = {"url": "http://127.0.0.1:7860", "auth": "", "prompt": "best quality, absurdres, a fox in a hat",
            "negative_prompt": "lowres, bad anatomy, blurry", "sampler_name": "DDIM", "scheduler": "normal",
            "steps": 2, "cfg_scale": 7, "width": 64, "height": 64, "restore_faces": False, "enable_hr": False,
            "hr_upscaler": "Latent", "hr_scale": 2.0, "hr_additional_modules": [], "denoising_strength": 0.7,
            "hr_second_pass_steps": 0, "override_settings": {"CLIP_stop_at_last_layers": 1},
            "override_settings_restore_afterwards": True, "clip_skip": 1, "save_images": True, "send_images": True,
            "do_not_save_grid": False, "do_not_save_samples": False}
    return {**body, **changes}


def test_open_webui(server):
    h = OPEN_WEBUI
    assert call(server, "GET", "/sdapi/v1/options", h)[0] == 200  # verify_url
    models = [{"id": m["title"], "name": m["model_name"]} for m in call(server, "GET", "/sdapi/v1/sd-models", h)[1]]
    assert models[0] == {"id": "tiny", "name": "tiny"}
    options = call(server, "GET", "/sdapi/v1/options", h)[1]  # set_image_model(models[0]["id"])
    options["sd_model_checkpoint"] = models[0]["id"]
    assert call(server, "POST", "/sdapi/v1/options", h, options)[0] == 200
    assert call(server, "GET", "/sdapi/v1/options", h)[1]["sd_model_checkpoint"] == "tiny"  # get_image_model
    data = {"prompt": "a lighthouse at dusk", "batch_size": 2, "width": 64, "height": 64, "steps": 2,
            "negative_prompt": "text", **{"cfg_scale": 7, "sampler_name": "Euler a", "scheduler": "Karras"}}
    status, res = call(server, "POST", "/sdapi/v1/txt2img", h, data)
    assert status == 200 and len(res["images"]) == 2 and all(is_png(i) for i in res["images"])
    assert isinstance(res["info"], str) and json.loads(res["info"])["all_prompts"] == ["a lighthouse at dusk"] * 2


def test_sillytavern_settings_and_generate(server):
    h = SILLYTAVERN
    assert call(server, "GET", "/sdapi/v1/options", h)[0] == 200  # /ping
    samplers = [x["name"] for x in call(server, "GET", "/sdapi/v1/samplers", h)[1]]
    assert "DDIM" in samplers and "Euler a" in samplers
    assert "normal" in [x["name"] for x in call(server, "GET", "/sdapi/v1/schedulers", h)[1]]
    assert [x["title"] for x in call(server, "GET", "/sdapi/v1/sd-models", h)[1]][0] == "tiny"
    upscalers = [x["name"] for x in call(server, "GET", "/sdapi/v1/upscalers", h)[1]]
    latent = [x["name"] for x in call(server, "GET", "/sdapi/v1/latent-upscale-modes", h)[1]]
    assert upscalers[:1] == ["None"] and latent == []
    assert isinstance(call(server, "GET", "/sdapi/v1/sd-vae", h)[1], list)
    model = call(server, "GET", "/sdapi/v1/options", h)[1]["sd_model_checkpoint"]  # /get-model
    assert call(server, "POST", "/sdapi/v1/options", h, {"sd_model_checkpoint": model})[0] == 200  # /set-model
    progress = call(server, "GET", "/sdapi/v1/progress", h)[1]
    assert progress["progress"] == 0.0 and progress["state"]["job_count"] == 0  # its wait loop ends at once
    assert "forge_preset" not in call(server, "GET", "/sdapi/v1/options", h)[1]  # /generate: not Forge
    body = sillytavern_body(alwayson_scripts={"ADetailer": {"args": [True, True, {"ad_model": "face_yolov8n.pt"}]}})
    status, data = call(server, "POST", "/sdapi/v1/txt2img", h, body)
    assert status == 200 and is_png(data["images"][0])
    info = json.loads(data["info"])
    assert (info["sampler_name"], info["scheduler"], info["steps"]) == ("DDIM", "Uniform", 2)  # 'normal' -> linspace
    assert {"url", "auth", "enable_hr", "alwayson_scripts", "override_settings.CLIP_stop_at_last_layers"} <= set(
        info["ignored_keys"])


def start_and_wait_running(srv: Server, body: dict) -> tuple[socket.socket, str]:
    """Send a txt2img call on a raw socket (so the test can hang up) and wait until its job samples."""
    raw = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: %s\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (srv.port, SILLYTAVERN["Authorization"].encode(), len(raw), raw))
    end = time.time() + 90
    while (p := call(srv, "GET", "/sdapi/v1/progress", SILLYTAVERN)[1])["state"]["sampling_step"] < 1:
        assert time.time() < end, p
        time.sleep(0.05)
    return sock, p["state"]["job"]


def test_hang_up_alone_cancels_the_job(server):
    sock, job = start_and_wait_running(server, sillytavern_body(steps=600, seed=4))
    sock.close()
    assert server.wait(job, timeout=60)["status"] == "cancelled"


def test_sillytavern_hang_up_stops_its_own_job_only(server):
    h = SILLYTAVERN
    sock, mine = start_and_wait_running(server, sillytavern_body(steps=600, seed=3))
    other: dict = {}  # another A1111 client (Open WebUI) queued behind it

    def open_webui():
        other["reply"] = call(server, "POST", "/sdapi/v1/txt2img", OPEN_WEBUI,
                              {"prompt": "queued behind", "batch_size": 1, "width": 64, "height": 64, "steps": 2})
    thread = threading.Thread(target=open_webui, daemon=True)
    thread.start()
    while len(server.request("GET", "/api/v1/jobs?status=queued")[1]["jobs"]) < 1:
        time.sleep(0.05)
    sock.close()  # the browser went away: SillyTavern aborts the call and POSTs interrupt, no body
    status, value = call(server, "POST", "/sdapi/v1/interrupt", h)
    assert status == 200 and value["interrupted"] in ([mine], [])  # [] only if the hang-up already stopped it
    assert server.wait(mine, timeout=60)["status"] == "cancelled"
    thread.join(120)
    assert other["reply"][0] == 200 and is_png(other["reply"][1]["images"][0])

"""The A1111-compatible routes (/sdapi/v1) against a real `ldmkit serve` process with two tiny models."""

from __future__ import annotations

import base64
import http.client
import io
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import numpy as np  # noqa: E402
from PIL import Image, PngImagePlugin  # noqa: E402

from ldmkit.cli import main  # noqa: E402
from ldmkit.pipeline.output import parse_parameters  # noqa: E402

from .serve_fixtures import Server  # noqa: E402

pytestmark = pytest.mark.slow
SMALL = {"width": 32, "height": 32}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("a1111")
    assert main(["model", "init", "--preset", "tiny", str(root / "tiny")]) == 0
    shutil.copytree(root / "tiny", root / "other")  # a second served model (same weights, another name)
    srv = Server(root / "tiny", root / "data", "--model", str(root / "other"), "--max-queue", "16").start()
    yield srv
    srv.kill()


def post(srv: Server, path: str, body, timeout: float = 120) -> tuple[int, object]:
    """POST with a long timeout (an A1111 call waits for its job)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    conn.request("POST", path, body=json.dumps(body), headers={
        "Host": f"127.0.0.1:{srv.port}", "Authorization": f"Bearer {srv.token}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    status, value = resp.status, json.loads(resp.read())
    conn.close()
    return status, value


def png_b64(size=(32, 32), color=(200, 30, 30), text: str | None = None) -> str:
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("parameters", text)
        info.add_text("Software", "another tool", zip=True)  # zTXt
        info.add_itxt("Comment", "ünïcödé", zip=True)
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG", pnginfo=info)
    return base64.b64encode(buf.getvalue()).decode()


def decode(b64: str) -> Image.Image:
    assert not b64.startswith("data:")  # A1111 answers bare base64
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_txt2img_answer_is_a1111_shaped_and_the_job_is_ordinary(server):
    body = {"prompt": "a red circle", "negative_prompt": "blurry", "steps": 2, "cfg_scale": 6.5, "seed": 5,
            "sampler_name": "Euler a", "scheduler": "Karras", "batch_size": 2, "n_iter": 2, **SMALL,
            "restore_faces": False, "styles": [], "override_settings": {"CLIP_stop_at_last_layers": 2}}
    status, value = post(server, "/sdapi/v1/txt2img", body)
    assert status == 200, value
    assert value["parameters"] == body and isinstance(value["info"], str)
    info = json.loads(value["info"])
    assert info["all_seeds"] == [5, 6, 7, 8] and info["seed"] == 5 and len(value["images"]) == 4
    assert info["all_prompts"] == ["a red circle"] * 4 and info["negative_prompt"] == "blurry"
    assert (info["sampler_name"], info["scheduler"], info["steps"], info["cfg_scale"]) == ("Euler a", "Karras", 2, 6.5)
    assert (info["width"], info["height"], info["sd_model_name"]) == (32, 32, "tiny") and info["sd_model_hash"]
    assert sorted(info["ignored_keys"]) == ["override_settings.CLIP_stop_at_last_layers", "restore_faces", "styles"]
    assert len(info["job_timestamp"]) == 14 and info["subseed_strength"] == 0
    for b64, seed, text in zip(value["images"], info["all_seeds"], info["infotexts"]):
        image = decode(b64)
        assert image.size == (32, 32) and image.text["parameters"] == text
        fields = parse_parameters(text)
        assert fields["Seed"] == str(seed) and fields["Schedule type"] == "Karras"
        assert fields["prompt"] == "a red circle"
    status, read = post(server, "/sdapi/v1/png-info", {"image": value["images"][0]})
    assert status == 200 and read["info"] == info["infotexts"][0] and read["parameters"]["Seed"] == "5"
    job = server.job(info["job_id"])  # an ordinary job of the native API, with the A1111 names translated
    assert job["status"] == "succeeded" and job["settings"]["sampler"] == "euler_ancestral"
    assert job["settings"]["karras"] is True and job["settings"]["guidance"] == 6.5 and job["seeds"][0] == "5"
    status, value = post(server, "/sdapi/v1/txt2img", {"prompt": "x", "steps": 1, "seed": -1, "send_images": False,
                                                        "sampler_name": "DPM++ 2M", "scheduler": None, **SMALL})
    info = json.loads(value["info"])
    assert status == 200 and value["images"] == [] and info["seed"] >= 0 and len(info["infotexts"]) == 1
    assert info["sampler_name"] == "DPM++ 2M" and info["scheduler"] == "Automatic"


def test_img2img_takes_raw_base64_and_data_urls(server):
    init = png_b64()
    body = {"init_images": [init, png_b64(color=(0, 0, 255))], "denoising_strength": 0.5, "prompt": "a red square",
            "steps": 2, "seed": 9, "sampler_name": "Euler", "cfg_scale": 5, "resize_mode": 0, **SMALL}
    status, raw = post(server, "/sdapi/v1/img2img", body)
    assert status == 200, raw
    info = json.loads(raw["info"])
    assert info["denoising_strength"] == 0.5 and "Denoising strength: 0.5" in info["infotexts"][0]
    assert sorted(info["ignored_keys"]) == ["init_images[1]", "resize_mode"]
    assert raw["parameters"]["init_images"] is None and raw["parameters"]["prompt"] == "a red square"
    status, url = post(server, "/sdapi/v1/img2img", {**body, "init_images": ["data:image/png;base64," + init]})
    assert status == 200, url
    same = [np.asarray(decode(v["images"][0]).convert("RGB")) for v in (raw, url)]
    assert np.array_equal(*same)  # the same init image, seed and settings: the same picture
    status, value = post(server, "/sdapi/v1/img2img", {**body, "denoising_strength": None, "send_images": None,
                                                        "init_images": [png_b64(color=(0, 255, 0))]})
    assert status == 200 and json.loads(value["info"])["denoising_strength"] == 0.75  # A1111's default
    assert len(value["images"]) == 1  # null: as if not sent


BAD = [  # (route, body, the setting named, the A1111 key named)
    ("txt2img", {"prompt": "a", "sampler_name": "DPM++ 2M SDE"}, "sampler", "sampler_name"),
    ("txt2img", {"prompt": "a", "sampler_index": 3}, "sampler", "sampler_name"),
    ("txt2img", {"prompt": "a", "scheduler": "exponential"}, "scheduler", "scheduler"),
    ("txt2img", {"prompt": "a", "sampler_name": "DDIM", "scheduler": "Karras"}, "karras", "scheduler"),
    ("txt2img", {"prompt": "a", "cfg_scale": -1}, "guidance", "cfg_scale"),
    ("txt2img", {"prompt": "a", "steps": "20"}, "steps", "steps"),
    ("txt2img", {"prompt": "a", "width": -64}, "width", "width"),
    ("txt2img", {"prompt": "a", "seed": -2}, "seed", "seed"),
    ("txt2img", {"prompt": "a", "batch_size": 0}, "num_images", "batch_size"),
    ("txt2img", {"prompt": "a", "n_iter": 1.5}, "num_images", "n_iter"),
    ("txt2img", {"prompt": "a", "batch_size": 9, "n_iter": 2}, "num_images", "batch_size"),  # over --max-queue
    ("txt2img", {"prompt": ["a"]}, "prompt", "prompt"),
    ("txt2img", {"prompt": "a", "override_settings": {"sd_model_checkpoint": "../tiny"}}, "model",
     "override_settings.sd_model_checkpoint"),
    ("txt2img", {"prompt": "a", "override_settings": [1]}, "model", "override_settings"),
    ("txt2img", {"prompt": "a", "send_images": "yes"}, "send_images", "send_images"),
    ("txt2img", [1, 2], "body", "body"),
    ("img2img", {"prompt": "a"}, "init_image", "init_images"),
    ("img2img", {"prompt": "a", "init_images": "abc"}, "init_image", "init_images"),
    ("img2img", {"prompt": "a", "init_images": ["not base64!"]}, "init_image", "init_images"),
    ("img2img", {"prompt": "a", "init_images": ["http://example.com/a.png"]}, "init_image", "init_images"),
    ("img2img", {"prompt": "a", "init_images": [png_b64()[:40]]}, "init_image", "init_images"),  # truncated
    ("img2img", {"prompt": "a", "init_images": [png_b64()], "denoising_strength": 2}, "strength",
     "denoising_strength"),
    ("img2img", {"prompt": "a", "init_images": [png_b64()], "mask": png_b64()}, "init_image", "mask"),
]


def test_bad_a1111_input_is_422_naming_the_a1111_key(server):
    for route, body, field, key in BAD:
        status, value = post(server, f"/sdapi/v1/{route}", body)
        assert status == 422, (body, value)
        assert (field, key) in {(e["field"], e.get("key", e["field"])) for e in value["detail"]}, (body, value)
    status, value = post(server, "/sdapi/v1/txt2img", {"prompt": "a", "sampler_name": "Nope"})
    listed = value["detail"][0]["error"]
    assert all(name in listed for name in ("DPM++ 2M", "Euler a", "DDIM", "PLMS", "dpmpp_2m"))
    assert server.request("GET", "/api/v1/jobs?status=queued")[1]["jobs"] == []  # nothing was queued
    assert "Traceback" not in Path(server.log.name).read_text(errors="replace")


def test_options_switch_the_checkpoint_in_memory_only(server):
    assert server.request("GET", "/sdapi/v1/options")[1]["sd_model_checkpoint"] == "tiny"
    models = server.request("GET", "/sdapi/v1/sd-models")[1]
    assert [(m["title"], m["model_name"]) for m in models] == [("tiny", "tiny"), ("other", "other")]
    files = sorted(p.name for p in server.data_dir.iterdir())
    status, value = post(server, "/sdapi/v1/options", {"sd_model_checkpoint": "other", "CLIP_stop_at_last_layers": 2})
    assert status == 200 and value["ignored_keys"] == ["CLIP_stop_at_last_layers"]
    assert server.request("GET", "/sdapi/v1/options")[1]["sd_model_checkpoint"] == "other"
    status, value = post(server, "/sdapi/v1/txt2img", {"prompt": "p", "steps": 1, **SMALL})
    assert status == 200 and json.loads(value["info"])["sd_model_name"] == "other"
    status, value = post(server, "/sdapi/v1/txt2img", {"prompt": "p", "steps": 1, **SMALL,
                                                        "override_settings": {"sd_model_checkpoint": "tiny.safetensors [abc]"}})
    assert status == 200 and json.loads(value["info"])["sd_model_name"] == "tiny"
    status, value = post(server, "/sdapi/v1/options", {"sd_model_checkpoint": "missing"})
    assert status == 422 and value["detail"][0]["key"] == "sd_model_checkpoint"
    assert server.request("GET", "/sdapi/v1/options")[1]["sd_model_checkpoint"] == "other"
    assert post(server, "/sdapi/v1/options", {"sd_model_checkpoint": "tiny"})[0] == 200
    assert sorted(p.name for p in server.data_dir.iterdir()) == files  # no settings file written
    hashed = {m["model_name"]: m["hash"] for m in server.request("GET", "/sdapi/v1/sd-models")[1]}
    assert hashed["tiny"] and hashed["other"]  # learnt from the jobs that ran


def test_samplers_and_schedulers_lists(server):
    samplers = server.request("GET", "/sdapi/v1/samplers")[1]
    names = [s["name"] for s in samplers]
    served = {"DPM++ 2M", "DPM++ 2M Karras", "Euler a", "Euler", "DDIM", "PLMS", "Heun", "UniPC", "ddim_eta1"}
    assert served <= set(names)
    assert all(set(s) == {"name", "aliases", "options"} for s in samplers)
    schedulers = [s["name"] for s in server.request("GET", "/sdapi/v1/schedulers")[1]]
    assert schedulers[:2] == ["automatic", "karras"]
    for name in names + [a for s in samplers for a in s["aliases"]]:  # every listed name and alias is accepted
        assert post(server, "/sdapi/v1/txt2img", {"prompt": "a", "sampler_name": name, "steps": 0})[1]["detail"][0][
            "field"] == "steps", name


def test_png_info_reads_the_parameters_chunk(server):
    text = ("a cat\nwith a hat\nNegative prompt: blurry\n"
            "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x768")
    status, value = post(server, "/sdapi/v1/png-info", {"image": "data:image/png;base64," + png_b64(text=text)})
    assert status == 200 and value["info"] == text
    assert value["items"] == {"Software": "another tool", "Comment": "ünïcödé"}
    p = value["parameters"]
    assert (p["Prompt"], p["Negative prompt"], p["Steps"], p["Seed"]) == ("a cat\nwith a hat", "blurry", "20", "42")
    assert (p["Size-1"], p["Size-2"], p["Sampler"]) == ("512", "768", "Euler a")
    status, value = post(server, "/sdapi/v1/png-info", {"image": png_b64()})
    assert status == 200 and value == {"info": "", "items": {}, "parameters": {}}
    status, value = post(server, "/sdapi/v1/png-info", {"image": base64.b64encode(bomb_png()).decode()})
    assert status == 200 and value["info"] == "p\nSteps: 1, Sampler: x, Seed: 1"  # its pixels are never decoded
    for body in ({"image": "abc$"}, {"image": 5}, {}, {"image": base64.b64encode(b"GIF89a....").decode()},
                 {"image": base64.b64encode(bomb_png()[:60]).decode()}):
        status, value = post(server, "/sdapi/v1/png-info", body)
        assert status == 422 and value["detail"][0]["field"] == "image", body


def bomb_png() -> bytes:
    """A 150-byte PNG that declares 100000 x 100000 pixels, with a parameters text."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    text = chunk(b"tEXt", b"parameters\0p\nSteps: 1, Sampler: x, Seed: 1")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + text + chunk(b"IDAT", zlib.compress(b"\0" * 100))
            + chunk(b"IEND", b""))


def a1111_in_thread(srv: Server, body: dict) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        out["status"], out["value"] = post(srv, "/sdapi/v1/txt2img", body, timeout=300)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def until(check, timeout: float = 90.0, what: str = ""):
    end = time.time() + timeout
    while time.time() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_progress_and_interrupt_act_on_the_waited_job_only(server):
    idle = server.request("GET", "/sdapi/v1/progress")[1]
    assert idle["progress"] == 0.0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None
    blocker = server.submit(prompt="blocker", steps=900, **SMALL)
    until(lambda: server.request("GET", "/sdapi/v1/progress")[1]["state"]["sampling_step"] >= 1, what="blocker")
    same = {"steps": 150, "seed": 1, **SMALL}
    native = server.submit(prompt="native, older", sampler="euler", guidance=7.0, **same)
    thread, out = a1111_in_thread(server, {"prompt": "waited for", "sampler_name": "Euler", "cfg_scale": 7.0, **same})
    until(lambda: len(server.request("GET", "/api/v1/jobs?status=queued")[1]["jobs"]) == 2, what="both queued")
    server.request("POST", f"/api/v1/jobs/{blocker}/cancel")  # the two compatible jobs now run as one batch

    def waited_job_previewed():
        p = server.request("GET", "/sdapi/v1/progress")[1]
        return p if p["state"]["job"] not in ("", blocker) and p["current_image"] else None
    busy = until(waited_job_previewed, what="a preview of the batch")
    waited = busy["state"]["job"]
    assert waited != native and server.job(native)["status"] == "running"  # batched, yet the waited one is shown
    assert 0 < busy["progress"] < 1 and busy["state"]["sampling_steps"] == 150 and busy["state"]["job_count"] >= 2
    assert decode(busy["current_image"]).size[0] > 0
    status, value, _ = server.request("POST", "/sdapi/v1/interrupt", raw=b"")
    assert status == 200 and value["interrupted"] == [waited]
    again = server.request("POST", "/sdapi/v1/interrupt", raw=b"")[1]  # a double click: never the next job
    assert again["interrupted"] in ([waited], [])
    thread.join(120)
    assert out["status"] == 409 and "cancelled" in out["value"]["detail"]
    assert server.wait(native, timeout=120)["status"] == "succeeded"  # requeued, never interrupted
    assert server.job(waited)["status"] == "cancelled"


def test_png_text_chunks_agree_with_pillow():
    """png-info walks the chunks itself (never decoding pixels); Pillow's reading is the reference."""
    from ldmkit.serve.a1111_pnginfo import png_texts

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a\nSteps: 2, Sampler: ddim, Seed: 1")
    info.add_text("latin", "café", zip=True)
    info.add_itxt("unicode", "日本語 ✓", lang="ja", tkey="t")
    info.add_itxt("packed", "x" * 5000, zip=True)
    buf = io.BytesIO()
    Image.new("RGBA", (3, 2)).save(buf, format="PNG", pnginfo=info)
    reference = Image.open(io.BytesIO(buf.getvalue()))
    reference.load()
    assert png_texts(buf.getvalue()) == {k: str(v) for k, v in reference.text.items()}

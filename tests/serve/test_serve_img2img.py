"""img2img through the server: uploads (base64 / data URL, bounded before decoding), the job's init image kept in
--data-dir (it survives a kill -9), batching of jobs with the same init image, and results equal to a direct
`Pipeline` call on the same image."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")

from PIL import Image  # noqa: E402

from ldmkit.models.presets import build_components  # noqa: E402
from ldmkit.pipeline import Pipeline  # noqa: E402
from ldmkit.serve.request import RequestErrors, read_job  # noqa: E402
from ldmkit.serve.uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, decode_image  # noqa: E402

LONG = 900  # steps of a job that holds the worker while the test queues others behind it


def picture(width: int = 40, height: int = 30) -> Image.Image:
    """A smooth colour picture (JPEG/WebP keep it close; not a flat colour, so a wrong row would show)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR declaring width x height, and almost no pixel data: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# -- uploads, in process ----------------------------------------------------------------------------------


def test_decode_image_reads_png_jpeg_webp_in_every_wrapping():
    image = picture()
    png = encoded(image)
    wrapped = base64.encodebytes(png).decode()  # 76-character lines
    for value in (b64(png), "data:image/png;base64," + b64(png), "  data:image/PNG;base64," + b64(png), wrapped,
                  b64(png).rstrip("="), "data:image/jpeg;base64," + b64(encoded(image, "JPEG")),
                  b64(encoded(image, "WEBP"))):
        got = decode_image(value, "init_image")
        assert got.mode == "RGB" and got.size == image.size
    assert np.array_equal(np.asarray(decode_image(b64(png), "f")), np.asarray(image))  # lossless stays exact
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # transparent: on white, as the CLI's init image
    assert decode_image(b64(encoded(rgba)), "f").getpixel((0, 0)) == (255, 255, 255)


BAD_UPLOADS = [  # (value, status, words in the message)
    (png_header_only(100_000, 100_000), 413, "pixels"),  # 10^10 pixels declared: refused from the header
    (png_header_only(5000, 5000), 413, "pixels"),  # under Pillow's own limit, over ours
    (encoded(picture())[:-40], 422, "truncated"),
    (b"GIF89a" + bytes(40), 422, "not a PNG, JPEG or WebP"),
    (b"\x89PNG\r\n\x1a\n" + bytes(30), 422, "header is damaged"),
]


def test_bad_uploads_are_refused_with_the_field_and_the_right_status():
    for raw, status, words in BAD_UPLOADS:
        with pytest.raises(RequestErrors) as err:
            decode_image(b64(raw), "init_image")
        assert err.value.status == status and err.value.errors[0]["field"] == "init_image", err.value.errors
        assert words in err.value.errors[0]["error"], err.value.errors
    for value, words in (("http://example.com/a.png", "URLs are not fetched"), ("//example.com/a.png", "URLs"),
                         ("file:///etc/passwd", "URLs"), ("data:text/html;base64,PGI+", "data:image/png"),
                         ("not base64!", "base64"), ("", "empty"), (3, "base64 string"), (None, "base64 string")):
        with pytest.raises(RequestErrors) as err:
            decode_image(value, "image")
        assert err.value.status == 422 and words in err.value.errors[0]["error"], (value, err.value.errors)
    with pytest.raises(RequestErrors) as err:  # the encoded size is checked before base64 is decoded
        decode_image("A" * (MAX_UPLOAD_BYTES * 4 // 3 + 1000), "init_image")
    assert err.value.status == 413


def test_a_bomb_is_refused_before_its_pixels_are_allocated(monkeypatch):
    """The pixel check reads the header: decoding (Image.load) is never reached for a bomb."""
    from PIL import ImageFile

    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size))
    side = int(MAX_UPLOAD_PIXELS**0.5) + 1
    with pytest.raises(RequestErrors) as err:
        decode_image(b64(png_header_only(side, side)), "init_image")
    assert err.value.status == 413 and loads == []


def test_read_job_checks_strength_and_init_image_together():
    def fields(body, decoder=decode_image):
        with pytest.raises(RequestErrors) as err:
            read_job(body, ["m"], "m", 100, decoder)
        return {e["field"]: e["error"] for e in err.value.errors}

    assert fields({"prompt": "a", "strength": 0.5}) == {"strength": "strength has no effect without init_image"}
    got = fields({"prompt": "a", "init_image": "nope!", "strength": 2, "steps": 0})
    assert set(got) == {"init_image", "strength", "steps"}  # every bad field at once
    assert "img2img" in fields({"prompt": "a", "init_image": b64(encoded(picture()))}, None)["init_image"]
    with pytest.raises(RequestErrors) as err:  # too large: 413 alone
        read_job({"prompt": "a", "steps": 0, "init_image": b64(png_header_only(9000, 9000))}, ["m"], "m", 100,
                 decode_image)
    assert err.value.status == 413
    job = read_job({"prompt": "a", "init_image": b64(encoded(picture())), "strength": 0.25}, ["m"], "m", 100,
                   decode_image)
    assert job.init_image.size == (40, 30) and job.settings.strength == 0.25


# -- the pipeline: generate_batch with an init image ------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Pipeline(build_components("tiny", seed=0))
    torch.set_num_threads(before)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral"])
def test_generate_batch_img2img_equals_one_call_each(pipe, sampler):
    image = picture(48, 36)  # not the model's size: resolved the same way in both paths
    prompts, seeds = ["a red circle", "a blue square"], [3, 11]
    batch = pipe.generate_batch(prompts, seeds, init_image=image, strength=0.6, steps=5, sampler=sampler)
    for prompt, seed, result in zip(prompts, seeds, batch):
        alone = pipe(prompt, seed=seed, init_image=image, strength=0.6, steps=5, sampler=sampler)
        assert result.params.strength == 0.6 and result.images[0].size == alone.images[0].size
        torch.testing.assert_close(result.latents, alone.latents, atol=1e-4, rtol=1e-4)
    size = {"width": batch[0].params.width, "height": batch[0].params.height}
    txt2img = pipe.generate_batch(prompts[:1], seeds[:1], steps=5, sampler=sampler, **size)
    assert not torch.allclose(txt2img[0].latents, batch[0].latents)  # the init image was used
    with pytest.raises(Exception, match="strength"):
        pipe.generate_batch(prompts, seeds, strength=0.5, steps=2)


# -- through a real server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from ldmkit.cli import main

    out = tmp_path_factory.mktemp("model") / "tiny"
    assert main(["model", "init", "--preset", "tiny", str(out)]) == 0
    return out


def server_image(srv, job: dict, k: int = 0) -> np.ndarray:
    status, png, _ = srv.request("GET", job["images"][k]["url"])
    assert status == 200
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)


_loaded: dict[Path, Pipeline] = {}


def direct(model: Path, prompt: str, seed: int, image: Image.Image, **settings) -> np.ndarray:
    """The image a direct Pipeline call on the model folder makes (the reference for the server's)."""
    if model not in _loaded:
        _loaded[model] = Pipeline.from_pretrained(model)
    return np.asarray(_loaded[model](prompt, seed=seed, init_image=image, **settings).images[0], dtype=int)


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    from .serve_fixtures import Server

    srv = Server(tiny_model, tmp_path_factory.mktemp("srv") / "data").start()
    yield srv
    srv.kill()


@pytest.mark.slow
def test_img2img_jobs_batch_by_image_and_equal_direct_calls(server, tiny_model):
    srv = server
    image, other = picture(48, 36), picture(36, 48)
    url = "data:image/png;base64," + b64(encoded(image))
    hold = srv.submit(prompt="hold the worker", steps=LONG)
    a = srv.submit(prompt="a red circle", init_image=url, strength=0.6, steps=5, seed=3)
    b = srv.submit(prompt="a blue square", init_image=b64(encoded(image)), strength=0.6, steps=5, seed=8)
    c = srv.submit(prompt="a blue square", init_image=url, strength=0.3, steps=5, seed=8)  # other strength
    d = srv.submit(prompt="a blue square", init_image=b64(encoded(other)), strength=0.6, steps=5, seed=8)
    e = srv.submit(prompt="no image", steps=5, seed=8)
    assert srv.request("POST", f"/api/v1/jobs/{hold}/cancel")[0] == 202
    jobs = {name: srv.wait(j) for name, j in zip("abcde", (a, b, c, d, e))}
    assert all(j["status"] == "succeeded" for j in jobs.values()), jobs
    assert jobs["a"]["settings"]["init_image"] == jobs["b"]["settings"]["init_image"]  # one file per picture
    assert jobs["a"]["settings"]["init_image"] != jobs["d"]["settings"]["init_image"]
    assert [jobs[n]["timings"]["batch_images"] for n in "abcde"] == [2, 2, 1, 1, 1]
    assert jobs["a"]["resolved"]["strength"] == 0.6 and jobs["e"]["resolved"]["strength"] is None
    for name, prompt, seed, img, strength in (("a", "a red circle", 3, image, 0.6),
                                              ("b", "a blue square", 8, image, 0.6),
                                              ("c", "a blue square", 8, image, 0.3),
                                              ("d", "a blue square", 8, other, 0.6)):
        want = direct(tiny_model, prompt, seed, img, strength=strength, steps=5)
        assert np.abs(server_image(srv, jobs[name]) - want).max() <= 1, name
    assert srv.request("POST", f"/api/v1/jobs/{a}/retry")[0] == 202  # its upload is still there


@pytest.mark.slow
def test_bad_uploads_over_http_are_4xx_and_the_server_keeps_serving(server):
    srv, uploads = server, server.data_dir / "uploads"
    before = sorted(uploads.iterdir()) if uploads.exists() else []
    for raw, status, words in BAD_UPLOADS:
        got, value, _ = srv.request("POST", "/api/v1/jobs", {"prompt": "x", "init_image": b64(raw)})
        assert got == status and value["detail"][0]["field"] == "init_image", value
        assert words in value["detail"][0]["error"]
    big = "data:image/png;base64," + "A" * (MAX_UPLOAD_BYTES * 4 // 3 + 4000)  # over the upload limit
    assert srv.request("POST", "/api/v1/jobs", {"prompt": "x", "init_image": big})[0] == 413
    huge = {"prompt": "x", "init_image": "A" * (MAX_UPLOAD_BYTES * 2)}  # over every body limit: the guard
    assert srv.request("POST", "/api/v1/jobs", huge)[0] == 413
    plain = {"prompt": "x", "negative_prompt": "y", "pad": "z" * 100_000}  # large, and no image in it
    assert srv.request("POST", "/api/v1/jobs", plain)[0] == 413
    value = srv.request("POST", "/api/v1/jobs", {"prompt": "x", "init_image": "https://example.com/cat.png"})[1]
    assert "URLs are not fetched" in value["detail"][0]["error"]
    assert srv.request("POST", "/api/v1/jobs", {"prompt": "x", "strength": 0.5})[0] == 422
    assert srv.request("GET", "/api/v1/health")[1]["status"] == "ok"
    assert (sorted(uploads.iterdir()) if uploads.exists() else []) == before  # nothing kept of refused ones
    assert "Traceback" not in Path(srv.log.name).read_text(errors="replace")


@pytest.mark.slow
def test_queued_img2img_job_survives_kill_9_with_its_image(tiny_model, tmp_path):
    from .serve_fixtures import Server

    data = tmp_path / "data"
    srv = Server(tiny_model, data).start()
    image = picture(32, 32)
    hold = srv.submit(prompt="hold the worker", steps=LONG)
    job_id = srv.submit(prompt="a red circle", init_image=b64(encoded(image, "JPEG")), strength=0.7, steps=4, seed=5)
    upload = srv.job(job_id)["settings"]["init_image"]
    srv.kill()  # SIGKILL: the img2img job is still queued
    (data / "uploads" / ".tmp-half").write_bytes(b"\x89PNG half")
    (data / "uploads" / ("f" * 32 + ".png")).write_bytes(b"no job refers to this")
    srv = Server(tiny_model, data).start()
    try:
        srv.request("POST", f"/api/v1/jobs/{hold}/cancel")
        job = srv.wait(job_id, timeout=120)
        assert job["status"] == "succeeded", job
        assert sorted(p.name for p in (data / "uploads").iterdir()) == [f"{upload}.png"]  # debris removed
        jpeg = decode_image(b64(encoded(image, "JPEG")), "f")  # the picture as the server decoded it
        want = direct(tiny_model, "a red circle", 5, jpeg, strength=0.7, steps=4)
        assert np.abs(server_image(srv, job) - want).max() <= 1
    finally:
        srv.kill()

"""Bad input against a live `ldmkit serve` (uvicorn on 127.0.0.1, a tiny model): every kind -> a 4xx naming
what is wrong (a field for request bodies), never a 500, and the server keeps serving (issue 15, "Proof: bad
input"). Raw bytes and raw paths are sent with http.client, so nothing is normalised on the way.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from PIL import Image  # noqa: E402

from ldmkit.cli import main  # noqa: E402

from .serve_fixtures import Server  # noqa: E402

pytestmark = pytest.mark.slow
JOBS = "/api/v1/jobs"
JSON = {"Content-Type": "application/json"}


def png_bytes(width: int = 32, height: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(side: int = 8000) -> bytes:
    """A ~8 KB PNG that declares side x side 1-bit pixels (64 Mpx: 192 MB as RGB); every pixel is really there."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = (b"\x00" + b"\x00" * ((side + 7) // 8)) * side
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD_PNG = png_bytes()
# (name, body, expected status, fields of which one must be named). Bodies are JSON values, or bytes sent as is.
BODIES = [
    ("negative width", {"prompt": "a", "width": -64}, 422, {"width"}),
    ("zero height", {"prompt": "a", "height": 0}, 422, {"height"}),
    ("huge height", {"prompt": "a", "height": 10**9}, 422, {"height", "size"}),
    ("huge int width", {"prompt": "a", "width": 10**40}, 422, {"width", "size"}),
    ("non-integer width", {"prompt": "a", "width": 64.5}, 422, {"width"}),
    ("float steps", {"prompt": "a", "steps": 10.0}, 422, {"steps"}),
    ("string steps", {"prompt": "a", "steps": "20"}, 422, {"steps"}),
    ("bool steps", {"prompt": "a", "steps": True}, 422, {"steps"}),
    ("too many steps", {"prompt": "a", "steps": 10**6}, 422, {"steps"}),
    ("width not a multiple of the VAE factor", {"prompt": "a", "width": 33}, 422, {"width"}),
    ("NaN token", b'{"prompt": "a", "guidance": NaN}', 422, {"guidance"}),
    ("Infinity token", b'{"prompt": "a", "guidance": Infinity}', 422, {"guidance"}),
    ("-Infinity token", b'{"prompt": "a", "guidance_rescale": -Infinity}', 422, {"guidance_rescale"}),
    ("1e400 overflows to inf", b'{"prompt": "a", "guidance": 1e400}', 422, {"guidance"}),
    ("NaN string", {"prompt": "a", "guidance": "NaN"}, 422, {"guidance"}),
    ("Infinity string seed", {"prompt": "a", "seed": "Infinity"}, 422, {"seed"}),
    ("seed past 2^64", {"prompt": "a", "seed": 2**64}, 422, {"seed"}),
    ("negative image count", {"prompt": "a", "num_images": -1}, 422, {"num_images"}),
    ("more images than the queue", {"prompt": "a", "num_images": 9}, 422, {"num_images"}),
    ("unknown sampler", {"prompt": "a", "sampler": "euler; rm -rf /"}, 422, {"sampler"}),
    ("list sampler", {"prompt": "a", "sampler": ["euler"]}, 422, {"sampler"}),
    ("list prompt", {"prompt": ["a", "b"]}, 422, {"prompt"}),
    ("object prompt", {"prompt": {"text": "a"}}, 422, {"prompt"}),
    ("number negative prompt", {"prompt": "a", "negative_prompt": 5}, 422, {"negative_prompt"}),
    ("lone surrogate", b'{"prompt": "a\\ud800b"}', 422, {"prompt"}),
    ("over-long prompt", {"prompt": "a" * 4001}, 422, {"prompt"}),
    ("missing prompt", {"steps": 2}, 422, {"prompt"}),
    ("string karras", {"prompt": "a", "karras": "true"}, 422, {"karras"}),
    ("unknown spacing", {"prompt": "a", "timestep_spacing": "sideways"}, 422, {"timestep_spacing"}),
    ("unknown field", {"prompt": "a", "output_path": "/tmp/x.png"}, 422, {"output_path"}),
    ("server-only field", {"prompt": "a", "max_pixels": 10**12}, 422, {"max_pixels"}),
    ("model path", {"prompt": "a", "model": "../../etc/passwd"}, 422, {"model"}),
    ("strength without init image", {"prompt": "a", "strength": 0.5}, 422, {"strength"}),
    ("negative preview interval", {"prompt": "a", "preview_every": -1}, 422, {"preview_every"}),
    ("array body", [{"prompt": "a"}], 422, {"body"}),
    ("null body", None, 422, {"body"}),
    ("string body", "a cat", 422, {"body"}),
    ("invalid JSON", b'{"prompt": "a",', 422, {"body"}),
    ("not UTF-8", b'{"prompt": "\xff\xfe"}', 422, {"body"}),
    ("nested past the stack", b"[" * 60_000, 422, {"body"}),
    ("5000-digit integer", b'{"prompt": "a", "seed": 1' + b"0" * 5000 + b"}", 422, {"body"}),
    # img2img: the image is checked before it is queued
    ("init image not base64", {"prompt": "a", "init_image": "not base64!!"}, 422, {"init_image"}),
    ("init image base64 of text", {"prompt": "a", "init_image": b64(b"hello, world")}, 422, {"init_image"}),
    ("init image truncated PNG", {"prompt": "a", "init_image": b64(GOOD_PNG[: len(GOOD_PNG) // 2])}, 422,
     {"init_image"}),
    ("init image URL", {"prompt": "a", "init_image": "http://127.0.0.1:1/a.png"}, 422, {"init_image"}),
    ("init image data URL of HTML", {"prompt": "a", "init_image": "data:text/html;base64," + b64(b"<b>x</b>")}, 422,
     {"init_image"}),
    ("init image a number", {"prompt": "a", "init_image": 7}, 422, {"init_image"}),
    ("strength past 1", {"prompt": "a", "init_image": b64(GOOD_PNG), "strength": 1.5}, 422, {"strength"}),
    ("decompression bomb", {"prompt": "a", "init_image": b64(bomb_png())}, 413, {"init_image"}),
]


def _fields(value) -> set[str]:
    assert isinstance(value, dict) and isinstance(value["detail"], list), value
    for error in value["detail"]:
        assert isinstance(error["error"], str) and error["error"], value
    return {e["field"] for e in value["detail"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = tmp_path_factory.mktemp("model") / "tiny"
    assert main(["model", "init", "--preset", "tiny", str(model)]) == 0
    srv = Server(model, tmp_path_factory.mktemp("srv") / "data", "--max-queue", "8").start(timeout=180)
    yield srv
    srv.kill()


@pytest.mark.parametrize("name,body,status,fields", BODIES, ids=[b[0] for b in BODIES])
def test_bad_job_body_names_the_field(server, name, body, status, fields):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, value, _ = server.request("POST", JOBS, raw=raw, headers=JSON)
    assert got == status, (name, value)
    assert _fields(value) & fields, (name, value)
    assert server.request("GET", "/api/v1/health")[0] == 200


FRONT_DOOR = [  # refused before any route runs: (name, body, headers, status)
    ("text/plain body", b'{"prompt": "a"}', {"Content-Type": "text/plain"}, 415),
    ("form body", b"prompt=a", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ("body without a type", b'{"prompt": "a"}', {"Content-Type": ""}, 415),
    ("body over the plain limit", b'{"prompt": "' + b"a" * 100_000 + b'"}', JSON, 413),
    ("body over any limit", b'{"init_image": "' + b"A" * 30 * 2**20 + b'"}', JSON, 413),
    ("Content-Length over the limit", b"{}", {**JSON, "Content-Length": str(2**40)}, 413),
    ("null Origin", b'{"prompt": "a"}', {**JSON, "Origin": "null"}, 403),
    ("foreign Origin", b'{"prompt": "a"}', {**JSON, "Origin": "http://evil.example"}, 403),
    ("same host, other port", b'{"prompt": "a"}', {**JSON, "Origin": "http://127.0.0.1:1"}, 403),
    ("file Origin", b'{"prompt": "a"}', {**JSON, "Origin": "file://"}, 403),
    ("foreign Origin, empty body", b"", {"Origin": "http://evil.example"}, 403),
    ("rebound Host", b'{"prompt": "a"}', {**JSON, "Host": "evil.example"}, 421),
    ("no token", b'{"prompt": "a"}', {**JSON, "Authorization": ""}, 401),
    ("wrong token", b'{"prompt": "a"}', {**JSON, "Authorization": "Bearer test-token-124"}, 401),
]


@pytest.mark.parametrize("name,raw,headers,status", FRONT_DOOR, ids=[c[0] for c in FRONT_DOOR])
def test_front_door_refusals(server, name, raw, headers, status):
    got, value, _ = server.request("POST", JOBS, raw=raw, headers=headers)
    assert got == status, (name, value)
    assert isinstance(value, dict) and value["detail"], (name, value)
    assert server.request("GET", "/api/v1/health")[0] == 200


TRAVERSAL = [
    "../jobs.sqlite3", "..%2fjobs.sqlite3", "%2e%2e%2fjobs.sqlite3", "%2E%2E%2Fjobs.sqlite3", "%2e%2e/jobs.sqlite3",
    "..%252fjobs.sqlite3", "%252e%252e%252fjobs.sqlite3", "..\\jobs.sqlite3", "..%5cjobs.sqlite3",
    "%5c..%5cjobs.sqlite3", "....//jobs.sqlite3", "%c0%ae%c0%ae%c0%afjobs.sqlite3", "/etc/passwd", "%2fetc%2fpasswd",
    "C:%5cWindows%5cwin.ini", "%00", "%00.png", "a%00.png", "..%00.png", "x" * 8000 + ".png", ".tmp-x", "jobs.sqlite3",
    "..", ".", "%2e", "images", "%2e%2e.png", "0123456789abcdef0123456789abcdef.png%00",
    "0123456789abcdef0123456789abcdef%00.png", "0123456789ABCDEF0123456789ABCDEF.png",
    "..%2f..%2fjobs.sqlite3-wal", "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
]


@pytest.mark.parametrize("name", TRAVERSAL, ids=range(len(TRAVERSAL)))
def test_image_route_refuses_every_traversal_form(server, name):
    got, value, _ = server.request("GET", f"/api/v1/images/{name}")
    assert 400 <= got < 500 and got != 200, (name, got)
    content = value if isinstance(value, bytes) else json.dumps(value).encode()
    assert b"SQLite format" not in content and b"root:" not in content and b"Traceback" not in content


@pytest.mark.parametrize("path", ["/../jobs.sqlite3", "/%2e%2e/jobs.sqlite3", "/api/v1/../../jobs.sqlite3",
                                  "/api/v1/images/../../jobs.sqlite3", "/static/..%2f..%2fapp.py",
                                  "/%2e%2e%2f%2e%2e%2fpyproject.toml", "/..%5c..%5cjobs.sqlite3"])
def test_other_routes_refuse_traversal(server, path):
    got, value, _ = server.request("GET", path)
    assert 400 <= got < 500, (path, got)
    content = value if isinstance(value, bytes) else json.dumps(value).encode()
    assert b"SQLite format" not in content and b"import" not in content


def test_bomb_is_refused_with_memory_flat(server):
    """The bomb is refused from its header: the server's peak RSS (VmHWM, reset first) grows far less than
    the 64 MB one decoded copy of its 1-bit pixels would take (192 MB as RGB)."""
    pid = server.proc.pid
    bomb = json.dumps({"prompt": "a", "init_image": b64(bomb_png())}).encode()
    assert len(bomb) < 16_000  # small file, huge picture
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pytest.skip("no /proc/PID/clear_refs here")

    def kib(key: str) -> int:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(key + ":"))
        return int(line.split()[1])
    before = kib("VmRSS")
    for _ in range(3):
        got, value, _ = server.request("POST", JOBS, raw=bomb, headers=JSON)
        assert got == 413 and "init_image" in _fields(value), value
    assert kib("VmHWM") - before < 32 * 1024, (before, kib("VmHWM"))


def test_job_routes_stale_ids_and_finished_jobs(server):
    stale = "0123456789abcdef0123456789abcdef"
    for method, path, status in [("GET", f"{JOBS}/{stale}", 404), ("GET", f"{JOBS}/{stale}/events", 404),
                                 ("POST", f"{JOBS}/{stale}/cancel", 404), ("POST", f"{JOBS}/{stale}/retry", 404),
                                 ("GET", f"{JOBS}/..%2f..%2fjobs.sqlite3", 404), ("GET", f"{JOBS}/{'f' * 5000}", 404),
                                 ("GET", f"{JOBS}?limit=-1", 422), ("GET", f"{JOBS}?limit=1e3", 422),
                                 ("GET", f"{JOBS}?cursor=NaN", 422), ("GET", f"{JOBS}?status=../x", 422)]:
        got, value, _ = server.request(method, path)
        assert got == status and value["detail"], (path, value)
    done = server.submit(prompt="finished", steps=2)
    assert server.wait(done)["status"] == "succeeded"
    got, value, _ = server.request("POST", f"{JOBS}/{done}/cancel")
    assert got == 409 and "finished" in value["detail"]
    assert server.job(done)["status"] == "succeeded"  # the refused cancel changed nothing


def test_a1111_routes_bad_input(server):
    for path, body, field in [
        ("/sdapi/v1/txt2img", {"prompt": "a", "batch_size": True}, "num_images"),
        ("/sdapi/v1/txt2img", {"prompt": "a", "n_iter": -1}, "num_images"),
        ("/sdapi/v1/txt2img", {"prompt": "a", "cfg_scale": "NaN"}, "guidance"),
        ("/sdapi/v1/txt2img", {"prompt": "a", "sampler_name": "Nope"}, "sampler"),
        ("/sdapi/v1/img2img", {"prompt": "a", "init_images": ["%%%"]}, "init_image"),
        ("/sdapi/v1/img2img", {"prompt": "a", "init_images": [b64(GOOD_PNG[:40])]}, "init_image"),
        ("/sdapi/v1/img2img", {"prompt": "a", "init_images": "not a list"}, "init_image"),
        ("/sdapi/v1/png-info", {}, "image"), ("/sdapi/v1/png-info", {"image": 5}, "image"),
        ("/sdapi/v1/png-info", {"image": "%%%"}, "image"),
    ]:
        got, value, _ = server.request("POST", path, body)
        assert got == 422 and field in _fields(value), (path, body, value)
    got, value, _ = server.request("POST", "/sdapi/v1/img2img", {"prompt": "a", "init_images": [b64(bomb_png())]})
    assert got == 413, value
    got, value, _ = server.request("POST", "/sdapi/v1/png-info", {"image": b64(bomb_png())})
    assert got == 200 and value["info"] == "", value  # only the header and text chunks are read


def test_still_serving_after_all_of_it(server):
    """Runs last in this module: a normal job and an img2img job succeed, the image route serves their files, and
    the log holds no traceback."""
    job = server.wait(server.submit(prompt="a normal job", steps=2, seed=4))
    assert job["status"] == "succeeded", job
    image_id = job["images"][0]["id"]
    got, png, headers = server.request("GET", f"/api/v1/images/{image_id}.png")
    assert got == 200 and headers["content-type"] == "image/png" and png.startswith(b"\x89PNG")
    for near_miss in (f"{image_id}.png%00", f"{image_id}", f"{image_id.upper()}.png", f"..%2fimages%2f{image_id}.png",
                      f"{image_id}.png%2f..%2f..%2fjobs.sqlite3"):
        assert server.request("GET", f"/api/v1/images/{near_miss}")[0] == 404, near_miss
    img2img = server.wait(server.submit(prompt="img2img", steps=4, strength=0.5, init_image=b64(GOOD_PNG)))
    assert img2img["status"] == "succeeded", img2img
    log = Path(server.log.name).read_text(errors="replace")
    assert "Traceback" not in log and " 500 " not in log

"""The native API against a real `ldmkit serve` process (uvicorn on 127.0.0.1, a tiny random model)."""

from __future__ import annotations

import http.client
import io
import json
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from PIL import Image  # noqa: E402

from ldmkit.cli import main  # noqa: E402
from ldmkit.pipeline.output import parse_parameters  # noqa: E402
from ldmkit.serve import a1111  # noqa: E402

from .serve_fixtures import Server  # noqa: E402

pytestmark = pytest.mark.slow
LONG = 900  # steps of a job that is still sampling when the test acts on it
CRASH_STEPS = 150


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "tiny"
    assert main(["model", "init", "--preset", "tiny", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    srv = Server(tiny_model, tmp_path_factory.mktemp("srv") / "data", "--max-queue", "8").start()
    yield srv
    srv.kill()


def events_until(srv: Server, job_id: str, wanted: str, timeout: float = 60) -> list[dict]:
    """Read the job's SSE stream until an event named `wanted` (returned with all before it)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    conn.request("GET", f"/api/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {srv.token}"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    seen = []
    while True:
        line = resp.readline().decode()
        assert line, f"stream ended before {wanted}: {seen}"
        if line.startswith("data: "):
            seen.append(json.loads(line[6:]))
            if seen[-1]["event"] == wanted:
                conn.close()
                return seen


def test_job_lifecycle_images_and_pagination(server):
    status, value, _ = server.request("GET", "/api/v1/health")
    assert status == 200 and value["status"] == "ok"
    caps = server.request("GET", "/api/v1/capabilities")[1]
    assert caps["models"] == [{"name": "tiny", "default": True}] and "dpmpp_2m" in caps["samplers"]
    a = server.submit(prompt="a red circle", steps=3, num_images=2, seed=7)
    b = server.submit(prompt="a blue square", steps=3, seed=11)  # compatible: may share a's batch
    job = server.wait(a)
    assert job["status"] == "succeeded", job
    assert job["seeds"] == ["7", "8"] and len(job["images"]) == 2 and job["model_hash"]
    assert job["resolved"]["steps"] == 3 and job["resolved"]["sampler"] in caps["samplers"]
    assert server.wait(b)["status"] == "succeeded"
    status, png, headers = server.request("GET", job["images"][1]["url"])
    assert status == 200 and headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png))
    params = parse_parameters(image.text["parameters"])  # the CLI's A1111 chunk
    assert params["prompt"] == "a red circle" and params["Seed"] == "8" and params["Steps"] == "3"
    # pagination: newest first, every job exactly once across pages
    more = [server.submit(prompt=f"p{i}", steps=1) for i in range(3)]
    for j in more:
        server.wait(j)
    ids, cursor = [], None
    while True:
        q = "/api/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = server.request("GET", q)[1]
        assert len(page["jobs"]) <= 2
        ids += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(ids) == len(set(ids)) and ids.index(more[-1]) < ids.index(b) < ids.index(a)
    done = server.request("GET", "/api/v1/jobs?status=succeeded&limit=100")[1]["jobs"]
    assert {a, b, *more} <= {j["id"] for j in done}
    # retry: a new job with the same settings and seeds; cancel of a finished job: 409
    status, value, _ = server.request("POST", f"/api/v1/jobs/{a}/retry")
    assert status == 202
    again = server.wait(value["id"])
    assert again["retry_of"] == a and again["seeds"] == job["seeds"]
    assert server.request("GET", again["images"][0]["url"])[1] == server.request("GET", job["images"][0]["url"])[1]
    assert server.request("POST", f"/api/v1/jobs/{a}/cancel")[0] == 409
    for path in ("/api/v1/jobs/" + "0" * 32, "/api/v1/jobs/nope", "/api/v1/images/" + "0" * 32 + ".png"):
        assert server.request("GET", path)[0] == 404
    assert server.request("POST", "/api/v1/jobs/" + "0" * 32 + "/cancel")[0] == 404


def test_progress_cancel_running_and_queued_and_full_queue(server):
    running = server.submit(prompt="long", steps=LONG)
    queued = [server.submit(prompt=f"q{i}", steps=2, num_images=2) for i in range(4)]  # 8 images: queue full
    status, value, headers = server.request("POST", "/api/v1/jobs", {"prompt": "one more", "steps": 2})
    assert status == 429 and int(headers["retry-after"]) > 0
    status, value, _ = server.request("POST", "/api/v1/jobs", {"prompt": "x", "num_images": 9})
    assert status == 422 and value["detail"][0]["field"] == "num_images"
    assert server.job(queued[2])["queue_position"] == 2
    events = events_until(server, running, "step")
    step = events[-1]
    assert step["steps"] == LONG and step["step"] >= 1 and step["eta_s"] > 0
    assert server.request("POST", f"/api/v1/jobs/{queued[1]}/cancel")[1]["status"] == "cancelled"
    t0 = time.time()
    status, value, _ = server.request("POST", f"/api/v1/jobs/{running}/cancel")
    assert status == 202 and value["cancel_requested"]
    job = server.wait(running, timeout=30)
    assert job["status"] == "cancelled" and job["images"] == [], job
    assert time.time() - t0 < 10
    assert server.job(queued[1])["status"] == "cancelled"
    for j in (queued[0], queued[2], queued[3]):
        assert server.wait(j)["status"] == "succeeded"
    assert events_until(server, queued[3], "state")[0]["status"] == "succeeded"  # a finished job's stream


BAD_BODIES = [
    ({"prompt": "a", "width": -64}, "width"), ({"prompt": "a", "height": 10**9}, "size"),
    ({"prompt": "a", "width": 0}, "width"), ({"prompt": "a", "steps": "20"}, "steps"),
    ({"prompt": "a", "steps": 10**6}, "steps"), ({"prompt": "a", "guidance": -1}, "guidance"),
    ({"prompt": "a", "sampler": "nope"}, "sampler"), ({"prompt": "a", "sampler": ["x"]}, "sampler"),
    ({"prompt": "a", "seed": -2}, "seed"), ({"prompt": "a", "seed": 1.5}, "seed"),
    ({"prompt": "a", "num_images": 0}, "num_images"), ({"prompt": "a", "karras": 1}, "karras"),
    ({"prompt": "a" * 5000}, "prompt"), ({"prompt": None}, "prompt"), ({}, "prompt"),
    ({"prompt": "a", "width": 33, "height": 64}, "width"),  # not a multiple of the VAE factor (model check)
    ({"prompt": "a", "model": "../tiny"}, "model"), ({"prompt": "a", "max_pixels": 10**12}, "max_pixels"),
    ({"prompt": "a", "timestep_spacing": "sideways"}, "timestep_spacing"),
    ([1, 2], "body"),
]


def test_bad_input_is_4xx_per_field_never_500(server):
    for body, field in BAD_BODIES:
        status, value, _ = server.request("POST", "/api/v1/jobs", body)
        assert status == 422, (body, value)
        assert field in {e["field"] for e in value["detail"]}, (body, value)
    raw_cases = [
        (b'{"prompt": "a", "guidance": NaN}', {}, 422), (b'{"prompt": "a",', {}, 422), (b"\xff\xfe", {}, 422),
        (b"[" * 60_000, {}, 422), (b'{"prompt": "a", "seed": 1' + b"0" * 5000 + b"}", {}, 422),
        (b'{"prompt": "a"}', {"Content-Type": "text/plain"}, 415),
        (b'{"prompt": "a"}', {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        (b'{"prompt": "' + b"a" * 70_000 + b'"}', {}, 413),
        (b'{"prompt": "a"}', {"Origin": "http://evil.example"}, 403),
        (b'{"prompt": "a"}', {"Origin": "null"}, 403), (b"", {"Origin": "http://evil.example"}, 403),
        (b"", {"Content-Type": "text/plain", "Origin": "null"}, 403),
        (b'{"prompt": "a"}', {"Host": "evil.example"}, 421),
    ]
    for raw, headers, expected in raw_cases:
        status, value, _ = server.request("POST", "/api/v1/jobs", raw=raw,
                                          headers={"Content-Type": "application/json", **headers})
        assert status == expected, (raw[:40], headers, value)
    assert server.request("GET", "/api/v1/health", auth=False)[0] == 401
    assert server.request("GET", "/api/v1/health", headers={"Authorization": "Bearer wrong-token"})[0] == 401
    for q in ("status=bogus", "limit=0", "limit=1000", "limit=x", "cursor=-1", "cursor=abc"):
        assert server.request("GET", f"/api/v1/jobs?{q}")[0] == 422, q
    assert server.request("GET", "/api/v1/capabilities")[0] == 200  # still serving
    assert "Traceback" not in Path(server.log.name).read_text(errors="replace")


TRAVERSAL = ["../jobs.sqlite3", "..%2fjobs.sqlite3", "%2e%2e%2fjobs.sqlite3", "%2e%2e/%2e%2e/etc/passwd",
             "..\\jobs.sqlite3", "..%5cjobs.sqlite3", "%2fetc%2fpasswd", "/etc/passwd", "..", "%00.png",
             "a%00.png", "images.png", "0123456789abcdef0123456789abcdef.png%00", ".tmp-x", "%2e%2e.png",
             "0123456789ABCDEF0123456789ABCDEF.png", "..%2f..%2fjobs.sqlite3-wal"]


def test_image_route_takes_only_server_ids(server):
    for name in TRAVERSAL:
        status, value, _ = server.request("GET", f"/api/v1/images/{name}")
        assert status in (400, 404), (name, status)
        assert b"SQLite" not in (value if isinstance(value, bytes) else b""), name
    assert server.request("GET", "/api/v1/health")[0] == 200


def test_queue_stream_sees_every_job(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("GET", "/api/v1/events", headers={"Authorization": f"Bearer {server.token}"})
    resp = conn.getresponse()
    first = resp.readline().decode(), resp.readline().decode()
    assert first[0] == "event: state\n" and "jobs" in json.loads(first[1][6:])
    jobs = [server.submit(prompt=f"stream {i}", steps=2) for i in range(2)]
    seen: dict[str, list[str]] = {j: [] for j in jobs}
    while not all("succeeded" in v for v in seen.values()):
        line = resp.readline().decode()
        assert line
        if line.startswith("data: "):
            event = json.loads(line[6:])
            seen.get(event["job_id"], []).append(event["event"])
    conn.close()
    for events in seen.values():
        assert events[0] == "queued" and "started" in events and "step" in events and events[-1] == "succeeded"


A1111_BODIES = [  # shapes real A1111 clients send (extra keys are ignored and listed in info)
    {"prompt": "a shiba inu", "steps": 3, "cfg_scale": 7, "seed": -1, "batch_size": 2, "n_iter": 1,
     "negative_prompt": "", "width": 32, "height": 32, "sampler_index": "Euler a", "restore_faces": False,
     "tiling": False, "enable_hr": False},
    {"prompt": "a dragon", "negative_prompt": "blurry", "steps": 2, "cfg_scale": 8.0, "sampler_name": "DPM++ 2M Karras",
     "width": 32, "height": 32, "seed": 3, "batch_size": 1, "n_iter": 2,
     "override_settings": {"sd_model_checkpoint": "tiny"}, "override_settings_restore_afterwards": True},
]


def test_a1111_subset(server):
    import base64

    for body in A1111_BODIES:
        status, value, _ = server.request("POST", "/sdapi/v1/txt2img", body)
        assert status == 200, value
        info = json.loads(value["info"])
        n = body["batch_size"] * body["n_iter"]
        assert len(value["images"]) == n == len(info["all_seeds"]) and info["steps"] == body["steps"]
        assert set(info["ignored_keys"]) == set(body) - set(a1111.KNOWN_KEYS) and info["ignored_keys"]
        text = Image.open(io.BytesIO(base64.b64decode(value["images"][-1]))).text["parameters"]
        assert parse_parameters(text)["Seed"] == str(info["all_seeds"][-1])
    assert json.loads(value["info"])["all_seeds"] == [3, 4]
    status, value, _ = server.request("POST", "/sdapi/v1/txt2img", {"prompt": "x", "sampler_name": "Nope"})
    assert status == 422 and value["detail"][0]["field"] == "sampler"
    assert server.request("POST", "/sdapi/v1/txt2img", {"prompt": "x", "batch_size": 0})[0] == 422
    for raw in (b"[" * 60_000, b"{", b"[]"):
        json_type = {"Content-Type": "application/json"}
        assert server.request("POST", "/sdapi/v1/txt2img", raw=raw, headers=json_type)[0] == 422
    names = {s["name"] for s in server.request("GET", "/sdapi/v1/samplers")[1]}
    assert {"Euler a", "DPM++ 2M", "dpmpp_2m"} <= names
    assert [m["model_name"] for m in server.request("GET", "/sdapi/v1/sd-models")[1]] == ["tiny"]
    idle = server.request("GET", "/sdapi/v1/progress")[1]
    assert idle["progress"] == 0.0 and idle["state"]["sampling_steps"] == 0
    long = server.submit(prompt="long", steps=LONG)
    queued = server.submit(prompt="behind it", steps=2)
    events_until(server, long, "step")
    busy = server.request("GET", "/sdapi/v1/progress")[1]
    assert busy["state"]["job"] == long and 0 < busy["progress"] < 1 and busy["state"]["sampling_steps"] == LONG
    status, value, _ = server.request("POST", "/sdapi/v1/interrupt", raw=b"")  # no body, no Content-Type
    assert status == 200 and value["interrupted"] == [long]
    assert server.wait(long)["status"] == "cancelled"
    assert server.wait(queued)["status"] == "succeeded"  # interrupt never hits a queued job


def test_kill_9_during_sampling_then_restart_finishes_each_job_once(server):
    """Runs last: it kills the module's server and restarts it on the same data folder."""
    first = server.submit(prompt="survives a crash", steps=CRASH_STEPS, num_images=2, seed=5)
    second = server.submit(prompt="waits", steps=2, seed=1)
    step = events_until(server, first, "step")[-1]
    server.kill()  # SIGKILL while sampling
    assert step["step"] < CRASH_STEPS
    srv = Server(server.model, server.data_dir).start()
    try:
        job = srv.wait(first, timeout=120)
        assert job["status"] == "succeeded" and job["attempts"] == 2, job
        assert srv.wait(second)["status"] == "succeeded"
        jobs = srv.request("GET", "/api/v1/jobs?limit=100")[1]["jobs"]
        ids = [i["id"] for j in jobs for i in j["images"]]
        files = sorted(p.name for p in (server.data_dir / "images").iterdir())
        assert files == sorted(f"{i}.png" for i in ids)  # no partial, lost or duplicated image
        assert len(job["images"]) == 2
        for i in job["images"]:
            assert Image.open(server.data_dir / "images" / f"{i['id']}.png").text["parameters"]
        assert srv.request("GET", "/api/v1/health")[1]["jobs"]["running"] == 0
        # a graceful stop (SIGTERM, Ctrl+C) puts the running job back without counting the try
        third = srv.submit(prompt="stopped politely", steps=CRASH_STEPS)
        events_until(srv, third, "step")
        srv.kill(signal.SIGTERM)
        assert srv.proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after shutting down
    finally:
        srv.kill()
    srv = Server(server.model, server.data_dir).start()
    try:
        job = srv.wait(third, timeout=120)
        assert job["status"] == "succeeded" and job["attempts"] == 1, job
    finally:
        srv.kill()

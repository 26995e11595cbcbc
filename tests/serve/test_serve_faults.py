"""`kill -9` of a real `ldmkit serve` process during sampling and during an image write, 3 times each, with a
restart each time; then every accepted job is accounted for (issue 15, "Proof: fault test").

To land a kill inside an image write without a test hook in the product, the server is started through a small
wrapper script that replaces the worker's `write_png_atomic`: for a job whose prompt carries a `write-kill-N`
token it writes the job's first image whole (temp + rename, as the product does) and half of the second one
into the temp file, says so with a marker file, and blocks until it is killed. Each token blocks once, so the
job runs to the end after the restart.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from PIL import Image  # noqa: E402

from ldmkit.cli import main  # noqa: E402
from ldmkit.pipeline.output import parse_parameters  # noqa: E402

from .serve_fixtures import Server  # noqa: E402

pytestmark = pytest.mark.slow


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (30, 120, 200)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


INIT_IMAGE = _png()

WRAPPER = '''
import os, re, sys, time
from pathlib import Path

import ldmkit.serve.store as store
import ldmkit.serve.worker as worker

marks = Path(os.environ["LDMKIT_FAULT_MARKS"])
original = store.write_png_atomic
count = {}


def write_then_block(directory, image_id, data):
    found = re.search(rb"write-kill-[0-9]+", data)
    token = found.group().decode() if found else None
    if token is None or (marks / ("blocked-" + token)).exists():
        return original(directory, image_id, data)
    count[token] = count.get(token, 0) + 1
    if count[token] == 1:  # the first image of the job: whole, renamed, not yet listed by the database
        return original(directory, image_id, data)
    with open(Path(directory) / (".tmp-" + image_id), "wb") as f:  # the second: half written
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
    (marks / ("blocked-" + token)).write_text(image_id)
    while True:
        time.sleep(60)


store.write_png_atomic = write_then_block
worker.write_png_atomic = write_then_block  # the worker imports it by name

from ldmkit.cli import main

sys.exit(main(sys.argv[1:]))
'''


class FaultServer(Server):
    """`ldmkit serve` started through the wrapper above (same arguments as serve_fixtures.Server)."""

    def __init__(self, model: Path, data_dir: Path, marks: Path):
        super().__init__(model, data_dir)
        self.marks = marks

    def command(self) -> list[str]:
        wrapper = self.marks / "serve_wrapper.py"
        wrapper.write_text(WRAPPER)
        return [sys.executable, str(wrapper), *super().command()[3:]]  # [python, -m, ldmkit, serve, ...]

    def environment(self) -> dict:
        return {**super().environment(), "LDMKIT_FAULT_MARKS": str(self.marks)}

    def restart(self) -> "FaultServer":
        assert self.proc.poll() is not None
        return FaultServer(self.model, self.data_dir, self.marks).start()


def wait_for_step(srv: Server, job_id: str, timeout: float = 60) -> dict:
    """Read the job's event stream until its first sampling step (the job is then inside the sampler)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    conn.request("GET", f"/api/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {srv.token}"})
    resp = conn.getresponse()
    try:
        while True:
            line = resp.readline().decode()
            assert line, f"the stream of {job_id} ended before a step"
            if line.startswith("data: ") and json.loads(line[6:])["event"] == "step":
                return json.loads(line[6:])
    finally:
        conn.close()


def wait_for_file(path: Path, srv: Server, timeout: float = 60) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert time.time() < end and srv.proc.poll() is None, f"{path.name} never appeared"
        time.sleep(0.05)


def db_rows(data_dir: Path, sql: str, args=()) -> list[tuple]:
    with closing(sqlite3.connect(data_dir / "jobs.sqlite3")) as db:
        return db.execute(sql, args).fetchall()


def check_invariants(srv: Server, accepted: dict[str, dict], interrupted: set[str], cancelled: set[str]) -> None:
    """Each accepted job once in the store, in its expected final state; images whole, listed once, nothing else
    on disk; the database intact."""
    for job_id in accepted:
        srv.wait(job_id, timeout=90)
    jobs = srv.request("GET", "/api/v1/jobs?limit=100")[1]
    assert jobs["next_cursor"] is None and sorted(j["id"] for j in jobs["jobs"]) == sorted(accepted)
    listed = []
    for job in jobs["jobs"]:
        want = "interrupted" if job["id"] in interrupted else "cancelled" if job["id"] in cancelled else "succeeded"
        assert job["status"] == want, job
        assert job["attempts"] <= 2, job
        if want != "succeeded":
            assert job["images"] == [], job
            continue
        assert len(job["images"]) == accepted[job["id"]]["num_images"], job
        for k, image in enumerate(job["images"]):
            path = srv.data_dir / "images" / f"{image['id']}.png"
            with Image.open(path) as png:
                png.load()  # decodes to the end: a half-written file fails here
                params = parse_parameters(png.text["parameters"])
            assert params["prompt"] == job["prompt"] and params["Seed"] == str(int(job["seeds"][0]) + k)
            listed.append(image["id"])
    assert len(listed) == len(set(listed))
    on_disk = sorted(p.name for p in (srv.data_dir / "images").iterdir())
    assert on_disk == sorted(f"{i}.png" for i in listed)  # no temp files, no unlisted (orphan) images
    uploads = srv.data_dir / "uploads"
    used = {j["settings"].get("init_image") for j in jobs["jobs"]} - {None}
    assert sorted(p.name for p in (uploads.iterdir() if uploads.exists() else [])) == sorted(f"{u}.png" for u in used)
    assert db_rows(srv.data_dir, "PRAGMA integrity_check") == [("ok",)]
    assert db_rows(srv.data_dir, "SELECT COUNT(*) FROM images")[0][0] == len(listed)
    assert srv.request("GET", "/api/v1/health")[1]["jobs"]["running"] == 0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "tiny"
    assert main(["model", "init", "--preset", "tiny", str(out)]) == 0
    return out


def _submit(srv: Server, accepted: dict, **fields) -> str:
    fields.setdefault("num_images", 1)
    job_id = srv.submit(**fields)
    accepted[job_id] = fields
    return job_id


def test_kill_9_during_sampling_three_times(tiny_model, tmp_path):
    """Kill 1 and 2 hit the same job (requeued once, then `interrupted`); kill 3 another one (requeued, then
    succeeds). Jobs queued behind them stay queued across each crash; a cancelled one stays cancelled."""
    marks = tmp_path / "marks"
    marks.mkdir()
    srv = FaultServer(tiny_model, tmp_path / "data", marks).start()
    accepted: dict[str, dict] = {}
    try:
        twice = _submit(srv, accepted, prompt="killed twice", steps=200, seed=1)
        queued = [_submit(srv, accepted, prompt=f"behind {i}", steps=2, seed=10 + i) for i in range(2)]
        dropped = _submit(srv, accepted, prompt="cancelled while queued", steps=2)
        assert srv.request("POST", f"/api/v1/jobs/{dropped}/cancel")[1]["status"] == "cancelled"
        assert wait_for_step(srv, twice)["step"] < 200
        srv.kill()
        assert db_rows(srv.data_dir, "SELECT status, attempts FROM jobs WHERE id=?", (twice,)) == [("running", 1)]

        srv = srv.restart()  # `twice` is requeued at its place, so it is the next to run
        assert srv.job(queued[1])["status"] == "queued" and srv.job(twice)["attempts"] in (1, 2)
        assert wait_for_step(srv, twice)["step"] < 200
        srv.kill()
        assert db_rows(srv.data_dir, "SELECT status, attempts FROM jobs WHERE id=?", (twice,)) == [("running", 2)]

        srv = srv.restart()
        job = srv.job(twice)
        assert job["status"] == "interrupted" and job["attempts"] == 2 and "twice" in job["error"], job
        once = _submit(srv, accepted, prompt="killed once", steps=80, num_images=2, seed=5)
        queued += [_submit(srv, accepted, prompt=f"after {i}", steps=3, seed=20 + i) for i in range(2)]
        assert wait_for_step(srv, once)["step"] < 80
        srv.kill()

        srv = srv.restart()
        assert srv.wait(once, timeout=90)["attempts"] == 2
        check_invariants(srv, accepted, interrupted={twice}, cancelled={dropped})
        assert "requeued" in Path(srv.log.name).read_text(errors="replace")  # the restart says what it found
    finally:
        srv.kill()


def test_kill_9_during_image_write_three_times(tiny_model, tmp_path):
    """Each kill lands between the first image of a job (whole, renamed, not yet listed) and its second (half
    in the temp file); the restart removes both and runs the job again, which then succeeds once. The third
    victim was also asked to cancel while it was writing: the restart ends it `cancelled`, not requeued."""
    marks = tmp_path / "marks"
    marks.mkdir()
    srv = FaultServer(tiny_model, tmp_path / "data", marks).start()
    accepted: dict[str, dict] = {}
    images = tmp_path / "data" / "images"
    try:
        done = _submit(srv, accepted, prompt="finished before the crashes", steps=2, num_images=2, seed=3)
        srv.wait(done)
        for k in (1, 2, 3):
            # distinct steps: never batched with the previous round's job, which runs again before this one
            victim = _submit(srv, accepted, prompt=f"write-kill-{k} a cat", steps=1 + k, num_images=2, seed=40 + k)
            behind = _submit(srv, accepted, prompt=f"queued {k}", steps=5, seed=50 + k)
            if k == 1:  # img2img: its saved init image must survive the crashes while it waits
                _submit(srv, accepted, prompt="img2img queued", steps=4, strength=0.5, init_image=INIT_IMAGE)
            wait_for_file(marks / f"blocked-write-kill-{k}", srv)
            half = (marks / f"blocked-write-kill-{k}").read_text()
            if k == 3:
                assert srv.request("POST", f"/api/v1/jobs/{victim}/cancel")[0] == 202  # flagged, still writing
            srv.kill()
            assert db_rows(srv.data_dir, "SELECT status FROM jobs WHERE id=?", (victim,)) == [("running",)]
            assert db_rows(srv.data_dir, "SELECT COUNT(*) FROM images WHERE job_id=?", (victim,)) == [(0,)]
            partial = images / f".tmp-{half}"
            assert partial.stat().st_size > 0
            listed = {r[0] for r in db_rows(srv.data_dir, "SELECT id FROM images")}
            orphans = [p for p in images.glob("*.png") if p.stem not in listed]
            assert len(orphans) == 1  # the job's first image: whole on disk, but the job has not succeeded
            srv = srv.restart()
            assert not partial.exists() and not orphans[0].exists()
            assert srv.job(behind)["status"] in ("queued", "running", "succeeded")
            job = srv.wait(victim, timeout=90)
            assert (job["status"], job["attempts"]) == (("cancelled", 1) if k == 3 else ("succeeded", 2)), job
        check_invariants(srv, accepted, interrupted=set(), cancelled={victim})
    finally:
        srv.kill()

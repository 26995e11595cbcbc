"""The job store and the request parser, in process (no server, no model): fast."""

from __future__ import annotations

import sqlite3

import pytest

pytest.importorskip("fastapi")

from ldmkit.cli import main  # noqa: E402
from ldmkit.errors import UsageError  # noqa: E402
from ldmkit.serve.app import ServerConfig  # noqa: E402
from ldmkit.serve.request import RequestErrors, batch_key, parse_job, settings_json  # noqa: E402
from ldmkit.serve.store import Conflict, JobStore, QueueFull, write_png_atomic  # noqa: E402


def _submit(store: JobStore, prompt="a", capacity=100, **fields):
    prompt, settings, model = parse_job({"prompt": prompt, **fields}, ["m"], "m", capacity)
    data = settings_json(settings)
    return store.submit(prompt, data, model, batch_key(model, data), capacity)


def _fields(err: RequestErrors) -> set[str]:
    return {e["field"] for e in err.errors}


def test_parse_job_reports_every_bad_field():
    with pytest.raises(RequestErrors) as err:
        parse_job({"prompt": 3, "steps": -1, "width": "64", "guidance": float("nan"), "sampler": "nope",
                   "seed": 2**64, "num_images": True, "karras": "yes", "max_pixels": 10**12, "path": "../x"},
                  ["m"], "m", 100)
    assert _fields(err.value) == {"prompt", "steps", "width", "guidance", "sampler", "seed", "num_images", "karras",
                                  "max_pixels", "path"}
    for body in (None, [], "x", 3):
        with pytest.raises(RequestErrors):
            parse_job(body, ["m"], "m", 100)
    with pytest.raises(RequestErrors) as err:
        parse_job({"prompt": "a", "model": "other"}, ["m"], "m", 100)
    assert _fields(err.value) == {"model"}
    with pytest.raises(RequestErrors) as err:  # more images than the queue can ever hold: 422, not 429
        parse_job({"prompt": "a", "num_images": 101}, ["m"], "m", 100)
    assert _fields(err.value) == {"num_images"}
    with pytest.raises(RequestErrors) as err:  # two fields that are fine alone, not together
        parse_job({"prompt": "a", "seed": 2**64 - 1, "num_images": 2}, ["m"], "m", 100)
    assert _fields(err.value) == {"request"}


def test_random_seed_is_drawn_at_submit():
    _, settings, _ = parse_job({"prompt": "a", "seed": -1, "num_images": 3}, ["m"], "m", 100)
    assert 0 <= settings.seed <= 2**64 - 3


def test_fifo_batching_cancel_and_queue_bound(tmp_path):
    store = JobStore(tmp_path)
    a, pos_a = _submit(store, "a", capacity=6, steps=4, num_images=2)
    b, pos_b = _submit(store, "b", capacity=6, steps=5)           # not compatible with a
    c, pos_c = _submit(store, "c", capacity=6, steps=4, seed=9)   # compatible with a (seed differs only)
    assert (pos_a, pos_b, pos_c) == (0, 1, 2)
    with pytest.raises(QueueFull):  # 4 waiting + 3 > 6: refused whole
        _submit(store, "d", capacity=6, num_images=3)
    claimed = store.claim(max_images=16)
    assert [j["id"] for j in claimed] == [a["id"], c["id"]]
    assert store.get(a["id"])["status"] == "running" and store.queue_position(b["id"]) == 0
    assert store.cancel(b["id"]) == "cancelled"
    assert store.cancel(a["id"]) == "running" and store.cancel_requested([a["id"], c["id"]]) == {a["id"]}
    with pytest.raises(Conflict):
        store.cancel(b["id"])
    with pytest.raises(KeyError):
        store.cancel("0" * 32)
    store.finish(a["id"], "cancelled")
    store.succeed(c["id"], ["f" * 32], [9], {"model_hash": "h"})
    store.succeed(c["id"], ["e" * 32], [9], {"model_hash": "h"})  # a second finish changes nothing
    assert store.get(c["id"])["status"] == "succeeded" and [i["id"] for i in store.get(c["id"])["images"]] == ["f" * 32]
    jobs, cursor = store.list(None, None, 2)
    assert [j["id"] for j in jobs] == [c["id"], b["id"]] and cursor is not None
    rest, end = store.list(None, cursor, 2)
    assert [j["id"] for j in rest] == [a["id"]] and end is None
    assert [j["id"] for j in store.list("cancelled", None, 10)[0]] == [b["id"], a["id"]]


def test_recover_requeues_once_then_interrupts_and_removes_debris(tmp_path):
    store = JobStore(tmp_path)
    job, _ = _submit(store, "a")
    queued, _ = _submit(store, "b", steps=3)
    (store.images_dir / ".tmp-partial").write_bytes(b"\x89PNG half")
    write_png_atomic(store.images_dir, "a" * 32, b"not listed by any job")
    store.claim(1)
    store.close()

    store = JobStore(tmp_path)  # as after kill -9
    found = store.recover()
    assert found == {"requeued": 1, "cancelled": 0, "interrupted": 0, "removed_files": 2, "integrity": "ok"}
    assert list(store.images_dir.iterdir()) == []
    assert store.get(job["id"])["status"] == "queued" and store.get(queued["id"])["status"] == "queued"
    assert store.queue_position(job["id"]) == 0  # it keeps its place
    assert store.claim(1)[0]["attempts"] == 2
    store.close()

    store = JobStore(tmp_path)
    assert store.recover()["interrupted"] == 1
    assert store.get(job["id"])["status"] == "interrupted"
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_config_refuses_exposed_host_without_token(tmp_path, capsys):
    with pytest.raises(UsageError, match="--token"):
        ServerConfig(data_dir=tmp_path, models={"m": tmp_path}, host="0.0.0.0")
    ServerConfig(data_dir=tmp_path, models={"m": tmp_path}, host="0.0.0.0", token="s3cret-token")
    for bad in ({"max_queue": 0}, {"port": 70000}, {"token": "short"}, {"batch_images": True}):
        with pytest.raises(UsageError):
            ServerConfig(data_dir=tmp_path, models={"m": tmp_path}, **bad)
    assert main(["serve", "--host", "0.0.0.0", "--model", str(tmp_path), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ldmkit: error:") and "--token" in err and "Traceback" not in err


def test_missing_extra_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the `serve` extra were not installed
    assert main(["serve", "--model", str(tmp_path), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ldmkit: error:") and ".[serve]" in err and not (tmp_path / "d").exists()


def test_the_worker_claims_no_job_before_its_queued_event(tmp_path):
    """The API stores a job and publishes "queued" under EventHub.admission; the worker claims under it too, so a
    job's event stream never starts with "started" (it did when the worker took the job in between)."""
    import time

    from ldmkit.serve.events import EventHub
    from ldmkit.serve.worker import Worker

    store, hub = JobStore(tmp_path), EventHub()
    worker = Worker(store, hub, {"m": tmp_path / "no-such-model"})
    worker.start()
    try:
        with hub.admission:  # what the API's _queue holds
            job, position = _submit(store)
            worker.wake()
            time.sleep(0.3)  # the worker is awake and would claim now
            assert store.get(job["id"])["status"] == "queued"
            hub.publish(job["id"], "queued", queue_position=position)
        deadline = time.time() + 10
        while store.get(job["id"])["status"] == "queued" and time.time() < deadline:
            time.sleep(0.02)
        assert hub.since(job["id"], 0)[0]["event"] == "queued"
        assert store.get(job["id"])["status"] != "queued"  # claimed once the event was out (it fails: no model)
    finally:
        worker.stop()
        worker.join(5)

"""The job store: one SQLite file (stdlib sqlite3, WAL) in the server's data folder, images beside it.

A job is one request (a prompt, its `SamplingSettings` as JSON, a model name). Its row is committed
before the API answers, so an accepted job survives a crash. States:

    queued -> running -> succeeded | failed | cancelled | interrupted

`attempts` counts how often a job was started: a job found `running` when the server starts (it was
killed mid-job) goes back to `queued` once, and is `interrupted` when that happens again. Images are
written by the worker as temp file + rename and recorded in the same transaction that marks the job
`succeeded`, so a job succeeds exactly once and an image the database does not list is debris of a
crash (removed at start).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path

FINISHED = ("succeeded", "failed", "cancelled", "interrupted")
STATES = ("queued", "running", *FINISHED)
MAX_ATTEMPTS = 2
"""A job is started at most this often: the first run, and one more after a crash during it."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    settings TEXT NOT NULL,
    num_images INTEGER NOT NULL,
    batch_key TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    result TEXT,
    retry_of TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    seed TEXT NOT NULL,
    idx INTEGER NOT NULL
);
"""


class QueueFull(Exception):
    """Not enough room in the queue for the whole request (it is refused, never shortened)."""

    def __init__(self, waiting: int, capacity: int):
        super().__init__(f"the queue holds {waiting} of at most {capacity} waiting images")
        self.waiting, self.capacity = waiting, capacity


class Conflict(Exception):
    """The job is in a state that does not allow the operation (e.g. cancel after it finished)."""


def new_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    """Thread-safe access to the jobs table; every write is one short transaction."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.images_dir = self.data_dir / "images"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.data_dir / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a reply to POST /jobs means the row is on disk
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, fn):
        """Run fn(db) inside BEGIN IMMEDIATE ... COMMIT under the lock."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return out

    # -- start-up ---------------------------------------------------------------------------------

    def recover(self) -> dict:
        """After a crash: running jobs go back to the queue once (then `interrupted`); temp files and images
        no committed job lists are removed. Returns counts (for the log) and the integrity check."""
        def fix(db):
            requeued = db.execute("UPDATE jobs SET status='queued', started=NULL WHERE status='running' "
                                  "AND attempts < ? AND cancel_requested = 0", (MAX_ATTEMPTS,)).rowcount
            cancelled = db.execute("UPDATE jobs SET status='cancelled', finished=? WHERE status='running' "
                                   "AND cancel_requested = 1", (time.time(),)).rowcount
            interrupted = db.execute("UPDATE jobs SET status='interrupted', finished=?, error=? WHERE status='running'",
                                     (time.time(), "the server stopped during this job twice")).rowcount
            return requeued, cancelled, interrupted
        requeued, cancelled, interrupted = self._tx(fix)
        with self._lock:
            known = {row[0] for row in self._db.execute("SELECT id FROM images")}
            integrity = self._db.execute("PRAGMA integrity_check").fetchone()[0]
        removed = 0
        for path in self.images_dir.iterdir():
            if path.name.startswith(".tmp-") or (path.suffix == ".png" and path.stem not in known):
                path.unlink(missing_ok=True)
                removed += 1
        return {"requeued": requeued, "cancelled": cancelled, "interrupted": interrupted,
                "removed_files": removed, "integrity": integrity}

    # -- the API side -------------------------------------------------------------------------------

    def submit(self, prompt: str, settings: dict, model: str, batch_key: str, capacity: int,
               retry_of: str | None = None) -> tuple[dict, int]:
        """Queue one job (committed when this returns); QueueFull when its images do not all fit."""
        n = int(settings["num_images"])

        def insert(db):
            waiting = db.execute("SELECT COALESCE(SUM(num_images), 0) FROM jobs WHERE status='queued'").fetchone()[0]
            if waiting + n > capacity:
                raise QueueFull(waiting, capacity)
            job_id = new_id()
            db.execute("INSERT INTO jobs (id, status, model, prompt, settings, num_images, batch_key, created, "
                       "retry_of) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                       (job_id, model, prompt, json.dumps(settings), n, batch_key, time.time(), retry_of))
            return job_id
        job_id = self._tx(insert)
        return self.get(job_id), self.queue_position(job_id)

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            images = self._db.execute("SELECT id, seed FROM images WHERE job_id = ? ORDER BY idx",
                                      (job_id,)).fetchall()
        return None if row is None else _job(row, images)

    def queue_position(self, job_id: str) -> int | None:
        """0 for the next job to run; None when the job is not queued."""
        with self._lock:
            row = self._db.execute("SELECT seq, status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] != "queued":
                return None
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status='queued' AND seq < ?",
                                    (row["seq"],)).fetchone()[0]

    def list(self, status: str | None, cursor: int | None, limit: int) -> tuple[list[dict], int | None]:
        """Newest first; `cursor` is the `next_cursor` of the previous page (a sequence number)."""
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if cursor is not None:
            where.append("seq < ?")
            args.append(cursor)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit + 1)).fetchall()
            jobs = [_job(r, self._db.execute("SELECT id, seed FROM images WHERE job_id = ? ORDER BY idx",
                                             (r["id"],)).fetchall()) for r in rows[:limit]]
        return jobs, (rows[limit - 1]["seq"] if len(rows) > limit else None)

    def cancel(self, job_id: str) -> str:
        """A queued job is cancelled now; a running one is flagged (the worker stops it within a step).
        Returns the new status ("cancelled" or "running"); Conflict when it has finished; KeyError if unknown."""
        def do(db):
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            if row["status"] == "queued":
                db.execute("UPDATE jobs SET status='cancelled', finished=? WHERE id = ?", (time.time(), job_id))
                return "cancelled"
            if row["status"] == "running":
                db.execute("UPDATE jobs SET cancel_requested=1 WHERE id = ?", (job_id,))
                return "running"
            raise Conflict(f"job {job_id} has already finished ({row['status']})")
        return self._tx(do)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {s: 0 for s in STATES} | {r[0]: r[1] for r in rows}

    def upload_ids(self) -> set[str]:
        """The init-image uploads (serve.uploads) that jobs refer to."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT json_extract(settings, '$.init_image') FROM jobs").fetchall()
        return {r[0] for r in rows if r[0]}

    def image_exists(self, image_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is not None

    # -- the worker side ----------------------------------------------------------------------------

    def claim(self, max_images: int) -> list[dict]:
        """The oldest queued job and the next queued jobs with the same batch key (same model and settings
        but prompt and seed), up to max_images images (the first job always, whatever its size); all are
        marked running in one transaction."""
        def do(db):
            first = db.execute("SELECT * FROM jobs WHERE status='queued' ORDER BY seq LIMIT 1").fetchone()
            if first is None:
                return []
            rows, total = [first], first["num_images"]
            for row in db.execute("SELECT * FROM jobs WHERE status='queued' AND batch_key = ? AND seq > ? "
                                  "ORDER BY seq", (first["batch_key"], first["seq"])):
                if total + row["num_images"] > max_images:
                    break
                rows.append(row)
                total += row["num_images"]
            now = time.time()
            db.executemany("UPDATE jobs SET status='running', attempts=attempts+1, started=? WHERE id = ?",
                           [(now, r["id"]) for r in rows])
            return [r["id"] for r in rows]
        return [self.get(job_id) for job_id in self._tx(do)]

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        with self._lock:
            marks = ",".join("?" * len(job_ids))
            rows = self._db.execute(f"SELECT id FROM jobs WHERE cancel_requested=1 AND id IN ({marks})",
                                    job_ids).fetchall()
        return {r[0] for r in rows}

    def succeed(self, job_id: str, image_ids: list[str], seeds: list[int], result: dict) -> None:
        def do(db):
            changed = db.execute("UPDATE jobs SET status='succeeded', finished=?, result=? WHERE id = ? AND "
                                 "status='running'", (time.time(), json.dumps(result), job_id)).rowcount
            if changed:  # a job succeeds once; images of a second finish stay unlisted (removed at start)
                db.executemany("INSERT INTO images (id, job_id, seed, idx) VALUES (?, ?, ?, ?)",
                               [(i, job_id, str(s), k) for k, (i, s) in enumerate(zip(image_ids, seeds))])
        self._tx(do)

    def finish(self, job_id: str, status: str, error: str | None = None) -> None:
        """A running job ends without images: failed or cancelled."""
        self._tx(lambda db: db.execute("UPDATE jobs SET status=?, finished=?, error=? WHERE id = ? AND "
                                       "status='running'", (status, time.time(), error, job_id)))

    def requeue(self, job_id: str) -> None:
        """A job that was stopped with a batch it shared goes back to the queue (its attempt not counted)."""
        self._tx(lambda db: db.execute("UPDATE jobs SET status='queued', started=NULL, attempts=attempts-1 "
                                       "WHERE id = ? AND status='running'", (job_id,)))


def _job(row: sqlite3.Row, images) -> dict:
    """The public view of a job row."""
    settings = json.loads(row["settings"])
    result = json.loads(row["result"]) if row["result"] else {}
    seed = settings["seed"]
    return {
        "id": row["id"], "status": row["status"], "model": row["model"], "prompt": row["prompt"],
        "settings": settings, "seeds": [str(seed + k) for k in range(row["num_images"])],
        "attempts": row["attempts"], "cancel_requested": bool(row["cancel_requested"]),
        "created": row["created"], "started": row["started"], "finished": row["finished"],
        "error": row["error"], "retry_of": row["retry_of"],
        "model_hash": result.get("model_hash"), "resolved": result.get("resolved"), "timings": result.get("timings"),
        "warnings": result.get("warnings", []),
        "images": [{"id": i["id"], "seed": i["seed"], "url": f"/api/v1/images/{i['id']}.png"} for i in images],
    }


def write_png_atomic(directory: Path, image_id: str, data: bytes) -> Path:
    """`directory/image_id.png` appears whole or not at all (temp file, fsync, rename)."""
    tmp = directory / f".tmp-{image_id}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    path = directory / f"{image_id}.png"
    os.replace(tmp, path)
    return path

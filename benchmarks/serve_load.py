"""`ldmkit serve` under load: many concurrent clients, every job accounted for, and what batching buys.

    python benchmarks/serve_load.py --model DIR [--clients 50] [--jobs 4] [--steps 4] [--threads 1]

1. Correctness: CLIENTS threads each submit JOBS single-image jobs at once to a server (--batch 16) and
   poll them to the end: 0 lost (every accepted job succeeds), 0 duplicated (one image per job, all ids
   distinct, files on disk = images listed), FIFO (jobs start in submission order; batched jobs share a
   start), p50/p95 latency from submit to succeeded; then a full queue answers 429 to the next request.
2. Batching: the same single-image jobs through a server with --batch 1 and one with --batch 16
   (submitted at once, timed to the last job): images/s ratio.
Prints one JSON object. The model: a tiny one (`ldmkit model init --preset tiny DIR`) for speed, or the
default model (`--model default`) for numbers that matter.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, port: int):
        self.port = port

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Content-Type": "application/json"} if method == "POST" else {}
        conn.request(method, path, body=json.dumps(body or {}).encode() if method == "POST" else None,
                     headers=headers)
        resp = conn.getresponse()
        data = json.loads(resp.read() or b"null")
        conn.close()
        return resp.status, data


def start(model: str, data: Path, threads: int, *extra: str) -> tuple[subprocess.Popen, Client]:
    port = free_port()
    cmd = [sys.executable, "-m", "ldmkit", "serve", "--port", str(port), "--data-dir", str(data),
           "--threads", str(threads), *([] if model == "default" else ["--model", model]), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = Client(port)
    for _ in range(1200):
        try:
            if client.call("GET", "/api/v1/health")[0] == 200:
                return proc, client
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def wait_all(client: Client, ids: list[str], timeout: float = 1800) -> dict[str, dict]:
    done: dict[str, dict] = {}
    end = time.time() + timeout
    while len(done) < len(ids) and time.time() < end:
        for job_id in ids:
            if job_id not in done:
                job = client.call("GET", f"/api/v1/jobs/{job_id}")[1]
                if job["status"] not in ("queued", "running"):
                    done[job_id] = job | {"seen_done": time.time()}
        time.sleep(0.05)
    return done


def load_test(args, tmp: Path) -> dict:
    proc, client = start(args.model, tmp / "load", args.threads, "--batch", "16",
                         "--max-queue", str(args.clients * args.jobs))
    try:
        submitted: list[tuple[float, str]] = []
        lock = threading.Lock()

        def one_client(k: int) -> None:
            for j in range(args.jobs):
                t = time.time()
                status, value = client.call("POST", "/api/v1/jobs",
                                            {"prompt": f"client {k} job {j}", "steps": args.steps, "seed": k})
                assert status == 202, value
                with lock:
                    submitted.append((t, value["id"]))

        threads = [threading.Thread(target=one_client, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = [i for _, i in submitted]
        sent = dict((i, t) for t, i in submitted)
        done = wait_all(client, ids)
        succeeded = [j for j in done.values() if j["status"] == "succeeded"]
        images = [i["id"] for j in succeeded for i in j["images"]]
        files = {p.stem for p in (tmp / "load" / "images").glob("*.png")}
        by_created = sorted(succeeded, key=lambda j: j["created"])
        fifo = all(a["started"] <= b["started"] + 1e-6 for a, b in zip(by_created, by_created[1:]))
        latency = sorted(j["finished"] - sent[j["id"]] for j in succeeded)
        # full queue: fill it with long jobs behind a running one, then one more request
        filler = [client.call("POST", "/api/v1/jobs", {"prompt": "fill", "steps": 900})
                  for _ in range(args.clients * args.jobs + 1)]
        over = client.call("POST", "/api/v1/jobs", {"prompt": "one too many", "steps": 1})[0]
        for status, value in filler:
            if status == 202:
                client.call("POST", f"/api/v1/jobs/{value['id']}/cancel")
        return {"jobs": len(ids), "lost": len(ids) - len(succeeded), "duplicated": len(images) - len(set(images)),
                "images": len(images), "files_match": files == set(images), "fifo": fifo,
                "latency_p50_s": round(statistics.median(latency), 3),
                "latency_p95_s": round(latency[int(0.95 * (len(latency) - 1))], 3), "over_capacity_status": over}
    finally:
        proc.terminate()
        proc.wait(60)


def batching(args, tmp: Path) -> dict:
    out = {}
    for batch in (1, 16):
        proc, client = start(args.model, tmp / f"batch{batch}", args.threads, "--batch", str(batch))
        try:
            client.call("POST", "/api/v1/jobs", {"prompt": "warm-up", "steps": args.steps})
            time.sleep(2)
            t0 = time.time()
            ids = [client.call("POST", "/api/v1/jobs", {"prompt": f"p{i}", "steps": args.steps, "seed": i})[1]["id"]
                   for i in range(args.images)]
            done = wait_all(client, ids)
            out[f"images_per_s_batch{batch}"] = round(len(done) / (max(j["finished"] for j in done.values()) - t0), 3)
        finally:
            proc.terminate()
            proc.wait(60)
    out["batching_speedup"] = round(out["images_per_s_batch16"] / out["images_per_s_batch1"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model folder, or 'default' for the shipped model")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--images", type=int, default=32, help="jobs of the batching comparison")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with tempfile.TemporaryDirectory() as tmp:
        result = {"model": args.model, **load_test(args, Path(tmp)), **batching(args, Path(tmp))}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

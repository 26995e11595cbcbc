"""`ldmkit serve` under load, and what serving costs and buys over calling `Pipeline` directly (issue 15).

    python benchmarks/serve.py [--part all|load|model] [--clients 50] [--jobs 4] [--max-queue 32]
                               [--model DIR] [--repeats 3] [--pairs 3] [--concurrent 16] [--threads 2]

load (a tiny random model made in a temp folder, 4 steps, `--batch 16`): CLIENTS threads each submit JOBS
single-image jobs, one after another, to a server whose queue holds MAX_QUEUE images (fewer than CLIENTS x
JOBS, so the bound is hit): every 429 must carry Retry-After, and the client waits that long and sends the job
again. Then: 0 lost (every accepted job succeeded), 0 duplicated (one image per job, ids distinct, files on
disk = images listed), FIFO (taken in order of acceptance, start times never go backwards; all jobs are
compatible, so batching keeps the order), the queue never held more than MAX_QUEUE (sampled from /health
every 20 ms), p50/p95 latency from the accepted submit to the job's commit.

model (default: the shipped model, its default sampler/steps/guidance), all in one run, REPEATS rounds, the
order of the sides alternating:
  overhead: PAIRS times per round, one image by a direct `Pipeline.generate_batch` call in this process vs the
            same image (prompt, seed, settings) as a job of a running server, timed from the POST to the job's
            commit (image written as PNG, job row committed): ratio - 1 is the API overhead per image (median
            of the round's pairs). The two images are compared pixel for pixel (same settings, same image).
            Less noisy, from the same job: the share of its time spent outside the worker's
            `generate_batch` call (HTTP, queue, PNG encoding, fsync, commits; not the per-step callbacks).
  batching: CONCURRENT single-image jobs sent one at a time (each after the previous one finished) vs
            CONCURRENT clients sending one job each at once: images/s ratio (compatible jobs share a batch).
Prints the medians and the spread (min..max over rounds) as JSON and as a markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import io
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

PROMPTS = ("a grinning face with sunglasses", "an avatar with red hair and a big smile", "a red heart",
           "a cat face", "a rocket", "a smiling sun")


class Client:
    """One HTTP call per connection (as a simple client does); JSON in and out."""

    def __init__(self, port: int):
        self.port = port

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        data = json.dumps(body or {}).encode() if method == "POST" else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        value = json.loads(raw) if resp.getheader("content-type", "").startswith("application/json") else raw
        return resp.status, value, {k.lower(): v for k, v in resp.getheaders()}


class ServerProcess:
    def __init__(self, tmp: Path, name: str, model: str | None, threads: int, *extra: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.log = tmp / f"{name}.log"
        cmd = [sys.executable, "-m", "ldmkit", "serve", "--port", str(port), "--data-dir", str(tmp / name),
               "--threads", str(threads), *(["--model", model] if model else []), *extra]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.client, self.data = Client(port), tmp / name
        end = time.time() + 300
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if self.client.call("GET", "/api/v1/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def submit(self, body: dict) -> tuple[str, float]:
        """(job id, time.time() of the POST); retries after a 429 for as long as Retry-After says."""
        while True:
            t = time.time()
            status, value, headers = self.client.call("POST", "/api/v1/jobs", body)
            if status == 202:
                return value["id"], t
            if status != 429:
                raise RuntimeError(f"submit: {status} {value}")
            time.sleep(float(headers["retry-after"]))

    def wait(self, job_id: str, poll: float = 0.5) -> dict:
        """The finished job. Polling slowly: request handling takes the GIL from the worker's sampling."""
        while True:
            job = self.client.call("GET", f"/api/v1/jobs/{job_id}")[1]
            if job["status"] not in ("queued", "running"):
                return job
            time.sleep(poll)

    def wait_stream(self, job_id: str) -> dict:
        """The finished job, as soon as its event stream says so (what a one-at-a-time client waits for)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.client.port, timeout=600)
        conn.request("GET", f"/api/v1/jobs/{job_id}/events")
        resp = conn.getresponse()
        while True:
            line = resp.readline().decode()
            if not line:
                break
            event = json.loads(line[6:]) if line.startswith("data: ") else {}
            if event.get("status", event.get("event")) in ("succeeded", "failed", "cancelled", "interrupted"):
                break
        conn.close()
        return self.wait(job_id)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(120)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spread(values: list[float], digits: int = 3) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "n": len(values)}


# -- load: many clients, a bounded queue, every job accounted for -------------------------------------------------

def load(args, tmp: Path) -> dict:
    model = tmp / "tiny"
    subprocess.run([sys.executable, "-m", "ldmkit", "model", "init", "--preset", "tiny", str(model)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = ServerProcess(tmp, "load", str(model), 1, "--batch", "16", "--max-queue", str(args.max_queue))
    accepted: list[tuple[str, float]] = []
    refused = {"n": 0, "without_retry_after": 0}
    most_queued, lock, done = [0], threading.Lock(), threading.Event()

    def client(k: int) -> None:
        for j in range(args.jobs):
            body = {"prompt": f"client {k} job {j}", "steps": 4, "seed": 1000 * k + j}
            while True:
                t = time.time()
                status, value, headers = srv.client.call("POST", "/api/v1/jobs", body)
                if status == 202:
                    with lock:
                        accepted.append((value["id"], t))
                    break
                assert status == 429, (status, value)
                with lock:
                    refused["n"] += 1
                    refused["without_retry_after"] += "retry-after" not in headers
                time.sleep(float(headers.get("retry-after", 1)))

    def watch_queue() -> None:
        while not done.is_set():
            queued = srv.client.call("GET", "/api/v1/health")[1]["jobs"]["queued"]
            most_queued[0] = max(most_queued[0], queued)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_queue)
    watcher.start()
    try:
        t0 = time.time()
        clients = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        while any(srv.client.call("GET", "/api/v1/health")[1]["jobs"][s] for s in ("queued", "running")):
            time.sleep(0.1)
        wall = time.time() - t0
        done.set()
        watcher.join()
        jobs = {job_id: srv.client.call("GET", f"/api/v1/jobs/{job_id}")[1] for job_id, _ in accepted}
        sent = dict(accepted)
        ok = [j for j in jobs.values() if j["status"] == "succeeded" and len(j["images"]) == 1]
        images = [i["id"] for j in jobs.values() for i in j["images"]]
        files = {p.stem for p in (srv.data / "images").iterdir()}
        every = srv.client.call("GET", "/api/v1/jobs?limit=100")[1]  # the store holds nothing more than accepted
        listed, cursor = [j["id"] for j in every["jobs"]], every["next_cursor"]
        while cursor:
            page = srv.client.call("GET", f"/api/v1/jobs?limit=100&cursor={cursor}")[1]
            listed += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
        by_acceptance = sorted(jobs.values(), key=lambda j: j["created"])
        backwards = sum(a["started"] > b["started"] for a, b in zip(by_acceptance, by_acceptance[1:]))
        latency = [j["finished"] - sent[j["id"]] for j in ok]
        return {
            "clients": args.clients, "jobs_per_client": args.jobs, "max_queue": args.max_queue,
            "accepted": len(accepted), "lost": len(accepted) - len(ok), "duplicated": len(images) - len(set(images)),
            "store_matches_accepted": sorted(listed) == sorted(sent), "files_match_images": files == set(images),
            "fifo_violations": backwards, "refused_429": refused["n"],
            "refused_without_retry_after": refused["without_retry_after"], "most_queued_seen": most_queued[0],
            "latency_p50_s": round(percentile(latency, 0.5), 2), "latency_p95_s": round(percentile(latency, 0.95), 2),
            "images_per_s": round(len(ok) / wall, 2),
        }
    finally:
        done.set()
        srv.stop()


# -- model: API overhead per image and what batching buys -------------------------------------------------------

def image_difference(a, b) -> int:
    import numpy as np

    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def model_part(args, tmp: Path) -> dict:
    import torch
    from PIL import Image

    from ldmkit.pipeline import Pipeline

    torch.set_num_threads(args.threads)
    srv = ServerProcess(tmp, "model", args.model, args.threads)  # --batch 16, the default
    pipe = Pipeline.from_pretrained(args.model) if args.model else Pipeline.default()
    try:
        pipe.generate_batch([PROMPTS[0]], [0])  # warm-up, both sides
        srv.wait(srv.submit({"prompt": PROMPTS[0], "seed": 0})[0])
        direct_s, served_s, overhead, outside, diffs = [], [], [], [], []
        one_at_a_time, concurrent, speedup, batches = [], [], [], []
        for r in range(args.repeats):
            pair = []
            for k in range(args.pairs):
                prompt, seed = PROMPTS[(r + k) % len(PROMPTS)], 100 + args.pairs * r + k
                for side in (("direct", "served") if (r + k) % 2 == 0 else ("served", "direct")):
                    if side == "direct":
                        t = time.perf_counter()
                        image = pipe.generate_batch([prompt], [seed])[0].images[0]
                        direct_s.append(time.perf_counter() - t)
                    else:
                        job_id, t = srv.submit({"prompt": prompt, "seed": seed})
                        job = srv.wait_stream(job_id)
                        assert job["status"] == "succeeded", job
                        served_s.append(job["finished"] - t)  # to the commit, not to when our poll saw it
                        sample = job["timings"]["sample_s"]
                        outside.append((served_s[-1] - sample) / sample)
                        png = srv.client.call("GET", job["images"][0]["url"])[1]
                pair.append(served_s[-1] / direct_s[-1] - 1)
                diffs.append(image_difference(image, Image.open(io.BytesIO(png)).convert("RGB")))
            overhead.append(statistics.median(pair))
            rates = {}
            for side in (("sequential", "concurrent") if r % 2 == 0 else ("concurrent", "sequential")):
                rates[side] = batch_round(srv, args.concurrent, side, 1000 * (r + 1),
                                          batches if side == "concurrent" else [])
            one_at_a_time.append(rates["sequential"])
            concurrent.append(rates["concurrent"])
            speedup.append(rates["concurrent"] / rates["sequential"])
            print(f"round {r + 1}: direct {direct_s[-1]:.3f} s, served {served_s[-1]:.3f} s, overhead "
                  f"{100 * overhead[-1]:+.1f}% (outside sampling {100 * outside[-1]:.1f}%); {args.concurrent} images "
                  f"one at a time {rates['sequential']:.3f}/s, at once {rates['concurrent']:.3f}/s "
                  f"({speedup[-1]:.2f}x)", file=sys.stderr, flush=True)
        return {
            "model": args.model or "default (shipped)", "threads": args.threads, "repeats": args.repeats,
            "direct_s": spread(direct_s), "served_s": spread(served_s), "api_overhead": spread(overhead, 4),
            "outside_sampling": spread(outside, 4),
            "largest_pixel_difference": max(diffs), "concurrent_clients": args.concurrent,
            "images_per_s_one_at_a_time": spread(one_at_a_time), "images_per_s_concurrent": spread(concurrent),
            "batching_speedup": spread(speedup), "concurrent_batch_sizes": batches,
        }
    finally:
        srv.stop()


def batch_round(srv: ServerProcess, n: int, how: str, seed0: int, batches: list[list[int]]) -> float:
    """Images/s of n single-image jobs: sent one after another, or by n clients at once (all compatible); the
    sizes of the batches they ran in are added to `batches`."""
    bodies = [{"prompt": PROMPTS[i % len(PROMPTS)], "seed": seed0 + i} for i in range(n)]
    t0 = time.time()
    if how == "sequential":
        jobs = [srv.wait_stream(srv.submit(b)[0]) for b in bodies]
    else:
        ids: list[str] = [""] * n
        go = threading.Barrier(n)

        def send(i: int) -> None:
            go.wait()
            ids[i] = srv.submit(bodies[i])[0]
        threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        jobs = [srv.wait(i) for i in ids]
    assert all(j["status"] == "succeeded" for j in jobs)
    batches.append([size for _, size in sorted({j["started"]: j["timings"]["batch_images"] for j in jobs}.items())])
    return n / (max(j["finished"] for j in jobs) - t0)


def table(result: dict) -> str:
    rows = ["| measurement | median | spread (min..max) |", "|---|---|---|"]
    if "load" in result:
        lo = result["load"]
        rows += [f"| {lo['clients']} clients x {lo['jobs_per_client']} jobs, queue {lo['max_queue']}: lost / "
                 f"duplicated / FIFO violations | {lo['lost']} / {lo['duplicated']} / {lo['fifo_violations']} | |",
                 f"| 429 answers (all with Retry-After: {lo['refused_without_retry_after'] == 0}); most queued seen "
                 f"| {lo['refused_429']}; {lo['most_queued_seen']} | |",
                 f"| latency submit -> done p50 / p95 | {lo['latency_p50_s']} s / {lo['latency_p95_s']} s | |"]
    if "model" in result:
        m = result["model"]

        def row(name: str, s: dict, unit: str = "", scale: float = 1) -> str:
            return (f"| {name} | {s['median'] * scale:.3g}{unit} | {s['min'] * scale:.3g}..{s['max'] * scale:.3g}"
                    f"{unit} (n={s['n']}) |")
        rows += [row("direct `Pipeline` call, s/image", m["direct_s"]),
                 row("server job, POST -> committed, s/image", m["served_s"]),
                 row("API overhead per image (served / direct - 1, median of each round's pairs)", m["api_overhead"],
                     "%", 100),
                 row("served time outside `generate_batch` (same job)", m["outside_sampling"], "%", 100),
                 row(f"images/s, {m['concurrent_clients']} jobs one at a time", m["images_per_s_one_at_a_time"]),
                 row(f"images/s, {m['concurrent_clients']} concurrent clients", m["images_per_s_concurrent"]),
                 row("batching speed-up", m["batching_speedup"], "x")]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("all", "load", "model"), default="all")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--max-queue", type=int, default=32)
    p.add_argument("--model", help="model folder for the model part (default: the shipped model)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of the model part")
    p.add_argument("--pairs", type=int, default=3, help="direct/served pairs per round")
    p.add_argument("--concurrent", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the server and of the direct call")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("all", "load"):
            result["load"] = load(args, Path(tmp))
            print(json.dumps(result["load"]), file=sys.stderr, flush=True)
        if args.part in ("all", "model"):
            result["model"] = model_part(args, Path(tmp))
    print(json.dumps(result, indent=1))
    print(table(result))
    lo = result.get("load")
    zero = ("lost", "duplicated", "fifo_violations", "refused_without_retry_after")
    ok = lo is None or (all(lo[k] == 0 for k in zero) and lo["most_queued_seen"] <= args.max_queue
                        and lo["store_matches_accepted"] and lo["files_match_images"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

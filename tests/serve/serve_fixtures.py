"""A real `ldmkit serve` process on 127.0.0.1 (a free port) and a raw HTTP client (http.client: paths are
sent exactly as written, nothing normalised)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

TOKEN = "test-token-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model: Path, data_dir: Path, *extra: str, token: str | None = TOKEN):
        self.model, self.data_dir, self.extra, self.token = model, data_dir, extra, token
        self.port, self.proc = free_port(), None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "ldmkit", "serve", "--model", str(self.model), "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--threads", "1", *self.extra]
        return cmd + (["--token", self.token] if self.token else [])

    def environment(self) -> dict:
        return {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}

    def start(self, timeout: float = 180) -> "Server":
        """Start `command()` and wait until /health answers (180 s: a loaded 2-core machine is slow)."""
        self.log = open(self.data_dir.parent / f"serve-{self.port}.log", "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT,
                                     env=self.environment())
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if self.request("GET", "/api/v1/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.log.close()

    def request(self, method: str, path: str, body=None, *, headers: dict | None = None, raw: bytes | None = None,
                auth: bool = True) -> tuple[int, object, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = {"Host": f"127.0.0.1:{self.port}"}
        if auth and self.token:
            h["Authorization"] = f"Bearer {self.token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if method == "POST" and raw is None:
            h["Content-Type"] = "application/json"
            data = data if data is not None else b"{}"
        h.update(headers or {})
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        content = resp.read()
        conn.close()
        kind = resp.getheader("content-type", "")
        value = json.loads(content) if kind.startswith("application/json") else content
        return resp.status, value, {k.lower(): v for k, v in resp.getheaders()}

    def submit(self, **fields) -> str:
        status, value, _ = self.request("POST", "/api/v1/jobs", fields)
        assert status == 202, value
        return value["id"]

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/api/v1/jobs/{job_id}")[1]

    def wait(self, job_id: str, states=("succeeded", "failed", "cancelled", "interrupted"), timeout=60.0) -> dict:
        end = time.time() + timeout
        while time.time() < end:
            job = self.job(job_id)
            if job["status"] in states:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} stayed {job['status']}")

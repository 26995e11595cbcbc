"""Progress events per job, kept in memory for the server-sent-event streams.

The worker only appends under a short lock and never waits for a reader, so a slow or stalled client
cannot hold up sampling. Step events of a job replace each other (a reader sees the latest), so the
memory per job stays a handful of events; the oldest jobs' events are dropped past MAX_JOBS.

Previews: a step event that carries none keeps the job's latest one (`preview`, made at step
`preview_step`), so a reader polling slower than the steps still sees every job's newest preview. The
queue-wide stream carries `preview_step` only (no image data), and only the last KEEP_PREVIEWS finished
jobs keep theirs: at most one preview per running job plus those are held.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

MAX_JOBS = 1000
"""Jobs whose events are kept (a stream of an older job reports only its final state, from the store)."""
MAX_QUEUE_EVENTS = 1000
"""Events kept for the queue-wide stream (a reader further behind skips the oldest)."""
TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")
KEEP_PREVIEWS = 32
"""Finished jobs whose last preview is kept (a reader that connects just after the end still sees it)."""


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.admission = threading.Lock()
        """Held while a job is stored and its "queued" event published, and while the worker claims jobs: so no
        job is claimed (and "started") before its "queued" event is out."""
        self._events: OrderedDict[str, list[dict]] = OrderedDict()
        self._seq = 0
        self._all: deque[dict] = deque(maxlen=MAX_QUEUE_EVENTS)
        self._finished: deque[str] = deque()  # jobs that ended, oldest first, whose previews are still kept

    def publish(self, job_id: str, event: str, **data) -> None:
        """Record `event` ("queued", "started", "step", or a final state) for job_id."""
        with self._lock:
            self._seq += 1
            item = {"seq": self._seq, "event": event, "job_id": job_id, "time": time.time(), **data}
            events = self._events.setdefault(job_id, [])
            self._events.move_to_end(job_id)
            if event == "step" and events and events[-1]["event"] == "step":
                if "preview" not in item and "preview" in events[-1]:
                    item["preview"], item["preview_step"] = events[-1]["preview"], events[-1]["preview_step"]
                events[-1] = item
            else:
                events.append(item)
                if event in TERMINAL:
                    self._forget_previews(job_id)
            shared = {k: v for k, v in item.items() if k != "preview"}
            last = self._all[-1] if self._all else None
            if event == "step" and last and last["event"] == "step" and last["job_id"] == job_id:
                self._all[-1] = shared
            else:
                self._all.append(shared)
            while len(self._events) > MAX_JOBS:
                self._events.popitem(last=False)

    def _forget_previews(self, ended: str) -> None:
        """Past KEEP_PREVIEWS finished jobs, the oldest one's preview goes (called under the lock)."""
        self._finished.append(ended)
        while len(self._finished) > KEEP_PREVIEWS:
            for old in self._events.get(self._finished.popleft(), ()):
                old.pop("preview", None)

    def since_all(self, seq: int) -> list[dict]:
        """Every job's events newer than `seq` (the queue-wide stream)."""
        with self._lock:
            return [dict(e) for e in self._all if e["seq"] > seq]

    def since(self, job_id: str, seq: int) -> list[dict]:
        """The events of job_id newer than `seq` (copies)."""
        with self._lock:
            return [dict(e) for e in self._events.get(job_id, ()) if e["seq"] > seq]

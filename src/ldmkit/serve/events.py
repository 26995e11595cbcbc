"""Progress events per job, kept in memory for the server-sent-event streams.

The worker only appends under a short lock and never waits for a reader, so a slow or stalled client
cannot hold up sampling. Step events of a job replace each other (a reader sees the latest), so the
memory per job stays a handful of events; the oldest jobs' events are dropped past MAX_JOBS.
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


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: OrderedDict[str, list[dict]] = OrderedDict()
        self._seq = 0
        self._all: deque[dict] = deque(maxlen=MAX_QUEUE_EVENTS)

    def publish(self, job_id: str, event: str, **data) -> None:
        """Record `event` ("queued", "started", "step", or a final state) for job_id."""
        with self._lock:
            self._seq += 1
            item = {"seq": self._seq, "event": event, "job_id": job_id, "time": time.time(), **data}
            events = self._events.setdefault(job_id, [])
            self._events.move_to_end(job_id)
            if event == "step" and events and events[-1]["event"] == "step":
                events[-1] = item
            else:
                events.append(item)
            last = self._all[-1] if self._all else None
            if event == "step" and last and last["event"] == "step" and last["job_id"] == job_id:
                self._all[-1] = item
            else:
                self._all.append(item)
            while len(self._events) > MAX_JOBS:
                self._events.popitem(last=False)

    def since_all(self, seq: int) -> list[dict]:
        """Every job's events newer than `seq` (the queue-wide stream)."""
        with self._lock:
            return [dict(e) for e in self._all if e["seq"] > seq]

    def since(self, job_id: str, seq: int) -> list[dict]:
        """The events of job_id newer than `seq` (copies)."""
        with self._lock:
            return [dict(e) for e in self._events.get(job_id, ()) if e["seq"] > seq]

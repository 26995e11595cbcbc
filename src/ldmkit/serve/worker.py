"""The worker: one thread that runs queued jobs, oldest first, on the pipelines of a `ModelPool`.

Compatible queued jobs (same model and settings but prompt and seed; for img2img the same init image and
strength) run together through `Pipeline.generate_batch`, one UNet batch per step. Every sampling step the
worker publishes progress (with a decoded x0 preview every `preview_every` steps for the jobs that ask) and
looks for cancel requests: a cancelled job stops within one step; the other jobs of its batch go back to
the queue. Images are written whole (temp + rename) with the CLI's A1111 `parameters` chunk.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import time
from pathlib import Path

from ldmkit.errors import LdmkitError
from ldmkit.pipeline.settings import SamplingSettings
from ldmkit.serve.events import EventHub
from ldmkit.serve.models import ModelPool
from ldmkit.serve.previews import Previews
from ldmkit.serve.request import sampling_settings, settings_json
from ldmkit.serve.store import JobStore, new_id, write_png_atomic
from ldmkit.serve.uploads import load_upload

log = logging.getLogger("ldmkit.serve")


class _Cancelled(Exception):
    def __init__(self, job_ids: set[str]):
        super().__init__("cancelled")
        self.job_ids = job_ids


class Worker(threading.Thread):
    """Runs jobs from `store` on the models named in `models` (name -> folder or checkpoint file), at most
    `max_loaded` of them loaded at once (`self.pool`)."""

    def __init__(self, store: JobStore, hub: EventHub, models: dict[str, Path], *, batch_images: int = 16,
                 max_loaded: int = 2, fast: bool = False):
        super().__init__(name="ldmkit-worker", daemon=True)
        self.store, self.hub, self.models = store, hub, models
        self.batch_images = batch_images
        self.pool = ModelPool(models, max_loaded=max_loaded, fast=fast)
        self._wake = threading.Event()
        self._stopping = threading.Event()

    def pipeline(self, name: str):
        """The pipeline of model `name`, loaded if needed (`ModelPool.get`)."""
        return self.pool.get(name)

    def check(self, model: str, settings: SamplingSettings, init_image=None) -> SamplingSettings | None:
        """The model-dependent checks when the model is loaded (`ModelPool.check`): resolved settings or None."""
        return self.pool.check(model, settings, init_image)

    # -- the loop -----------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            with self.hub.admission:  # not between a job's storing and its "queued" event (EventHub.admission)
                jobs = self.store.claim(self.batch_images)
            if not jobs:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                self.run_batch(jobs)
            except Exception as err:  # never let one batch kill the worker
                log.exception("worker: batch failed")
                for job in jobs:
                    self._end(job["id"], "failed", f"internal error: {type(err).__name__}: {err}")

    def _end(self, job_id: str, status: str, error: str | None = None) -> None:
        self.store.finish(job_id, status, error)
        self.hub.publish(job_id, status, **({"error": error} if error else {}))

    def run_batch(self, jobs: list[dict]) -> None:
        ids = [j["id"] for j in jobs]
        try:
            pipe = self.pool.get(jobs[0]["model"])
            settings = sampling_settings(jobs[0]["settings"])
            init_image = self._init_image(jobs[0]["settings"].get("init_image"))
            prompts, seeds, owner = [], [], []
            for job in jobs:
                for seed in (int(s) for s in job["seeds"]):
                    prompts.append(job["prompt"])
                    seeds.append(seed)
                    owner.append(job["id"])
            resolved, _ = pipe.resolve(settings, init_image)
            runs = math.ceil(len(prompts) / pipe.images_per_run(resolved))
        except LdmkitError as err:
            for job_id in ids:
                self._end(job_id, "failed", str(err))
            return
        for job in jobs:
            self.hub.publish(job["id"], "started", images=len(job["seeds"]), batch_images=len(prompts))
        calls, t0 = {"n": 0}, time.time()
        previews = Previews(pipe.decode, owner, {j["id"]: j["settings"].get("preview_every") or 0 for j in jobs})

        def on_step(i: int, n: int) -> None:
            calls["n"] += 1
            done, total = calls["n"], runs * n
            elapsed = time.time() - t0
            eta = elapsed / done * (total - done)
            for job_id in ids:
                self.hub.publish(job_id, "step", step=i, steps=n, progress=done / total, eta_s=round(eta, 3),
                                 **previews.take(job_id))
            wanted = self.store.cancel_requested(ids)
            if wanted or self._stopping.is_set():  # the server is stopping: the batch goes back to the queue
                raise _Cancelled(wanted)

        try:
            results = pipe.generate_batch(prompts, seeds, settings, init_image=init_image, on_step=on_step,
                                          on_denoised=previews if previews else None)
        except _Cancelled as stop:
            for job_id in ids:
                if job_id in stop.job_ids:
                    self._end(job_id, "cancelled")
                else:
                    self.store.requeue(job_id)
                    self.hub.publish(job_id, "queued", note="requeued: a job of its batch was cancelled or the "
                                                            "server is stopping")
            self.wake()
            return
        except LdmkitError as err:
            for job_id in ids:
                self._end(job_id, "failed", str(err))
            return
        sample_s = time.time() - t0
        for job in jobs:
            mine = [r for r, o in zip(results, owner) if o == job["id"]]
            self._save(job, mine, {"model_hash": pipe.model_hash, "resolved": settings_json(resolved),
                                   "timings": {"sample_s": round(sample_s, 3), "batch_images": len(prompts)}})

    def _init_image(self, upload_id: str | None):
        """The saved init image of an img2img batch (None for txt2img); LdmkitError when its file is gone."""
        if upload_id is None:
            return None
        try:
            return load_upload(self.store.data_dir, upload_id)
        except OSError as err:
            raise LdmkitError(f"the init image of this job (upload {upload_id}) cannot be read: {err}") from None

    def _save(self, job: dict, results: list, result: dict) -> None:
        """Write the job's images (whole files) and mark it succeeded, in that order."""
        from PIL import PngImagePlugin

        from ldmkit.pipeline.output import parameters_text

        if self.store.cancel_requested([job["id"]]):
            self._end(job["id"], "cancelled")
            return
        image_ids, seeds, warnings = [], [], []
        for r in results:
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", parameters_text(r.params))
            buf = io.BytesIO()
            r.images[0].save(buf, format="PNG", pnginfo=info)
            image_id = new_id()
            write_png_atomic(self.store.images_dir, image_id, buf.getvalue())
            image_ids.append(image_id)
            seeds.append(r.seeds[0])
            warnings += [w for w in r.warnings if w not in warnings]
        self.store.succeed(job["id"], image_ids, seeds, {**result, "warnings": warnings})
        self.hub.publish(job["id"], "succeeded", images=image_ids)


__all__ = ["Worker"]

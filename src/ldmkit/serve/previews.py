"""Live x0 previews: every k steps, the sampler's current estimate of a job's clean image, decoded by the VAE,
shrunk to at most MAX_SIDE pixels and sent in the job's step event as a JPEG data URL.

The x0 estimate (not the noisy x_t) is what shows the picture forming (seed 002's trajectories, live). Only
the jobs that ask (`preview_every`) pay for it, and all their images due at a step are decoded in one VAE call.
"""

from __future__ import annotations

import base64
import io

MAX_SIDE = 256
"""Longest side of a preview in pixels (a job's images side by side, shrunk to fit)."""
MAX_IMAGES = 4
"""Images of one job shown in its preview (its first ones in the current sampling run)."""
JPEG_QUALITY = 80


class Previews:
    """`Pipeline.generate_batch`'s on_denoised hook for one batch: image i of the batch belongs to owners[i];
    job j wants a preview every every[j] steps (0: none). `take(j)` hands out job j's new preview, once."""

    def __init__(self, decode, owners: list[str], every: dict[str, int]):
        self.decode, self.owners = decode, owners
        self.every = {job: k for job, k in every.items() if k}
        self._ready: dict[str, dict] = {}

    def __bool__(self) -> bool:
        return bool(self.every)

    def __call__(self, i: int, n: int, rows: range, x0) -> None:
        due = {job for job, k in self.every.items() if i % k == 0}
        picks: dict[str, list[int]] = {}
        for local, row in enumerate(rows):
            job = self.owners[row]
            if job in due and len(picks.setdefault(job, [])) < MAX_IMAGES:
                picks[job].append(local)
        order = [local for locals_ in picks.values() for local in locals_]
        if not order:
            return
        from ldmkit.data.images import to_pil

        images = to_pil(self.decode(x0[order]))
        at = 0
        for job, locals_ in picks.items():
            self._ready[job] = {"preview": data_url(images[at:at + len(locals_)]), "preview_step": i}
            at += len(locals_)

    def take(self, job: str) -> dict:
        """{"preview": data URL, "preview_step": i} if job has a preview newer than the last take, else {}."""
        return self._ready.pop(job, {})


def data_url(images: list) -> str:
    """The images side by side, shrunk to at most MAX_SIDE pixels, as a data:image/jpeg;base64, URL."""
    from PIL import Image

    width, height = sum(im.width for im in images), max(im.height for im in images)
    row = Image.new("RGB", (width, height))
    x = 0
    for im in images:
        row.paste(im, (x, 0))
        x += im.width
    row.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)  # only ever shrinks
    buf = io.BytesIO()
    row.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()

"""Visualising the denoising: record x_t and the predicted clean image x0 at chosen steps.

diffusers' callbacks only show the noisy x_t (diffusers issue #7001); the x0 prediction is what
shows the image forming, so we keep both, decode them, and write a grid PNG and an animated GIF.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from PIL import Image, ImageDraw

from ldmkit.data.images import to_pil
from ldmkit.diffusion.samplers import Step


@dataclass
class Trajectory:
    """Decoded snapshots; `noisy[i][k]` / `predicted[i][k]` are step `steps[i]` of image k."""

    steps: list[int]
    sigmas: list[float]
    noisy: list[list[Image.Image]]
    predicted: list[list[Image.Image]]


class TrajectoryRecorder:
    """A sampler callback that keeps every `every`-th step (and always the last one)."""

    def __init__(self, every: int = 1):
        self.every = max(1, int(every))
        self.records: list[tuple[int, float, torch.Tensor, torch.Tensor]] = []

    def __call__(self, step: Step) -> None:
        keep = step.index % self.every == 0 or step.sigma_next == 0
        if self.records and self.records[-1][0] == step.index:
            return
        if keep:
            vp = step.x / (1 + step.sigma**2) ** 0.5  # the VAE decodes VP-scaled latents
            self.records.append((step.index, step.sigma, vp.clone(), step.denoised.clone()))

    def finish(self, decode: Callable[[torch.Tensor], torch.Tensor]) -> Trajectory:
        steps, sigmas, noisy, predicted = [], [], [], []
        for index, sigma, x_t, x0 in self.records:
            steps.append(index)
            sigmas.append(sigma)
            noisy.append(to_pil(decode(x_t)))
            predicted.append(to_pil(decode(x0)))
        return Trajectory(steps, sigmas, noisy, predicted)


def merge_trajectories(parts: list[Trajectory]) -> Trajectory:
    """One Trajectory from those of consecutive sampling runs of the same request (images side by side)."""
    first = parts[0]
    return Trajectory(list(first.steps), list(first.sigmas),
                      [[im for part in parts for im in part.noisy[i]] for i in range(len(first.steps))],
                      [[im for part in parts for im in part.predicted[i]] for i in range(len(first.steps))])


def _label(img: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (img.width, img.height + 12), "white")
    out.paste(img, (0, 12))
    ImageDraw.Draw(out).text((1, 0), text, fill="black")
    return out


def trajectory_grid(traj: Trajectory, image_index: int = 0, max_columns: int = 10) -> Image.Image:
    """Two rows: x_t on top, predicted x0 below; one column per kept step (at most max_columns)."""
    n = len(traj.steps)
    pick = sorted({round(i * (n - 1) / max(1, min(n, max_columns) - 1)) for i in range(min(n, max_columns))})
    tiles = [(_label(traj.noisy[i][image_index], f"x_t {traj.steps[i] + 1}"),
              _label(traj.predicted[i][image_index], f"x0 s={traj.sigmas[i]:.2g}")) for i in pick]
    w, h = tiles[0][0].size
    grid = Image.new("RGB", (w * len(tiles), h * 2), "white")
    for c, (top, bottom) in enumerate(tiles):
        grid.paste(top, (c * w, 0))
        grid.paste(bottom, (c * w, h))
    return grid


def save_trajectory(traj: Trajectory, out_dir: Path, stem: str, image_index: int = 0,
                    final: Image.Image | None = None) -> tuple[Path, Path]:
    """Write `<stem>-trajectory.png` (grid) and `<stem>-trajectory.gif` (x_t | x0 per frame); like images,
    never over an existing file (`<stem>-trajectory-1.png`/`.gif`, ... instead; both files get the same name)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (grid_path, grid_file), (gif_path, gif_file) = _exclusive_pair(out_dir, f"{stem}-trajectory")
    with grid_file:
        trajectory_grid(traj, image_index).save(grid_file, format="PNG")
    frames = []
    for noisy, pred in zip(traj.noisy, traj.predicted):
        a, b = noisy[image_index], pred[image_index]
        frame = Image.new("RGB", (a.width * 2, a.height), "white")
        frame.paste(a, (0, 0))
        frame.paste(b, (a.width, 0))
        frames.append(frame)
    if final is not None:
        frame = Image.new("RGB", (final.width * 2, final.height), "white")
        frame.paste(final, (0, 0))
        frame.paste(final, (final.width, 0))
        frames.append(frame)
    durations = [120] * (len(frames) - 1) + [1000]
    with gif_file:
        frames[0].save(gif_file, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return grid_path, gif_path


def _exclusive_pair(out_dir: Path, stem: str):
    """Open `stem.png` and `stem.gif` (else `stem-1.*`, ...), both created exclusively: no overwrite, no race."""
    import os

    n = 0
    while True:
        name = stem if n == 0 else f"{stem}-{n}"
        n += 1
        png, gif = out_dir / f"{name}.png", out_dir / f"{name}.gif"
        if png.exists() or gif.exists():
            continue
        try:
            png_fd = os.open(png, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        try:
            gif_fd = os.open(gif, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            os.close(png_fd)
            png.unlink()
            continue
        return (png, os.fdopen(png_fd, "wb")), (gif, os.fdopen(gif_fd, "wb"))

"""Reading a latent cache (cache.py) back as training batches.

    cache = CachedLatents.load("cache/3f2a...")
    batch = cache.batch([0, 5, 9], generator)          # one random caption per image
    for batch in cache.iterate(64, generator):         # a seeded permutation per epoch
        batch.latents  # [B, C, h, w]: mean + std * noise (sample=True) or the mean
        batch.text     # [B, ...] the state of one caption per image, drawn with `generator`
        batch.image_ids

Latent means and stds (small) are held in memory; text states stay in the safetensors files and only
the rows a batch needs are read. Values are those of the encoder: the model's latent scaling factor is
applied by whoever trains, not here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ldmkit.errors import DataError, UsageError


@dataclass(frozen=True)
class CachedBatch:
    """One training batch from the cache."""

    latents: object
    """[B, C, h, w] float32 latents: a posterior sample, or the mean with sample=False."""
    text: object
    """[B, ...] float32 text-encoder state of one caption per image."""
    image_ids: tuple[str, ...]
    """The image each row came from."""
    caption_index: tuple[int, ...]
    """Which of its image's captions each text row is (index into Sample.captions)."""
    view: tuple[int, ...] = ()
    """Which cached view of its image each row is (empty: the cache has one view)."""
    mirrored: tuple[bool, ...] = ()
    """Whether each row is the mirrored image with its mirrored caption (empty: flips off)."""

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        if self.latents.shape[0] != n or self.text.shape[0] != n or len(self.caption_index) != n:
            raise ValueError(f"batch parts disagree on size: latents {tuple(self.latents.shape)}, "
                             f"text {tuple(self.text.shape)}, {n} ids, {len(self.caption_index)} caption indices")


class CachedLatents:
    """The cached samples of one dataset, in dataset order."""

    def __init__(self, folder: Path, manifest: dict, latents: dict, text_handles: list, layout: dict) -> None:
        self.folder = folder
        self.manifest = manifest
        self.image_ids: list[str] = manifest["image_ids"]
        self.paths: list[str] = manifest["paths"]
        self._latents = latents   # mean, std, may_flip, [flip_mean, flip_std]: all samples, in memory
        self._text = text_handles  # per shard: a safetensors slice of 'text' (and of 'mirror_text')
        self._shard = layout["shard"]    # sample -> shard index
        self._offset = layout["offset"]  # sample -> first row of its captions in its shard's text
        self._count = layout["count"]    # sample -> number of captions

    @classmethod
    def load(cls, folder: str | Path) -> CachedLatents:
        """Open a complete cache folder; DataError naming the image if any cached latent is not finite."""
        import torch
        from safetensors import safe_open

        folder = Path(folder)
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{folder} is not a complete latent cache (manifest.json: {err})") from None
        parts: dict[str, list] = {}
        text_handles, shard_of, offsets, counts = [], [], [], []
        for index, shard in enumerate(manifest["shards"]):
            handle = safe_open(str(folder / shard["file"]), framework="pt")
            for name in handle.keys():
                if name not in ("text", "mirror_text"):
                    parts.setdefault(name, []).append(handle.get_tensor(name))
            text_handles.append({name: handle.get_slice(name) for name in ("text", "mirror_text")
                                 if name in handle.keys()})
            bounds = parts["text_offsets"][-1]
            offsets.append(bounds[:-1])
            counts.append(bounds[1:] - bounds[:-1])
            shard_of.append(torch.full((shard["samples"],), index, dtype=torch.int64))
        latents = {k: torch.cat(v) for k, v in parts.items() if k != "text_offsets"}
        layout = {"shard": torch.cat(shard_of), "offset": torch.cat(offsets), "count": torch.cat(counts)}
        cache = cls(folder, manifest, latents, text_handles, layout)
        cache._check_finite()
        return cache

    def _check_finite(self) -> None:
        import torch

        for name in ("mean", "std", "flip_mean", "flip_std"):
            if name in self._latents:
                finite = torch.isfinite(self._latents[name].flatten(1)).all(1)
                if not finite.all():
                    self._raise_non_finite(int((~finite).nonzero()[0]), name)

    def _raise_non_finite(self, index: int, what: str) -> None:
        raise DataError(f"the latent cache {self.folder} holds non-finite {what} values for image "
                        f"{self.paths[index]} (image id {self.image_ids[index]}); delete the cache "
                        "folder to rebuild it")

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def has_flip_variants(self) -> bool:
        return "flip_mean" in self._latents

    @property
    def views(self) -> int:
        return int(self._latents["mean"].shape[1])

    def batch(self, indices, generator, *, sample: bool = True, flip_p: float = 0.0) -> CachedBatch:
        """Rows `indices` with one caption (and one view) each drawn from `generator`.

        sample: a posterior sample (mean + std * noise) instead of the mean. flip_p: with flip variants
        cached, the mirrored latents and mirrored caption with this probability (images that may mirror).
        Random draws, in order: caption choice, view choice (when views > 1), flip choice (when flip_p > 0),
        noise (when sample).
        """
        import torch

        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= len(self):
            raise UsageError(f"batch indices must be in [0, {len(self)}), got {idx.tolist()[:8]}")
        counts = self._count[idx]
        choice = (torch.rand(len(idx), generator=generator) * counts).long().clamp_max(counts - 1)
        view = torch.zeros(len(idx), dtype=torch.int64)
        if self.views > 1:
            view = (torch.rand(len(idx), generator=generator) * self.views).long().clamp_max(self.views - 1)
        mean, std = self._latents["mean"][idx, view], self._latents["std"][idx, view]
        mirrored = torch.zeros(len(idx), dtype=torch.bool)
        if flip_p > 0:
            if not self.has_flip_variants:
                raise UsageError("flip_p > 0 needs a cache built with CacheSpec(flip_variants=True)")
            mirrored = (torch.rand(len(idx), generator=generator) < flip_p) & self._latents["may_flip"][idx]
            pick = mirrored.view(-1, *[1] * (mean.ndim - 1))
            mean = torch.where(pick, self._latents["flip_mean"][idx, view], mean)
            std = torch.where(pick, self._latents["flip_std"][idx, view], std)
        latents = mean.float()
        if sample:
            latents = latents + std.float() * torch.randn(mean.shape, generator=generator)
        text = self._text_rows(idx, choice, mirrored)
        return CachedBatch(latents, text, tuple(self.image_ids[i] for i in idx.tolist()),
                           tuple(choice.tolist()), tuple(view.tolist()) if self.views > 1 else (),
                           tuple(mirrored.tolist()) if flip_p > 0 else ())

    def _text_rows(self, idx, choice, mirrored):
        import torch

        rows = []
        for i, j, m in zip(idx.tolist(), choice.tolist(), mirrored.tolist()):
            row = int(self._offset[i]) + j
            rows.append(self._text[int(self._shard[i])]["mirror_text" if m else "text"][row:row + 1])
        text = torch.cat(rows).float()
        # NaN and inf survive a row sum, which is ~20x cheaper than isfinite on every element; a finite
        # row can only overflow it with values near 1e34, far beyond any encoder's states.
        finite = torch.isfinite(text.flatten(1).sum(1))
        if not finite.all():
            self._raise_non_finite(idx.tolist()[int((~finite).nonzero()[0])], "text-state")
        return text

    def iterate(self, batch_size: int, generator, *, shuffle: bool = True, drop_last: bool = False,
                sample: bool = True, flip_p: float = 0.0):
        """One epoch of CachedBatch (a permutation drawn from `generator` when shuffle)."""
        import torch

        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        for start in range(0, stop, batch_size):
            yield self.batch(order[start:start + batch_size], generator, sample=sample, flip_p=flip_p)

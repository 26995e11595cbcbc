"""Caching VAE latents and text-encoder states in safetensors shards, so training never decodes images.

    cache = build_cache(dataset, "cache/", encode_images=vae_fn, encode_text=text_fn,
                        spec=CacheSpec(image_encoder="my-vae@sha256:..", text_encoder="minilm", size=64))
    for batch in cache.iterate(64, generator):        # see cache_loader.py
        batch.latents, batch.text, batch.image_ids

The cache never imports a model: `encode_images(x: [B, 3, H, W] in [-1, 1]) -> (mean, std)` is the
posterior of the image encoder (both kept, so training can still sample latents) and
`encode_text(list[str]) -> Tensor [N, ...]` returns one state per caption. The folder name is a hash of
(encoder identities, preprocessing, every image's path/size/mtime, every caption): when any of them
changes, a new cache is built beside the old one, which is then removed. A non-finite value stops the
build (or the load) with the name of the image it came from.

Augmentation (the UNet trainer's `augment` section): `CacheSpec(views=V)` stores V views of each image
made by `augment_view` (random resized crops, colour jitter), and `flip_variants=True` also the encoding
of each mirrored view plus the text states of the mirrored captions ('left' <-> 'right'). Mirroring is
encoded, not applied to latents: a VAE is not mirror-equivariant (benchmarks/flip_latents.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from ldmkit.data.augment import may_mirror, mirror_caption
from ldmkit.errors import DataError, UsageError

CACHE_FORMAT = "ldmkit-latent-cache"
CACHE_VERSION = 2  # 2: latents per view [N, V, C, h, w]; mirrored captions' states
MANIFEST = "manifest.json"
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class CacheSpec:
    """Everything besides the dataset that decides what the cached values are."""

    image_encoder: str
    """Identity of the image encoder (e.g. model folder + weights hash); a new value rebuilds the cache."""
    text_encoder: str
    """Identity of the text encoder, likewise."""
    size: int = 64
    """Side of the square images given to the image encoder, in pixels."""
    flip_variants: bool = False
    """Also cache latents of each mirrored view and the states of the mirrored captions ('left' <-> 'right')."""
    views: int = 1
    """Views cached per image: view v is `augment_view(pixels, focus, sample, v)` (1: the image itself)."""
    augment_id: str = ""
    """Identity of the view augmentation (its settings and seed); a new value rebuilds the cache."""
    latent_dtype: str = "float32"
    """Storage dtype of latent mean and std."""
    text_dtype: str = "float16"
    """Storage dtype of text states (float16 halves the largest part of the cache)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.image_encoder, str) and self.image_encoder and
                isinstance(self.text_encoder, str) and self.text_encoder):
            raise UsageError("CacheSpec needs non-empty image_encoder and text_encoder identities")
        if not (isinstance(self.views, int) and 1 <= self.views <= 64):
            raise UsageError(f"cache views must be an int in 1..64, got {self.views!r}")
        if not (isinstance(self.size, int) and self.size >= 8):
            raise UsageError(f"cache image size must be an int >= 8, got {self.size!r}")
        for name in ("latent_dtype", "text_dtype"):
            if getattr(self, name) not in DTYPES:
                raise UsageError(f"{name} must be one of {DTYPES}, got {getattr(self, name)!r}")


def default_preprocess(img, size: int):
    """ldmkit.data.trim.standardize when available, else a plain centre crop + resize."""
    try:
        from ldmkit.data.trim import standardize
    except ImportError:
        return centre_crop_resize(img, size)
    return standardize(img, size)


def preprocess_for(trim) -> object:
    """The (img, size) -> (img, record) preprocess of a recipe's `data.trim` section (TrimSection or None)."""
    from ldmkit.data.trim import Standardizer

    if trim is None:
        return Standardizer()
    return Standardizer(policy=trim.fit, focus=trim.focus, trim=trim.trim)


def standardized_pixels(dataset, size: int, preprocess=None):
    """([N, 3, size, size] pixels in [-1, 1], [N, 2] focal points as (x, y) fractions) of every image."""
    import torch

    from ldmkit.data.images import to_pixels
    from ldmkit.data.trim import TrimRecord, focus_fraction

    preprocess = preprocess or default_preprocess
    pixels, focus = [], []
    for i in range(len(dataset)):
        img, record = preprocess(dataset.image(i), size)
        pixels.append(to_pixels(img))  # (1, 3, size, size)
        focus.append(focus_fraction(record) if isinstance(record, TrimRecord) else (0.5, 0.5))
    return torch.cat(pixels), torch.tensor(focus, dtype=torch.float32)  # (N, 3, size, size), (N, 2)


def centre_crop_resize(img, size: int):
    """The largest centred square, resized to size x size with LANCZOS; returns (image, crop box)."""
    from PIL import Image

    width, height = img.size
    side = min(width, height)
    box = ((width - side) // 2, (height - side) // 2, (width - side) // 2 + side, (height - side) // 2 + side)
    return img.resize((size, size), Image.LANCZOS, box=box), box


def function_id(fn) -> str:
    if isinstance(getattr(fn, "cache_id", None), str):
        return fn.cache_id  # e.g. a trim.Standardizer: its policy and algorithm version
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def cache_key(dataset, spec: CacheSpec, preprocess_id: str) -> str:
    """SHA-256 of the spec, the preprocessing, and each image's id, path, size, mtime and captions."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, "version": CACHE_VERSION, "spec": asdict(spec),
                         "preprocess": preprocess_id}, sort_keys=True).encode())
    for sample in dataset.samples:
        st = sample.path.stat()
        h.update(json.dumps([sample.image_id, str(sample.path.resolve()), st.st_size, st.st_mtime_ns,
                             list(sample.captions)], ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def build_cache(dataset, cache_dir: str | Path, *, encode_images, encode_text, spec: CacheSpec,
                preprocess=None, augment_view=None, batch_size: int = 32, shard_size: int = 4096, workers: int = 2,
                progress=None):
    """The cache for (dataset, encoders, spec) under cache_dir: reused when its key matches, else built.

    augment_view(pixels [3, H, W], focus (x, y) fractions, sample, view) -> pixels makes view `view` of a
    standardized image; needed when spec.views > 1 (it must be deterministic: the cache is reused).
    progress(images) is called after each encoded batch with its image count (a progress bar's update), and
    only when the cache is built.

    Returns a `CachedLatents` (cache_loader.py). Other caches in cache_dir (folders holding an ldmkit
    manifest) are stale by definition and removed once the new one is complete.
    """
    import torch

    from ldmkit.data.cache_loader import CachedLatents

    if batch_size < 1 or shard_size < 1:
        raise UsageError(f"batch_size and shard_size must be >= 1, got {batch_size}, {shard_size}")
    if len(dataset) == 0:
        raise DataError("cannot cache an empty dataset")
    if spec.views > 1 and augment_view is None:
        raise UsageError(f"CacheSpec(views={spec.views}) needs an augment_view function")
    preprocess = preprocess or default_preprocess
    key = cache_key(dataset, spec, function_id(preprocess))
    cache_dir = Path(cache_dir)
    folder = cache_dir / key[:24]
    if _manifest_key(folder) == key:
        return CachedLatents.load(folder)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f".{key[:24]}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        with torch.no_grad():
            shards, shapes = _write_shards(dataset, partial, (encode_images, encode_text, augment_view), spec,
                                           preprocess, batch_size, shard_size, workers, progress)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # only ever our own half-written folder
        raise
    manifest = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "spec": asdict(spec),
                "preprocess": function_id(preprocess), "shards": shards, **shapes,
                "image_ids": [s.image_id for s in dataset.samples],
                "paths": [str(s.path) for s in dataset.samples],
                "captions": [len(s.captions) for s in dataset.samples]}
    (partial / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    if folder.exists():  # an unreadable or interrupted cache under the same key
        shutil.rmtree(folder)
    os.replace(partial, folder)
    _remove_stale(cache_dir, keep=folder)
    return CachedLatents.load(folder)


def _manifest_key(folder: Path) -> str | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest.get("key") if manifest.get("format") == CACHE_FORMAT else None


def _remove_stale(cache_dir: Path, keep: Path) -> None:
    """Delete other complete ldmkit caches in cache_dir (never anything without our manifest)."""
    for child in cache_dir.iterdir():
        if child != keep and child.is_dir() and _manifest_key(child) is not None:
            shutil.rmtree(child)


def _write_shards(dataset, folder: Path, encoders, spec: CacheSpec, preprocess,
                  batch_size: int, shard_size: int, workers: int, progress=None) -> tuple[list[dict], dict]:
    import torch
    from safetensors.torch import save_file

    encode_images, encode_text, augment_view = encoders

    samples = dataset.samples
    shards, shapes = [], {}
    pool = ThreadPoolExecutor(max(1, workers))
    try:
        for start in range(0, len(samples), shard_size):
            part = samples[start:start + shard_size]
            tensors = {k: [] for k in ("mean", "std", "flip_mean", "flip_std", "text", "mirror_text")}
            for b in range(0, len(part), batch_size):
                batch = part[b:b + batch_size]
                loaded = list(pool.map(lambda s: image_and_focus(s, spec.size, preprocess), batch))
                views = []
                for v in range(spec.views):  # [B, 3, H, W] per view
                    views.append(torch.stack([px if augment_view is None else augment_view(px, focus, s, v)
                                              for (px, focus), s in zip(loaded, batch)]))
                _encode_batch(batch, views, encode_images, encode_text, spec, tensors)
                if progress is not None:
                    progress(len(batch))
            name = f"shard-{len(shards):05d}.safetensors"
            data = _shard_tensors(part, tensors, spec)
            save_file(data, str(folder / name), metadata={"format": CACHE_FORMAT})
            shards.append({"file": name, "samples": len(part)})
            shapes = {"latent_shape": list(data["mean"].shape[2:]), "text_shape": list(data["text"].shape[1:])}
    finally:
        pool.shutdown()
    return shards, shapes


def image_tensor(sample, size: int, preprocess=None):
    """[3, size, size] float tensor in [-1, 1] of a sample's image, preprocessed (default_preprocess)."""
    return image_and_focus(sample, size, preprocess)[0]


def image_and_focus(sample, size: int, preprocess=None):
    """(image_tensor, the trimming focal point as (x, y) fractions of it; the centre without a TrimRecord)."""
    from ldmkit.data.images import BadImage, load_rgb, to_pixels
    from ldmkit.data.trim import TrimRecord, focus_fraction

    try:
        img, _ = load_rgb(sample.path)
    except BadImage as bad:
        raise DataError(f"{sample.path} became unreadable after the dataset was opened: {bad}") from None
    img, record = (preprocess or default_preprocess)(img, size)
    if img.size != (size, size):
        raise DataError(f"preprocess returned a {img.size[0]}x{img.size[1]} image for {sample.path}, "
                        f"expected {size}x{size}")
    focus = focus_fraction(record) if isinstance(record, TrimRecord) else (0.5, 0.5)
    return to_pixels(img)[0], focus  # (3, size, size)


def _encode_batch(batch, views, encode_images, encode_text, spec: CacheSpec, tensors: dict) -> None:
    import torch

    for key, mirror in (("", False), ("flip_", True)) if spec.flip_variants else (("", False),):
        means, stds = [], []
        for pixels in views:
            mean, std = encode_images(torch.flip(pixels, dims=(-1,)) if mirror else pixels)
            _check_latents(batch, mean, std, " (mirrored)" if mirror else "")
            means.append(mean.detach().cpu())
            stds.append(std.detach().cpu())
        tensors[key + "mean"].append(torch.stack(means, dim=1))  # [B, V, C, h, w]
        tensors[key + "std"].append(torch.stack(stds, dim=1))
    captions = [c for s in batch for c in s.captions]
    text = _encode_captions(batch, captions, encode_text)
    tensors["text"].append(text)
    if spec.flip_variants:  # the states of the mirrored captions; unchanged captions reuse theirs
        mirrored = [mirror_caption(c) for c in captions]
        changed = [i for i, (a, b) in enumerate(zip(captions, mirrored)) if a != b]
        mirror_text = text.clone()
        if changed:
            mirror_text[changed] = _encode_captions(batch, [mirrored[i] for i in changed], encode_text,
                                                    owners=[[s for s in batch for _ in s.captions][i] for i in changed])
        tensors["mirror_text"].append(mirror_text)


def _encode_captions(batch, captions, encode_text, owners=None):
    import torch

    text = encode_text(captions).detach().cpu()
    if text.shape[0] != len(captions):
        raise DataError(f"encode_text returned {text.shape[0]} states for {len(captions)} captions")
    bad = (~torch.isfinite(text.reshape(len(captions), -1))).any(dim=1)
    if bad.any():
        i = int(bad.nonzero()[0])
        owner = (owners or [s for s in batch for _ in s.captions])[i]
        raise DataError(f"the text encoder gave non-finite values for caption {captions[i]!r} of "
                        f"{owner.path} (image id {owner.image_id})")
    return text


def _check_latents(batch, mean, std, what: str) -> None:
    import torch

    if mean.shape[0] != len(batch) or std.shape != mean.shape:
        raise DataError(f"encode_images must return (mean, std) of equal shape [B, ...] with B={len(batch)}, "
                        f"got {tuple(mean.shape)} and {tuple(std.shape)}")
    bad = ~(torch.isfinite(mean.flatten(1)).all(1) & torch.isfinite(std.flatten(1)).all(1))
    if bad.any():
        sample = batch[int(bad.nonzero()[0])]
        raise DataError(f"the image encoder gave non-finite latents{what} for {sample.path} "
                        f"(image id {sample.image_id})")


def _shard_tensors(part, tensors: dict, spec: CacheSpec) -> dict:
    import torch

    latent_dtype, text_dtype = getattr(torch, spec.latent_dtype), getattr(torch, spec.text_dtype)
    counts = torch.tensor([len(s.captions) for s in part], dtype=torch.int64)
    data = {
        "mean": torch.cat(tensors["mean"]).to(latent_dtype).contiguous(),
        "std": torch.cat(tensors["std"]).to(latent_dtype).contiguous(),
        "text": torch.cat(tensors["text"]).to(text_dtype).contiguous(),
        "text_offsets": torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]),
        "may_flip": torch.tensor([may_mirror(s.captions, s.labels) for s in part], dtype=torch.bool),
    }
    if spec.flip_variants:
        data["flip_mean"] = torch.cat(tensors["flip_mean"]).to(latent_dtype).contiguous()
        data["flip_std"] = torch.cat(tensors["flip_std"]).to(latent_dtype).contiguous()
        data["mirror_text"] = torch.cat(tensors["mirror_text"]).to(text_dtype).contiguous()
    return data

"""Latent / text-state cache: values equal the encoders', rebuilt when the key changes, non-finite values
named by image, and a loader whose random draws replay from the generator."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ldmkit.data.cache import CacheSpec, build_cache, centre_crop_resize, image_tensor
from ldmkit.data.cache_loader import CachedLatents
from ldmkit.data.dataset import CaptionDataset
from ldmkit.errors import DataError

CAPTIONS = {0: ["a red square", "a square that is red"], 1: ["a green blob on the left"],
            2: ["a blue field", "blue", "the colour blue"], 3: ["a grey wall"], 4: ["noise"]}


class Encoders:
    """Deterministic stand-ins: latents are 4x4-pooled pixels (+ a 4th channel), text encodes the caption."""

    def __init__(self, nan_for_first_pixel=None):
        self.image_calls = 0
        self.text_calls = 0
        self.nan_for_first_pixel = nan_for_first_pixel

    def images(self, x):
        self.image_calls += 1
        mean = torch.nn.functional.avg_pool2d(x, 4)
        mean = torch.cat([mean, mean[:, :1] * 0.5], dim=1)
        std = 0.1 + 0.01 * mean.abs()
        if self.nan_for_first_pixel is not None:
            hit = (x[:, 0, 0, 0] - self.nan_for_first_pixel).abs() < 1e-3
            mean[hit] = float("nan")
        return mean, std

    def text(self, captions):
        self.text_calls += 1
        return torch.stack([caption_state(c) for c in captions])


def caption_state(caption):
    codes = torch.tensor([ord(ch) for ch in caption[:6].ljust(6)], dtype=torch.float32)
    return torch.stack([codes, codes * 0 + len(caption)])  # [2, 6]


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, captions in CAPTIONS.items():
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": captions})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return CaptionDataset.open(root)


def build(dataset, cache_dir, encoders, **spec):
    spec = CacheSpec(**{"image_encoder": "pool4", "text_encoder": "chars", "size": 16, **spec})
    return build_cache(dataset, cache_dir, encode_images=encoders.images, encode_text=encoders.text,
                       spec=spec, preprocess=centre_crop_resize, batch_size=2, shard_size=3)


def test_values_equal_the_encoders_and_cache_is_reused(dataset, tmp_path):
    enc = Encoders()
    cache = build(dataset, tmp_path / "cache", enc)
    assert len(cache) == len(dataset) and cache.image_ids == [s.image_id for s in dataset]
    assert len(cache.manifest["shards"]) == 2
    reference = Encoders()
    pixels = torch.stack([image_tensor(s, 16, centre_crop_resize) for s in dataset])
    mean, _ = reference.images(pixels)
    batch = cache.batch(range(len(cache)), torch.Generator().manual_seed(0), sample=False)
    torch.testing.assert_close(batch.latents, mean)
    for sample, row, k in zip(dataset, batch.text, batch.caption_index):
        torch.testing.assert_close(row, caption_state(sample.captions[k]))
    calls = (enc.image_calls, enc.text_calls)
    again = build(dataset, tmp_path / "cache", enc)
    assert again.folder == cache.folder and (enc.image_calls, enc.text_calls) == calls


def test_progress_counts_every_image_once_and_is_silent_on_reuse(dataset, tmp_path):
    def run():
        seen = []
        build_cache(dataset, tmp_path / "cache", encode_images=Encoders().images, encode_text=Encoders().text,
                    spec=CacheSpec(image_encoder="pool4", text_encoder="chars", size=16),
                    preprocess=centre_crop_resize, batch_size=2, shard_size=3, progress=seen.append)
        return seen

    assert run() == [2, 1, 2] and len(dataset) == 5  # batches of 2 within shards of 3
    assert run() == []


def test_key_changes_rebuild_and_remove_only_stale_caches(dataset, tmp_path):
    enc = Encoders()
    cache_dir = tmp_path / "cache"
    first = build(dataset, cache_dir, enc).folder
    (cache_dir / "user_notes").mkdir()  # not ours: must survive
    folders = {first}
    for change in ("encoder", "size", "mtime", "caption"):
        if change == "mtime":
            path = dataset[0].path
            os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
        if change == "caption":
            rows = [json.loads(line) for line in (dataset.root / "metadata.jsonl").read_text().splitlines()]
            rows[1]["text"] = ["a green blob"]
            (dataset.root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
            dataset = CaptionDataset.open(dataset.root)
        calls = enc.image_calls
        spec = {"encoder": {"image_encoder": "pool4-v2"}, "size": {"size": 8}}.get(change, {})
        folder = build(dataset, cache_dir, enc, **spec).folder
        assert enc.image_calls > calls, change
        assert folder not in folders, change
        folders.add(folder)
        assert sorted(p.name for p in cache_dir.iterdir()) == sorted([folder.name, "user_notes"])


def test_non_finite_encoder_output_names_the_image(dataset, tmp_path):
    target = dataset[2]
    first_pixel = float(image_tensor(target, 16, centre_crop_resize)[0, 0, 0])
    with pytest.raises(DataError, match=str(target.path)):
        build(dataset, tmp_path / "cache", Encoders(nan_for_first_pixel=first_pixel))
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-built is left behind


def test_non_finite_cached_values_raise_on_load_and_on_use(dataset, tmp_path):
    cache = build(dataset, tmp_path / "cache", Encoders())
    shard = cache.folder / cache.manifest["shards"][1]["file"]  # samples 3 and 4
    tensors = load_file(shard)
    tensors["std"][1, 0, 0, 0] = float("inf")
    save_file(tensors, shard)
    with pytest.raises(DataError, match=f"{dataset[4].path}.*image id {dataset[4].image_id}"):
        CachedLatents.load(cache.folder)
    tensors["std"][1, 0, 0, 0] = 0.1
    tensors["text"][0, 0, 0] = float("nan")  # sample 3 has one caption: row 0
    save_file(tensors, shard)
    loaded = CachedLatents.load(cache.folder)
    loaded.batch([0, 1], torch.Generator())
    with pytest.raises(DataError, match=str(dataset[3].path)):
        loaded.batch([0, 3], torch.Generator())


def test_loader_draws_replay_from_the_generator(dataset, tmp_path):
    cache = build(dataset, tmp_path / "cache", Encoders())
    everything = cache.batch(range(len(cache)), torch.Generator(), sample=False)
    mean = everything.latents
    std = load_file(cache.folder / cache.manifest["shards"][0]["file"])["std"][:, 0]  # [N, views, ...]
    idx = [2, 0, 1]
    batch = cache.batch(idx, torch.Generator().manual_seed(5), sample=True)
    replay = torch.Generator().manual_seed(5)
    counts = torch.tensor([len(dataset[i].captions) for i in idx])
    choice = (torch.rand(3, generator=replay) * counts).long()
    noise = torch.randn(mean[idx].shape, generator=replay)
    assert list(batch.caption_index) == choice.tolist()
    torch.testing.assert_close(batch.latents, mean[idx] + std[idx] * noise)
    assert batch.image_ids == tuple(dataset[i].image_id for i in idx)
    g = torch.Generator().manual_seed(0)
    drawn = {cache.batch([2], g).caption_index[0] for _ in range(60)}
    assert drawn == {0, 1, 2}  # every caption of an image gets used
    epoch = [i for b in cache.iterate(2, torch.Generator().manual_seed(1)) for i in b.image_ids]
    assert sorted(epoch) == sorted(cache.image_ids)


def test_flip_variants_mirror_latents_and_captions(dataset, tmp_path):
    """Mirrored rows are the encoding of the mirrored image (not a mirrored latent) with the mirrored caption."""
    enc = Encoders()
    cache = build(dataset, tmp_path / "cache", enc, flip_variants=True)
    plain = cache.batch(range(len(cache)), torch.Generator(), sample=False)
    pixels = torch.stack([image_tensor(s, 16, centre_crop_resize) for s in dataset])
    mirrored_mean, _ = Encoders().images(torch.flip(pixels, dims=(-1,)))
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        batch = cache.batch(range(len(cache)), g, sample=False, flip_p=0.5)
        for i, (a, m) in enumerate(zip(batch.latents, batch.mirrored)):
            sample = dataset[i]
            caption = sample.captions[batch.caption_index[i]]
            if m:
                torch.testing.assert_close(a, mirrored_mean[i])
                swapped = caption.replace("left", "right")
                torch.testing.assert_close(batch.text[i], caption_state(swapped))
                seen.add(sample.image_id)
            else:
                torch.testing.assert_close(a, plain.latents[i])
                torch.testing.assert_close(batch.text[i], caption_state(caption))
    assert seen == {s.image_id for s in dataset}  # 'on the left' mirrors too: its caption says 'on the right'
    never = cache.batch(range(len(cache)), torch.Generator(), sample=False, flip_p=0.0)
    assert never.mirrored == () and torch.equal(never.latents, plain.latents)
    with pytest.raises(Exception, match="flip_variants"):
        build(dataset, tmp_path / "c2", Encoders()).batch([0], torch.Generator(), flip_p=0.5)


def test_views_are_cached_and_drawn(dataset, tmp_path):
    def shift(pixels, focus, sample, view):
        return pixels + 0.25 * view

    cache = build_cache(dataset, tmp_path / "v", encode_images=Encoders().images, encode_text=Encoders().text,
                        spec=CacheSpec(image_encoder="pool4", text_encoder="chars", size=16, views=3, augment_id="shift"),
                        preprocess=centre_crop_resize, augment_view=shift, batch_size=2, shard_size=3)
    assert cache.views == 3
    pixels = torch.stack([image_tensor(s, 16, centre_crop_resize) for s in dataset])
    batch = cache.batch(range(len(cache)), torch.Generator().manual_seed(2), sample=False)
    for i, v in enumerate(batch.view):
        torch.testing.assert_close(batch.latents[i], Encoders().images(pixels[i:i + 1] + 0.25 * v)[0][0])
    g = torch.Generator().manual_seed(0)
    assert {v for _ in range(20) for v in cache.batch([0], g).view} == {0, 1, 2}
    with pytest.raises(Exception, match="augment_view"):
        build(dataset, tmp_path / "v2", Encoders(), views=2)

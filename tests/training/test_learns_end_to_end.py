"""The whole system learns: VAE + text-conditional UNet trained on two captioned images, then generation.

A model that memorises "a red square" and "a blue circle" must, for each prompt, generate latents
closer to that prompt's own training latent than to the other one (CFG 3, several seeds). This catches
what unit tests cannot: a trainer/pipeline mismatch in timesteps, scaling, conditioning or EMA.
"""

import glob
import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from ldmkit.cli import main

pytestmark = pytest.mark.slow
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def two_image_dataset(root):
    (root / "images").mkdir(parents=True)
    rows = []
    for name, caption, colour, draw in (("a.png", "a red square", (220, 30, 30), "rectangle"),
                                        ("b.png", "a blue circle", (30, 30, 220), "ellipse")):
        image = Image.new("RGB", (32, 32), "white")
        getattr(ImageDraw.Draw(image), draw)([8, 8, 24, 24], fill=colour)
        image.save(root / "images" / name)
        rows.append({"file_name": f"images/{name}", "text": [caption]})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_two_image_memorisation_follows_the_prompt(tmp_path):
    from ldmkit.data.cache_loader import CachedLatents
    from ldmkit.pipeline import Pipeline

    torch.set_num_threads(2)
    data = two_image_dataset(tmp_path / "data")
    common = ["--set", f"data.path={data}", "--set", "data.builtin=null", "--set", "data.val_fraction=0.0",
              "--set", "train.validate_every=0"]
    assert main(["train", "vae", "--config", str(CONFIGS / "vae-shapes.yaml"), "--out", str(tmp_path / "vae"), *common,
                 "--set", "train.steps=300", "--set", "train.batch_size=4", "--set", "train.checkpoint_every=300"]) == 0
    assert main(["train", "unet", "--config", str(CONFIGS / "tiny.yaml"), "--out", str(tmp_path / "unet"), *common,
                 "--set", f"model.vae_from={tmp_path / 'vae' / 'final'}", "--set", "train.steps=1000",
                 "--set", "train.checkpoint_every=1000", "--set", "unet.caption_dropout=0.2"]) == 0

    cache = CachedLatents.load(next(p for p in glob.glob(str(tmp_path / "unet" / "cache" / "*"))
                                    if not p.rsplit("/", 1)[-1].startswith(".")))
    batch = cache.batch([0, 1], torch.Generator().manual_seed(0), sample=False)
    pipe = Pipeline.from_pretrained(tmp_path / "unet" / "final")
    captions = {"images/a.png": "a red square", "images/b.png": "a blue circle"}
    own = {captions[i]: z * pipe.vae.config.scaling_factor for i, z in zip(batch.image_ids, batch.latents)}
    hits = 0
    for prompt in own:
        for seed in range(4):
            z = pipe(prompt, steps=25, guidance=3.0, seed=seed).latents[0]
            dist = {k: float((z - v).pow(2).mean()) for k, v in own.items()}
            hits += min(dist, key=dist.get) == prompt
    assert hits >= 7, f"only {hits}/8 samples are closest to their own prompt's training image"

"""`ldmkit train clip`: a contrastive dual encoder (ldmkit.models.dual_encoder) for scoring and reranking.

    result = train_clip(load_recipe("configs/clip-shapes.yaml", ClipRecipe), "runs/clip")

Symmetric InfoNCE (Radford et al. 2021) over a batch of images, each with one of its captions drawn at
random, with a learned temperature clamped at 1/100. Retrieval on the held-out split is measured before
and after training with every caption of every image: image->text is a hit when ANY caption of the image
is among the top k, text->image when the caption's own image is. RUN_DIR/final is a model folder with clip/.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ldmkit.models.dual_encoder import DualEncoder, DualEncoderConfig, save_dual_encoder
from ldmkit.training.model_start import start_components, write_model_folder
from ldmkit.training.recipes import ClipRecipe
from ldmkit.errors import DataError
from ldmkit.training.run_data import load_pixels, open_dataset, split
from ldmkit.training.vae import random_crops

RECALL_AT = (1, 5)
REPORT_FILE = "clip_report.json"


def info_nce(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of the scaled cosine-similarity matrix; row i's positive is column i."""
    logits = scale * image_emb @ text_emb.T
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def retrieval_recall(image_emb: torch.Tensor, text_emb: torch.Tensor, owner: torch.Tensor,
                     ks: tuple[int, ...] = RECALL_AT) -> dict[str, float]:
    """Recall@k both ways with several captions per image; owner[j] = index of caption j's image.

    Also reports the chance levels of a random ranking for the same layout.
    """
    sim = image_emb.float() @ text_emb.float().T  # [N images, M captions]
    n, m = sim.shape
    out: dict[str, float] = {}
    counts = torch.bincount(owner, minlength=n).float()
    for k in ks:
        top_t = sim.topk(min(k, m), dim=1).indices  # captions ranked for each image
        out[f"i2t_r@{k}"] = float((owner[top_t] == torch.arange(n)[:, None]).any(1).float().mean())
        top_i = sim.T.topk(min(k, n), dim=1).indices  # images ranked for each caption
        out[f"t2i_r@{k}"] = float((top_i == owner[:, None]).any(1).float().mean())
        # a random ranking: P(any of c_i own captions in k of m draws) averaged; k/n for text->image
        miss = torch.ones(n)
        for draw in range(min(k, m)):
            miss = miss * (1 - counts / (m - draw)).clamp_min(0)
        out[f"i2t_r@{k}_chance"] = float((1 - miss).mean())
        out[f"t2i_r@{k}_chance"] = min(k, n) / n
    return out


class ClipTask:
    """TrainTask of the dual encoder: modules {"clip"}."""

    def __init__(self, recipe: ClipRecipe, run_dir: str | Path) -> None:
        self.recipe, self.run_dir = recipe, Path(run_dir)
        cfg = recipe.clip
        self.components = start_components(recipe.model, recipe.data.image_size)
        text = self.components.text_encoder
        if cfg.tune_text:  # tune a copy: the model folder's own text encoder (the UNet's conditioning) stays as is
            import copy

            from ldmkit.models.text import TextEncoder

            text = TextEncoder(copy.deepcopy(text.model), text.tokenizer, text.kind)
        dataset = open_dataset(recipe.data, self.run_dir)
        self.train, self.held_out = split(dataset, recipe.data, "train"), split(dataset, recipe.data, cfg.eval_split)
        train = self.train
        if not len(train):
            raise DataError(f"the train split of {dataset.root} is empty; lower data.val_fraction/test_fraction")
        if cfg.init_from is not None:  # fine-tune: the earlier dual encoder, text tower included
            from ldmkit.models.dual_encoder import load_dual_encoder

            self.model = load_dual_encoder(cfg.init_from).train()
            self.model.requires_grad_(True)
            text = self.model.text_encoder
            tune_text = self.model.config.text_tuned
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(recipe.model.seed + 4)
                self.model = DualEncoder(DualEncoderConfig(
                    embed_dim=cfg.embed_dim, image_channels=tuple(cfg.image_channels), text_hidden=text.hidden_size,
                    init_temperature=cfg.init_temperature, text_tuned=cfg.tune_text), text)
            tune_text = cfg.tune_text
        text.model.requires_grad_(tune_text)
        self.train_pixels = load_pixels(train, recipe.data.image_size)
        captions = [c for s in train.samples for c in s.captions]
        self.first_caption = torch.tensor([0] + [len(s.captions) for s in train.samples]).cumsum(0)[:-1]
        self.caption_count = torch.tensor([len(s.captions) for s in train.samples])
        self.input_ids, self.attention_mask = self.model.tokenize(captions)
        self.pooled = None
        if not tune_text:  # frozen tower: pool every caption once
            with torch.no_grad():
                self.pooled = torch.cat([self.model.pooled_text(i, m) for i, m in
                                         zip(self.input_ids.split(256), self.attention_mask.split(256))])
        self.before = self.evaluate(self.held_out) if len(self.held_out) else {}

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"clip": self.model}

    def num_samples(self) -> int:
        return len(self.train_pixels)

    def batch(self, ids: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(ids)
        counts = self.caption_count[idx]
        pick = self.first_caption[idx] + (torch.rand(len(ids), generator=generator) * counts).long().clamp_max(counts - 1)
        size = self.recipe.data.image_size
        pixels = random_crops(_pad(self.train_pixels[idx], size // 16), size, generator)
        out = {"pixels": pixels, "input_ids": self.input_ids[pick], "attention_mask": self.attention_mask[pick]}
        if self.pooled is not None:
            out["pooled"] = self.pooled[pick]
        return out

    def loss(self, modules, batch, generator) -> tuple[torch.Tensor, dict[str, float]]:
        image_emb, text_emb, scale = modules["clip"](batch["pixels"], batch["input_ids"], batch["attention_mask"],
                                                     batch.get("pooled"))
        return info_nce(image_emb, text_emb, scale), {"logit_scale": float(scale.detach())}

    def evaluate(self, dataset) -> dict[str, float]:
        """Retrieval recall of the current weights over every caption of every image of `dataset`."""
        model = self.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            pixels = load_pixels(dataset, self.recipe.data.image_size)
            images = torch.cat([model.encode_images(p) for p in pixels.split(64)])
            captions = [c for s in dataset.samples for c in s.captions]
            texts = torch.cat([model.encode_texts(captions[i:i + 256]) for i in range(0, len(captions), 256)])
        owner = torch.tensor([i for i, s in enumerate(dataset.samples) for _ in s.captions])
        model.train(was_training)
        return retrieval_recall(images.cpu(), texts.cpu(), owner)

    def validate(self, step: int, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        report = {"step": step, "held_out": self.evaluate(self.held_out) if len(self.held_out) else {}}
        (path / "retrieval.json").write_text(json.dumps(report, indent=2) + "\n")

    def save_final(self, path: Path) -> None:
        report = {"split": self.recipe.clip.eval_split, "images": len(self.held_out), "before": self.before,
                  "after": self.evaluate(self.held_out) if len(self.held_out) else {},
                  "train_after": self.evaluate(self.train)}
        write_model_folder(self.components, path, self.recipe, {"trainer": "clip", "clip_metrics": report})
        save_dual_encoder(self.model, path)
        (self.run_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")


def _pad(pixels: torch.Tensor, pad: int) -> torch.Tensor:
    """Replicate-pad each side by `pad` pixels, so random crops of the original size shift the image a little."""
    return F.pad(pixels, (pad, pad, pad, pad), mode="replicate") if pad > 0 else pixels


def train_clip(recipe: ClipRecipe, run_dir: str | Path):
    """Train (or resume) the dual encoder of `recipe` in `run_dir`; returns the loop's TrainResult."""
    from ldmkit.training.loop import train
    from ldmkit.training.processes import main_process_first
    from ldmkit.training.trainers import mark_run

    with main_process_first():  # process 0 builds the dataset (and cache) once; the others open it
        mark_run(Path(run_dir), "clip")
        task = ClipTask(recipe, run_dir)
    return train(task, recipe.train, run_dir, recipe=recipe)

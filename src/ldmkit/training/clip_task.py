"""`ldmkit train clip`: a contrastive dual encoder (ldmkit.models.dual_encoder) for scoring and reranking.

    result = train_task("clip", load_recipe("configs/clip-shapes.yaml", ClipRecipe), "runs/clip")  # .trainers

Symmetric InfoNCE (Radford et al. 2021) over a batch of images, each with one of its captions drawn at
random, with a learned temperature clamped at 1/100. Retrieval on the held-out split is measured before
and after training with every caption of every image: image->text is a hit when ANY caption of the image
is among the top k, text->image when the caption's own image is. RUN_DIR/final is a model folder with clip/.

`clip.init_from` may also name a transformers `CLIPModel` folder (e.g. OpenAI CLIP): both towers, both
projections and the temperature start from it (`clip.tune_text`, `clip.tune_image`, `clip.tune_last_layers`
choose what trains), "before" is that ORIGINAL model, and RUN_DIR/final/clip/ is the fine-tune in the same
CLIPModel layout (plus ldmkit.json), so transformers, `ldmkit eval --clip` and `ldmkit model compose` read it.
The before/after comparison (bootstrap intervals, relative change) is `ldmkit.training.clip_report`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ldmkit.data.augment import random_crops
from ldmkit.models.dual_encoder import DualEncoder, DualEncoderConfig, save_dual_encoder
from ldmkit.training.model_start import start_components, write_model_folder
from ldmkit.training.recipes import ClipRecipe
from ldmkit.errors import DataError, UsageError
from ldmkit.training.data_provenance import print_summary
from ldmkit.training.run_data import load_pixels, open_dataset, split

from ldmkit.training.clip_report import RECALL_AT, REPORT_FILE


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
    from ldmkit.training.clip_report import retrieval_hits

    n, m = len(image_emb), len(text_emb)
    out = {key: float(hits.mean()) for key, hits in retrieval_hits(image_emb, text_emb, owner, ks).items()}
    counts = torch.bincount(owner, minlength=n).float()
    for k in ks:
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
        dataset = open_dataset(recipe.data, self.run_dir, summary=False)
        self.dataset_meta = print_summary(dataset, recipe.data)  # ldmkit.json `dataset`: the data trained on
        self.train, self.held_out = split(dataset, recipe.data, "train"), split(dataset, recipe.data, cfg.eval_split)
        train = self.train
        if not len(train):
            raise DataError(f"the train split of {dataset.root} is empty; lower data.val_fraction/test_fraction")
        self.components = None  # the model folder written around clip/ (none for a CLIPModel start)
        if cfg.init_from is not None:  # fine-tune: the earlier dual encoder or a CLIPModel, both towers
            self.start = f"{cfg.init_from} as given (the model fine-tuned here)"
            self.model, tune_text = self._start_from(cfg.init_from)
        else:
            self.start = "the random initialisation"
            self.model, tune_text = self._fresh()
        self.train_pixels = load_pixels(train, recipe.data.image_size, recipe.data.trim)
        captions = [c for s in train.samples for c in s.captions]
        self.first_caption = torch.tensor([0] + [len(s.captions) for s in train.samples]).cumsum(0)[:-1]
        self.caption_count = torch.tensor([len(s.captions) for s in train.samples])
        self.input_ids, self.attention_mask = self.model.tokenize(captions)
        self.pooled = None
        if not tune_text:  # frozen tower: pool every caption once
            with torch.no_grad():
                self.pooled = torch.cat([self.model.pooled_text(i, m) for i, m in
                                         zip(self.input_ids.split(256), self.attention_mask.split(256))])
        self.before, self.before_hits = self.evaluate_hits(self.held_out) if len(self.held_out) else ({}, {})

    def _fresh(self):
        """A new dual encoder on the model section's text encoder (tuned as a copy when clip.tune_text)."""
        cfg = self.recipe.clip
        self.components = start_components(self.recipe.model, self.recipe.data.image_size)
        text = self.components.text_encoder
        tune_text = bool(cfg.tune_text)
        if tune_text:  # tune a copy: the model folder's own text encoder (the UNet's conditioning) stays as is
            import copy

            from ldmkit.models.text import TextEncoder

            text = TextEncoder(copy.deepcopy(text.model), text.tokenizer, text.kind)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.recipe.model.seed + 4)
            model = DualEncoder(DualEncoderConfig(
                embed_dim=cfg.embed_dim, image_channels=tuple(cfg.image_channels), text_hidden=text.hidden_size,
                init_temperature=cfg.init_temperature, text_tuned=tune_text), text)
        text.model.requires_grad_(tune_text)
        return model, tune_text

    def _start_from(self, init_from: str):
        """The dual encoder to fine-tune (ldmkit's own, or an HF CLIPModel) and whether its text tower trains."""
        from ldmkit.models.dual_encoder import load_dual_encoder
        from ldmkit.models.hf_clip import HFClipDualEncoder

        cfg = self.recipe.clip
        model = load_dual_encoder(init_from).train()
        if isinstance(model, HFClipDualEncoder):
            check_unused_for_hf(self.recipe, init_from)
            tune_text = cfg.tune_text is not False
            model.set_tuning(tune_text=tune_text, tune_image=cfg.tune_image is not False,
                             last_layers=cfg.tune_last_layers)
            return model, tune_text
        check_kept_architecture(cfg, model.config, init_from)
        tune_text = model.config.text_tuned if cfg.tune_text is None else cfg.tune_text
        if tune_text and not model.config.text_tuned:
            raise UsageError(f"clip.tune_text: true cannot apply to {init_from}: its dual encoder reads the frozen "
                             "text encoder of its model folder; train a new one with clip.tune_text: true instead")
        self.components = start_components(self.recipe.model, self.recipe.data.image_size)
        if not model.config.text_tuned and not _same_weights(model.text_encoder.model,
                                                             self.components.text_encoder.model):
            raise UsageError(f"the dual encoder of {init_from} reads its model folder's text encoder, but the model "
                             "section builds another one, which final/ would pair it with: set model.init_from to "
                             "the model folder that holds that clip/")
        model.requires_grad_(True)
        model.text_encoder.model.requires_grad_(tune_text)
        if cfg.tune_image is False:
            model.image_tower.requires_grad_(False)
        return model, tune_text

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

    def evaluate(self, dataset, *, pixels: torch.Tensor | None = None, pooled: torch.Tensor | None = None
                 ) -> dict[str, float]:
        """Retrieval recall of the current weights over every caption of every image of `dataset`."""
        return self.evaluate_hits(dataset, pixels=pixels, pooled=pooled)[0]

    def evaluate_hits(self, dataset, *, pixels: torch.Tensor | None = None, pooled: torch.Tensor | None = None
                      ) -> tuple[dict[str, float], dict]:
        """(recall and chance levels, per-image / per-caption hits) of the current weights on `dataset`; its
        pixels and its captions' pooled text states (frozen text tower) are reused when given."""
        from ldmkit.training.clip_report import retrieval_hits

        model = self.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            if pixels is None:
                pixels = load_pixels(dataset, self.recipe.data.image_size, self.recipe.data.trim)
            images = torch.cat([model.encode_images(p) for p in pixels.split(64)])
            captions = [c for s in dataset.samples for c in s.captions]
            if pooled is not None:  # the frozen tower's states, cached for training: only the projection is new
                device = model.text_projection.weight.device
                texts = torch.cat([model.embed_pooled(p.to(device)) for p in pooled.split(256)])
            else:
                texts = torch.cat([model.encode_texts(captions[i:i + 256]) for i in range(0, len(captions), 256)])
        owner = torch.tensor([i for i, s in enumerate(dataset.samples) for _ in s.captions])
        model.train(was_training)
        return retrieval_recall(images.cpu(), texts.cpu(), owner), retrieval_hits(images.cpu(), texts.cpu(), owner)

    def validate(self, step: int, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        report = {"step": step, "held_out": self.evaluate(self.held_out) if len(self.held_out) else {}}
        (path / "retrieval.json").write_text(json.dumps(report, indent=2) + "\n")

    def save_final(self, path: Path) -> None:
        from ldmkit.training.clip_report import compare

        after, after_hits = self.evaluate_hits(self.held_out) if len(self.held_out) else ({}, {})
        train_after = self.evaluate(self.train, pixels=self.train_pixels, pooled=self.pooled)
        report = {"split": self.recipe.clip.eval_split, "images": len(self.held_out),
                  "captions": sum(len(s.captions) for s in self.held_out.samples), "start": self.start,
                  "before": self.before, "after": after, "train_after": train_after,
                  "comparison": compare(self.before_hits, after_hits) if after_hits else {}}
        meta = {"trainer": "clip", "clip_metrics": report, "dataset": self.dataset_meta}
        if self.components is None:  # a CLIPModel fine-tune: final/clip/ in the CLIPModel layout + ldmkit.json
            _write_hf_final(self.model, path, self.recipe, meta)
        else:
            write_model_folder(self.components, path, self.recipe, meta)
            save_dual_encoder(self.model, path)
        (self.run_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")


def check_unused_for_hf(recipe: ClipRecipe, init_from: str) -> None:
    """A CLIPModel start brings both towers: refuse model-section keys and dual-encoder architecture keys that
    would then have no effect."""
    import dataclasses

    from ldmkit.training.recipes import ClipSection, ModelSection

    unused = [f"model.{f.name}" for f in dataclasses.fields(ModelSection)
              if getattr(recipe.model, f.name) != getattr(ModelSection(), f.name)]
    unused += [f"clip.{name}" for name in ("embed_dim", "image_channels", "init_temperature")
               if getattr(recipe.clip, name) != getattr(ClipSection(), name)]
    if unused:
        raise UsageError(f"{', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect: clip.init_from "
                         f"{init_from} is a CLIPModel, whose own towers, projections and temperature are trained; "
                         "remove them (configs/clip-finetune.yaml has no model section)")


def check_kept_architecture(cfg, start, init_from: str) -> None:
    """Fine-tuning ldmkit's own dual encoder keeps its architecture: differing keys would have no effect."""
    from ldmkit.training.recipes import ClipSection

    wanted = {"embed_dim": start.embed_dim, "image_channels": tuple(start.image_channels),
              "init_temperature": ClipSection().init_temperature}
    for name, kept in wanted.items():
        if getattr(cfg, name) != kept:
            raise UsageError(f"clip.{name} {getattr(cfg, name)} has no effect: clip.init_from {init_from} keeps its "
                             f"own ({kept}); remove the key or set it to that")
    if cfg.tune_last_layers:
        raise UsageError(f"clip.tune_last_layers applies to a CLIPModel start (transformer towers); {init_from} is "
                         "ldmkit's own dual encoder (ConvNet image tower)")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].to(sa[k].dtype).cpu()) for k in sa)


def _write_hf_final(model, path: Path, recipe: ClipRecipe, meta: dict) -> None:
    """final/clip/ in the CLIPModel layout (transformers.CLIPModel.from_pretrained loads it) + final/ldmkit.json."""
    import shutil

    from ldmkit.config.recipe import to_dict
    from ldmkit.models.dual_encoder import CLIP_FOLDER
    from ldmkit.models.folder import META_FILE
    from ldmkit.models.hf_clip import save_hf_clip

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)  # our own earlier (possibly half-written) save in the run folder
    save_hf_clip(model, path / CLIP_FOLDER)
    record = {**meta, "clip_start": recipe.clip.init_from, "training": to_dict(recipe)}
    (path / META_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _pad(pixels: torch.Tensor, pad: int) -> torch.Tensor:
    """Replicate-pad each side by `pad` pixels, so random crops of the original size shift the image a little."""
    return F.pad(pixels, (pad, pad, pad, pad), mode="replicate") if pad > 0 else pixels

"""`ldmkit train attributes`: train the attribute classifier (ldmkit.models.attributes) on labelled images.

    result = train_task("attributes", load_recipe("configs/attributes-avatars.yaml", AttributesRecipe), "runs/attr")
    model = load_attribute_classifier("runs/attr/final")     # ldmkit.models.attributes

RUN_DIR/final/attributes/ is the classifier (copy it into a model folder as MODEL/attributes/);
RUN_DIR/final/attributes_report.json its held-out accuracy per column.

Each image's target for a column is the SET of values its label stands for: for `avatars` the values that give the same captions (sunglasses hide the eyes: every eye value;
"angry" and "angry_natural" eyebrows both read "angry eyebrows"), elsewhere the label alone ("" = not
applicable). The loss is -log P(set); a column is scored where its set is not every value.
Accuracy (argmax in the set) and the majority-value baseline are measured on val + test, never
trained on; eval excludes columns below 95% (ldmkit.evaluation.attributes). Weights: safetensors only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ldmkit.data.builtin.avatars import avatars_value_sets, is_avatars_row
from ldmkit.errors import DataError
from ldmkit.models.attributes import AttributeClassifier, AttributeClassifierConfig, save_attribute_classifier
from ldmkit.training.recipes import AttributesRecipe
from ldmkit.training.run_data import load_pixels, open_dataset, split

REPORT_FILE = "attributes_report.json"


def value_sets(labels: Mapping[str, str], columns: Sequence[str]) -> dict[str, frozenset[str]]:
    """Column -> the values an image with these labels stands for; a column without a value ("") is left out.

    Rows of `avatars` get the caption-equivalent sets of avatars_value_sets; any other column its label.
    """
    avatar = avatars_value_sets(labels) if is_avatars_row(labels) else {}
    return {c: avatar[c] if c in avatar else frozenset({labels[c]}) for c in columns if labels.get(c, "") != ""}


def set_masks(rows: Sequence[Mapping[str, frozenset[str]]],
              config: AttributeClassifierConfig) -> dict[str, torch.Tensor]:
    """Column -> [N, K] bool: True where value k is in row n's set (all True: the column says nothing)."""
    out = {}
    for c in config.columns:
        index = {v: k for k, v in enumerate(config.vocab[c])}
        mask = torch.ones(len(rows), len(index), dtype=torch.bool)
        for n, sets in enumerate(rows):
            if c in sets:
                mask[n] = False
                mask[n, [index[v] for v in sets[c] if v in index]] = True
        out[c] = mask
    return out


def set_nll(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over informative rows of -log P(value in set) = logsumexp(all) - logsumexp(set); 0 if none."""
    informative = ~mask.all(1)
    if not informative.any():
        return logits.sum() * 0.0
    logits, mask = logits[informative].float(), mask[informative]
    return (logits.logsumexp(1) - logits.masked_fill(~mask, float("-inf")).logsumexp(1)).mean()


def held_out_accuracy(predicted: Sequence[Mapping[str, str]], masks: dict[str, torch.Tensor],
                      config: AttributeClassifierConfig) -> dict[str, dict[str, float]]:
    """{"accuracy", "majority", "images"} per column over rows whose set is informative."""
    out: dict[str, dict[str, float]] = {"accuracy": {}, "majority": {}, "images": {}}
    for c in config.columns:
        mask = masks[c]
        informative = (~mask.all(1)).nonzero().flatten().tolist()
        if not informative:
            continue
        index = {v: k for k, v in enumerate(config.vocab[c])}
        hits = [bool(mask[n, index[predicted[n][c]]]) for n in informative]
        out["accuracy"][c] = sum(hits) / len(hits)
        out["majority"][c] = float(mask[informative].double().mean(0).max())  # best constant answer
        out["images"][c] = len(informative)
    return out


def random_shifts(pixels: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image translated by up to `shift` pixels each way (edges replicated); never mirrored."""
    if shift == 0:
        return pixels
    n, _, h, w = pixels.shape
    padded = F.pad(pixels, (shift, shift, shift, shift), mode="replicate")
    offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator).tolist()
    return torch.stack([img[:, dy:dy + h, dx:dx + w] for img, (dy, dx) in zip(padded, offsets)])


def choose_rows(dataset, where: Mapping[str, str]):
    """The samples whose labels match every `where` column: value."""
    return [s for s in dataset.samples if all(s.labels.get(k) == v for k, v in where.items())]


def pick_columns(samples, asked: Sequence[str]) -> tuple[str, ...]:
    """`asked`, or every label column with two or more values among `samples`; DataError for unknown ones."""
    labels = [s.labels for s in samples]
    known = sorted({c for row in labels for c in row})
    columns = tuple(asked) or tuple(c for c in known if len({r.get(c, "") for r in labels} - {""}) >= 2)
    missing = [c for c in columns if c not in known]
    if missing or not columns:
        raise DataError(f"no label column to classify: asked for {list(asked) or 'all'}, "
                        f"missing {missing}; the chosen rows have columns {known}")
    return columns


def build_config(columns: Sequence[str], sets: Sequence[Mapping[str, frozenset[str]]],
                 recipe: AttributesRecipe) -> AttributeClassifierConfig:
    """The classifier's config: `columns` with every value that occurs in the training rows' value sets."""
    vocab: dict[str, set[str]] = {c: set() for c in columns}
    for row in sets:
        for c, values in row.items():
            vocab[c] |= values
    few = [c for c in columns if len(vocab[c]) < 2]
    if few:
        raise DataError(f"label column(s) {few} have fewer than two values among the chosen rows; leave them out "
                        "of attributes.columns")
    return AttributeClassifierConfig(columns=tuple(columns), vocab={c: tuple(sorted(vocab[c])) for c in columns},
                                     image_size=recipe.data.image_size, channels=tuple(recipe.attributes.channels))


def data_hash(pixels: torch.Tensor, samples) -> str:
    """SHA-256 (16 hex digits) of the training pixels (as bytes) and labels: which data a classifier saw."""
    h = hashlib.sha256(((pixels + 1) * 127.5).round().to(torch.uint8).numpy().tobytes())
    h.update(json.dumps([[s.image_id, s.labels] for s in samples], sort_keys=True).encode())
    return h.hexdigest()[:16]


class AttributesTask:
    """TrainTask of the attribute classifier: modules {"attributes"}."""

    def __init__(self, recipe: AttributesRecipe, run_dir: str | Path) -> None:
        self.recipe, self.run_dir = recipe, Path(run_dir)
        dataset = open_dataset(recipe.data, self.run_dir)
        where = recipe.attributes.where
        train = choose_rows(split(dataset, recipe.data, "train"), where)
        held = [s for name in ("val", "test") for s in choose_rows(split(dataset, recipe.data, name), where)]
        if len(train) < 2:
            raise DataError(f"{dataset.root}: {len(train)} training image(s) match attributes.where={dict(where)}; "
                            "need at least 2")
        self.train, self.held_out = dataset.subset(train), dataset.subset(held)
        columns = pick_columns(train, recipe.attributes.columns)
        train_sets = [value_sets(s.labels, columns) for s in train]
        self.config = build_config(columns, train_sets, recipe)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.train.seed + 5)
            self.model = AttributeClassifier(self.config)
        size = recipe.data.image_size
        self.pixels = load_pixels(self.train, size, recipe.data.trim)
        self.masks = set_masks(train_sets, self.config)
        self.held_masks = set_masks([value_sets(s.labels, self.config.columns) for s in held], self.config)
        self.config = replace(self.config, data_hash=data_hash(self.pixels, train))

    def modules(self) -> dict[str, nn.Module]:
        return {"attributes": self.model}

    def num_samples(self) -> int:
        return len(self.pixels)

    def batch(self, ids: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(ids)
        out = {"pixels": random_shifts(self.pixels[idx], self.recipe.attributes.shift, generator)}
        out.update({f"mask/{c}": m[idx] for c, m in self.masks.items()})
        return out

    def loss(self, modules, batch, generator) -> tuple[torch.Tensor, dict[str, float]]:
        logits = modules["attributes"](batch["pixels"])
        losses = {c: set_nll(logits[c], batch[f"mask/{c}"]) for c in self.config.columns}
        return sum(losses.values()), {}

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Held-out accuracy and majority baseline of the current weights (see held_out_accuracy)."""
        if not len(self.held_out):
            return {"accuracy": {}, "majority": {}, "images": {}}
        was_training = self.model.training
        self.model.eval()
        predicted = self.model.predict(load_pixels(self.held_out, self.recipe.data.image_size, self.recipe.data.trim))
        self.model.train(was_training)
        return held_out_accuracy(predicted, self.held_masks, self.config)

    def validate(self, step: int, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "accuracy.json").write_text(json.dumps({"step": step, **self.evaluate()}, indent=2) + "\n")

    def save_final(self, path: Path) -> None:
        result = self.evaluate()
        self.model.config = replace(self.config, accuracy=result["accuracy"], majority=result["majority"],
                                    held_out_images=result["images"])
        save_attribute_classifier(self.model, path)
        report = {"train_images": len(self.train), "held_out_images": len(self.held_out), **result,
                  "below_0.95": sorted(c for c, a in result["accuracy"].items() if a < 0.95)}
        for folder in (Path(path), self.run_dir):
            (folder / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

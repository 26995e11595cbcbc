"""`ldmkit train attributes`: a small multi-head ConvNet that reads labelled attributes off an image.

    result = train_attributes(load_recipe("configs/attributes-avatars.yaml", AttributesRecipe), "runs/attr")
    model = load_attribute_classifier("runs/attr/final")     # a folder holding attributes/, or attributes/
    model.predict_images(pil_images)                         # [{"top": "bob", "skin": "pale", ...}, ...]

One softmax head per label column, on a conv trunk whose last feature map is kept whole (eyes, mouth
and hair sit in fixed places). Each image's target for a column is the SET of values its label stands
for: for `avatars` the values that give the same captions (sunglasses hide the eyes: every eye value;
"angry" and "angry_natural" eyebrows both read "angry eyebrows"), elsewhere the label alone ("" = not
applicable). The loss is -log P(set); a column is scored where its set is not every value.
Accuracy (argmax in the set) and the majority-value baseline are measured on val + test, never
trained on; eval excludes columns below 95% (ldmkit.evaluation.attributes). Weights: safetensors only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ldmkit.errors import DataError, ModelFolderError, UsageError
from ldmkit.training.recipes import AttributesRecipe
from ldmkit.training.run_data import load_pixels, open_dataset, split, subset

ATTRIBUTES_FOLDER = "attributes"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
REPORT_FILE = "attributes_report.json"
REDUCED_CHANNELS = 32  # 1x1 conv before flattening the last map: keeps the heads small


@dataclass(frozen=True)
class AttributeClassifierConfig:
    """What the classifier reads (saved as attributes/config.json with its held-out accuracy)."""

    columns: tuple[str, ...]
    """Label columns, one head each, in head order."""
    vocab: dict[str, tuple[str, ...]]
    """Column -> its values, in logit order."""
    image_size: int
    """Square input side in pixels (images are resized to it)."""
    channels: tuple[int, ...] = (32, 64, 128)
    """Channels of the stride-2 conv stages."""
    accuracy: dict[str, float] = field(default_factory=dict)
    """Column -> held-out accuracy (prediction in the image's value set); empty before training ends."""
    majority: dict[str, float] = field(default_factory=dict)
    """Column -> held-out accuracy of always answering the most frequent value (the baseline)."""
    held_out_images: dict[str, int] = field(default_factory=dict)
    """Column -> held-out images that scored it."""
    data_hash: str = ""
    """SHA-256 (16 hex digits) of the training images' pixels and labels."""

    def __post_init__(self) -> None:
        if not self.columns or set(self.columns) != set(self.vocab):
            raise UsageError(f"AttributeClassifierConfig: columns {list(self.columns)} and vocab keys "
                             f"{sorted(self.vocab)} must name the same columns (at least one)")
        if any(len(values) < 2 or len(set(values)) != len(values) for values in self.vocab.values()):
            raise UsageError("AttributeClassifierConfig.vocab: every column needs two or more distinct values")
        if not isinstance(self.image_size, int) or self.image_size < 2 ** len(self.channels):
            raise UsageError(f"AttributeClassifierConfig.image_size {self.image_size!r} is too small for "
                             f"{len(self.channels)} stride-2 stages")
        if not self.channels or not all(isinstance(c, int) and c >= 1 for c in self.channels):
            raise UsageError(f"AttributeClassifierConfig.channels must be positive ints, got {self.channels!r}")
        for name in ("accuracy", "majority"):
            if any(not 0 <= v <= 1 for v in getattr(self, name).values()):
                raise UsageError(f"AttributeClassifierConfig.{name} values must be fractions in [0, 1]")


def _stage(cin: int, cout: int) -> nn.Sequential:
    groups = next(g for g in (8, 4, 2, 1) if cout % g == 0)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, stride=2, padding=1), nn.GroupNorm(groups, cout), nn.SiLU())


class AttributeClassifier(nn.Module):
    """Conv stages -> 1x1 reduction -> the whole last map flattened -> one linear head per column."""

    def __init__(self, config: AttributeClassifierConfig) -> None:
        super().__init__()
        self.config = config
        stages, cin = [], 3
        for cout in config.channels:
            stages.append(_stage(cin, cout))
            cin = cout
        side = config.image_size >> len(config.channels)  # [N, C, side, side] after the stages
        self.trunk = nn.Sequential(*stages, nn.Conv2d(cin, REDUCED_CHANNELS, 1), nn.SiLU(), nn.Flatten())
        self.heads = nn.ModuleDict({c: nn.Linear(REDUCED_CHANNELS * side * side, len(config.vocab[c]))
                                    for c in config.columns})

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per column for pixels [N, 3, S, S] in [-1, 1]."""
        features = self.trunk(pixels)
        return {c: head(features) for c, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor) -> list[dict[str, str]]:
        """The most likely value of every column, per image."""
        logits = {c: torch.cat([self(p)[c] for p in pixels.split(256)]) for c in self.config.columns}
        best = {c: logits[c].argmax(1).tolist() for c in self.config.columns}
        return [{c: self.config.vocab[c][best[c][i]] for c in self.config.columns} for i in range(len(pixels))]

    def predict_images(self, images: Sequence) -> list[dict[str, str]]:
        """predict() for PIL images (converted to RGB and resized to the classifier's input size)."""
        import numpy as np

        size = self.config.image_size
        arrays = [np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) for im in images]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
        return self.predict(pixels.to(next(self.parameters()).device))


def save_attribute_classifier(model: AttributeClassifier, folder: str | Path) -> Path:
    """Write `model` into `folder`/attributes/ (config.json + model.safetensors); returns that folder."""
    from safetensors.torch import save_file

    out = Path(folder) / ATTRIBUTES_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(asdict(model.config), indent=2) + "\n", encoding="utf-8")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS_FILE))
    return out


def load_attribute_classifier(path: str | Path) -> AttributeClassifier:
    """The classifier in `path`/attributes/ (or in `path` itself), in eval mode. Never unpickles."""
    from safetensors.torch import load_file

    from ldmkit.models.safety import check_no_code, check_weight_files

    path = Path(path)
    folder = path / ATTRIBUTES_FOLDER if (path / ATTRIBUTES_FOLDER).is_dir() else path
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ModelFolderError(f"{path} holds no attribute classifier: expected {ATTRIBUTES_FOLDER}/{CONFIG_FILE} "
                               f"and {ATTRIBUTES_FOLDER}/{WEIGHTS_FILE} (train one with `ldmkit train attributes`)")
    check_no_code(folder)
    check_weight_files(folder, allow_pickle=False)
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        config = AttributeClassifierConfig(**{**raw, "columns": tuple(raw["columns"]),
                                              "channels": tuple(raw["channels"]),
                                              "vocab": {k: tuple(v) for k, v in raw["vocab"].items()}})
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ModelFolderError(f"{folder / CONFIG_FILE} is not an attribute classifier config: {err}") from None
    model = AttributeClassifier(config)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except RuntimeError as err:
        raise ModelFolderError(f"{folder / WEIGHTS_FILE} does not fit {folder / CONFIG_FILE}: {err}") from None
    return model.eval().requires_grad_(False)


def avatar_values() -> dict[str, tuple[str, ...]]:
    """Every value of every `avatars` label column, from the builder's phrase tables."""
    from ldmkit.data.builtin import avatars as a

    tables = {"top": (*a.HAIR, *a.HATS), "hair_color": a.HAIR_COLORS, "hat_color": ("none", *a.CLOTHING_COLORS),
              "skin": a.SKINS, "eyes": a.EYES, "eyebrows": a.EYEBROWS, "mouth": a.MOUTHS,
              "facial_hair": a.FACIAL_HAIR, "accessory": a.ACCESSORIES, "clothing": a.CLOTHES,
              "clothing_color": a.CLOTHING_COLORS, "background": a.BACKGROUNDS}
    return {column: tuple(sorted(values)) for column, values in tables.items()}


def is_avatars_row(labels: Mapping[str, str]) -> bool:
    """Whether labels hold a valid value for every `avatars` column (an avatars row, also inside a mixture)."""
    return all(labels.get(column) in values for column, values in avatar_values().items())


def avatars_value_sets(labels: Mapping[str, str], template: int | None = None) -> dict[str, frozenset[str]]:
    """Column -> the values v for which the builder's captions of (labels with column = v) are the same as
    those of labels: all three captions, or only caption number `template`. A value the captions cannot
    tell apart is in the set; a column the captions never show (the eyes behind sunglasses) gets every value."""
    from ldmkit.data.builtin.avatars import captions_for

    def captions(values: Mapping[str, str]) -> tuple[str, ...] | None:
        try:
            texts = captions_for(dict(values))
        except KeyError:  # an impossible combination (a hat without a hat colour) says something else
            return None
        return texts if template is None else texts[template]

    own = captions(labels)
    return {column: frozenset(v for v in values if v == labels[column] or captions({**labels, column: v}) == own)
            for column, values in avatar_values().items()}


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
        self.train, self.held_out = subset(dataset, train), subset(dataset, held)
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


def train_attributes(recipe: AttributesRecipe, run_dir: str | Path):
    """Train (or resume) the attribute classifier of `recipe` in `run_dir`; returns the loop's TrainResult.

    RUN_DIR/final/attributes/ is the classifier (copy it into a model folder as MODEL/attributes/);
    RUN_DIR/final/attributes_report.json its held-out accuracy per column.
    """
    from ldmkit.training.loop import train
    from ldmkit.training.processes import main_process_first
    from ldmkit.training.trainers import mark_run

    with main_process_first():
        mark_run(Path(run_dir), "attributes")
        task = AttributesTask(recipe, run_dir)
    return train(task, recipe.train, run_dir, recipe=recipe)

"""The attribute classifier: a small multi-head ConvNet that reads labelled attributes off an image.

    model = load_attribute_classifier("runs/attr/final")     # a folder holding attributes/, or attributes/
    model.predict_images(pil_images)                         # [{"top": "bob", "skin": "pale", ...}, ...]

One softmax head per label column, on a conv trunk whose last feature map is kept whole (eyes, mouth and hair
sit in fixed places). Trained by `ldmkit train attributes` (ldmkit.training.attributes_task), read by
`ldmkit eval` (ldmkit.evaluation.avatars_score); it lives here so that neither imports the other.
Weights: safetensors only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ldmkit.errors import ModelFolderError, UsageError

ATTRIBUTES_FOLDER = "attributes"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
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
        from ldmkit.data.images import images_to_pixels

        size = self.config.image_size
        pixels = images_to_pixels([im.convert("RGB").resize((size, size)) for im in images])  # [N, 3, S, S]
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

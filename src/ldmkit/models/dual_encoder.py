"""The CLIP-style dual encoder used for scoring and reranking: a small ConvNet image tower and a text
tower (a model folder's text encoder, masked-mean pooled, + a learned projection) into one normalised space.

    model = load_dual_encoder("runs/clip/final")          # a model folder holding clip/, or clip/ itself
    scores = model.encode_images(pixels) @ model.encode_texts(["a red square"]).T

Saved as clip/config.json + clip/model.safetensors (image tower, projection, logit scale). A frozen text
tower is the model folder's own text_encoder/; a tuned one is saved in clip/text_encoder + clip/tokenizer.
`load_dual_encoder` also loads a transformers CLIPModel folder (or a clip/ in that layout, as a fine-tune of
one is saved) as an `ldmkit.models.hf_clip.HFClipDualEncoder` with the same interface.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ldmkit.errors import ModelFolderError, UsageError

CLIP_FOLDER = "clip"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MAX_LOGIT_SCALE = 100.0  # CLIP clamps exp(logit_scale) at 100 (Radford et al. 2021, §2.5)


@dataclass(frozen=True)
class DualEncoderConfig:
    """Architecture of the dual encoder (saved as clip/config.json)."""

    embed_dim: int = 64
    """Width of the shared embedding space."""
    image_channels: tuple[int, ...] = (32, 64, 128)
    """Channels of the image tower's stride-2 conv stages."""
    text_hidden: int = 32
    """Hidden size of the text encoder whose pooled states are projected."""
    init_temperature: float = 0.07
    """Softmax temperature at initialisation (logit scale = 1 / temperature, learned, clamped at 100)."""
    text_tuned: bool = False
    """Whether the text encoder was trained too (then it is stored in clip/text_encoder)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.embed_dim, int) and self.embed_dim >= 2):
            raise UsageError(f"DualEncoderConfig.embed_dim must be an int >= 2, got {self.embed_dim!r}")
        if not self.image_channels or not all(isinstance(c, int) and c >= 1 for c in self.image_channels):
            raise UsageError(f"DualEncoderConfig.image_channels must be positive ints, got {self.image_channels!r}")
        if not (isinstance(self.text_hidden, int) and self.text_hidden >= 1):
            raise UsageError(f"DualEncoderConfig.text_hidden must be a positive int, got {self.text_hidden!r}")
        if not 0 < self.init_temperature:
            raise UsageError(f"DualEncoderConfig.init_temperature must be > 0, got {self.init_temperature}")


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class ImageTower(nn.Module):
    """Stride-2 conv stages (GroupNorm + SiLU), global average pooling, linear to the embedding."""

    def __init__(self, channels: tuple[int, ...], embed_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for c in channels:
            layers += [nn.Conv2d(width, c, 3, 2, 1), nn.GroupNorm(_groups(c), c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, 1, 1), nn.GroupNorm(_groups(c), c), nn.SiLU()]
            width = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels).mean(dim=(2, 3)))


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states [B, L, D] over the tokens where mask [B, L] is 1."""
    mask = mask.to(states.dtype).unsqueeze(-1)
    return (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class DualEncoder(nn.Module):
    """Image tower + text projection (+ the text encoder, a submodule only when tuned) + logit scale."""

    def __init__(self, config: DualEncoderConfig, text_encoder) -> None:
        super().__init__()
        if text_encoder.hidden_size != config.text_hidden:
            raise UsageError(f"text encoder hidden size {text_encoder.hidden_size} differs from the dual "
                             f"encoder's text_hidden {config.text_hidden}")
        self.config = config
        self.text_encoder = text_encoder  # ldmkit TextEncoder: .model, .tokenizer
        self.image_tower = ImageTower(tuple(config.image_channels), config.embed_dim)
        self.text_projection = nn.Linear(config.text_hidden, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        if config.text_tuned:
            self.text_model = text_encoder.model  # registered: trained and saved with the rest

    def temperature_scale(self) -> torch.Tensor:
        """exp(logit_scale) clamped at MAX_LOGIT_SCALE."""
        return self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) padded to the text encoder's max length."""
        tok = self.text_encoder.tokenizer(list(texts), padding="max_length", truncation=True,
                                          max_length=self.text_encoder.max_length, return_tensors="pt")
        return tok.input_ids, tok.attention_mask

    def pooled_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Masked-mean pooled last hidden states of the text encoder [B, text_hidden]."""
        model = self.text_encoder.model
        ids, mask = input_ids.to(model.device), attention_mask.to(model.device)
        use_mask = bool(getattr(model.config, "use_attention_mask", False))
        states = model(ids, attention_mask=mask if use_mask else None).last_hidden_state
        return masked_mean(states.float(), mask)

    def embed_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Normalised text embeddings from pooled states."""
        return nn.functional.normalize(self.text_projection(pooled), dim=-1)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings [B, embed_dim] of pixels [B, 3, H, W] in [-1, 1]."""
        device = self.text_projection.weight.device
        return nn.functional.normalize(self.image_tower(pixels.to(device).float()), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings [B, embed_dim]."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"encode_texts takes a list of strings, got {texts!r}")
        ids, mask = self.tokenize(texts)
        with torch.set_grad_enabled(self.config.text_tuned and torch.is_grad_enabled()):
            pooled = self.pooled_text(ids, mask)
        return self.embed_pooled(pooled.to(self.text_projection.weight.device))


    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pooled: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image embeddings, text embeddings, clamped logit scale) of a training batch; `pooled` skips a
        frozen text encoder when its pooled states were computed beforehand."""
        if pooled is None:
            pooled = self.pooled_text(input_ids, attention_mask)
        image = nn.functional.normalize(self.image_tower(pixels), dim=-1)
        return image, self.embed_pooled(pooled), self.temperature_scale()


def own_state(model: DualEncoder) -> dict[str, torch.Tensor]:
    """The dual encoder's own tensors (image tower, projection, logit scale), without the text model."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(("text_model.", "text_encoder."))}


def save_dual_encoder(model: DualEncoder, model_folder: str | Path) -> Path:
    """Write `model` into `model_folder`/clip/; returns that folder."""
    from safetensors.torch import save_file

    folder = Path(model_folder) / CLIP_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    config = {**asdict(model.config), "image_channels": list(model.config.image_channels)}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.detach().cpu().contiguous() for k, v in own_state(model).items()}, str(folder / WEIGHTS_FILE))
    if model.config.text_tuned:
        model.text_encoder.model.save_pretrained(folder / "text_encoder")
        model.text_encoder.tokenizer.save_pretrained(folder / "tokenizer")
    return folder


def load_dual_encoder(path: str | Path):
    """The dual encoder in a model folder's clip/ (or a clip/ folder given directly, or a `train clip` run
    folder), in eval mode: ldmkit's own `DualEncoder`, or an `HFClipDualEncoder` where the folder holds a
    transformers CLIPModel (ldmkit.models.hf_clip)."""
    from safetensors.torch import load_file

    from ldmkit.models.folder import load_text_encoder
    from ldmkit.models.safety import check_no_code, check_weight_files

    from ldmkit.models.hf_clip import is_hf_clip_folder, load_hf_clip, read_config

    path = Path(path)
    if not (path / CLIP_FOLDER).is_dir() and (path / "final" / CLIP_FOLDER).is_dir():
        path = path / "final"  # a `train clip` run folder: its result
    folder = path / CLIP_FOLDER if (path / CLIP_FOLDER).is_dir() else path
    if is_hf_clip_folder(folder):  # a transformers CLIPModel (e.g. OpenAI CLIP, or a fine-tune of one)
        return load_hf_clip(folder)
    if (read_config(folder) or {}).get("model_type") == "clip_text_model":
        raise ModelFolderError(f"{path} holds a CLIP text model only; scoring needs both towers: pass a CLIPModel "
                               "folder (text_config + vision_config) or a model folder holding clip/")
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ModelFolderError(f"{path} holds no dual encoder: expected {CLIP_FOLDER}/{CONFIG_FILE} and "
                               f"{CLIP_FOLDER}/{WEIGHTS_FILE}")
    check_no_code(folder)
    check_weight_files(folder, allow_pickle=False)
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text())
        config = DualEncoderConfig(**{**raw, "image_channels": tuple(raw["image_channels"])})
    except (ValueError, TypeError, KeyError) as err:
        raise ModelFolderError(f"{folder / CONFIG_FILE} is not a dual encoder config: {err}") from None
    text_root = folder if config.text_tuned else folder.parent
    if not (text_root / "text_encoder").is_dir() and not (text_root / "config.json").is_file():
        raise ModelFolderError(f"the dual encoder in {folder} uses the text encoder of the model folder around it, "
                               f"but {text_root} has no text_encoder/: pass the whole model folder (with clip/ "
                               "and text_encoder/), not a copy of clip/ alone")
    text = load_text_encoder(text_root)
    model = DualEncoder(config, text)
    missing, unexpected = model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=False)
    missing = [k for k in missing if not k.startswith("text_model.")]
    if missing or unexpected:
        raise ModelFolderError(f"{folder / WEIGHTS_FILE} does not fit its config: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
    return model.eval().requires_grad_(False)

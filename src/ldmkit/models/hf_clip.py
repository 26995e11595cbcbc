"""A Hugging Face `CLIPModel` folder as ldmkit's dual encoder: both towers, both projections and the learned
temperature of a real CLIP (Radford et al. 2021), behind the interface of `ldmkit.models.dual_encoder.DualEncoder`.

    model = load_hf_clip("clip-vit-base-patch32/")   # config.json (text_config + vision_config),
                                                     # model.safetensors, tokenizer files
    scores = model.encode_images(pixels) @ model.encode_texts(["a dog on a beach"]).T
    model.set_tuning(tune_text=True, tune_image=False, last_layers=2)   # what `train clip` trains
    save_hf_clip(model, "RUN/final/clip")            # transformers.CLIPModel.from_pretrained loads it

`load_dual_encoder` finds such a folder by its config (model_type "clip"), so `ldmkit eval --clip`,
`--best-of` and `train clip --set clip.init_from=...` take one wherever they take ldmkit's own dual encoder.
Images arrive as pixels in [-1, 1] at any size: they are resized (shortest side) and centre-cropped to the
vision tower's image_size and normalised with the folder's preprocessor_config.json (CLIP's mean/std if absent).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ldmkit.errors import ModelFolderError, UsageError

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's image normalisation (openai/CLIP clip.py)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_LOGIT_SCALE = 100.0  # CLIP clamps exp(logit_scale) at 100 (Radford et al. 2021, §2.5)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def read_config(folder: Path) -> dict[str, Any] | None:
    """The JSON object in folder/config.json, or None when there is none (or it is not JSON)."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_hf_clip_folder(folder: str | Path) -> bool:
    """Whether `folder` holds a transformers CLIPModel (config.json with model_type "clip")."""
    config = read_config(Path(folder))
    return config is not None and config.get("model_type") == "clip"


def _text_view(clip) -> Any:
    """clip.text_model: in transformers 5 it is itself a CLIPTextModel (no copy), so ldmkit's TextEncoder (token
    states, the conditioning Stable Diffusion uses) reads the same tower the dual encoder trains."""
    from transformers import CLIPTextModel

    if not isinstance(clip.text_model, CLIPTextModel):
        raise ModelFolderError(f"this transformers version's CLIPModel.text_model is a "
                               f"{type(clip.text_model).__name__}, not a CLIPTextModel; ldmkit needs transformers 5 "
                               "(pinned in pyproject.toml)")
    return clip.text_model


class HFClipDualEncoder(nn.Module):
    """transformers CLIPModel + its tokenizer and image normalisation, as a dual encoder."""

    def __init__(self, clip, tokenizer, image_mean=OPENAI_MEAN, image_std=OPENAI_STD) -> None:
        super().__init__()
        from ldmkit.models.text import TextEncoder

        self.clip = clip
        self.tokenizer = tokenizer
        limit = int(clip.config.text_config.max_position_embeddings)
        if int(tokenizer.model_max_length) > limit:  # a tokenizer saved without model_max_length says 1e30
            tokenizer.model_max_length = limit
        self.text_encoder = TextEncoder(_text_view(clip), tokenizer, "clip")
        self.image_size = int(clip.config.vision_config.image_size)
        for name, values in (("image_mean", image_mean), ("image_std", image_std)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def text_tuned(self) -> bool:
        """Whether any weight of the text transformer is being trained."""
        return any(p.requires_grad for p in self.clip.text_model.parameters())

    def temperature_scale(self) -> torch.Tensor:
        """exp(logit_scale) clamped at MAX_LOGIT_SCALE."""
        return self.clip.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def set_tuning(self, *, tune_text: bool, tune_image: bool, last_layers: int = 0) -> int:
        """Make only what is to be trained require grad: both projections and the logit scale always, and
        each tuned tower whole (last_layers 0) or its last `last_layers` layers + final norm. Returns the
        number of trainable parameters."""
        self.clip.requires_grad_(False)
        for module in (self.clip.text_projection, self.clip.visual_projection):
            module.requires_grad_(True)
        self.clip.logit_scale.requires_grad_(True)
        towers = {"text": (tune_text, self.clip.text_model, self.clip.text_model.final_layer_norm),
                  "image": (tune_image, self.clip.vision_model, self.clip.vision_model.post_layernorm)}
        for name, (tuned, tower, final_norm) in towers.items():
            if not tuned:
                continue
            layers = tower.encoder.layers
            if last_layers > len(layers):
                raise UsageError(f"clip.tune_last_layers {last_layers} is more than the {name} tower's "
                                 f"{len(layers)} layers")
            if last_layers == 0:
                tower.requires_grad_(True)
            else:
                for layer in layers[len(layers) - last_layers:]:
                    layer.requires_grad_(True)
                final_norm.requires_grad_(True)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, H, W] in [-1, 1] -> CLIP's input: shortest side resized to image_size (bicubic,
        antialiased), centre crop, then (x - mean) / std, as CLIPImageProcessor does."""
        x = (pixels.float() + 1) / 2
        h, w = x.shape[-2:]
        s = self.image_size
        if (h, w) != (s, s):
            scale = s / min(h, w)
            size = (max(s, int(h * scale)), max(s, int(w * scale)))  # truncated, as transformers does
            x = nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
            top, left = (size[0] - s) // 2, (size[1] - s) // 2
            x = x[..., top:top + s, left:left + s]
        return (x.clamp(0, 1) - self.image_mean) / self.image_std

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised projected image features of pixels in [-1, 1]."""
        pixel_values = self.preprocess(pixels.to(self.image_mean.device))
        return self.clip.visual_projection(self.clip.vision_model(pixel_values=pixel_values).pooler_output)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings [B, projection_dim] of pixels [B, 3, H, W] in [-1, 1]."""
        return nn.functional.normalize(self.image_features(pixels).float(), dim=-1)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) padded to the text tower's max length."""
        tok = self.tokenizer(list(texts), padding="max_length", truncation=True,
                             max_length=self.text_encoder.max_length, return_tensors="pt")
        return tok.input_ids, tok.attention_mask

    def pooled_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The text transformer's pooled output (the end-of-text token's state) [B, text hidden]."""
        device = self.image_mean.device
        out = self.clip.text_model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
        return out.pooler_output.float()

    def embed_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Normalised text embeddings from pooled states (the text projection is applied here)."""
        return nn.functional.normalize(self.clip.text_projection(pooled).float(), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings [B, projection_dim]."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"encode_texts takes a list of strings, got {texts!r}")
        return self.embed_pooled(self.pooled_text(*self.tokenize(texts)))

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pooled: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image embeddings, text embeddings, clamped logit scale) of a training batch; `pooled` skips a
        frozen text tower whose pooled states were computed beforehand."""
        if pooled is None:
            pooled = self.pooled_text(input_ids, attention_mask)
        image = nn.functional.normalize(self.image_features(pixels).float(), dim=-1)
        return image, self.embed_pooled(pooled), self.temperature_scale()


def _normalisation(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(image_mean, image_std) of folder/preprocessor_config.json, or CLIP's own when the file is absent."""
    path = folder / PREPROCESSOR_FILE
    if not path.is_file():
        return OPENAI_MEAN, OPENAI_STD
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        mean, std = tuple(float(v) for v in raw.get("image_mean", OPENAI_MEAN)), \
            tuple(float(v) for v in raw.get("image_std", OPENAI_STD))
    except (UnicodeDecodeError, ValueError, TypeError, AttributeError) as err:
        raise ModelFolderError(f"{path} is not a CLIP preprocessor config: {err}") from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or not all(map(math.isfinite, mean + std)):
        raise ModelFolderError(f"{path}: image_mean and image_std must be 3 finite numbers (std > 0), got "
                               f"{list(mean)}, {list(std)}")
    return mean, std


def load_hf_clip(folder: str | Path) -> HFClipDualEncoder:
    """The CLIPModel in `folder` (safety-checked, float32, eval mode, no grad) with its tokenizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from ldmkit.models.safety import check_no_code, check_safetensors_header

    folder = Path(folder)
    config = read_config(folder)
    if config is None or config.get("model_type") != "clip":
        raise ModelFolderError(f"{folder} holds no transformers CLIPModel (config.json with model_type 'clip')")
    if "vision_config" not in config or "text_config" not in config:
        raise ModelFolderError(f"{folder / CONFIG_FILE} lacks text_config or vision_config: not a full CLIPModel")
    check_no_code(folder)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise ModelFolderError(f"{folder} holds no model.safetensors (ldmkit loads CLIP weights from safetensors "
                               "only; pickled .bin twins of a hub snapshot are ignored, never unpickled)")
    for path in weights:
        check_safetensors_header(path)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFolderError(f"{folder} has no tokenizer files ({' or '.join(TOKENIZER_FILES)}); save the "
                               "tokenizer beside the model (tokenizer.save_pretrained(folder))")
    try:
        clip, info = CLIPModel.from_pretrained(folder, config=CLIPConfig.from_pretrained(folder), local_files_only=True,
                                               use_safetensors=True, dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise ModelFolderError(f"{folder}: could not load the CLIPModel: {err}") from None
    missing = list(info.get("missing_keys", []))
    if missing:
        raise ModelFolderError(f"{folder}: the weights lack {len(missing)} tensors of the config's CLIPModel, "
                               f"e.g. {sorted(missing)[:3]}")
    tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    model = HFClipDualEncoder(clip, tokenizer, *_normalisation(folder))
    return model.eval().requires_grad_(False)


def save_hf_clip(model: HFClipDualEncoder, folder: str | Path) -> Path:
    """Write `model` in the CLIPModel layout (config.json, model.safetensors, tokenizer files,
    preprocessor_config.json) into `folder`; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.clip.save_pretrained(folder)  # transformers 5 writes safetensors only
    model.tokenizer.save_pretrained(folder)
    s = model.image_size
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": s},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": s, "width": s}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": model.image_mean.flatten().tolist(), "image_std": model.image_std.flatten().tolist(),
    }
    (folder / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor, indent=2) + "\n")
    return folder

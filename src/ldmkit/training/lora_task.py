"""`ldmkit train lora`: a LoRA on a model's UNet, trained by the shared loop on the UNet trainer's data and loss.

    ldmkit train lora --config configs/lora-tiny.yaml --out runs/lora-tiny

The base UNet is frozen; peft (the library diffusers' own LoRA loading uses) adds rank-r adapters to the targeted
modules, and only those are trained, checkpointed, EMA-averaged and resumed. The adapters' down weights start
from a generator seeded by `train.seed` (up weights at zero: the run starts at the base model). Every checkpoint
and the run's end write `lora.safetensors` in kohya format (`ldmkit.models.lora_files`), fp16 with `.alpha`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ldmkit.models.lora_files import LoraLayer, target_modules
from ldmkit.models.lora_write import lora_metadata, save_lora
from ldmkit.training.recipes import LoraRecipe
from ldmkit.training.unet import UNetTask, save_prompt_grid

LORA_FILE = "lora.safetensors"
ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
TRANSFORMER = (*ATTENTION, "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
LOCON = ("conv1", "conv2", "conv_shortcut", "time_emb_proj", "downsamplers.0.conv", "upsamplers.0.conv")


def lora_targets(unet, targets: str) -> list[str]:
    """Module names of the UNet a `lora.targets` setting names (attention | transformer | locon)."""
    suffixes = {"attention": ATTENTION, "transformer": TRANSFORMER, "locon": (*TRANSFORMER, *LOCON)}[targets]
    return [n for n in target_modules(unet) if n.endswith(suffixes)]


class LoraTask(UNetTask):
    """TrainTask: modules {"unet"}, of which only the LoRA adapters require gradients."""

    def __init__(self, recipe: LoraRecipe, run_dir: str | Path) -> None:
        super().__init__(recipe, run_dir)
        from peft import LoraConfig

        lora = recipe.lora
        unet = self.components.unet
        unet.requires_grad_(False)
        self.targets = lora_targets(unet, lora.targets)
        unet.add_adapter(LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                    target_modules=self.targets, init_lora_weights=True))
        g = torch.Generator().manual_seed(recipe.train.seed)
        with torch.no_grad():
            for _, module in self._adapters():
                a = module.lora_A["default"].weight
                fan_in = math.prod(a.shape[1:])
                a.copy_(torch.empty_like(a).uniform_(-1, 1, generator=g) / math.sqrt(fan_in))
                module.lora_B["default"].weight.zero_()

    def _adapters(self):
        return [(n, m) for n, m in self.components.unet.named_modules()
                if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})]

    def lora_layers(self) -> dict[tuple[str, str], LoraLayer]:
        alpha = float(self.recipe.lora.alpha)
        return {("unet", name): LoraLayer(m.lora_A["default"].weight.detach().float().cpu(),
                                          m.lora_B["default"].weight.detach().float().cpu(), alpha)
                for name, m in self._adapters()}

    def write_lora(self, path: Path) -> Path:
        lora = self.recipe.lora
        meta = lora_metadata(rank=lora.rank, alpha=lora.alpha, base_model_hash=self.base_hash(),
                             trigger_words=tuple(lora.trigger_words),
                             data_card=json.dumps(self.dataset_meta, sort_keys=True, default=str))
        path.mkdir(parents=True, exist_ok=True)
        return save_lora(self.lora_layers(), path / LORA_FILE, metadata=meta, overwrite=True)  # the run owns it

    def base_hash(self) -> str:
        source = self.components.source
        if source is None:
            return ""
        from ldmkit.models.folder import model_hash

        return model_hash(source)

    def validate(self, step: int, path: Path) -> None:
        self.write_lora(Path(path))
        save_prompt_grid(self.components, self.validation_prompts(), Path(path) / "samples.png",
                         steps=self.recipe.unet.validation_steps)

    def export(self, step: int, path: Path) -> None:
        self.write_lora(Path(path))

    def save_final(self, path: Path) -> None:
        self.write_lora(Path(path))

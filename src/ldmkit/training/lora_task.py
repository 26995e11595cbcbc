"""`ldmkit train lora`: LoRA adapters on a model's UNet (and optionally its text encoder), trained by the shared
loop on the UNet trainer's data, batches and loss (`UNetTask`, DreamBooth mode included: ldmkit.training.unet and
ldmkit.training.dreambooth); this module adds the adapters and the text encoder's token path.

    ldmkit train lora --config configs/lora-tiny.yaml --out runs/lora-tiny
    ldmkit train lora --config configs/dreambooth-demo.yaml --out runs/demo-dreambooth

The base model is frozen; peft (the library diffusers' own LoRA loading uses) adds rank-r adapters to the targeted
modules, and only those are trained, checkpointed, EMA-averaged and resumed. The adapters' down weights start
from a generator seeded by `train.seed` (up weights at zero: the run starts at the base model). With
`lora.text_encoder` the prompts are encoded every step through the adapted text encoder (the latent cache's text
states are then unused). Each part may have its own peak learning rate (the loop's `param_groups` hook). Every
checkpoint and the run's end write `lora.safetensors` in kohya format (`ldmkit.models.lora_write`), fp16 with
`.alpha`, and with `lora.diffusers_format` also diffusers' `pytorch_lora_weights.safetensors`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ldmkit.errors import UsageError
from ldmkit.models.lora_files import LoraLayer, target_modules
from ldmkit.models.lora_write import DIFFUSERS_LORA_FILE, lora_metadata, save_lora
from ldmkit.training.recipes import LoraRecipe
from ldmkit.training.unet import UNetTask, save_prompt_grid

LORA_FILE = "lora.safetensors"
ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
TRANSFORMER = (*ATTENTION, "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
LOCON = ("conv1", "conv2", "conv_shortcut", "time_emb_proj", "downsamplers.0.conv", "upsamplers.0.conv")
# text encoders: CLIP (SD layout) and BERT (the packaged MiniLM); kohya's default targets CLIP's attention and MLP
TE_ATTENTION = (".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj", ".self_attn.out_proj",
                ".attention.self.query", ".attention.self.key", ".attention.self.value", ".attention.output.dense")
TE_MLP = (".mlp.fc1", ".mlp.fc2", ".intermediate.dense", ".output.dense")


def lora_targets(unet, targets: str) -> list[str]:
    """Module names of the UNet a `lora.targets` setting names (attention | transformer | locon)."""
    suffixes = {"attention": ATTENTION, "transformer": TRANSFORMER, "locon": (*TRANSFORMER, *LOCON)}[targets]
    return [n for n in target_modules(unet) if n.endswith(suffixes)]


def text_encoder_targets(model, targets: str) -> list[str]:
    """Linear modules of a CLIP or BERT text model: attention projections, plus the MLP unless targets=attention."""
    suffixes = TE_ATTENTION if targets == "attention" else (*TE_ATTENTION, *TE_MLP)
    names = [n for n, m in target_modules(model).items() if f".{n}".endswith(suffixes)]
    if not names:
        raise UsageError(f"lora.text_encoder: the text encoder ({type(model).__name__}) has none of the attention "
                         "projections LoRA targets (CLIP q/k/v/out_proj, BERT query/key/value)")
    return names


class LoraTask(UNetTask):
    """TrainTask: modules {"unet"} (+ "text_encoder"), of which only the LoRA adapters require gradients."""

    def __init__(self, recipe: LoraRecipe, run_dir: str | Path) -> None:
        super().__init__(recipe, run_dir)  # data or DreamBooth (class images drawn before any adapter exists)
        lora, c = recipe.lora, self.components
        c.unet.requires_grad_(False)
        c.text_encoder.model.requires_grad_(False)
        self.targets = lora_targets(c.unet, lora.targets) if lora.unet else []
        if self.targets:
            self._add_adapters(c.unet, self.targets)
        self.te_targets = []
        if lora.text_encoder:
            self.te_targets = text_encoder_targets(c.text_encoder.model, lora.targets)
            self._add_adapters(c.text_encoder.model, self.te_targets)
        g = torch.Generator().manual_seed(recipe.train.seed)
        with torch.no_grad():  # kaiming-uniform-like down weights from the run's seed, up weights at zero
            for _, _, module in self._adapters():
                a = module.lora_A["default"].weight
                a.copy_(torch.empty_like(a).uniform_(-1, 1, generator=g) / math.sqrt(math.prod(a.shape[1:])))
                module.lora_B["default"].weight.zero_()
        self.samples = {s.image_id: s for s in self.train.samples}

    def _add_adapters(self, model, targets: list[str]) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        lora = self.recipe.lora
        inject_adapter_in_model(LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                           target_modules=targets, init_lora_weights=True), model)

    def _adapters(self):
        """(part, module name, peft layer) of every adapter, UNet first."""
        parts = [("unet", self.components.unet)]
        if self.recipe.lora.text_encoder:
            parts.append(("text_encoder", self.components.text_encoder.model))
        return [(part, n, m) for part, model in parts for n, m in model.named_modules()
                if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})]

    def modules(self) -> dict[str, torch.nn.Module]:
        out = {"unet": self.components.unet}
        if self.recipe.lora.text_encoder:
            out["text_encoder"] = self.components.text_encoder.model
        return out

    def param_groups(self) -> list[dict]:
        """One optimizer group per part, each with its peak lr as a multiple of train.lr (the loop's schedule)."""
        lora, lr = self.recipe.lora, self.recipe.train.lr
        peaks = {"unet": lora.unet_lr or lr, "text_encoder": lora.text_encoder_lr or lr}
        groups = [{"params": [p for p in module.parameters() if p.requires_grad], "lr_scale": peaks[part] / lr}
                  for part, module in self.modules().items()]
        return [g for g in groups if g["params"]]  # lora.unet: false: the UNet runs, but nothing of it trains

    def text_batch(self, cached, drop: torch.Tensor) -> dict[str, torch.Tensor]:
        """UNetTask's cached text states; with lora.text_encoder token ids of the drawn captions instead."""
        return self._tokens(cached, drop) if self.recipe.lora.text_encoder else super().text_batch(cached, drop)

    def text_states(self, modules, batch) -> torch.Tensor:
        """Cached states, or the captions encoded every step through the adapted text encoder."""
        return batch["text"] if "text" in batch else self._encode(modules["text_encoder"], batch)  # (B, L, D)

    def _tokens(self, cached, drop: torch.Tensor) -> dict[str, torch.Tensor]:
        """Token ids [B, L] and attention mask of the captions the cache drew (mirrored with their image; the
        empty prompt where dropped), for the text encoder's forward inside the loss."""
        from ldmkit.data.augment import mirror_caption

        mirrored = cached.mirrored or (False,) * len(cached.image_ids)
        captions = []
        for image_id, k, flip, dropped in zip(cached.image_ids, cached.caption_index, mirrored, drop.tolist()):
            caption = self.samples[image_id].captions[k]
            captions.append("" if dropped else mirror_caption(caption) if flip else caption)
        text = self.components.text_encoder
        tokens = text.tokenizer(captions, padding="max_length", max_length=text.max_length, truncation=True,
                                return_tensors="pt")
        return {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}

    def _encode(self, text_model, batch) -> torch.Tensor:
        """Text states through the (adapted, trainable) text model, as TextEncoder.encode computes them."""
        mask = batch["attention_mask"] if self.components.text_encoder._uses_attention_mask() else None
        return text_model(batch["input_ids"], attention_mask=mask).last_hidden_state.float()

    def lora_layers(self) -> dict[tuple[str, str], LoraLayer]:
        alpha = float(self.recipe.lora.alpha)
        return {(part, name): LoraLayer(m.lora_A["default"].weight.detach().float().cpu(),
                                        m.lora_B["default"].weight.detach().float().cpu(), alpha)
                for part, name, m in self._adapters()}

    def write_lora(self, path: Path) -> Path:
        lora, lr = self.recipe.lora, self.recipe.train.lr
        rates = {"ss_unet_lr": f"{lora.unet_lr or lr:g}" if lora.unet else "",
                 "ss_network_train_unet_only": str(not lora.text_encoder),
                 "ss_network_train_text_encoder_only": str(not lora.unet),
                 "ss_text_encoder_lr": f"{lora.text_encoder_lr or lr:g}" if lora.text_encoder else ""}  # sd-scripts'
        meta = lora_metadata(rank=lora.rank, alpha=lora.alpha, base_model_hash=self.base_hash(),
                             trigger_words=tuple(lora.trigger_words),
                             data_card=json.dumps(self.dataset_meta, sort_keys=True, default=str), extra=rates)
        path.mkdir(parents=True, exist_ok=True)
        layers = self.lora_layers()
        if lora.diffusers_format:  # PEFT keys with dotted module names, alpha / rank folded into lora_B
            save_lora(layers, path / DIFFUSERS_LORA_FILE, fmt="peft", metadata=meta, overwrite=True)
        return save_lora(layers, path / LORA_FILE, metadata=meta, overwrite=True)  # the run owns these files

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

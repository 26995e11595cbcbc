"""`ldmkit train embedding`: textual inversion (Gal et al. 2022) on the shared loop, every base weight frozen.

    ldmkit train embedding --config configs/embedding-tiny.yaml --out runs/emb-tiny

The recipe's token (and <t>_1, ... for more vectors) is added to the tokenizer; its vectors start as the init
word's input embeddings and are the only parameters trained (a [num_vectors, dim] module the loop checkpoints,
EMA-averages and resumes). A forward hook on the text encoder's input embedding table puts the current vectors in
at the new tokens' positions, so the table's original rows, the rest of the text encoder, the UNet and the VAE are
never written. Each step draws a caption template per image, encodes it with gradients through the frozen text
encoder, and takes the UNet trainer's denoising loss on the image's cached latents. Every checkpoint and the run's
end write `zxq.safetensors` for token `<zxq>` ({"emb_params": [num_vectors, dim]}, the A1111/kohya layout;
ldmkit.models.embeddings; the token, kept in the file's metadata, minus characters file systems refuse).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ldmkit.errors import UsageError
from ldmkit.models.embeddings import add_tokens, embedding_metadata, init_vectors, save_embedding
from ldmkit.training.recipes import EmbeddingRecipe
from ldmkit.training.unet import UNetTask, save_prompt_grid


def embedding_file_name(token: str) -> str:
    """The token's file name, portable: characters other than letters, digits, '.', '_' and '-' are dropped
    ("<zxq>" -> "zxq.safetensors"); the token itself is in the file's metadata, so loading restores it."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "", token).strip(".") or "embedding"
    return f"{stem}.safetensors"


class TokenVectors(torch.nn.Module):
    """The trained parameters: the new tokens' input embeddings, [num_vectors, dim]."""

    def __init__(self, init: torch.Tensor) -> None:
        super().__init__()
        self.vectors = torch.nn.Parameter(init.clone())

    def forward(self) -> torch.Tensor:  # called through the loop's (maybe DDP-wrapped) module, so gradients sync
        return self.vectors


class EmbeddingTask(UNetTask):
    """TrainTask: modules {"embedding": TokenVectors}; the UNet, VAE and text encoder are frozen."""

    def __init__(self, recipe: EmbeddingRecipe, run_dir: str | Path) -> None:
        super().__init__(recipe, run_dir)  # data, cache (text states of the base tokenizer: unused) and UNet
        c, emb = self.components, recipe.embedding
        c.unet.requires_grad_(False)
        _check_prediction_type(c, recipe.unet.prediction_type)
        text = c.text_encoder
        init = init_vectors(text, emb.init_word, emb.num_vectors)
        self.token_ids = torch.tensor(add_tokens(text, emb.token, init))  # [N]
        self.vectors = TokenVectors(init)
        self._live: torch.Tensor | None = None  # the vectors of the step being taken (through the loop's wrapper)
        text.model.get_input_embeddings().register_forward_hook(self._put_vectors)

    def _put_vectors(self, module, args, output: torch.Tensor) -> torch.Tensor:
        """Forward hook of the input embedding table: rows of the new tokens come from the trained vectors."""
        ids = args[0]  # [B, L]
        new = ids[..., None] == self.token_ids.to(ids.device)  # [B, L, N]: position holds new token n
        if not bool(new.any()):
            return output
        vectors = self._live if self._live is not None else self.vectors.vectors  # [N, D]
        picked = new.to(vectors.dtype) @ vectors  # [B, L, N] @ [N, D] -> [B, L, D]
        return torch.where(new.any(-1, keepdim=True), picked.to(output.dtype), output)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"embedding": self.vectors}

    def setup(self, device: torch.device) -> None:
        """The frozen UNet and text encoder go where the loop trains (the vectors are moved by accelerate)."""
        self.components.unet.to(device)
        self.components.text_encoder.model.to(device)

    def batch(self, ids: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Scaled latent samples of the images and one random caption template each, tokenized."""
        cached = self.cache.batch(ids, generator, sample=self.recipe.unet.latent_sample,
                                  flip_p=self.recipe.augment.flip_p)
        emb, text = self.recipe.embedding, self.components.text_encoder
        picks = torch.randint(len(emb.templates), (len(ids),), generator=generator).tolist()
        captions = [text.expand(emb.templates[i].replace("{}", emb.token)) for i in picks]
        tokens = text.tokenizer(captions, padding="max_length", max_length=text.max_length, truncation=True,
                                return_tensors="pt")
        return {"latents": cached.latents * self.components.scaling_factor, "input_ids": tokens.input_ids,
                "attention_mask": tokens.attention_mask}

    def loss(self, modules, batch, generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The UNet trainer's denoising loss, with the captions encoded (with gradients) by the text encoder."""
        text = self.components.text_encoder
        self._live = modules["embedding"]()
        try:
            mask = batch["attention_mask"] if text._uses_attention_mask() else None
            states = text.model(batch["input_ids"], attention_mask=mask).last_hidden_state  # [B, L, D]
        finally:
            self._live = None
        dropped = torch.zeros(len(states), dtype=torch.bool, device=states.device)
        loss, _ = super().loss({"unet": self.components.unet}, {**batch, "text": states, "dropped": dropped},
                               generator)
        return loss, {"vector_norm": float(self.vectors.vectors.detach().norm(dim=-1).mean())}

    def write_embedding(self, folder: Path, step: int | None = None) -> Path:
        emb = self.recipe.embedding
        meta = embedding_metadata(token=emb.token, base_model_hash=self._base_hash(), init_word=emb.init_word,
                                  text_encoder=self.components.text_encoder.kind, step=step)
        meta["ldmkit_templates"] = json.dumps(list(emb.templates))
        return save_embedding(self.vectors.vectors, Path(folder) / embedding_file_name(emb.token), metadata=meta,
                              overwrite=True)  # the run owns its files

    def _base_hash(self) -> str:
        source = self.components.source
        if source is None:
            return ""
        from ldmkit.models.folder import model_hash

        return model_hash(source)

    def validation_prompts(self) -> list[str]:
        emb = self.recipe.embedding
        return list(self.recipe.unet.validation_prompts) or [t.replace("{}", emb.token) for t in emb.templates[:4]]

    def validate(self, step: int, path: Path) -> None:
        self.write_embedding(Path(path), step)
        save_prompt_grid(self.components, self.validation_prompts(), Path(path) / "samples.png",
                         steps=self.recipe.unet.validation_steps)

    def export(self, step: int, path: Path) -> None:
        self.write_embedding(Path(path), step)

    def save_final(self, path: Path) -> None:
        self.write_embedding(Path(path))


def _check_prediction_type(components, prediction_type: str) -> None:
    """The frozen UNet predicts what it was trained to: the recipe's unet.prediction_type must be the model's."""
    source = components.source
    config = source / "scheduler" / "scheduler_config.json" if source is not None and source.is_dir() else None
    if config is None or not config.is_file():
        return
    own = json.loads(config.read_text()).get("prediction_type", "epsilon")
    if own != prediction_type:
        raise UsageError(f"unet.prediction_type is {prediction_type}, but the model ({source}) predicts {own}; the "
                         f"UNet is frozen in `train embedding`: set unet.prediction_type: {own}")

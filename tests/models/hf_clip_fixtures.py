"""Tiny random transformers CLIPModel folders in the OpenAI layout (config.json with text_config and
vision_config, model.safetensors, tokenizer files), built offline (imported by path from each test file)."""

from __future__ import annotations

from pathlib import Path

import torch

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def tiny_tokenizer(max_length: int = 77):
    """A CLIPTokenizer over the byte-level alphabet only (no merges): 514 ids, built in milliseconds."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + [BOS, EOS]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=max_length,
                         pad_token=EOS)


def tiny_clip_model(*, text_hidden: int = 32, image_size: int = 32, seed: int = 0, tokenizer=None):
    """(CLIPModel with seeded random weights, its tokenizer)."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = tokenizer or tiny_tokenizer()
    config = CLIPConfig(
        text_config=dict(hidden_size=text_hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                         vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                           image_size=image_size, patch_size=8),
        projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    return model, tokenizer


def tiny_clip_folder(path: Path, **kwargs) -> Path:
    """Save a tiny CLIPModel + tokenizer to `path` as `save_pretrained` writes them; returns `path`."""
    model, tokenizer = tiny_clip_model(**kwargs)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)

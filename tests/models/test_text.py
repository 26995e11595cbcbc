"""TextEncoder: equals diffusers' encode_prompt; CLIP tokenizer equals open_clip's SimpleTokenizer."""

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from ldmkit.models.text import TextEncoder, clip_tokenizer, minilm_text_encoder, random_clip_text_encoder

PROMPTS = [
    "a grinning face with sunglasses",
    "",
    "A photo of an astronaut riding a horse on Mars!! (4k, 'hdr')",
    " ".join(["very"] * 90) + " long prompt",  # longer than 77 tokens: truncated
]
TINY_CLIP = {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 1, "max_position_embeddings": 77}  # fmt: skip


def _diffusers_encode(te: TextEncoder, prompts: list[str]) -> torch.Tensor:
    """Reference: diffusers' StableDiffusionPipeline.encode_prompt with this model and tokenizer."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=None, text_encoder=te.model, tokenizer=te.tokenizer, unet=None, scheduler=None,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    embeds, _ = pipe.encode_prompt(prompts, "cpu", 1, False)
    return embeds


@pytest.fixture(scope="module")
def tiny_clip():
    return random_clip_text_encoder(TINY_CLIP, seed=0)


@pytest.fixture(scope="module")
def minilm():
    return minilm_text_encoder()


def test_clip_encode_equals_diffusers_encode_prompt(tiny_clip):
    ours = tiny_clip.encode(PROMPTS)
    assert ours.shape == (len(PROMPTS), 77, 32)
    torch.testing.assert_close(ours, _diffusers_encode(tiny_clip, PROMPTS), rtol=0, atol=0)


def test_minilm_encode_equals_diffusers_encode_prompt_and_uses_the_mask(minilm):
    assert (minilm.kind, minilm.max_length, minilm.hidden_size) == ("minilm", 77, 384)
    ours = minilm.encode(PROMPTS)
    torch.testing.assert_close(ours, _diffusers_encode(minilm, PROMPTS), rtol=0, atol=0)
    # the padding mask matters for BERT: without it the states of a short prompt change
    ids = minilm.tokenizer(["a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        unmasked = minilm.model(ids).last_hidden_state
    assert not torch.allclose(unmasked, minilm.encode(["a cat"]))


def test_dropped_tokens_counts_what_truncation_cuts(tiny_clip, minilm):
    for te in (tiny_clip, minilm):
        assert te.dropped_tokens(PROMPTS[0]) == 0
        full = te.tokenizer(PROMPTS[3]).input_ids
        kept = te.tokenizer(PROMPTS[3], truncation=True, max_length=77).input_ids
        assert te.dropped_tokens(PROMPTS[3]) == len(full) - len(kept) > 0


def _open_clip_simple_tokenizer():
    """open_clip's SimpleTokenizer, loaded from its file (open_clip itself needs torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer.py"
    sys.modules.setdefault("ftfy", types.SimpleNamespace(fix_text=lambda s: s))  # ASCII prompts: identity
    module_spec = importlib.util.spec_from_file_location("_open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def test_clip_tokenizer_matches_open_clip():
    ours = clip_tokenizer()
    ref = _open_clip_simple_tokenizer()
    assert len(ours) == ref.vocab_size == 49408
    assert (ours.bos_token_id, ours.eos_token_id) == (ref.sot_token_id, ref.eot_token_id)
    for prompt in PROMPTS + ["Don't  stop: 123 cafés, C'est-la-vie #tag"]:
        ref_ids = ref(prompt)[0].tolist()  # padded with 0 to 77, truncated with eot last
        ref_ids = ref_ids[: ref_ids.index(ref.eot_token_id) + 1]
        ids = ours(prompt, truncation=True, max_length=77).input_ids
        assert ids == ref_ids, prompt


def test_encode_rejects_a_bare_string(tiny_clip):
    with pytest.raises(TypeError, match="list of strings"):
        tiny_clip.encode("a cat")

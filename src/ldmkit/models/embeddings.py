"""Textual-inversion embeddings (Gal et al. 2022): new token vectors for a text encoder, read, written and added.

Files ldmkit reads (safetensors; pickles only with --allow-pickle, through torch.load(weights_only=True)):
- A1111 / kohya: one tensor `emb_params` [num_vectors, dim] (what kohya sd-scripts and ldmkit write);
- A1111's own layout `string_to_param` {"*": [num_vectors, dim]} (+ `name`), flattened to `string_to_param.*` in
  a safetensors file;
- diffusers: one tensor named after its token, `{"<cat-toy>": [dim] or [num_vectors, dim]}` (learned_embeds).
The token is, first to last: the one asked for, the file's own (ldmkit metadata, a diffusers key, an A1111 `name`),
the file's stem (A1111's rule). A multi-vector token `<t>` is added as tokens `<t>`, `<t>_1`, ... and prompts are
spelled out before tokenizing, exactly as diffusers' `load_textual_inversion` does, so both give the same image.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldmkit.errors import UnsafeFileError, UsageError, shown
from ldmkit.models.safety import PICKLE_SUFFIXES, check_safetensors_header

MAX_FILE_BYTES = 64 * 2**20  # an SD-XL embedding of 75 vectors is ~600 KB
MAX_VECTORS = 75  # CLIP's 77 positions less BOS/EOS: A1111's limit too
MAX_DIM = 8192
MAX_TOKEN_CHARS = 64
MAX_METADATA_CHARS = 100_000
KOHYA_KEY = "emb_params"
A1111_KEY = "string_to_param.*"
_TOKEN = re.compile(r"[A-Za-z0-9<>_.\-]+")


@dataclass
class EmbeddingFile:
    """The vectors of one textual-inversion file and what it says about itself."""

    vectors: Any
    """torch float tensor [num_vectors, dim]: the input embeddings the token(s) stand for."""
    token: str | None = None
    """The token the file names (ldmkit metadata, a diffusers key, an A1111 `name`); None: it names none."""
    layout: str = "emb_params"
    """"emb_params" (A1111/kohya), "string_to_param" (A1111's own) or "diffusers" ({token: tensor})."""
    metadata: dict[str, str] = field(default_factory=dict)
    """The safetensors header's string metadata (ldmkit_token, ldmkit_base_model_hash, ldmkit_init_word, ...)."""
    source: str = ""
    """The file it was read from, for messages ("" when built in memory)."""

    def __post_init__(self) -> None:
        if self.layout not in ("emb_params", "string_to_param", "diffusers"):
            raise ValueError(f"EmbeddingFile.layout must be emb_params, string_to_param or diffusers: {self.layout!r}")
        if self.vectors.dim() == 1:
            self.vectors = self.vectors[None]
        shape = list(self.vectors.shape)
        if len(shape) != 2 or not 1 <= shape[0] <= MAX_VECTORS or not 1 <= shape[1] <= MAX_DIM:
            raise UsageError(f"{self.source or 'embedding'}: vectors of shape {list(self.vectors.shape)}; expected "
                             f"[num_vectors 1..{MAX_VECTORS}, dim 1..{MAX_DIM}]")
        if not self.vectors.is_floating_point() or not bool(self.vectors.isfinite().all()):
            raise UsageError(f"{self.source or 'embedding'}: the vectors are not finite floating-point numbers")
        self.vectors = self.vectors.float()


def check_token(token: str, what: str = "embedding token") -> str:
    """A token string: 1..64 characters of letters, digits and `<>_.-` (no spaces: one word of a prompt)."""
    if not isinstance(token, str) or not 1 <= len(token) <= MAX_TOKEN_CHARS or not _TOKEN.fullmatch(token):
        raise UsageError(f"{what} {shown(token)}: expected 1..{MAX_TOKEN_CHARS} letters, digits or <>_.- "
                         "(one word, e.g. <zxq>)")
    return token


def parse_embedding_arg(text: str) -> tuple[Path, str | None]:
    """`FILE[:TOKEN]` -> (FILE, TOKEN or None); a colon belongs to the file name unless FILE ends in a known suffix."""
    head, sep, tail = text.rpartition(":")
    if sep and Path(head).suffix.lower() in (".safetensors", *PICKLE_SUFFIXES) and not Path(text).exists():
        return Path(head), check_token(tail, f"--embedding {shown(text)}: token")
    return Path(text), None


def check_embedding_path(path: str | Path, *, allow_pickle: bool = False) -> Path:
    """An embedding file ldmkit may read: it exists, is .safetensors (a pickle only when allowed), within size."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such embedding file")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        err = UnsafeFileError(f"{path} is a pickle file ({path.suffix}), and loading pickles can run arbitrary code; "
                              "use a .safetensors embedding")
        err.flag_hint = ("--allow-pickle", "or pass --allow-pickle to read its tensors (torch.load weights_only=True)")
        raise err
    if suffix != ".safetensors" and suffix not in PICKLE_SUFFIXES:
        raise UsageError(f"{path}: an embedding file must be .safetensors (A1111, kohya or diffusers layout)")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UsageError(f"{path}: {size} bytes, larger than an embedding file can be ({MAX_FILE_BYTES} bytes)")
    return path


def read_embedding(path: str | Path, *, allow_pickle: bool = False) -> EmbeddingFile:
    """Read a textual-inversion file in any supported layout (shapes checked from the safetensors header first)."""
    path = check_embedding_path(path, allow_pickle=allow_pickle)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return _read_pickle(path)
    from safetensors import safe_open

    header = check_safetensors_header(path)
    metadata = header.pop("__metadata__", None) or {}
    chars = sum(len(str(k)) + len(str(v)) for k, v in metadata.items()) if isinstance(metadata, dict) else None
    if chars is None or chars > MAX_METADATA_CHARS:
        raise UsageError(f"{path}: header metadata is not a small string map")
    keys = sorted(header)
    if {"clip_l", "clip_g"} <= set(keys):
        raise UsageError(f"{path}: an SD-XL embedding (clip_l + clip_g); ldmkit's models have one text encoder")
    if len(keys) != 1:
        raise UsageError(f"{path}: {len(keys)} tensors ({', '.join(shown(k) for k in keys[:4])}); an embedding file "
                         f"holds one ({KOHYA_KEY}, {A1111_KEY} or the token's own name)")
    key = keys[0]
    shape = header[key]["shape"]
    if len(shape) not in (1, 2) or header[key]["dtype"] not in ("F16", "BF16", "F32", "F64"):
        raise UsageError(f"{path}: {shown(key)} is {header[key]['dtype']} {shape}; expected float [num_vectors, dim]")
    with safe_open(str(path), framework="pt") as f:
        vectors = f.get_tensor(key)
    metadata = {str(k): str(v) for k, v in metadata.items()}
    token = metadata.get("ldmkit_token") or None
    if key == KOHYA_KEY:
        layout = "emb_params"
    elif key.startswith("string_to_param."):
        layout, token = "string_to_param", token or metadata.get("name") or None
    else:
        layout, token = "diffusers", key
    return EmbeddingFile(vectors, token, layout, metadata, str(path))


def _read_pickle(path: Path) -> EmbeddingFile:
    """A1111's .pt ({"string_to_param": {"*": T}, "name": ...}) or a diffusers .bin ({token: T}), tensors only."""
    from ldmkit.models.safety import load_pickle_weights

    data = load_pickle_weights(path, allow_pickle=True)
    if isinstance(data.get("string_to_param"), dict) and "*" in data["string_to_param"]:
        name = data.get("name")
        return EmbeddingFile(data["string_to_param"]["*"], name if isinstance(name, str) else None,
                             "string_to_param", source=str(path))
    if KOHYA_KEY in data:
        return EmbeddingFile(data[KOHYA_KEY], None, "emb_params", source=str(path))
    if len(data) == 1:
        (token, vectors), = data.items()
        return EmbeddingFile(vectors, str(token), "diffusers", source=str(path))
    raise UsageError(f"{path}: not a textual-inversion file (expected string_to_param, {KOHYA_KEY} or one tensor)")


def embedding_metadata(*, token: str, base_model_hash: str = "", init_word: str = "", text_encoder: str = "",
                       step: int | None = None) -> dict[str, str]:
    """String metadata of an embedding file ldmkit writes (empty values are left out)."""
    meta = {"ldmkit_format": "embedding", "ldmkit_token": token, "ldmkit_base_model_hash": base_model_hash,
            "ldmkit_init_word": init_word, "ldmkit_text_encoder": text_encoder,
            "ldmkit_step": "" if step is None else str(step)}
    return {k: v for k, v in meta.items() if v != ""}


def save_embedding(vectors: Any, path: str | Path, *, metadata: dict[str, str] | None = None,
                   overwrite: bool = False) -> Path:
    """Write [num_vectors, dim] vectors as `{"emb_params": fp32}` safetensors (A1111/kohya; diffusers reads it with
    `load_textual_inversion(path, token=...)`), via a temp file renamed into place."""
    import os

    import torch
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise UsageError(f"{path}: an embedding file is written as .safetensors")
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists; not overwriting it")
    EmbeddingFile(vectors.detach().cpu())  # the shape and value checks
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({KOHYA_KEY: vectors.detach().to("cpu", torch.float32).contiguous()}, str(tmp),
                  metadata=dict(metadata or {}))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def token_names(token: str, num_vectors: int) -> list[str]:
    """The tokenizer entries of a `num_vectors` embedding: `<t>`, `<t>_1`, ... (diffusers' multi-vector names)."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def add_tokens(text_encoder: Any, token: str, vectors: Any) -> list[int]:
    """Add `token` (and `<t>_1`, ... for more vectors) to a TextEncoder's tokenizer, grow its input embedding table
    and write the vectors into the new rows; returns the new token ids. Refuses a token the tokenizer already has
    and vectors whose width is not the table's, naming both."""
    import torch

    check_token(token)
    tokenizer, model = text_encoder.tokenizer, text_encoder.model
    table = model.get_input_embeddings()
    vectors = vectors.reshape(-1, vectors.shape[-1])
    if vectors.shape[-1] != table.weight.shape[1]:
        raise UsageError(f"embedding for {token}: its vectors are {vectors.shape[-1]}-dimensional, the text encoder's "
                         f"token embeddings are {table.weight.shape[1]}-dimensional (a different base model)")
    names = token_names(token, vectors.shape[0])
    vocab = tokenizer.get_vocab()
    taken = [n for n in names if n in vocab]
    if taken:
        raise UsageError(f"embedding token {shown(taken[0])} is already in the tokenizer's vocabulary; pick another "
                         "(FILE:TOKEN)")
    tokenizer.add_tokens(names)
    ids = tokenizer.convert_tokens_to_ids(names)
    if any(tokenizer.tokenize(n) != [n] for n in names):
        raise UsageError(f"the tokenizer does not keep {shown(token)} as one word (try lowercase)")
    rows = max(ids) + 1
    if rows > table.weight.shape[0]:
        model.resize_token_embeddings(rows, mean_resizing=False)  # new rows are written just below
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        weight[ids] = vectors.to(weight.device, weight.dtype)
    if len(names) > 1:
        text_encoder.multi_vector[token] = tuple(names)
    return ids


def init_vectors(text_encoder: Any, init_word: str, num_vectors: int) -> Any:
    """[num_vectors, dim] start vectors: the input embeddings of `init_word`'s tokens, repeated cyclically (A1111's
    rule; "person" -> its one token's vector in every row)."""
    import torch

    ids = text_encoder.tokenizer(init_word, add_special_tokens=False).input_ids
    if not ids:
        raise UsageError(f"embedding.init_word {shown(init_word)} has no tokens")
    table = text_encoder.model.get_input_embeddings().weight.detach()
    return torch.stack([table[ids[i % len(ids)]].float().cpu() for i in range(num_vectors)])


def file_hash(path: str | Path) -> str:
    """A1111's short hash of an embedding (TI hashes): the first 12 hex digits of the file's SHA-256."""
    return _sha256(Path(path), 0)[:12]


def addnet_hash(path: str | Path) -> str:
    """A1111's short hash of a LoRA .safetensors (Lora hashes): SHA-256 of the bytes after the header (kohya's
    "addnet" hash, unchanged by metadata edits), first 12 hex digits."""
    import struct

    path = Path(path)
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return _sha256(path, 8 + n)[:12]


def _sha256(path: Path, offset: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(offset)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""Textual-inversion embeddings on a pipeline (issue 16): `Pipeline.load_embedding(path, token=None)`, and
`Pipeline.unload_embeddings()` to remove them all (the tokenizer and embedding table as before the first load).

The file's vectors become new rows of the text encoder's input embedding table under new tokens (diffusers'
`load_textual_inversion` does the same, and the interop test shows both give the same image); prompts then use
the token like any word. What was loaded is kept on the pipeline, so each image's PNG parameters can name it
(A1111's `TI hashes`, see ldmkit.pipeline.result.with_adapters).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ldmkit.errors import UsageError
from ldmkit.models.embeddings import add_tokens, check_token, file_hash, read_embedding

MAX_LOADED = 64  # embeddings on one pipeline


@dataclass(frozen=True)
class LoadedEmbedding:
    """One embedding added to a pipeline's text encoder."""

    token: str
    """The word prompts use for it."""
    short_hash: str
    """A1111's short hash of the file (first 12 hex digits of its SHA-256)."""
    source: str
    """The file it came from."""
    num_vectors: int
    """Prompt positions the token takes."""


def load_embedding(pipe: Any, path: str | Path, token: str | None = None, *, allow_pickle: bool = False) -> str:
    """Add a textual-inversion file (A1111 `emb_params` / `string_to_param`, or diffusers `{token: tensor}`) to the
    pipeline's text encoder; returns the token prompts use: `token`, else the file's own, else the file's stem.
    A token the tokenizer already has, or vectors of another width than the text encoder's, is an error."""
    loaded = loaded_embeddings(pipe)
    if len(loaded) >= MAX_LOADED:
        raise UsageError(f"at most {MAX_LOADED} embeddings at once")
    emb = read_embedding(path, allow_pickle=allow_pickle)
    if token is not None:
        token = check_token(token)
    else:
        token = check_token(emb.token or Path(path).stem, f"{path}: token (from the file; give FILE:TOKEN to choose)")
    text = pipe.text_encoder
    if getattr(pipe, "_before_embeddings", None) is None:  # what unload_embeddings restores
        pipe._before_embeddings = (copy.deepcopy(text.tokenizer), text.model.get_input_embeddings().weight.shape[0])
    add_tokens(text, token, emb.vectors)
    loaded.append(LoadedEmbedding(token, file_hash(path), str(path), int(emb.vectors.shape[0])))
    return token


def unload_embeddings(pipe: Any) -> None:
    """Remove every loaded embedding: the tokenizer as it was before the first load, the embedding table cut back
    to its rows then (the base rows are never written, so prompts encode bit for bit as before). Nothing loaded:
    nothing to do."""
    saved = getattr(pipe, "_before_embeddings", None)
    if saved is None:
        return
    tokenizer, rows = saved
    text = pipe.text_encoder
    text.tokenizer = tokenizer
    if text.model.get_input_embeddings().weight.shape[0] != rows:
        text.model.resize_token_embeddings(rows)
    text.multi_vector.clear()
    loaded_embeddings(pipe).clear()
    pipe._before_embeddings = None


def loaded_embeddings(pipe: Any) -> list[LoadedEmbedding]:
    """The embeddings loaded into `pipe`, in order (an empty list, kept on the pipeline, before the first)."""
    if getattr(pipe, "_embeddings", None) is None:
        pipe._embeddings = []
    return pipe._embeddings


def embedding_specs(texts: list[str], *, allow_pickle: bool = False) -> list[tuple[Path, str | None]]:
    """`--embedding FILE[:TOKEN]` values -> (path, token or None), each file checked (exists, .safetensors or an
    allowed pickle, size) before any model loads."""
    from ldmkit.models.embeddings import check_embedding_path, parse_embedding_arg

    if len(texts) > MAX_LOADED:
        raise UsageError(f"at most {MAX_LOADED} --embedding files")
    specs = [parse_embedding_arg(text) for text in texts]
    tokens = [token for _, token in specs if token is not None]
    if len(set(tokens)) != len(tokens):
        raise UsageError(f"--embedding: the token {sorted(t for t in tokens if tokens.count(t) > 1)[0]} is given twice")
    return [(check_embedding_path(path, allow_pickle=allow_pickle), token) for path, token in specs]

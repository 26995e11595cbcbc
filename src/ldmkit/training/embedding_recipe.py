"""The `embedding` section of `ldmkit train embedding` (textual inversion, issue 16), added to the UNet recipe.

    embedding: {token: "<zxq>", num_vectors: 2, init_word: person, templates: ["a photo of {}"]}

`EmbeddingRecipe` (ldmkit.training.recipes) holds it; the task is ldmkit.training.embedding_task.
"""

from __future__ import annotations

from dataclasses import dataclass

from ldmkit.config.checks import check_int
from ldmkit.errors import UsageError

MAX_TRAIN_VECTORS = 16
MAX_TEMPLATES = 1000
MAX_TEMPLATE_CHARS = 500
TEMPLATES = ("a photo of {}", "a picture of {}", "an image of {}", "a close-up photo of {}", "a rendering of {}",
             "a good photo of {}", "a cropped photo of {}", "a bright photo of {}")
"""Neutral captions in the spirit of the textual-inversion paper's (Gal et al. 2022, appendix), '{}' the token."""


@dataclass(frozen=True)
class EmbeddingSection:
    """The new token(s) whose input embedding vectors are learned; every base weight stays frozen."""

    token: str = "<zxq>"
    """The word prompts will use (letters, digits, <>_.-); it must be new to the tokenizer. The final file is
    RUN/final/<token>.safetensors."""
    num_vectors: int = 1
    """Vectors the token stands for (1..16): each takes one prompt position, as tokens <t>, <t>_1, ..."""
    init_word: str = "person"
    """The vectors start as this word's input embeddings (its tokens repeated cyclically)."""
    templates: tuple[str, ...] = TEMPLATES
    """Training captions, '{}' standing for the token; each image gets a random one every step."""

    def __post_init__(self) -> None:
        from ldmkit.models.embeddings import check_token

        check_token(self.token, "embedding.token")
        check_int("embedding", "num_vectors", self.num_vectors, minimum=1)
        if self.num_vectors > MAX_TRAIN_VECTORS:
            raise UsageError(f"embedding.num_vectors must be at most {MAX_TRAIN_VECTORS}, got {self.num_vectors}")
        if not isinstance(self.init_word, str) or not self.init_word.strip() or len(self.init_word) > 100:
            raise UsageError(f"embedding.init_word must be a word or short phrase, got {self.init_word!r}")
        templates = tuple(self.templates) if isinstance(self.templates, (list, tuple)) else None
        if not templates or len(templates) > MAX_TEMPLATES or not all(
                isinstance(t, str) and t.count("{}") == 1 and len(t) <= MAX_TEMPLATE_CHARS for t in templates):
            raise UsageError(f"embedding.templates must be 1..{MAX_TEMPLATES} captions, each with one '{{}}' for the "
                             f"token and at most {MAX_TEMPLATE_CHARS} characters")
        object.__setattr__(self, "templates", templates)


def check_embedding_unet(unet) -> None:
    """The `unet` settings `train embedding` refuses: the UNet is frozen and every caption holds the token."""
    if unet.caption_dropout != 0.0:
        raise UsageError(f"unet.caption_dropout ({unet.caption_dropout}) has no effect in `train embedding`: every "
                         "caption holds the token (set it to 0)")
    if unet.class_conditional:
        raise UsageError("unet.class_conditional has no effect in `train embedding`: the captions are "
                         "embedding.templates")
    if unet.eval_clip is not None:
        raise UsageError("unet.eval_clip has no effect in `train embedding` (the UNet is frozen); drop it")

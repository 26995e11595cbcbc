"""Retrieval metrics from a similarity matrix (e.g. `cosine_similarity_matrix(images, texts)`).

Ranks are 1-based and pessimistic about ties: a candidate that scores *equal* to the correct one is
counted as ranked above it, so a model that gives every candidate the same score ranks last, not first.

prompt_retrieval: each generated image against K candidate prompts; is its own prompt on top?

cross_modal_retrieval: the usual image<->text recall@k for a captioned set where an image may have
several captions. Image->text is a hit at k if ANY caption of that image is among the k texts
most similar to it; text->image is a hit at k if the caption's own image (by image id) is among
the k most similar images. open_clip's `get_clip_metrics` (open_clip_train/train.py) instead takes
ground truth = the diagonal (text j belongs to image j); with several captions per image, retrieving
another caption of the same image counts as a miss there, so its numbers are lower bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ldmkit.errors import UsageError
from ldmkit.metrics.feature_arrays import as_matrix


@dataclass(frozen=True)
class PromptRetrieval:
    """Where each image's own prompt ranks among the candidate prompts."""

    ranks: np.ndarray
    """(n_images,) 1-based rank of the image's own prompt (1 = most similar)."""
    candidates: int
    """K, the number of candidate prompts per image."""

    def __post_init__(self):
        ranks = np.asarray(self.ranks)
        if ranks.ndim != 1 or len(ranks) == 0 or ranks.min() < 1 or ranks.max() > self.candidates:
            raise UsageError(f"PromptRetrieval.ranks must be a non-empty 1-D array of ranks in [1, {self.candidates}]")
        object.__setattr__(self, "ranks", ranks)

    def accuracy_at(self, k: int) -> float:
        """Fraction of images whose own prompt ranks in the top k (1.0 when k >= candidates)."""
        return float((self.ranks <= k).mean())

    @property
    def top1(self) -> float:
        return self.accuracy_at(1)

    @property
    def top5(self) -> float:
        return self.accuracy_at(5)


@dataclass(frozen=True)
class CrossModalRetrieval:
    """Image->text and text->image recall@k of a captioned set, several captions per image allowed."""

    image_ranks: np.ndarray
    """(n_images,) 1-based rank of the best-ranked caption of each image among all texts."""
    text_ranks: np.ndarray
    """(n_texts,) 1-based rank of each caption's own image among all images."""

    def __post_init__(self):
        for name in ("image_ranks", "text_ranks"):
            ranks = np.asarray(getattr(self, name))
            if ranks.ndim != 1 or len(ranks) == 0 or ranks.min() < 1:
                raise UsageError(f"CrossModalRetrieval.{name} must be a non-empty 1-D array of ranks >= 1")
            object.__setattr__(self, name, ranks)

    def image_to_text(self, k: int) -> float:
        """R@k image->text: fraction of images with any of their captions in the top k texts."""
        return float((self.image_ranks <= k).mean())

    def text_to_image(self, k: int) -> float:
        """R@k text->image: fraction of captions whose image is in the top k images."""
        return float((self.text_ranks <= k).mean())

    def recalls(self, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
        """{"image_to_text_R@1": ..., "text_to_image_R@1": ..., ...} for a report."""
        out = {f"image_to_text_R@{k}": self.image_to_text(k) for k in ks}
        out.update({f"text_to_image_R@{k}": self.text_to_image(k) for k in ks})
        return out


def prompt_retrieval(similarity, own_prompt) -> PromptRetrieval:
    """similarity: (n_images, K) image-vs-candidate-prompt scores; own_prompt: (n_images,) column of
    each image's own prompt."""
    sim = as_matrix(similarity, "similarity")
    own = _index_vector(own_prompt, "own_prompt", len(sim), sim.shape[1])
    own_score = sim[np.arange(len(sim)), own]
    # Every candidate scoring >= the own prompt outranks it; the own prompt itself is one of them.
    ranks = (sim >= own_score[:, None]).sum(axis=1)
    return PromptRetrieval(ranks=ranks, candidates=sim.shape[1])


def distinct_prompts(prompts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(the distinct prompts in first-seen order, the column of each of `prompts` among them): the candidates
    of prompt_retrieval. Ranking against repeated captions would tie every repeat with the own prompt."""
    candidates = list(dict.fromkeys(prompts))
    column = {prompt: k for k, prompt in enumerate(candidates)}
    return candidates, np.array([column[p] for p in prompts], dtype=np.int64)


def cross_modal_retrieval(similarity, caption_image) -> CrossModalRetrieval:
    """similarity: (n_images, n_texts) scores; caption_image: (n_texts,) row (image id) of each caption.

    Every image needs at least one caption (image->text retrieval is undefined otherwise).
    """
    sim = as_matrix(similarity, "similarity")
    n_images, n_texts = sim.shape
    owner = _index_vector(caption_image, "caption_image", n_texts, n_images)
    own = owner[None, :] == np.arange(n_images)[:, None]          # (n_images, n_texts)
    orphans = np.flatnonzero(~own.any(axis=1))
    if orphans.size:
        raise UsageError(f"image {int(orphans[0])} has no caption in caption_image ({orphans.size} images without "
                         f"captions); every image row needs at least one caption")
    best_own = np.where(own, sim, -np.inf).max(axis=1)
    image_ranks = 1 + (np.where(own, -np.inf, sim) >= best_own[:, None]).sum(axis=1)
    own_image_score = sim[owner, np.arange(n_texts)]
    text_ranks = (sim >= own_image_score[None, :]).sum(axis=0)    # includes the own image itself
    return CrossModalRetrieval(image_ranks=image_ranks, text_ranks=text_ranks)


def caption_owners(captions_per_image: Sequence[int]) -> np.ndarray:
    """caption_image for texts listed image by image: [2, 1] -> [0, 0, 1]."""
    counts = np.asarray(captions_per_image)
    if counts.ndim != 1 or (counts < 1).any():
        raise UsageError("captions_per_image must list a caption count >= 1 for every image")
    return np.repeat(np.arange(len(counts)), counts)


def _index_vector(values, name: str, length: int, bound: int) -> np.ndarray:
    index = np.asarray(values)
    if index.shape != (length,):
        raise UsageError(f"{name} must have shape ({length},) to match the similarity matrix; got {index.shape}")
    if not np.issubdtype(index.dtype, np.integer):
        raise UsageError(f"{name} must hold integer indices; got dtype {index.dtype}")
    bad = np.flatnonzero((index < 0) | (index >= bound))
    if bad.size:
        raise UsageError(f"{name}[{int(bad[0])}] = {int(index[bad[0]])} is outside [0, {bound}) "
                         f"({bad.size} out-of-range entries)")
    return index

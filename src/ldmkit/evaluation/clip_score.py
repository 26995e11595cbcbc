"""CLIP score: how well each image matches its prompt, from CLIP image and text embeddings.

    score_i = 100 * max(cos(image_i, text_i), 0)

The per-pair clipping is the definition in Hessel et al. 2021 (CLIPScore, with w = 100 instead of
2.5) and in torchmetrics' CLIPScore docstring. torchmetrics' code clips only the *mean* of the
unclipped scores; both means are returned, and they differ only when some pair has a negative cosine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ldmkit.errors import UsageError
from ldmkit.metrics.bootstrap import ConfidenceInterval, bootstrap_ci
from ldmkit.metrics.feature_arrays import as_matrix, l2_normalize, same_dim

SCORE_SCALE = 100.0  # torchmetrics' and most papers' scale (Hessel et al. use 2.5)


@dataclass(frozen=True)
class ClipScore:
    """CLIP scores of matched (image, text) pairs."""

    per_pair: np.ndarray
    """(n,) 100 * max(cosine, 0) for each pair, in [0, 100]."""
    mean: float
    """Mean of per_pair: the CLIP score of the set."""
    mean_as_torchmetrics: float
    """max(100 * mean cosine, 0): what torchmetrics' CLIPScore returns for the same embeddings."""

    def __post_init__(self):
        per_pair = np.asarray(self.per_pair, dtype=np.float64)
        if per_pair.ndim != 1 or len(per_pair) == 0:
            raise UsageError(f"ClipScore.per_pair must be a non-empty 1-D array; got shape {per_pair.shape}")
        if per_pair.min() < 0 or per_pair.max() > SCORE_SCALE * (1 + 1e-9):
            raise UsageError(f"ClipScore.per_pair must lie in [0, {SCORE_SCALE:g}]")
        object.__setattr__(self, "per_pair", per_pair)

    def ci(self, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> ConfidenceInterval:
        """Percentile-bootstrap interval of the mean over pairs."""
        return bootstrap_ci(self.per_pair, n_boot=n_boot, seed=seed, alpha=alpha)


def cosine_similarity_matrix(embeddings_a, embeddings_b) -> np.ndarray:
    """(len(a), len(b)) cosines between every row of a and every row of b (rows L2-normalised here)."""
    a = as_matrix(embeddings_a, "embeddings_a")
    b = as_matrix(embeddings_b, "embeddings_b")
    same_dim(a, b, "embeddings_a", "embeddings_b")
    return l2_normalize(a, "embeddings_a") @ l2_normalize(b, "embeddings_b").T


def clip_score(image_embeddings, text_embeddings) -> ClipScore:
    """CLIP score of row i of image_embeddings against row i of text_embeddings (one prompt per image)."""
    images = as_matrix(image_embeddings, "image_embeddings")
    texts = as_matrix(text_embeddings, "text_embeddings")
    same_dim(images, texts, "image_embeddings", "text_embeddings")
    if len(images) != len(texts):
        raise UsageError(f"clip_score pairs row i of each: got {len(images)} image and {len(texts)} text "
                         "embeddings; repeat an image's embedding once per prompt if it has several")
    cosines = np.einsum("ij,ij->i", l2_normalize(images, "image_embeddings"), l2_normalize(texts, "text_embeddings"))
    cosines = np.clip(cosines, -1.0, 1.0)  # rounding can put a unit-vector dot product a hair past 1
    per_pair = SCORE_SCALE * np.maximum(cosines, 0.0)
    return ClipScore(per_pair=per_pair, mean=float(per_pair.mean()),
                     mean_as_torchmetrics=max(SCORE_SCALE * float(cosines.mean()), 0.0))

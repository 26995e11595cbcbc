"""CLIP score against torch's cosine similarity, with per-pair clipping and torchmetrics' mean."""

import numpy as np
import pytest
import torch

from ldmkit.errors import UsageError
from ldmkit.evaluation.clip_score import clip_score, cosine_similarity_matrix


def test_matches_torch_cosine_similarity_and_is_scale_free():
    images, texts = torch.randn(50, 32), torch.randn(50, 32)
    reference = 100 * torch.nn.functional.cosine_similarity(images.double(), texts.double()).clamp(min=0)
    result = clip_score(images, texts)
    np.testing.assert_allclose(result.per_pair, reference.numpy(), rtol=1e-12, atol=1e-12)
    assert result.mean == pytest.approx(float(reference.mean()), rel=1e-12)
    scaled = clip_score(3 * images, 0.5 * texts)
    np.testing.assert_allclose(scaled.per_pair, result.per_pair, rtol=1e-5, atol=1e-5)


def test_negative_cosines_clip_per_pair_while_torchmetrics_clips_the_mean():
    # Cosines 0.5 and -0.8: per pair [50, 0], mean 25; torchmetrics: max(100 * mean(0.5, -0.8), 0) = 0.
    images = np.array([[1.0, 0.0], [1.0, 0.0]])
    texts = np.array([[0.5, np.sqrt(0.75)], [-0.8, 0.6]])
    result = clip_score(images, texts)
    np.testing.assert_allclose(result.per_pair, [50.0, 0.0], atol=1e-12)
    assert result.mean == pytest.approx(25.0)
    assert result.mean_as_torchmetrics == 0.0
    same = clip_score(images, images)
    assert same.mean == pytest.approx(100.0) and same.mean_as_torchmetrics == pytest.approx(100.0)


def test_ci_brackets_the_mean():
    result = clip_score(torch.randn(200, 8) + 1.0, torch.randn(200, 8) + 1.0)
    interval = result.ci(n_boot=500)
    assert interval.estimate == pytest.approx(result.mean)
    assert interval.low < result.mean < interval.high


def test_cosine_matrix_diagonal_is_clip_score_over_100():
    images, texts = np.random.default_rng(0).standard_normal((2, 6, 5))
    matrix = cosine_similarity_matrix(images, texts)
    assert matrix.shape == (6, 6)
    np.testing.assert_allclose(100 * np.clip(np.diag(matrix), 0, None), clip_score(images, texts).per_pair, rtol=1e-12)


def test_mismatched_pairs_and_zero_vectors_raise():
    with pytest.raises(UsageError, match="3 image and 2 text"):
        clip_score(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(UsageError, match="row 1 is all zeros"):
        clip_score(np.array([[1.0, 0], [0, 0]]), np.ones((2, 2)))

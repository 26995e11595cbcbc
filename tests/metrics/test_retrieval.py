"""Retrieval metrics on hand-built similarity matrices, a brute-force reference, and open_clip's metric."""

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from ldmkit.errors import UsageError
from ldmkit.metrics.retrieval import caption_owners, cross_modal_retrieval, prompt_retrieval


def test_prompt_retrieval_ranks_by_hand_with_pessimistic_ties():
    sim = np.array([[0.9, 0.1, 0.2],
                    [0.5, 0.4, 0.6],
                    [0.3, 0.3, 0.1]])
    result = prompt_retrieval(sim, np.array([0, 2, 1]))
    assert result.ranks.tolist() == [1, 1, 2]  # row 2: a tie with column 0 ranks the own prompt second
    assert result.top1 == pytest.approx(2 / 3)
    assert result.top5 == 1.0
    flat = prompt_retrieval(np.full((4, 10), 0.5), np.arange(4))
    assert flat.ranks.tolist() == [10] * 4 and flat.top1 == 0.0 and flat.accuracy_at(9) == 0.0


def test_prompt_retrieval_top5_against_argsort():
    rng = np.random.default_rng(0)
    sim, own = rng.standard_normal((200, 20)), rng.integers(0, 20, 200)
    order = np.argsort(-sim, axis=1)
    expected_rank = 1 + np.argmax(order == own[:, None], axis=1)
    result = prompt_retrieval(torch.from_numpy(sim), own)
    np.testing.assert_array_equal(result.ranks, expected_rank)
    assert result.top5 == pytest.approx(np.mean(expected_rank <= 5))


def test_cross_modal_hit_through_second_caption_counts():
    # Two images with two captions each: texts 0, 1 belong to image 0; texts 2, 3 to image 1.
    sim = np.array([[0.2, 0.9, 0.5, 0.7],
                    [0.8, 0.7, 0.3, 0.7]])
    result = cross_modal_retrieval(sim, np.array([0, 0, 1, 1]))
    # Image 0 hits through its 2nd caption; image 1's best caption (0.7) loses to text 0 and ties text 1.
    assert result.image_ranks.tolist() == [1, 3]
    # Text 3 scores 0.7 with both images: the tie ranks its own image 1 second.
    assert result.text_ranks.tolist() == [2, 1, 2, 2]
    assert result.image_to_text(1) == 0.5 and result.image_to_text(5) == 1.0
    assert result.text_to_image(1) == 0.25
    assert result.recalls((1,)) == {"image_to_text_R@1": 0.5, "text_to_image_R@1": 0.25}


def brute_force(sim, owner):
    n_images, n_texts = sim.shape
    image_ranks = []
    for i in range(n_images):
        order = sorted(range(n_texts), key=lambda j: -sim[i, j])
        image_ranks.append(1 + min(pos for pos, j in enumerate(order) if owner[j] == i))
    text_ranks = []
    for j in range(n_texts):
        order = sorted(range(n_images), key=lambda i: -sim[i, j])
        text_ranks.append(1 + order.index(owner[j]))
    return image_ranks, text_ranks


def test_cross_modal_matches_brute_force_with_variable_captions_per_image():
    rng = np.random.default_rng(1)
    owner = caption_owners(rng.integers(1, 6, 30))
    sim = rng.standard_normal((30, len(owner)))
    result = cross_modal_retrieval(sim, owner)
    image_ranks, text_ranks = brute_force(sim, owner)
    assert result.image_ranks.tolist() == image_ranks
    assert result.text_ranks.tolist() == text_ranks


def open_clip_get_clip_metrics():
    """open_clip_train.train.get_clip_metrics, compiled alone (its module needs torchvision)."""
    spec = importlib.util.find_spec("open_clip_train")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip_train is not installed")
    source = (Path(spec.submodule_search_locations[0]) / "train.py").read_text()
    node = next((n for n in ast.parse(source).body
                 if isinstance(n, ast.FunctionDef) and n.name == "get_clip_metrics"), None)
    if node is None:
        pytest.skip("this open_clip_train has no get_clip_metrics")
    namespace = {"torch": torch, "np": np}
    exec(compile(ast.Module(body=[node], type_ignores=[]), "open_clip_train/train.py", "exec"), namespace)
    return namespace["get_clip_metrics"]


def test_agrees_with_open_clip_for_one_caption_per_image_and_beats_its_diagonal_otherwise():
    get_clip_metrics = open_clip_get_clip_metrics()
    rng = np.random.default_rng(2)
    image, text = torch.randn(64, 16, dtype=torch.float64), torch.randn(64, 16, dtype=torch.float64)
    ours = cross_modal_retrieval((image @ text.T).numpy(), np.arange(64))
    theirs = get_clip_metrics(image, text, logit_scale=1.0)
    for k in (1, 5, 10):
        assert ours.image_to_text(k) == pytest.approx(theirs[f"image_to_text_R@{k}"])
        assert ours.text_to_image(k) == pytest.approx(theirs[f"text_to_image_R@{k}"])
    # Several captions per image, fed to open_clip the usual way: each image repeated per caption.
    owner = caption_owners(np.full(20, 3))
    images = torch.from_numpy(rng.standard_normal((20, 8)))
    texts = images[owner] + 0.8 * torch.from_numpy(rng.standard_normal((60, 8)))
    ours = cross_modal_retrieval((images @ texts.T).numpy(), owner)
    theirs = get_clip_metrics(images[owner], texts, logit_scale=1.0)
    assert ours.image_to_text(1) > theirs["image_to_text_R@1"]  # another caption of the image was a miss there
    assert ours.text_to_image(1) > theirs["text_to_image_R@1"]  # a duplicate of the image was a miss there


def test_bad_inputs_raise():
    sim = np.zeros((2, 3))
    with pytest.raises(UsageError, match="image 1 has no caption"):
        cross_modal_retrieval(sim, np.array([0, 0, 0]))
    with pytest.raises(UsageError, match=r"caption_image\[2\] = 5 is outside \[0, 2\)"):
        cross_modal_retrieval(sim, np.array([0, 1, 5]))
    with pytest.raises(UsageError, match="shape"):
        prompt_retrieval(sim, np.array([0, 1, 2]))
    with pytest.raises(UsageError, match="integer"):
        prompt_retrieval(sim, np.array([0.0, 1.0]))

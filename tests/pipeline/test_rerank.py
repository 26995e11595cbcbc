"""Best-of-N reranking keeps the candidate the dual encoder scores highest, and its seed reproduces it."""

import numpy as np
import pytest
import torch

from ldmkit.cli import main
from ldmkit.errors import UsageError
from ldmkit.models.dual_encoder import DualEncoder, DualEncoderConfig, save_dual_encoder
from ldmkit.models.folder import save_components
from ldmkit.models.presets import build_components
from ldmkit.pipeline import GenerationResult, Pipeline
from ldmkit.pipeline.rerank import candidate_scores, rerank_best_of


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("rerank")
    components = build_components("tiny", seed=0)
    save_components(components, root / "bare")
    save_components(components, root / "model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        dual = DualEncoder(DualEncoderConfig(embed_dim=16, image_channels=(8, 16)), components.text_encoder).eval()
    save_dual_encoder(dual, root / "model")
    yield Pipeline.from_pretrained(root / "model"), dual, root
    torch.set_num_threads(before)


def test_keeps_the_max_score_candidate_and_its_seed_reproduces_it(parts):
    pipe, dual, _ = parts
    best = rerank_best_of(pipe, dual, "a red circle", 4, seed=7, steps=2)
    assert isinstance(best, GenerationResult) and best.candidate_seeds == [7, 8, 9, 10]
    assert len(best.images) == 1 and best.seeds[0] == 7 + int(np.argmax(best.scores))
    assert best.params.seed == best.seeds[0]
    # the returned scores are the candidates' real scores: recompute from an independent batch
    candidates = pipe("a red circle", seed=7, num_images=4, steps=2)
    assert best.scores == pytest.approx(candidate_scores(dual, "a red circle", candidates.images).tolist(), abs=1e-6)
    assert len(set(np.round(best.scores, 6))) > 1, "random candidates should score differently"
    again = pipe("a red circle", seed=best.seeds[0], steps=2)
    # same noise; only float summation order differs between a batch of 4 and a batch of 1
    torch.testing.assert_close(again.latents, best.latents, atol=1e-4, rtol=1e-4)
    diff = np.abs(np.asarray(again.images[0], dtype=int) - np.asarray(best.images[0], dtype=int))
    assert diff.max() <= 1


def test_best_of_one_is_plain_generation_and_bad_n_is_refused(parts):
    pipe, dual, _ = parts
    one = rerank_best_of(pipe, dual, "a blue square", 1, seed=3, steps=1)
    plain = pipe("a blue square", seed=3, steps=1)
    assert one.seeds == [3] and np.array_equal(np.asarray(one.images[0]), np.asarray(plain.images[0]))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(UsageError, match="best-of"):
            rerank_best_of(pipe, dual, "x", bad)
    with pytest.raises(UsageError, match="num_images"):
        rerank_best_of(pipe, dual, "x", 2, num_images=3)


def test_generate_best_of_writes_the_kept_images(parts, tmp_path, capsys):
    _, _, root = parts
    rc = main(["generate", "a dot", "--model", str(root / "model"), "--best-of", "3", "--n", "2", "--steps", "1",
               "--seed", "10", "--quiet", "-o", str(tmp_path)])
    paths = capsys.readouterr().out.split()
    assert rc == 0 and len(paths) == 2
    seeds = [int(p.rsplit("-", 1)[1].split(".")[0]) for p in paths]
    assert 10 <= seeds[0] <= 12 and 13 <= seeds[1] <= 15  # image k reranks seeds 10+3k .. 12+3k


def test_generate_best_of_without_clip_folder_is_a_clear_error(parts, tmp_path, capsys):
    _, _, root = parts
    out = tmp_path / "none"
    rc = main(["generate", "a dot", "--model", str(root / "bare"), "--best-of", "2", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "has no clip/ folder" in err and not out.exists()

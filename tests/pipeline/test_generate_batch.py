"""Pipeline.generate_batch: several (prompt, seed) pairs in one sampling run equal one call each."""

import numpy as np
import pytest
import torch

from ldmkit.errors import UsageError
from ldmkit.models.presets import build_components
from ldmkit.pipeline import Pipeline


@pytest.fixture(scope="module")
def pipe():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Pipeline(build_components("tiny", seed=0))
    torch.set_num_threads(before)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral"])  # ancestral: draws fresh noise every step
def test_each_image_equals_its_own_call(pipe, sampler):
    prompts, seeds = ["a red circle", "a blue square", "a red circle"], [5, 9, 17]
    batch = pipe.generate_batch(prompts, seeds, steps=3, guidance=4.0, sampler=sampler, negative_prompt="green")
    assert [r.params.prompt for r in batch] == prompts and [r.seeds for r in batch] == [[5], [9], [17]]
    assert [r.params.seed for r in batch] == seeds and all(r.params.sampler == sampler for r in batch)
    for prompt, seed, result in zip(prompts, seeds, batch):
        alone = pipe(prompt, seed=seed, steps=3, guidance=4.0, sampler=sampler, negative_prompt="green")
        # same noise and conditioning; only the float summation order of a batched UNet differs
        torch.testing.assert_close(result.latents, alone.latents, atol=1e-4, rtol=1e-4)
        diff = np.abs(np.asarray(result.images[0], dtype=int) - np.asarray(alone.images[0], dtype=int))
        assert diff.max() <= 1
    # different prompts or seeds do give different images (the rows are not mixed up)
    assert not torch.allclose(batch[0].latents, batch[2].latents)
    assert not torch.allclose(batch[0].latents, batch[1].latents)


def test_bad_batches_are_refused(pipe):
    with pytest.raises(UsageError, match="2 prompt\\(s\\) and 1 seed"):
        pipe.generate_batch(["a", "b"], [1], steps=1)
    with pytest.raises(UsageError, match="non-empty list"):
        pipe.generate_batch([], [], steps=1)
    with pytest.raises(UsageError, match="list of prompts, got one string"):
        pipe.generate_batch("a red circle", [1], steps=1)
    with pytest.raises(UsageError, match="steps"):
        pipe.generate_batch(["a"], [1], steps=0)


def test_each_result_carries_only_its_own_prompt_warnings(pipe):
    long = "a red circle " + "very " * 100
    short, long_result = pipe.generate_batch(["a blue square", long], [1, 2], steps=1)
    assert short.warnings == []
    assert len(long_result.warnings) == 1 and "dropped" in long_result.warnings[0]
    assert long_result.warnings == pipe(long, seed=2, steps=1).warnings

"""Pipeline uses the caller's modules as they are (issue 14, item 5): no hidden casts, moves, freezing or
process-wide compiler flags."""

from __future__ import annotations

import copy

import numpy as np
import torch

from ldmkit.models.presets import build_components
from ldmkit.pipeline import Pipeline


def _modules(c):
    return (c.unet, c.vae, c.text_encoder.model)


def test_sampling_leaves_train_mode_and_requires_grad_of_the_callers_modules():
    training = build_components("tiny", seed=0)
    frozen = copy.deepcopy(training)
    for m in _modules(training):
        m.train().requires_grad_(True)
    training.unet.down_blocks[0].eval()  # a submodule in its own mode keeps it too
    for m in _modules(frozen):
        m.eval().requires_grad_(False)
    image = Pipeline(training)("a red circle", steps=2, seed=1).images[0]
    assert training.unet.training and training.vae.training and training.text_encoder.model.training
    assert not training.unet.down_blocks[0].training
    assert all(p.requires_grad for m in _modules(training) for p in m.parameters())
    assert training.unet.dtype == torch.float32
    expected = Pipeline(frozen)("a red circle", steps=2, seed=1).images[0]  # sampled in eval mode all the same
    assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_compile_does_not_flip_the_process_wide_freezing_flag():
    import torch._inductor.config as inductor_config

    before = inductor_config.freezing
    pipe = Pipeline(build_components("tiny", seed=0), compile=True)  # compiles lazily, at the first step
    assert inductor_config.freezing == before
    assert pipe._unet_forward is not pipe.unet


def test_from_pretrained_freezes_only_its_own_components(tmp_path):
    from ldmkit.models.folder import save_components

    save_components(build_components("tiny", seed=0), tmp_path / "m")
    pipe = Pipeline.from_pretrained(tmp_path / "m")
    assert not any(p.requires_grad for m in (pipe.unet, pipe.vae, pipe.text_encoder.model) for p in m.parameters())
    assert pipe.device == torch.device("cpu")

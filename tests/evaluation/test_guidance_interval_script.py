"""scripts/guidance_interval_eval.py (docs/quality.md, "Guidance only in an interval"): guidance where sigma is in
(LO, HI], the conditional branch alone elsewhere, and the interval read from GI with one-line refusals."""

import importlib.util
from pathlib import Path

import pytest
import torch

from ldmkit.diffusion.denoiser import CFGDenoiser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.setattr(CFGDenoiser, "__call__", CFGDenoiser.__call__)  # restored after the test
    spec = importlib.util.spec_from_file_location("guidance_interval_eval", ROOT / "scripts" / "guidance_interval_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Branches:
    """A denoiser whose output says which context it got: +1 for the conditional, -1 for the unconditional."""

    def model_output(self, x, sigma, context):
        return x * 0 + context[:, :1, :1].reshape(-1, 1, 1, 1)

    def to_x0(self, x, sigma, out):
        return out

    def __call__(self, x, sigma, context):
        return self.model_output(x, sigma, context)


def test_guided_only_inside_the_interval(probe):
    calls = probe.patch(0.5, 2.0)
    cond, uncond = torch.ones(1, 2, 3), -torch.ones(1, 2, 3)
    denoise = CFGDenoiser(Branches(), cond, uncond, scale=3.0)
    x = torch.zeros(1, 4, 2, 2)
    outside = [denoise(x, torch.tensor(s)).flatten()[0].item() for s in (0.5, 2.5)]
    inside = [denoise(x, torch.tensor(s)).flatten()[0].item() for s in (0.6, 2.0)]
    assert outside == [1.0, 1.0]  # the conditional branch alone
    assert inside == [-1 + 3.0 * 2, -1 + 3.0 * 2]  # uncond + scale * (cond - uncond)
    assert calls == {"guided": 2, "conditional only": 2}


@pytest.mark.parametrize("text", ["abc", "1", "2,1", "-1,3", "nan,1"])
def test_a_bad_interval_is_one_line(probe, monkeypatch, text):
    monkeypatch.setenv("GI", text)
    with pytest.raises(SystemExit) as exit_:
        probe.interval()
    assert "GI=" in str(exit_.value) and "\n" not in str(exit_.value)


def test_the_default_is_every_step(probe, monkeypatch):
    monkeypatch.delenv("GI", raising=False)
    assert probe.interval() == (0.0, float("inf"))

"""Schedules against diffusers' tables, and the closed-form facts they must satisfy."""

import diffusers
import numpy as np
import pytest
import torch

from ldmkit.diffusion.denoiser import CFGDenoiser, Denoiser, TimestepMap, rescale_guidance
from ldmkit.diffusion.schedules import NoiseSchedule, discrete_steps, interpolated_steps, karras_sigmas, sigma_to_t
from ldmkit.errors import UsageError


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
@pytest.mark.parametrize("zero_snr", [False, True])
def test_alphas_cumprod_equal_diffusers(beta_schedule, zero_snr):
    cfg = dict(num_train_timesteps=1000, beta_schedule=beta_schedule, beta_start=0.0001, beta_end=0.02,
               rescale_betas_zero_snr=zero_snr)
    ref = diffusers.DDPMScheduler(**cfg).alphas_cumprod
    ours = NoiseSchedule.from_scheduler_config(cfg).alphas_cumprod()
    if zero_snr:  # diffusers' DDPM keeps the exact 0; we store 2**-24 so sigma stays finite
        assert ref[-1] == 0 and ours[-1] == 2.0**-24
        ref, ours = ref[:-1], ours[:-1]
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-8)


def test_zero_terminal_snr_keeps_first_alpha():
    plain = NoiseSchedule().alphas_cumprod()
    rescaled = NoiseSchedule(rescale_zero_terminal_snr=True).alphas_cumprod()
    assert torch.isclose(plain[0], rescaled[0])
    assert rescaled[-1] < 1e-6 < plain[-1]


def test_karras_endpoints_and_monotone():
    s = karras_sigmas(0.03, 14.6, 10)
    assert np.isclose(s[0], 14.6) and np.isclose(s[-1], 0.03) and np.all(np.diff(s) < 0)


def test_sigma_to_t_inverts_table():
    table = NoiseSchedule().sigmas().double().numpy()
    t = sigma_to_t(table[[0, 17, 500, 999]], np.log(table))
    np.testing.assert_allclose(t, [0, 17, 500, 999], atol=1e-6)


def test_steps_are_decreasing_and_end_right():
    sched = NoiseSchedule()
    for st in (discrete_steps(sched, 20, steps_offset=1), interpolated_steps(sched, 20)):
        assert torch.all(st.sigmas[1:] < st.sigmas[:-1])
        assert len(st.sigmas) == len(st.timesteps) + 1
    assert interpolated_steps(sched, 5).sigmas[-1] == 0
    assert discrete_steps(sched, 10, steps_offset=1, final_alpha_one=True).sigmas[-1] == 0


def test_bad_schedule_values_are_refused():
    with pytest.raises(UsageError, match="beta_schedule"):
        NoiseSchedule(beta_schedule="quadratic")
    with pytest.raises(UsageError, match="spacing"):
        discrete_steps(NoiseSchedule(), 10, spacing="sideways")


def test_guidance_rescale_equals_diffusers():
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    guided = uncond + 7.5 * (cond - uncond)
    torch.testing.assert_close(rescale_guidance(guided, cond, 0.7), rescale_noise_cfg(guided, cond, 0.7))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_denoiser_recovers_x0_from_an_oracle_model(prediction_type):
    """A model that outputs the true eps / v / x0 must give back exactly the x0 we noised."""
    sched = NoiseSchedule()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    sigma = torch.tensor(3.0)
    x = x0 + sigma * eps
    a = 1 / (1 + sigma**2)
    target = {"epsilon": eps, "v_prediction": a**0.5 * eps - (1 - a) ** 0.5 * x0, "sample": x0}[prediction_type]
    d = Denoiser(lambda x_in, t, c: target, prediction_type, TimestepMap(sched))
    torch.testing.assert_close(d(x, sigma, None), x0, rtol=1e-5, atol=1e-5)


def test_cfg_scale_one_is_the_conditional_model_and_zero_the_unconditional():
    sched = NoiseSchedule()
    model = lambda x_in, t, c: x_in * c.view(-1, 1, 1, 1)  # noqa: E731
    d = Denoiser(model, "epsilon", TimestepMap(sched))
    x, s = torch.ones(1, 4, 2, 2), torch.tensor(2.0)
    cond, uncond = torch.tensor([0.5]), torch.tensor([0.1])
    torch.testing.assert_close(CFGDenoiser(d, cond, uncond, 1.0)(x, s), d(x, s, cond))
    torch.testing.assert_close(CFGDenoiser(d, cond, uncond, 0.0)(x, s), d(x, s, uncond))
    with pytest.raises(UsageError, match="guidance"):
        CFGDenoiser(d, cond, uncond, -1.0)

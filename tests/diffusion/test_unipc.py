"""UniPC against diffusers' UniPCMultistepScheduler, against the samplers it reduces to, and on Gaussian
data, where the probability-flow ODE has a closed-form solution so the order of accuracy can be measured.

The registry's default `unipc` (bh2, order 2, zero final sigma) is also in test_samplers_vs_diffusers.py.
"""

import math

import diffusers
import numpy as np
import pytest
import torch

from ldmkit.diffusion.denoiser import Denoiser, TimestepMap
from ldmkit.diffusion.registry import get_sampler, sampler_function
from ldmkit.diffusion.samplers import sample_ddim, sample_dpmpp_2m
from ldmkit.diffusion.schedules import NoiseSchedule, multistep_steps
from ldmkit.diffusion.unipc import sample_unipc, unipc_weights
from ldmkit.errors import UsageError

SD = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
          prediction_type="epsilon", timestep_spacing="linspace")
SHAPE = (2, 4, 8, 8)


def fake_unet(x_in, t, context):
    """A smooth, nonlinear, timestep- and context-dependent stand-in for a UNet."""
    t = torch.as_tensor(t, dtype=torch.float32)
    bias = torch.linspace(-0.2, 0.2, x_in.shape[1]).view(1, -1, 1, 1)
    return 0.8 * x_in * torch.cos(t / 1000 * 3.0) + 0.1 * torch.sin(3 * x_in) + bias * t / 1000 + 0.05 * context


def diffusers_run(config, steps, noise, context, on_step=None):
    scheduler = diffusers.UniPCMultistepScheduler.from_config(config)
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(fake_unet(scheduler.scale_model_input(x, t), t, context), t, x).prev_sample
        if on_step is not None:
            on_step(scheduler)
    return x


def ldmkit_run(config, steps, noise, context, callback=None, **options):
    """Our sampler on the sigmas diffusers walks; diffusers' final_sigmas_type="sigma_min" ends at sigma(t=0)."""
    schedule = NoiseSchedule.from_scheduler_config(config)
    st = multistep_steps(schedule, steps, spacing=config["timestep_spacing"],
                         steps_offset=config.get("steps_offset", 0), karras=config.get("use_karras_sigmas", False))
    sigmas = st.sigmas.clone()
    if config.get("final_sigmas_type") == "sigma_min":
        sigmas[-1] = schedule.sigmas()[0]
    denoiser = Denoiser(fake_unet, config["prediction_type"], TimestepMap(schedule, st))
    x = noise * (sigmas[0] ** 2 + 1) ** 0.5
    x = sample_unipc(lambda x, s: denoiser(x, s, context), x, sigmas, callback=callback, **options)
    return x / (1 + sigmas[-1] ** 2) ** 0.5


# (diffusers config, our options, steps). diffusers' bh1 returns NaN when the last sigma is 0 (it
# multiplies B(h) = -inf by 0), so bh1 is compared where the chain ends at sigma_min.
CASES = [
    (dict(use_karras_sigmas=True), {}, 20),
    (dict(use_karras_sigmas=True, prediction_type="v_prediction", timestep_spacing="leading", steps_offset=1), {}, 12),
    (dict(solver_type="bh1", final_sigmas_type="sigma_min"), dict(solver_type="bh1"), 12),
    (dict(solver_type="bh1", final_sigmas_type="sigma_min", prediction_type="v_prediction",
          timestep_spacing="leading", steps_offset=1), dict(solver_type="bh1"), 15),
    (dict(final_sigmas_type="sigma_min"), {}, 12),
    (dict(solver_order=3), dict(order=3), 12),
    (dict(solver_order=3, solver_type="bh1", final_sigmas_type="sigma_min"), dict(order=3, solver_type="bh1"), 25),
    (dict(solver_order=3, lower_order_final=False, final_sigmas_type="sigma_min"),
     dict(order=3, lower_order_final=False), 8),
    (dict(solver_order=1), dict(order=1), 12),
    (dict(disable_corrector=[0, 3]), dict(disable_corrector=(0, 3)), 10),
    (dict(beta_schedule="squaredcos_cap_v2"), {}, 12),
    (dict(timestep_spacing="leading", steps_offset=1), {}, 1),
    (dict(solver_order=3, timestep_spacing="trailing"), dict(order=3), 2),
]


@pytest.mark.parametrize("extra,options,steps", CASES, ids=[str(i) for i in range(len(CASES))])
def test_unipc_matches_diffusers(extra, options, steps):
    config = {**SD, **extra}
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    context = torch.tensor([0.3, -0.7]).view(-1, 1, 1, 1)
    ref = diffusers_run(config, steps, noise, context)
    ours = ldmkit_run(config, steps, noise, context, **options)
    rel = (ours - ref).norm() / ref.norm()
    assert torch.isfinite(ref).all() and rel < 1e-4, f"relative error {rel:.2e}"


def test_unipc_matches_diffusers_step_by_step():
    """After step i diffusers holds the corrected latents at sigma_i and its x0 estimate there: our callback's."""
    config, steps = {**SD, "solver_order": 3}, 10
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    context = torch.tensor([0.5, 0.1]).view(-1, 1, 1, 1)
    theirs, ours = [], []
    diffusers_run(config, steps, noise, context, on_step=lambda s: theirs.append((s.last_sample, s.model_outputs[-1])))
    ldmkit_run(config, steps, noise, context, callback=ours.append, order=3)
    assert len(ours) == len(theirs) == steps
    for step, (x_vp, x0) in zip(ours, theirs):
        torch.testing.assert_close(step.x / (1 + step.sigma**2) ** 0.5, x_vp, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(step.denoised, x0, rtol=1e-4, atol=1e-5)


def test_registry_runs_unipc():
    assert sampler_function(get_sampler("unipc")) is sample_unipc


def toy_denoiser(x, sigma):
    """A smooth nonlinear denoiser, for comparing samplers with each other."""
    return torch.tanh(x) / (1 + sigma**2) ** 0.5 + 0.1 * x / (1 + sigma)


def test_unip1_without_corrector_is_ddim():
    sigmas = multistep_steps(NoiseSchedule(), 10).sigmas
    x = 5 * torch.randn(3, 4)
    ours = sample_unipc(toy_denoiser, x, sigmas, order=1, disable_corrector=tuple(range(10)))
    torch.testing.assert_close(ours, sample_ddim(toy_denoiser, x, sigmas), rtol=1e-5, atol=1e-6)


def test_unip2_bh2_without_corrector_is_dpmpp_2m():
    """UniP-2 with B(h) = e^h - 1 and rho = 1/2 is DPM-Solver++(2M)."""
    sigmas = multistep_steps(NoiseSchedule(), 12).sigmas
    x = 5 * torch.randn(3, 4)
    ours = sample_unipc(toy_denoiser, x, sigmas, disable_corrector=tuple(range(12)))
    torch.testing.assert_close(ours, sample_dpmpp_2m(toy_denoiser, x, sigmas), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours, sample_unipc(toy_denoiser, x, sigmas), rtol=1e-3)  # the corrector acts


def test_step_to_sigma_zero_returns_the_clean_estimate_for_bh1():
    seen = []
    sigmas = multistep_steps(NoiseSchedule(), 8).sigmas
    out = sample_unipc(toy_denoiser, 5 * torch.randn(3, 4), sigmas, solver_type="bh1", callback=seen.append)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, seen[-1].denoised, rtol=0, atol=0)


def gaussian_error(steps, c=0.7, **options):
    """Relative error at sigma = 0.1 for data ~ N(0, c^2): D(x, s) = c^2 x / (c^2 + s^2) exactly, and the
    probability-flow ODE keeps x / sqrt(c^2 + sigma^2) constant. Steps are uniform in log sigma."""
    sigmas = torch.exp(torch.linspace(math.log(10.0), math.log(0.1), steps + 1, dtype=torch.float64))
    z = torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = sample_unipc(lambda x, s: c**2 / (c**2 + s**2) * x, z * (c**2 + sigmas[0] ** 2) ** 0.5, sigmas, **options)
    exact = z * (c**2 + sigmas[-1] ** 2) ** 0.5
    return float((x - exact).norm() / exact.norm())


@pytest.mark.parametrize("options,low,high", [
    (dict(disable_corrector=tuple(range(64))), 1.8, 2.2),  # UniP-2 alone: second order
    (dict(), 2.8, 3.3),  # UniC raises it by one
    (dict(solver_type="bh1"), 2.8, 3.3),
    (dict(order=3), 3.5, 4.3),
])
def test_order_of_accuracy_on_gaussian_data(options, low, high):
    options = {"lower_order_final": False, **options}
    errors = [gaussian_error(n, **options) for n in (16, 32, 64)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(low < p < high for p in orders), orders


def test_weights_solve_the_order_conditions_by_quadrature():
    """b_i = i! phi_{i+1}(-h) (-h) / B(h), with phi_k(z) = integral_0^1 e^{(1-u) z} u^(k-1) / (k-1)! du."""
    h, rs = 0.4, [-0.7, -1.5, 1.0]
    u = np.linspace(0, 1, 200_001)
    for solver_type, big_b in (("bh1", -h), ("bh2", math.expm1(-h))):
        b = [math.factorial(i) * np.trapezoid(np.exp((1 - u) * -h) * u**i / math.factorial(i), u) * -h / big_b
             for i in range(1, 4)]
        got_b, rho = unipc_weights(h, rs, solver_type)
        assert got_b == pytest.approx(big_b)
        np.testing.assert_allclose(np.vander(rs, 3, increasing=True).T @ rho, b, rtol=1e-8)
    assert unipc_weights(h, [1.0], "bh2")[1] == [0.5]


@pytest.mark.parametrize("options", [dict(order=4), dict(order=0), dict(solver_type="midpoint")])
def test_bad_options_are_usage_errors(options):
    with pytest.raises(UsageError, match="UniPC"):
        sample_unipc(toy_denoiser, torch.zeros(2), torch.tensor([1.0, 0.0]), **options)

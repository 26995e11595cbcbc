"""Scheduler-config fields that change sampling, each against the diffusers scheduler that defines it.

Same pattern as test_samplers_vs_diffusers.py, but the ldmkit side reads the config through
`read_scheduler_fields` (the pipeline's path) and the two are compared after every step.
"""

import inspect
import math

import diffusers
import pytest
import torch

from ldmkit.diffusion.denoiser import Denoiser, TimestepMap
from ldmkit.diffusion.registry import SAMPLERS, build_steps, get_sampler, initial_noise_scale, sampler_function
from ldmkit.diffusion.scheduler_fields import CLASS_DEFAULTS, dynamic_threshold, read_scheduler_fields
from ldmkit.diffusion.schedules import NoiseSchedule, interpolated_steps
from ldmkit.errors import UsageError

SD = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
SHAPE = (2, 4, 8, 8)


def big_unet(x_in, t, context):
    """A stand-in whose clean estimates leave [-1, 1] by a wide margin, so clipping really acts."""
    t = torch.as_tensor(t, dtype=torch.float32)
    bias = torch.linspace(-2.0, 2.0, x_in.shape[1]).view(1, -1, 1, 1)
    return 0.8 * x_in * torch.cos(t / 1000 * 3.0) + 0.1 * torch.sin(3 * x_in) + bias * (1 - t / 1000) \
        + 0.05 * context.view(-1, 1, 1, 1)


def diffusers_steps(scheduler, steps, noise, context, seed, eta=None):
    """Latents after every diffusers step."""
    generator = torch.Generator().manual_seed(seed)
    kw = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    if eta is not None:
        kw["eta"] = eta
    scheduler.set_timesteps(steps)
    x, out = noise * scheduler.init_noise_sigma, []
    for t in scheduler.timesteps:
        x = scheduler.step(big_unet(scheduler.scale_model_input(x, t), t, context), t, x, **kw).prev_sample
        # UniPC corrects a step's result at the start of the next step and keeps it as last_sample
        out.append(scheduler.last_sample if isinstance(scheduler, diffusers.UniPCMultistepScheduler) else x)
    return out + [x] if isinstance(scheduler, diffusers.UniPCMultistepScheduler) else out


def ldmkit_steps(name, config, steps, noise, context, seed, inputs=False, **user):
    """Latents after every ldmkit step, the config read the way the pipeline reads it. diffusers' Euler-family
    schedulers carry VE latents (x0 + sigma eps) between steps, the others VP ones (divided by sqrt(1 + sigma^2))."""
    spec = get_sampler(name)
    f = read_scheduler_fields(config, spec, **user)
    schedule = f.schedule()
    st = build_steps(spec, schedule, steps, spacing=f.spacing, steps_offset=f.steps_offset,
                     final_alpha_one=f.final_alpha_one, karras=f.karras)
    denoiser = Denoiser(big_unet, f.prediction_type, TimestepMap(schedule, st), f.denoiser_x0_transform)
    x = noise * initial_noise_scale(spec, float(st.sigmas[0]), f.spacing)
    ve = spec.family == "interpolated"
    seen = []
    x = sampler_function(spec, f.sampler_options)(
        lambda x, s: denoiser(x, s, context), x, st.sigmas, generator=torch.Generator().manual_seed(seed),
        callback=lambda step: seen.append(step.x if ve else step.x / (1 + step.sigma**2) ** 0.5))
    # the latents each step went to = the next step's input (or, `inputs`, every step's input and the end)
    return (seen if inputs else seen[1:]) + [x / (1 + st.sigmas[-1] ** 2) ** 0.5]


def compare(name, cls, config, steps, tol=1e-4, **user):
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    context = torch.tensor([0.3, -0.7])
    ref = diffusers_steps(getattr(diffusers, cls).from_config(config), steps, noise, context, seed=7,
                          eta=1.0 if name == "ddim_eta1" else None)
    ours = ldmkit_steps(name, config, steps, noise, context, seed=7, **user)
    if cls == "HeunDiscreteScheduler":  # diffusers counts each Heun step twice (predictor, corrector)
        ref = ref[1::2] + ref[-1:]  # 2N - 1 entries: the first-order halves are not steps
    if cls == "PNDMScheduler":  # diffusers' PLMS warm-up calls step() twice for the first step
        ref = ref[1:]
    if cls == "UniPCMultistepScheduler":  # compare each step's corrected input (ldmkit reports it), then the end
        ours = ldmkit_steps(name, config, steps, noise, context, seed=7, inputs=True, **user)
        if not torch.isfinite(ref[-1]).all():  # diffusers' own last step to sigma 0 can be inf/nan (bh1, no
            ours, ref = ours[:-1], ref[:-1]  # lower_order_final); ldmkit's is x0, the only finite choice
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        rel = float((a - b).norm() / b.norm())
        assert rel < tol, f"{name} vs {cls} with {config}: step {i} relative error {rel:.2e}"
    return ours[-1]


def test_class_defaults_are_diffusers_defaults():
    for cls, ours in CLASS_DEFAULTS.items():
        params = inspect.signature(getattr(diffusers, cls).__init__).parameters
        ref = {k: p.default for k, p in params.items() if k != "self"}
        assert ours == ref, cls
    assert {s.diffusers_class for s in SAMPLERS.values()} <= set(CLASS_DEFAULTS)


X0_CASES = [  # (sampler, class, extra config, steps)
    ("ddim", "DDIMScheduler", dict(clip_sample=True, timestep_spacing="leading", steps_offset=1), 20),
    ("ddim", "DDIMScheduler", dict(clip_sample=False, timestep_spacing="leading", steps_offset=1), 20),
    ("ddim", "DDIMScheduler", dict(clip_sample=True, clip_sample_range=0.5, set_alpha_to_one=False), 10),
    ("ddim", "DDIMScheduler", dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5), 10),
    ("ddim", "DDIMScheduler", dict(clip_sample=True, prediction_type="v_prediction", timestep_spacing="trailing",
                                   rescale_betas_zero_snr=True, set_alpha_to_one=False), 10),
    ("ddim_eta1", "DDIMScheduler", dict(clip_sample=True), 10),
    ("ddpm", "DDPMScheduler", dict(clip_sample=True), 20),
    ("ddpm", "DDPMScheduler", dict(clip_sample=False), 20),
    ("ddpm", "DDPMScheduler", dict(clip_sample=True, clip_sample_range=0.7, timestep_spacing="trailing"), 10),
    ("ddpm", "DDPMScheduler", dict(thresholding=True, dynamic_thresholding_ratio=0.8, sample_max_value=2.0), 10),
    ("heun", "HeunDiscreteScheduler", dict(clip_sample=True, clip_sample_range=1.5), 8),
    ("dpmpp_2m", "DPMSolverMultistepScheduler", dict(thresholding=True, sample_max_value=1.5), 12),
    ("unipc", "UniPCMultistepScheduler", dict(thresholding=True, dynamic_thresholding_ratio=0.9,
                                              sample_max_value=1.2), 12),
]


@pytest.mark.parametrize("name,cls,extra,steps", X0_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(X0_CASES)])
def test_x0_limits_match_diffusers_step_by_step(name, cls, extra, steps):
    config = {**SD, "_class_name": cls, **extra}
    # zero terminal SNR: diffusers' DDIM starts at alpha_bar = 0 exactly, ldmkit at 2**-24 (sigma finite), so
    # the first clean estimate differs by sqrt(2**-24) x_T ~ 2e-4 relative
    compare(name, cls, config, steps, tol=1e-3 if extra.get("rescale_betas_zero_snr") else 1e-4)


@pytest.mark.parametrize("name,cls", [("ddim", "DDIMScheduler"), ("ddpm", "DDPMScheduler")])
def test_clip_sample_changes_the_result(name, cls):
    """The stand-in's x0 leaves [-1, 1]: with and without clip_sample must differ (the tests above can fail)."""
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    context = torch.tensor([0.3, -0.7])
    on = ldmkit_steps(name, {**SD, "clip_sample": True}, 10, noise, context, seed=3)[-1]
    off = ldmkit_steps(name, {**SD, "clip_sample": False}, 10, noise, context, seed=3)[-1]
    assert (on - off).abs().max() > 0.1


def test_pndm_folder_sampled_with_ddim_clips_as_diffusers_does():
    """Issue 12.5: an SD 1.x-style PNDM config without `clip_sample`: DDIMScheduler.from_config defaults it to true."""
    pndm = {**SD, "_class_name": "PNDMScheduler", "skip_prk_steps": True, "set_alpha_to_one": False,
            "steps_offset": 1, "timestep_spacing": "leading"}
    assert read_scheduler_fields(pndm, get_sampler("ddim")).x0_limit is not None
    assert read_scheduler_fields(pndm, get_sampler("pndm")).x0_limit is None  # PNDM has no clip_sample
    compare("ddim", "DDIMScheduler", pndm, 15)
    compare("ddpm", "DDPMScheduler", pndm, 15)
    compare("pndm", "PNDMScheduler", pndm, 15)


def test_heun_defaults_its_own_betas():
    """HeunDiscreteScheduler's beta_start/beta_end defaults differ from the others': a config without them."""
    config = {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear"}
    compare("heun", "HeunDiscreteScheduler", config, 6)
    compare("euler", "EulerDiscreteScheduler", config, 6)


def test_trained_betas_are_honoured():
    betas = torch.linspace(0.0002, 0.03, 1000).tolist()
    config = {**SD, "trained_betas": betas, "clip_sample": False}
    compare("ddim", "DDIMScheduler", config, 10)
    compare("euler", "EulerDiscreteScheduler", config, 10)
    with pytest.raises(UsageError, match="trained_betas"):
        read_scheduler_fields({**SD, "trained_betas": betas[:10]}, get_sampler("ddim")).schedule()


KARRAS = [("euler", "EulerDiscreteScheduler", "linspace"), ("euler", "EulerDiscreteScheduler", "leading"),
          ("heun", "HeunDiscreteScheduler", "linspace"), ("dpmpp_2m", "DPMSolverMultistepScheduler", "linspace"),
          ("dpmpp_2m", "DPMSolverMultistepScheduler", "trailing"), ("unipc", "UniPCMultistepScheduler", "linspace")]


@pytest.mark.parametrize("name,cls,spacing", KARRAS, ids=[f"{c[0]}-{c[2]}" for c in KARRAS])
def test_karras_matches_use_karras_sigmas(name, cls, spacing):
    folder = {**SD, "timestep_spacing": spacing, "steps_offset": 1}
    with_karras = {**folder, "use_karras_sigmas": True}
    a = compare(name, cls, with_karras, 12)  # the folder's own use_karras_sigmas
    b = compare(name, cls, with_karras, 12, karras=True)  # --karras on a folder without it: the same
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    c = ldmkit_steps(name, folder, 12, noise, torch.tensor([0.3, -0.7]), seed=7, karras=True)[-1]
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(a, b)
    plain = ldmkit_steps(name, with_karras, 12, noise, torch.tensor([0.3, -0.7]), seed=7, karras=False)[-1]
    assert (plain - a).abs().max() > 1e-3  # --karras off overrides the folder, and it matters


def test_euler_ancestral_karras_walks_eulers_karras_sigmas():
    schedule = NoiseSchedule(**{k: v for k, v in SD.items()})
    st = build_steps(get_sampler("euler_ancestral"), schedule, 10, spacing="linspace", karras=True)
    ref = interpolated_steps(schedule, 10, spacing="linspace", karras=True)
    torch.testing.assert_close(st.sigmas, ref.sigmas)
    plain = build_steps(get_sampler("euler_ancestral"), schedule, 10, spacing="linspace")
    assert not torch.allclose(st.sigmas, plain.sigmas)


@pytest.mark.parametrize("name", ["ddim", "ddim_eta1", "ddpm", "pndm"])
def test_karras_refused_by_timestep_samplers(name):
    with pytest.raises(UsageError, match=f"sampler '{name}' cannot use Karras sigmas"):
        build_steps(get_sampler(name), NoiseSchedule(), 10, spacing="leading", karras=True)


UNIPC = [dict(solver_order=3), dict(solver_type="bh1"), dict(solver_order=1), dict(lower_order_final=False),
         dict(disable_corrector=[0, 2])]


@pytest.mark.parametrize("extra", UNIPC, ids=[next(iter(e)) + str(i) for i, e in enumerate(UNIPC)])
def test_unipc_fields_match_diffusers(extra):
    compare("unipc", "UniPCMultistepScheduler", {**SD, **extra}, 10)


REFUSED = [
    ("ddpm", "variance_type", "fixed_large"), ("pndm", "skip_prk_steps", False),
    ("euler", "use_exponential_sigmas", True), ("euler", "interpolation_type", "log_linear"),
    ("euler", "final_sigmas_type", "sigma_min"), ("euler", "timestep_type", "continuous"),
    ("euler", "sigma_max", 10.0), ("heun", "use_beta_sigmas", True),
    ("dpmpp_2m", "algorithm_type", "dpmsolver"), ("dpmpp_2m", "solver_order", 3),
    ("dpmpp_2m", "solver_type", "heun"), ("dpmpp_2m", "use_lu_lambdas", True),
    ("dpmpp_2m", "final_sigmas_type", "sigma_min"), ("dpmpp_2m", "lambda_min_clipped", -5.1),
    ("unipc", "predict_x0", False), ("unipc", "solver_p", "x"), ("unipc", "use_flow_sigmas", True),
    ("ddim", "prediction_type", "flow"), ("ddim", "beta_schedule", "laplace"),
]


@pytest.mark.parametrize("name,key,value", REFUSED, ids=[f"{c[0]}-{c[1]}" for c in REFUSED])
def test_unsupported_fields_are_refused_by_name(name, key, value):
    with pytest.raises(UsageError, match=key):
        read_scheduler_fields({**SD, key: value}, get_sampler(name)).schedule()


def test_fields_another_class_reads_are_ignored_as_diffusers_ignores_them():
    """`skip_prk_steps` means nothing to DDIM; DPM's `algorithm_type` nothing to Euler."""
    read_scheduler_fields({**SD, "skip_prk_steps": False}, get_sampler("ddim"))
    read_scheduler_fields({**SD, "algorithm_type": "sde-dpmsolver"}, get_sampler("euler"))


@pytest.mark.parametrize("bad", [dict(clip_sample=True, clip_sample_range=0), dict(steps_offset=-1),
                                 dict(thresholding=True, dynamic_thresholding_ratio=1.5),
                                 dict(thresholding=True, sample_max_value=0.5)])
def test_bad_values_name_the_field(bad):
    with pytest.raises(UsageError, match="|".join(bad)):
        read_scheduler_fields({**SD, **bad}, get_sampler("ddim"))


def test_user_spacing_replaces_the_folders():
    f = read_scheduler_fields({**SD, "timestep_spacing": "leading"}, get_sampler("euler"), spacing="trailing")
    assert f.spacing == "trailing"
    with pytest.raises(UsageError, match="spacing"):
        read_scheduler_fields(SD, get_sampler("euler"), spacing="middle")


def test_dynamic_threshold_closed_form():
    x = torch.tensor([[[[0.5, -3.0], [2.0, 1.0]]]])
    # ratio 1: s = max |x| = 3 clamped to max 2 -> clip to [-2, 2] then / 2
    y = dynamic_threshold(x, 1.0, 2.0)
    torch.testing.assert_close(y, torch.tensor([[[[0.25, -1.0], [1.0, 0.5]]]]))
    small = torch.full((1, 1, 2, 2), 0.3)  # s clamps up to 1: plain clipping, no change
    torch.testing.assert_close(dynamic_threshold(small, 0.995, 2.0), small)
    assert math.isclose(float(dynamic_threshold(x, 0.5, 10.0).abs().max()), 1.0)


@pytest.mark.parametrize("sampler,cls,karras", [("ddim", "DDIMScheduler", False), ("ddpm", "DDPMScheduler", False),
                                                ("dpmpp_2m", "DPMSolverMultistepScheduler", True)])
def test_pipeline_on_a_pndm_folder_matches_stable_diffusion_pipeline(sampler, cls, karras):
    """Issue 12.5's case end to end: an SD 1.x-style folder whose PNDM config lacks `clip_sample`, sampled with
    DDIM / DDPM (diffusers clips x0 there) and with DPM-Solver++ + --karras (use_karras_sigmas=True).

    The reference swaps the scheduler the documented way, `pipe.scheduler = X.from_config(pipe.scheduler.config)`.
    (StableDiffusionPipeline's constructor instead rewrites a clip_sample=true it is *given* to false, with a
    deprecation warning: that is a fix-up of the scheduler passed in, not what the config field means.)"""
    import numpy as np

    from ldmkit.models.presets import build_components
    from ldmkit.pipeline import Pipeline

    c = build_components("tiny", seed=0)
    c.scheduler_config.pop("clip_sample", None)
    ours = Pipeline(c)("a red circle", sampler=sampler, steps=8, guidance=3.0, seed=5, karras=karras)
    config = {**c.scheduler_config, **({"use_karras_sigmas": True} if karras else {})}
    ref_pipe = diffusers.StableDiffusionPipeline(
        vae=c.vae, text_encoder=c.text_encoder.model, tokenizer=c.text_encoder.tokenizer, unet=c.unet,
        scheduler=diffusers.PNDMScheduler.from_config(c.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    ref_pipe.scheduler = getattr(diffusers, cls).from_config(config)
    if sampler != "dpmpp_2m":
        assert ref_pipe.scheduler.config.clip_sample is True  # the class default applies, as in ldmkit
    ref_pipe.set_progress_bar_config(disable=True)
    ref = ref_pipe("a red circle", num_inference_steps=8, guidance_scale=3.0, output_type="pil",
                   height=ours.params.height, width=ours.params.width,
                   generator=[torch.Generator().manual_seed(5)]).images
    diff = np.abs(np.asarray(ours.images[0], dtype=np.int16) - np.asarray(ref[0], dtype=np.int16)).max()
    assert diff <= 2, f"{sampler}: max pixel difference {diff}/255"

"""The sampler table: name -> function, the sigma sequence it walks, and the diffusers scheduler it matches.

Importing this module is cheap (no torch): `ldmkit samplers` lists the table without loading models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ldmkit.errors import UsageError


@dataclass(frozen=True)
class SamplerSpec:
    """One entry of the sampler table."""

    name: str
    """What users type: `--sampler NAME`."""
    function: str
    """Name of the `sample_*` function in ldmkit.diffusion.samplers or ldmkit.diffusion.unipc."""
    family: str
    """How its sigma sequence is built: discrete | ddpm | interpolated | multistep."""
    diffusers_class: str
    """The diffusers scheduler this sampler reproduces."""
    summary: str
    """One line for `ldmkit samplers`."""
    karras: bool = False
    """Use Karras et al. 2022 sigma spacing."""
    stochastic: bool = False
    """Draws fresh noise each step (results depend on the generator beyond the initial noise)."""
    options: dict = field(default_factory=dict)
    """Extra keyword arguments for the function (e.g. eta)."""
    evals_per_step: str = "1"
    """Model evaluations per step, for users choosing a step count."""


SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        SamplerSpec("ddpm", "sample_ddpm", "ddpm", "DDPMScheduler",
                    "ancestral DDPM posterior sampling (Ho et al. 2020); needs many steps", stochastic=True),
        SamplerSpec("ddim", "sample_ddim", "discrete", "DDIMScheduler",
                    "deterministic DDIM (Song et al. 2021)"),
        SamplerSpec("ddim_eta1", "sample_ddim", "discrete", "DDIMScheduler",
                    "DDIM with eta=1 (DDPM-like noise)", stochastic=True, options={"eta": 1.0}),
        SamplerSpec("pndm", "sample_plms", "discrete", "PNDMScheduler",
                    "PLMS / pseudo linear multistep (Liu et al. 2022), SD 1.x's default", evals_per_step="1 (+1 once)"),
        SamplerSpec("euler", "sample_euler", "interpolated", "EulerDiscreteScheduler",
                    "Euler on the probability-flow ODE (Karras et al. 2022)"),
        SamplerSpec("euler_ancestral", "sample_euler_ancestral", "interpolated", "EulerAncestralDiscreteScheduler",
                    "ancestral Euler: adds fresh noise each step", stochastic=True),
        SamplerSpec("heun", "sample_heun", "interpolated", "HeunDiscreteScheduler",
                    "Heun 2nd order (Karras et al. 2022)", evals_per_step="2"),
        SamplerSpec("dpmpp_2m", "sample_dpmpp_2m", "multistep", "DPMSolverMultistepScheduler",
                    "DPM-Solver++(2M) (Lu et al. 2022): good images in 15-25 steps"),
        SamplerSpec("dpmpp_2m_karras", "sample_dpmpp_2m", "multistep", "DPMSolverMultistepScheduler",
                    "DPM-Solver++(2M) with Karras sigmas", karras=True),
        SamplerSpec("unipc", "sample_unipc", "multistep", "UniPCMultistepScheduler",
                    "UniPC predictor-corrector, bh2, order 2 (Zhao et al. 2023): good images in 10-20 steps"),
    )
}


def get_sampler(name: str) -> SamplerSpec:
    """The spec for `name`; a UsageError listing the valid names otherwise."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise UsageError(f"unknown sampler {name!r:.80}; choose one of: {', '.join(SAMPLERS)}") from None


def sampler_for_scheduler(config: dict) -> str | None:
    """The sampler that reproduces a model folder's own diffusers scheduler (its default sampler), or None
    when no sampler here matches its class (e.g. LMSDiscreteScheduler). PNDM -> pndm for SD 1.x folders;
    DPMSolverMultistep with use_karras_sigmas -> dpmpp_2m_karras."""
    # a spec with options is a variant (ddim_eta1): the scheduler's own default is the plain one
    matches = [s for s in SAMPLERS.values() if s.diffusers_class == config.get("_class_name") and not s.options]
    karras = bool(config.get("use_karras_sigmas", False))
    exact = [s for s in matches if s.karras == karras]
    return (exact or matches)[0].name if matches else None


def sampler_function(spec: SamplerSpec, options: dict | None = None):
    """The `sample_*` function of `spec`, with its fixed options and `options` (e.g.
    SchedulerFields.sampler_options: what a model folder's scheduler config asks of this sampler) bound."""
    from ldmkit.diffusion import samplers, unipc

    fn = getattr(unipc if hasattr(unipc, spec.function) else samplers, spec.function)
    bound = {**spec.options, **(options or {})}
    if not bound:
        return fn
    return lambda denoise, x, sigmas, **kw: fn(denoise, x, sigmas, **bound, **kw)


KARRAS_FAMILIES = ("interpolated", "multistep")


def karras_samplers() -> list[str]:
    """Names of the samplers that can walk Karras sigmas (`--karras`)."""
    return [name for name, s in SAMPLERS.items() if s.family in KARRAS_FAMILIES]


def build_steps(spec: SamplerSpec, schedule, steps: int, *, spacing: str, steps_offset: int = 0,
                final_alpha_one: bool = False, karras: bool = False):
    """The SigmaSteps a sampler walks for `steps` steps, built the way its diffusers scheduler builds them.

    `karras=True` spaces the sigmas as Karras et al. 2022 eq. 5 (diffusers' `use_karras_sigmas=True`) for the
    interpolated and multistep families; the DDPM / DDIM / PNDM samplers step along the training timesteps
    (their diffusers schedulers have no Karras option), so they refuse it.
    """
    from ldmkit.diffusion import schedules as S

    if not 1 <= steps <= schedule.num_train_timesteps:
        raise UsageError(f"steps must be in 1..{schedule.num_train_timesteps}, got {steps}")
    if karras and spec.family not in KARRAS_FAMILIES:
        raise UsageError(f"sampler {spec.name!r} cannot use Karras sigmas (it steps along the training timesteps, "
                         f"as {spec.diffusers_class} does); --karras works with: {', '.join(karras_samplers())}")
    karras = karras or spec.karras
    if spec.family == "discrete":
        return S.discrete_steps(schedule, steps, spacing=spacing, steps_offset=steps_offset,
                                final_alpha_one=final_alpha_one)
    if spec.family == "ddpm":
        return S.ddpm_steps(schedule, steps, spacing=spacing, steps_offset=steps_offset)
    if spec.family == "interpolated":
        return S.interpolated_steps(schedule, steps, spacing=spacing, steps_offset=steps_offset, karras=karras)
    return S.multistep_steps(schedule, steps, spacing=spacing, steps_offset=steps_offset, karras=karras)


def initial_noise_scale(spec: SamplerSpec, sigma_max: float, spacing: str) -> float:
    """Factor on unit noise for the first latents, as diffusers' `init_noise_sigma`, in VE units.

    Exact would be sqrt(sigma^2 + 1); diffusers' Euler-family schedulers use sigma itself for
    linspace/trailing spacing and we keep that so seeds give the same images.
    """
    if spec.family == "interpolated" and spacing in ("linspace", "trailing"):
        return sigma_max
    return (sigma_max**2 + 1) ** 0.5

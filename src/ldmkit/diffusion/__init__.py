"""Our own diffusion core: schedules, the denoiser (eps / v / x0 conversion), guidance, samplers.

Small pure functions, tested step by step against diffusers' schedulers (tests/diffusion).
"""

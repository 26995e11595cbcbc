"""ldmkit: text-to-image latent diffusion, offline.

Heavy modules (torch, diffusers) are imported lazily: `import ldmkit` is cheap. It does one thing first:
OpenMP's wait policy is read once, when torch loads, so ldmkit's default (idle threads spin only briefly, fair
on a shared machine) is set here, before any ldmkit module imports torch, unless the user set their own
(OMP_WAIT_POLICY, GOMP_SPINCOUNT) or LDMKIT_THREADS=off. See ldmkit.cpu_threads.
"""

from ldmkit.cpu_threads import prepare_openmp

prepare_openmp()

__version__ = "0.1.0"

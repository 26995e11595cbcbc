"""ldmkit: text-to-image latent diffusion, offline.

Heavy modules (torch, diffusers) are imported lazily: `import ldmkit` is cheap.
"""

__version__ = "0.1.0"

"""The names of the beta schedules ldmkit builds (as diffusers names them), in a module of their own.

schedules.py (which builds them) and scheduler_classes.py (which says which diffusers class can) both read this
tuple; keeping it here keeps either from importing the other (issue 14: no import cycles). Torch-free.
"""

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
"""Every beta schedule `NoiseSchedule` builds; diffusers 0.42 knows `sigmoid` only in DDPMScheduler."""

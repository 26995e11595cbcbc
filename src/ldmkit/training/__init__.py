"""ldmkit.training: one shared loop (`train`) that every component trainer plugs a `TrainTask` into."""

from ldmkit.training.loop import train
from ldmkit.training.nonfinite import NonFiniteError
from ldmkit.training.task import TrainResult, TrainTask

__all__ = ["NonFiniteError", "TrainResult", "TrainTask", "train"]

"""How `ldmkit eval` brings the real images to the model's square size: framed the way the model was trained.

    frame = reference_framing(model_dir)              # the model's recorded data.trim
    frame = reference_framing(model_dir, fit="crop")  # an override (the same references for two models)
    real = [frame(img, 64) for img in images]; frame.describe()   # -> metrics.json data.reference_framing

FD, KID and CMMD compare generated images with real ones, so the real images must be framed like the
images the model learned from: a plain resize squashes a non-square photo (Flickr8k, COCO), and a
model trained with the subject filling the frame (`fit: fill`) would be measured against references
with a margin. The model's ldmkit.json records its recipe's `training.data.trim`; a record from before
that section existed (the shipped default model's) was trained with trim version 1, whose crop is
today's `fill`. A folder with no training record (a downloaded Stable Diffusion) gets a centre crop
without border trim, the framing of the usual diffusers training scripts. `stretch` is the plain resize
the references used before 2026-12-03.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ldmkit.errors import ModelFolderError, UsageError

FITS = ("crop", "pad", "fill", "stretch")


@dataclass(frozen=True)
class Framing:
    """One way of bringing a real image to the model's size, and why it was chosen."""

    fit: str
    """'crop', 'pad', 'fill' (ldmkit.data.trim.standardize) or 'stretch' (a plain resize)."""
    focus: str = "auto"
    trim: bool = True
    source: str = ""
    """Where the choice came from: the model's record, the record's age, the training default or --fit."""

    def __call__(self, img, size: int):
        """The PIL image framed to size x size (RGB)."""
        img = img.convert("RGB")
        if self.fit == "stretch":
            return img.resize((size, size))
        from ldmkit.data.trim import standardize

        return standardize(img, size, policy=self.fit, focus=self.focus, trim=self.trim)[0]

    def describe(self) -> dict:
        return {"fit": self.fit, "focus": self.focus, "trim": self.trim, "source": self.source}


def reference_framing(model_dir, fit: str | None = None) -> Framing:
    """The framing of MODEL's real references: `fit` when given, else the model's recorded training framing."""
    if fit is not None:
        check_fit(fit)
        return Framing(fit, source="--fit")
    from ldmkit.models.folder import META_FILE, recorded

    record = Path(model_dir) / META_FILE
    data = recorded(model_dir, "training", "data")
    if not isinstance(data, dict):
        return Framing("crop", "centre", False, source="a centre crop (no training record in the model folder)")
    trim = data.get("trim")
    if trim is None:
        return Framing("fill", source=f"{record}: trained before data.trim was recorded (trim version 1 = fill)")
    try:
        framing = Framing(trim["fit"], trim.get("focus", "auto"), bool(trim.get("trim", True)),
                          source=f"{record}: training.data.trim")
        check_fit(framing.fit)
        from ldmkit.data.trim import check_policy

        check_policy(framing.fit, framing.focus, framing.trim)
    except (KeyError, TypeError, AttributeError, UsageError) as e:
        raise ModelFolderError(f"{record}: training.data.trim {trim!r} is not a framing ldmkit knows ({e}); "
                               f"pass --fit {{{','.join(FITS)}}}") from None
    return framing


def check_fit(fit) -> None:
    if fit not in FITS:
        raise UsageError(f"--fit must be one of {', '.join(FITS)}, got {fit!r}")


__all__ = ["FITS", "Framing", "reference_framing", "check_fit"]

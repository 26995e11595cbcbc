"""An `ldmkit eval` folder of one condition read back: its settings, its generated images, and real images chosen
and framed as the eval chose and framed its references (scripts/fd_floor.py, scripts/fidelity_gap.py).

    run = EvalFolder.read(Path("runs/eval-x/fresh1000"))
    generated, reference = run.generated(), run.references()
    more = run.references(Path("data/fresh-avatars-b"), count=len(generated))   # the same choice from other data
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ldmkit.errors import UsageError
from ldmkit.evaluation.run import METRICS_FILE


@dataclass(frozen=True)
class EvalFolder:
    """One eval's output folder and its parsed metrics.json."""

    path: Path
    metrics: dict
    """The folder's metrics.json."""

    @classmethod
    def read(cls, path: Path) -> EvalFolder:
        """UsageError unless `path` holds the metrics.json of an eval with one condition that named --clip."""
        try:
            metrics = json.loads((path / METRICS_FILE).read_text(encoding="utf-8"))
            settings, (_condition,) = metrics["settings"], metrics["conditions"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UsageError(f"{path}: not an `ldmkit eval` run with one condition ({err!r})") from None
        if not settings.get("clip"):
            raise UsageError(f"{path}: the eval named no --clip; its images are embedded with the eval's dual encoder")
        return cls(path, metrics)

    @property
    def settings(self) -> dict:
        return self.metrics["settings"]

    @property
    def images(self) -> list[dict]:
        """The condition's image records ({"file", "seed", "prompt_index", ...}), in generation order."""
        return self.metrics["conditions"][0]["images"]

    @property
    def model(self) -> Path:
        return Path(self.settings["model"])

    def generated(self) -> list:
        """The generated images as RGB PIL images, in the order of `images`."""
        from PIL import Image, UnidentifiedImageError

        try:
            return [Image.open(self.path / record["file"]).convert("RGB") for record in self.images]
        except (OSError, UnidentifiedImageError) as err:
            raise UsageError(f"{self.path}: an image the eval wrote cannot be read ({err})") from None

    def references(self, data: Path | None = None, count: int | None = None) -> list:
        """The held-out images of `data` (None: the eval's own data) chosen as the eval chose its references (split,
        labels, --n, --sample-seed), the first `count` (None: all), framed as the model was trained and sized as the
        generated images; UsageError when `data` holds fewer than `count`."""
        from PIL import Image

        from ldmkit.evaluation.attributes import split_rule
        from ldmkit.evaluation.framing import reference_framing
        from ldmkit.evaluation.run import EvalSettings, _held_out

        s = self.settings
        data = Path(s["data"]) if data is None else data
        settings = EvalSettings(model=self.model, data=data, out=Path("unused"), split=s["split"], n=s["n"],
                                sample_seed=s.get("sample_seed"), where=s["where"], prompt_set=s["prompt_set"])
        held_out = _held_out(settings, split_rule(self.model))[0]
        if count is not None and len(held_out) < count:
            raise UsageError(f"{data} holds {len(held_out)} such images; {count} are needed (as many as the eval "
                             "generated)")
        with Image.open(self.path / self.images[0]["file"]) as first:
            size = first.size[0]
        framing = reference_framing(self.model, s.get("fit"))
        return [framing(held_out.image(i), size) for i in range(min(len(held_out), count or len(held_out)))]

    def dual_encoder(self):
        """The dual encoder the eval embedded its images with (--clip)."""
        from ldmkit.evaluation.features import find_dual_encoder

        clip = Path(self.settings["clip"])
        return find_dual_encoder(clip, clip)

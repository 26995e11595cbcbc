"""One dataset abstraction for every caption format: `CaptionDataset` of `Sample`s.

    ds = CaptionDataset.open("flickr8k/")                 # format detected, every image checked
    ds = CaptionDataset.open("coco/", format="coco", max_bad_fraction=0.01)
    ds[0].captions, ds.image(0)                           # all captions; a correct RGB PIL image
    train = ds.split("train")                             # by image-id hash, see splits.py

Bad inputs are counted in `ds.report` and skipped, never fatal and never touched on disk; opening
fails with a DataError only when more than `max_bad_fraction` of the images are unusable.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ldmkit.data.captions import CLASS_TEMPLATE
from ldmkit.data.formats import FORMATS, read_format
from ldmkit.data.images import BadImage, ImageCheck, check_image, load_rgb
from ldmkit.data.report import BadInputReport
from ldmkit.data.splits import SPLITS, SplitSpec, split_with_holdout
from ldmkit.errors import DataError, UsageError

VERIFY_MODES = ("decode", "header", "none")
"""decode: read every pixel (finds truncated and corrupt files); header: open only; none: trust the files."""


@dataclass(frozen=True)
class Sample:
    """One image and everything known about it."""

    image_id: str
    """Stable name of the image within its dataset (the name the captions use, or its relative path)."""
    path: Path
    """The image file."""
    captions: tuple[str, ...]
    """Every usable caption of the image, in file order (at least one)."""
    labels: dict[str, str]
    """Extra attributes: metadata columns, the class of a class folder, COCO's image id."""

    def __post_init__(self) -> None:
        if not self.image_id:
            raise ValueError("image_id must be a non-empty string")
        if not isinstance(self.captions, tuple) or not self.captions:
            raise ValueError(f"{self.image_id}: captions must be a non-empty tuple, got {self.captions!r}")
        if not all(isinstance(c, str) and c for c in self.captions):
            raise ValueError(f"{self.image_id}: every caption must be a non-empty string")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.labels.items()):
            raise ValueError(f"{self.image_id}: labels must map str to str, got {self.labels!r}")


class CaptionDataset:
    """The usable samples of a dataset, sorted by image id, plus the report of what was skipped."""

    def __init__(self, root: Path, format: str, samples: list[Sample], report: BadInputReport,
                 checks: dict[str, ImageCheck] | None = None, caption_files: tuple[Path, ...] = ()) -> None:
        if format not in FORMATS:
            raise ValueError(f"format {format!r} not in {FORMATS}")
        self.root = Path(root)
        self.format = format
        self.samples = tuple(samples)
        self.report = report
        self.checks = dict(checks or {})
        """image id -> size and mode found when the image was checked (empty with verify='none')."""
        self.caption_files = caption_files

    @classmethod
    def open(cls, root: str | Path, *, format: str | None = None, max_bad_fraction: float = 0.05,
             verify: str = "decode", class_template: str = CLASS_TEMPLATE,
             workers: int | None = None) -> CaptionDataset:
        """Read, check and return a dataset; DataError when none or too many of its images are usable."""
        if not (isinstance(max_bad_fraction, (int, float)) and 0.0 <= max_bad_fraction <= 1.0):
            raise UsageError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction!r}")
        dataset = cls.inspect(root, format=format, verify=verify, class_template=class_template, workers=workers)
        if not dataset.samples:
            raise DataError(f"no usable images in {dataset.root} (format {dataset.format}); "
                            f"bad inputs: {dataset.report.top_reasons()}")
        if dataset.bad_fraction() > max_bad_fraction:
            bad = dataset.report.bad_images()
            raise DataError(
                f"{bad} of {bad + len(dataset)} images in {dataset.root} ({dataset.bad_fraction():.1%}) are "
                f"unusable, more than max_bad_fraction={max_bad_fraction:g}; top reasons: "
                f"{dataset.report.top_reasons()}. Run `ldmkit data check {dataset.root}` to see which files "
                "and lines, fix them or raise max_bad_fraction.")
        return dataset

    @classmethod
    def inspect(cls, root: str | Path, *, format: str | None = None, verify: str = "decode",
                class_template: str = CLASS_TEMPLATE, workers: int | None = None) -> CaptionDataset:
        """Like open(), but never refuses because of bad inputs: for reports (`ldmkit data check`)."""
        if verify not in VERIFY_MODES:
            raise UsageError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
        root = Path(root)
        report = BadInputReport()
        read = read_format(root, report, format=format, class_template=class_template)
        base = root.parent if root.is_file() else root
        samples, checks = [], {}
        results = check_all([path for _, path, _, _ in read.records], verify, workers)
        for (image_id, path, captions, labels), result in zip(read.records, results):
            if isinstance(result, BadImage):
                report.add(result.reason, _relative(path, base), detail=result.detail)
                continue
            if result is not None:
                checks[image_id] = result
                for step in result.conversions:
                    report.note_conversion(step)
            samples.append(Sample(image_id, path, captions, labels))
        return cls(root, read.format, samples, report, checks, read.caption_files)

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def __iter__(self):
        return iter(self.samples)

    def image(self, index: int):
        """The RGB PIL image of sample `index` (converted as described in images.py)."""
        sample = self.samples[index]
        try:
            img, _ = load_rgb(sample.path)
        except BadImage as bad:
            raise DataError(f"{sample.path} became unreadable after the dataset was opened: {bad}") from None
        return img

    def num_captions(self) -> int:
        return sum(len(s.captions) for s in self.samples)

    def bad_fraction(self) -> float:
        """Unusable images / all images seen (usable + unusable); 0 for an empty dataset."""
        bad = self.report.bad_images()
        total = bad + len(self.samples)
        return bad / total if total else 0.0

    def split(self, name: str, spec: SplitSpec = SplitSpec(), holdout=()) -> CaptionDataset:
        """The samples of one split ('train', 'val' or 'test'); the report is shared with the whole.

        Images matching a `holdout` combination ({column: value} dicts) are always in 'test', never trained
        on (splits.split_with_holdout). Training and evaluation both split with this one method, so the
        test images of a model's evaluation are exactly those its training left out.
        """
        if name not in SPLITS:
            raise UsageError(f"split must be one of {SPLITS}, got {name!r}")
        return self.subset([s for s in self.samples if split_with_holdout(s.image_id, s.labels, spec, holdout) == name])

    def subset(self, samples) -> CaptionDataset:
        """A dataset of some of these samples (same root, format, bad-input report and caption files)."""
        samples = list(samples)
        checks = {s.image_id: self.checks[s.image_id] for s in samples if s.image_id in self.checks}
        return CaptionDataset(self.root, self.format, samples, self.report, checks, self.caption_files)

    def summary(self) -> dict:
        """{"format", "images", "captions", "bad"}: the `ldmkit data check --json` answer."""
        return {"format": self.format, "images": len(self), "captions": self.num_captions(),
                "bad": self.report.counts()}

    def __repr__(self) -> str:
        return f"CaptionDataset({str(self.root)!r}, format={self.format!r}, images={len(self)})"


def check_all(paths: list[Path], verify: str, workers: int | None) -> list[ImageCheck | BadImage | None]:
    """Check images on a few threads (Pillow decodes without holding the GIL); results in input order."""
    if verify == "none":
        return [None] * len(paths)
    from PIL import Image

    def one(path: Path) -> ImageCheck | BadImage:
        try:
            return check_image(path, full=verify == "decode")
        except BadImage as bad:
            return bad

    workers = workers or min(4, len(paths) or 1)
    with warnings.catch_warnings():
        # open_image counts images over the limit itself; Pillow's warning would only repeat it
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if workers <= 1 or len(paths) < 16:
            return [one(p) for p in paths]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, paths, chunksize=16))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)

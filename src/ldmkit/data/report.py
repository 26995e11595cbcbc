"""Bad-input accounting: every problem met while reading a dataset is counted by reason, never fatal.

    report = BadInputReport()
    report.add("malformed_line", "captions.txt", line=12, detail="expected 'image,caption'")
    report.counts()      # {"malformed_line": 1}

Reasons are fixed names (REASONS) so reports from different runs and formats compare. A few examples per
reason are kept with the file and line they came from, so a user can find and fix the input.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ldmkit.errors import printable

IMAGE_REASONS = {
    "zero_byte": "empty (0-byte) image file",
    "not_an_image": "file is not an image Pillow can identify",
    "truncated": "image data ends early",
    "corrupt": "image data is damaged",
    "decompression_bomb": "image larger than Pillow's MAX_IMAGE_PIXELS limit",
    "unreadable": "file could not be read (permissions, I/O error)",
    "missing_image": "captions refer to an image that is not on disk",
    "no_caption": "image has no usable caption",
}
"""Reasons that make a whole sample (one image) unusable."""

CAPTION_REASONS = {
    "bad_utf8": "caption text is not valid UTF-8",
    "empty_caption": "caption is empty or only whitespace",
    "duplicate_line": "the same caption for the same image appears again",
    "malformed_line": "line does not follow the format",
}
"""Reasons that drop one caption line; the image stays usable while it keeps at least one caption."""

REASONS = {**IMAGE_REASONS, **CAPTION_REASONS}
EXAMPLES_PER_REASON = 5


@dataclass(frozen=True)
class BadExample:
    """One problem, located well enough that a user can go and fix it."""

    reason: str
    """One of REASONS."""
    file: str
    """The file the problem is in (the image, or the caption file holding the line)."""
    line: int | None = None
    """1-based line number inside `file`, for caption lines; None for whole files."""
    detail: str = ""
    """What exactly was wrong (the exception text, the offending value)."""

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown bad-input reason {self.reason!r}; known: {sorted(REASONS)}")
        if self.line is not None and self.line < 1:
            raise ValueError(f"line numbers are 1-based, got {self.line}")

    def location(self) -> str:
        """'file:line' or 'file' (control characters in the name escaped: one line of a report)."""
        name = printable(self.file)
        return f"{name}:{self.line}" if self.line is not None else name

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "detail": self.detail}


@dataclass
class BadInputReport:
    """Counts of bad inputs by reason, a few examples of each, and the conversions applied to good images."""

    bad: Counter = field(default_factory=Counter)
    """reason -> how many times it occurred."""
    examples: dict[str, list[BadExample]] = field(default_factory=dict)
    """reason -> the first EXAMPLES_PER_REASON occurrences."""
    converted: Counter = field(default_factory=Counter)
    """conversion applied to a usable image ('CMYK->RGB', 'exif_rotated', ...) -> count."""

    def __post_init__(self) -> None:
        unknown = set(self.bad) - set(REASONS)
        if unknown:
            raise ValueError(f"unknown bad-input reasons {sorted(unknown)}; known: {sorted(REASONS)}")

    def add(self, reason: str, file: str, *, line: int | None = None, detail: str = "") -> None:
        """Count one problem (and keep it as an example if there are few of its kind yet)."""
        example = BadExample(reason, str(file), line, detail)
        self.bad[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < EXAMPLES_PER_REASON:
            kept.append(example)

    def note_conversion(self, what: str) -> None:
        self.converted[what] += 1

    def merge(self, other: BadInputReport) -> None:
        """Add another report's counts and examples to this one."""
        for reason, examples in other.examples.items():
            kept = self.examples.setdefault(reason, [])
            kept.extend(examples[: max(0, EXAMPLES_PER_REASON - len(kept))])
        self.bad.update(other.bad)
        self.converted.update(other.converted)

    def counts(self) -> dict[str, int]:
        """reason -> count, most frequent first (ties by name), only reasons that occurred."""
        return {reason: n for reason, n in sorted(self.bad.items(), key=lambda kv: (-kv[1], kv[0])) if n}

    def bad_images(self) -> int:
        """How many samples (images) were dropped as a whole."""
        return sum(n for reason, n in self.bad.items() if reason in IMAGE_REASONS)

    def top_reasons(self, k: int = 3) -> str:
        """'truncated: 4, missing_image: 2' -- for error messages."""
        return ", ".join(f"{reason}: {n}" for reason, n in list(self.counts().items())[:k]) or "none"

    def accounting(self, usable_images: int) -> dict:
        """The one tally `data check` and `data stats` both report: unusable images (whole samples dropped),
        dropped caption lines, the unusable fraction of all images seen, and counts by reason."""
        bad = self.bad_images()
        total = bad + usable_images
        return {"unusable_images": bad,
                "dropped_captions": sum(n for reason, n in self.bad.items() if reason in CAPTION_REASONS),
                "bad_fraction": round(bad / total, 6) if total else 0.0, "bad": self.counts()}

    def examples_dict(self) -> dict[str, list[dict]]:
        return {reason: [e.to_dict() for e in self.examples[reason]] for reason in self.counts()}

    def lines(self) -> list[str]:
        """A human-readable report, one line per reason followed by its examples."""
        if not self.bad:
            return ["no bad inputs"]
        out = []
        for reason, n in self.counts().items():
            out.append(f"{reason}: {n}  ({REASONS[reason]})")
            for example in self.examples.get(reason, []):
                detail = f"  {printable(example.detail)}" if example.detail else ""
                out.append(f"    {example.location()}{detail}")
        return out


def accounting_line(tally: dict, limit: float | None = None) -> str:
    """One line of `BadInputReport.accounting`, the same in `data check` and `data stats`."""
    bound = f"; limit {limit:g}" if limit is not None else ""
    return (f"unusable images: {tally['unusable_images']} ({tally['bad_fraction']:.1%}{bound}); "
            f"dropped caption lines: {tally['dropped_captions']}")

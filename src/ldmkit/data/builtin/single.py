"""Build one built-in dataset (not a mixture): the step that `build_dataset` and each part of a mixture share."""

from __future__ import annotations

from pathlib import Path

from ldmkit.errors import UsageError

DATASETS = ("shapes", "emoji", "avatars")


def build_single(name: str, out: Path, *, n: int | None, seed: int, size: int, phrasings: int = 0) -> dict:
    """Write the built-in dataset `name` (one of DATASETS) into `out`; returns its card (see build_dataset).
    phrasings > 0 (avatars only) adds that many free phrasings per image to its captions."""
    from ldmkit.data.builtin.card import make_card, prepare_output, write_build

    if name not in DATASETS:
        raise UsageError(f"unknown built-in dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise UsageError(f"n must be a positive integer or None, got {n!r}")
    check_size(size)
    if phrasings != 0:
        from ldmkit.data.builtin.avatar_phrasings import check_phrasings

        check_phrasings(phrasings)
        if name != "avatars":
            raise UsageError(f"phrasings={phrasings!r} applies to the avatars dataset only, not {name!r}")
    out = Path(out)
    builder = _builder(name)
    builder_check = getattr(builder, "check_sources", None)
    if builder_check is not None:
        builder_check()  # fail (e.g. missing font) before touching the output folder
    prepare_output(out, name)
    result = builder.build(out, n=n, seed=seed, size=size)
    if phrasings:  # 0: the records and card of a plain build, unchanged
        from ldmkit.data.builtin.avatar_phrasings import with_phrasings

        result = with_phrasings(result, seed, phrasings)
    card = make_card(result, n=n, seed=seed, size=size) | ({"phrasings": phrasings} if phrasings else {})
    write_build(out, result, card)
    return card


def check_size(size) -> None:
    if not isinstance(size, int) or not 16 <= size <= 1024:
        raise UsageError(f"size must be an integer number of pixels in [16, 1024], got {size!r}")


def _builder(name: str):
    """The module that builds `name`: it has build(out, *, n, seed, size) -> BuildResult."""
    import importlib

    return importlib.import_module(f"ldmkit.data.builtin.{name}")

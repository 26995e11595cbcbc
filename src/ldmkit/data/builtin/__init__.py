"""Built-in datasets written from installed packages, fully offline: `shapes`, `emoji`, `avatars`.

    card = build_dataset("shapes", Path("data/shapes"), n=500, seed=0, size=32)

Each build writes images/ + metadata.jsonl (readable by `ldmkit.data.dataset.CaptionDataset.open`),
dataset_card.json and README.md, and returns the card. Builders import their heavy sources lazily.
"""

from __future__ import annotations

from pathlib import Path

from ldmkit.errors import UsageError

DATASETS = ("shapes", "emoji", "avatars")


def build_dataset(name: str, out: Path, *, n: int | dict | None = None, seed: int = 0, size: int = 64) -> dict:
    """Write the built-in dataset `name` into `out` and return its dataset card.

    name: one of DATASETS, or a mixture such as "emoji+avatars" (see `ldmkit.data.builtin.mix`; n may
    then be a {part: count} mapping).
    n: number of images (None: the dataset's full / default size); seed: drives every random choice;
    size: side of the square images in pixels. `out` must be empty, missing, or an earlier build of
    the same dataset (whose files are then replaced).
    """
    from ldmkit.data.builtin.card import make_card, prepare_output, write_build

    if "+" in name:
        from ldmkit.data.builtin.mix import build_mix, parse_parts

        _check_size(size)
        return build_mix(parse_parts(name, DATASETS), Path(out), n=n, seed=seed, size=size)
    if name not in DATASETS:
        raise UsageError(f"unknown built-in dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise UsageError(f"n must be a positive integer or None, got {n!r}")
    _check_size(size)
    out = Path(out)
    builder = _builder(name)
    builder_check = getattr(builder, "check_sources", None)
    if builder_check is not None:
        builder_check()  # fail (e.g. missing font) before touching the output folder
    prepare_output(out, name)
    result = builder.build(out, n=n, seed=seed, size=size)
    card = make_card(result, n=n, seed=seed, size=size)
    write_build(out, result, card)
    return card


def _check_size(size) -> None:
    if not isinstance(size, int) or not 16 <= size <= 1024:
        raise UsageError(f"size must be an integer number of pixels in [16, 1024], got {size!r}")


def _builder(name: str):
    """The module that builds `name`: it has build(out, *, n, seed, size) -> BuildResult."""
    import importlib

    return importlib.import_module(f"ldmkit.data.builtin.{name}")

"""Time building the built-in datasets: full `emoji` (target <= 60 s) and 2,000 `avatars` (<= 60 s).

Also times 2,000 `shapes` as the in-run reference. Writes into a temporary folder that is removed.

    .venv/bin/python benchmarks/data_build.py [--size 64] [--avatars 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def time_build(name: str, n: int | None, size: int) -> tuple[float, int]:
    """Seconds to build `name` into a fresh temporary folder, and the number of images written."""
    from ldmkit.data.builtin import build_dataset

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        card = build_dataset(name, Path(tmp) / name, n=n, size=size)
        return time.perf_counter() - start, card["images"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--avatars", type=int, default=2000)
    args = parser.parse_args(argv)
    targets = {"emoji": 60.0, "avatars": 60.0, "shapes": None}
    print(f"{'dataset':<9}{'images':>8}{'seconds':>9}{'img/s':>8}  target")
    for name, n in (("shapes", 2000), ("emoji", None), ("avatars", args.avatars)):
        seconds, images = time_build(name, n, args.size)
        target = targets[name]
        verdict = "" if target is None else f"<= {target:.0f} s: {'ok' if seconds <= target else 'MISSED'}"
        print(f"{name:<9}{images:>8}{seconds:>9.2f}{images / seconds:>8.0f}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

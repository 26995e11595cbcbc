"""The `--threads N` option shared by the commands that run torch (train, eval; generate has its own)."""

from __future__ import annotations

import argparse


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch, fixed (default: LDMKIT_THREADS=N, else one per free core: "
                             "training follows the cores other programs leave free; docs/benchmarks.md)")

"""The `--threads N` option shared by the commands that run torch (train, eval; generate has its own)."""

from __future__ import annotations

import argparse


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: one per core, or LDMKIT_THREADS=N); idle threads "
                             "spin only briefly, so a busy machine is shared fairly (docs/benchmarks.md)")

"""The cost of live x0 previews (`ldmkit serve`, job field `preview_every`): sampling with the worker's preview
hook (VAE decode of each job's x0 + JPEG data URL) vs the same batch without it.

    python benchmarks/serve_previews.py [--model DIR] [--images 4] [--steps 20] [--every 1 5] [--repeats 3]

Without --model: a tiny random model (the preset the server tests use). The batch is one job of `--images`
images (the preview shows at most serve.previews.MAX_IMAGES of them); repeats are interleaved and the
median time ratio (with previews / without) is reported for each interval.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from ldmkit.models.presets import build_components
    from ldmkit.pipeline import Pipeline
    from ldmkit.serve.previews import Previews

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="model folder (default: a tiny random model)")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--every", type=int, nargs="+", default=[1, 5])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = Pipeline.from_pretrained(args.model) if args.model else Pipeline(build_components("tiny", seed=0))
    prompts, seeds = ["a red circle"] * args.images, list(range(args.images))

    def run(every: int) -> tuple[float, int]:
        previews = Previews(pipe.decode, ["job"] * args.images, {"job": every})
        made = []

        def on_step(i, n):
            if previews.take("job"):
                made.append(i)
        start = time.perf_counter()
        pipe.generate_batch(prompts, seeds, steps=args.steps, sampler="euler", on_step=on_step,
                            on_denoised=previews if every else None)
        return time.perf_counter() - start, len(made)

    run(0)  # warm-up
    plain, timed, counts = [], {k: [] for k in args.every}, {}
    for _ in range(args.repeats):
        plain.append(run(0)[0])
        for k in args.every:
            seconds, counts[k] = run(k)
            timed[k].append(seconds)
    r = pipe.resolve(pipe_settings(args.steps))[0]
    print(json.dumps({
        "model": str(args.model) if args.model else "tiny (random)", "images": args.images, "steps": args.steps,
        "size": f"{r.width}x{r.height}", "threads": torch.get_num_threads(),
        "without_previews_s": [round(s, 3) for s in plain],
        **{f"every_{k}": {"previews": counts[k], "seconds": [round(s, 3) for s in timed[k]],
                          "median_ratio": round(statistics.median(a / b for a, b in zip(timed[k], plain)), 3)}
           for k in args.every},
    }, indent=2))
    return 0


def pipe_settings(steps: int):
    from ldmkit.pipeline.settings import SamplingSettings

    return SamplingSettings(steps=steps, sampler="euler")


if __name__ == "__main__":
    sys.exit(main())

"""Research probe (docs/quality.md, "Guidance only in an interval"): run any `ldmkit` command with classifier-free
guidance applied only while sigma is in (LO, HI] (Kynkaanniemi et al. 2024, "Applying guidance in a limited
interval"); at the other steps the conditional branch alone is used, one UNet batch instead of two.

    GI=0.28,5.42 python scripts/guidance_interval_eval.py eval src/ldmkit/default_model --data data/mix6000 ...

It patches ldmkit's CFGDenoiser for this process only and prints, at exit, how many denoiser calls were guided.
Not a feature: on the default model every interval measured was worse than guidance at every step.
"""

import atexit
import os
import sys

from ldmkit.cli import main
from ldmkit.diffusion import denoiser


def interval() -> tuple[float, float]:
    text = os.environ.get("GI", "0,inf")
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        sys.exit(f"GI={text!r}: expected LO,HI, e.g. 0.28,5.42 (inf for no upper end)")
    if not 0 <= lo < hi:
        sys.exit(f"GI={text!r}: expected 0 <= LO < HI")
    return lo, hi


def patch(lo: float, hi: float) -> dict:
    guided = denoiser.CFGDenoiser.__call__
    calls = {"guided": 0, "conditional only": 0}

    def call(self, x, sigma):
        if self.scale != 1.0 and not lo < float(sigma) <= hi:
            calls["conditional only"] += 1
            return self.denoiser(x, sigma, self.cond)
        calls["guided"] += 1
        return guided(self, x, sigma)

    denoiser.CFGDenoiser.__call__ = call
    return calls


if __name__ == "__main__":
    lo, hi = interval()
    calls = patch(lo, hi)
    atexit.register(lambda: print(f"guidance interval ({lo:g}, {hi:g}]: denoiser calls {calls}", file=sys.stderr))
    sys.exit(main(sys.argv[1:]))

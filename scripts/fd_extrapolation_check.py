"""How well `frechet_distance_extrapolated` (FD-infinity) recovers a known FD at a given dim and sample size: Gaussian
features with a decaying spectrum (eigenvalues ~ 1/k, trace 1, like unit-norm embeddings), a second set with a small
mean shift and 15% more variance, and a third from the first set's distribution (true FD 0).

    python scripts/fd_extrapolation_check.py --dim 128 --n 1000 --datasets 20    # the avatars eval's regime (~4.5 min)

Prints the true FD, the mean plug-in FD, FD_inf's mean and spread over the data sets and how often its interval
covered the truth, and the same for the pair of one distribution (truth 0).
"""

import argparse
import sys

import numpy as np

from ldmkit.errors import LdmkitError, UsageError
from ldmkit.evaluation.frechet import frechet_distance, frechet_distance_extrapolated

MAX_DIM, MAX_N, MAX_DATASETS = 2048, 100_000, 1000


def main(dim: int, n: int, datasets: int) -> dict:
    if not (1 <= dim <= MAX_DIM and 2 <= n <= MAX_N and 2 <= datasets <= MAX_DATASETS):
        raise UsageError(f"need 1 <= dim <= {MAX_DIM}, 2 <= n <= {MAX_N}, 2 <= datasets <= {MAX_DATASETS}; "
                         f"got dim {dim}, n {n}, datasets {datasets}")
    spectrum = 1 / np.arange(1, dim + 1)
    spectrum /= spectrum.sum()
    shift, wider = np.zeros(dim), 1.15
    shift[:10] = 0.02
    truth = float(shift @ shift + np.sum(spectrum * (1 + wider - 2 * np.sqrt(wider))))
    plug_in, shifted, same, covered, holds_zero = [], [], [], 0, 0
    for index in range(datasets):
        rng = np.random.default_rng(index)
        a = rng.standard_normal((n, dim)) * np.sqrt(spectrum)
        b = shift + rng.standard_normal((n + n // 40, dim)) * np.sqrt(spectrum * wider)   # unequal sizes, as in evals
        c = rng.standard_normal((n + n // 40, dim)) * np.sqrt(spectrum)
        fit, null = frechet_distance_extrapolated(a, b, seed=index), frechet_distance_extrapolated(a, c, seed=index)
        plug_in.append(frechet_distance(a, b))
        shifted.append(fit.estimate)
        same.append(null.estimate)
        covered += fit.low < truth < fit.high
        holds_zero += null.low < 0 < null.high
    result = {"truth": truth, "plug_in": float(np.mean(plug_in)), "fd_inf": float(np.mean(shifted)),
              "fd_inf_sd": float(np.std(shifted, ddof=1)), "covered": covered, "same_fd_inf": float(np.mean(same)),
              "same_sd": float(np.std(same, ddof=1)), "holds_zero": holds_zero, "datasets": datasets}
    print(f"dim {dim}, {n} vs {n + n // 40}, {datasets} data sets; true FD {truth:.5f}")
    print(f"plug-in FD mean {result['plug_in']:.5f}; FD_inf mean {result['fd_inf']:.5f} "
          f"(sd {result['fd_inf_sd']:.5f}), interval covers the truth {covered}/{datasets}")
    print(f"one distribution: FD_inf mean {result['same_fd_inf']:.5f} (sd {result['same_sd']:.5f}), interval holds 0 "
          f"{holds_zero}/{datasets}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--n", type=int, default=1000, help="samples in the first set (the others have 2.5%% more)")
    parser.add_argument("--datasets", type=int, default=20)
    args = parser.parse_args()
    try:
        main(args.dim, args.n, args.datasets)
    except LdmkitError as err:
        sys.exit(f"error: {err}")

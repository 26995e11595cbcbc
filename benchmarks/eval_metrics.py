"""Time every evaluation metric, with bootstrap intervals, on random 1,000 vs 1,000 feature sets.

Feature extraction is not timed: the metrics take features. For each dimension the sets are
A ~ N(0, I), B ~ N(0.05, 1.1^2 I) (image features; population FD = dim * 0.0125), and text
embeddings = image + noise with several captions per image (CLIP score and retrieval). With
n ~ dim the FD estimate is mostly small-sample bias (152 for a population FD of 6.4 at dim 512),
which is why KID and CMMD are printed beside it.

References measured in the same run: FD through scipy.linalg.sqrtm of S_a S_b (pytorch-fid's
route) and KID with three kernel matrices per subset (Binkowski et al.'s reference loop); the
table prints their values and the time ratios.

    .venv/bin/python benchmarks/eval_metrics.py [--n 1000] [--dims 512 768]
        [--n-boot 1000] [--fd-boot 1000] [--threads 1]

One BLAS thread by default: on a shared 2-core machine under load, two OpenBLAS threads made the
dim-512 FD interval take 332 s instead of 27 s (threads spin-waiting on busy cores).
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np


def timed(fn):
    """(result, seconds) of fn()."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    """FD as pytorch-fid computes it: sqrtm of the product, real part of its trace."""
    from scipy import linalg

    mu, cov_a, cov_b = a.mean(0) - b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(mu @ mu + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root).real)


def loop_kid(a: np.ndarray, b: np.ndarray, subset_size: int, subsets: int, seed: int) -> float:
    """KID with three kernel matrices per subset, as in the paper's reference code."""
    from ldmkit.evaluation.kernel_metrics import PolynomialKernel, mmd2

    rng = np.random.default_rng(seed)
    size = min(subset_size, len(a), len(b))
    values = [mmd2(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)],
                   PolynomialKernel()) for _ in range(subsets)]
    return float(np.mean(values))


def quiet(fn):
    """fn() with FD's bias and rank warnings silenced (the benchmark's sets are deliberately n ~ dim)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn()


def run_dim(dim: int, n: int, n_boot: int, fd_boot: int, captions: int, seed: int) -> list[tuple[str, str, float]]:
    """(metric, value text, seconds) rows for one feature dimension."""
    from ldmkit.metrics.bootstrap import bootstrap_ci
    from ldmkit.evaluation.clip_score import clip_score, cosine_similarity_matrix
    from ldmkit.evaluation.frechet import frechet_distance, frechet_distance_ci
    from ldmkit.evaluation.kernel_metrics import cmmd, cmmd_ci, kid, kid_ci
    from ldmkit.metrics.retrieval import caption_owners, cross_modal_retrieval, prompt_retrieval

    rng = np.random.default_rng([seed, dim])
    a = rng.standard_normal((n, dim))
    b = 0.05 + 1.1 * rng.standard_normal((n, dim))
    owner = caption_owners(np.full(n, captions))
    texts = b[owner] + 5.0 * rng.standard_normal((n * captions, dim))  # retrieval neither trivial nor hopeless
    rows = []

    def row(name, fn, show):
        value, seconds = timed(fn)
        rows.append((name, show(value), seconds))
        return value

    interval = lambda ci: f"{ci.estimate:.4g} [{ci.low:.4g}, {ci.high:.4g}]"  # noqa: E731
    fd = row("FD", lambda: quiet(lambda: frechet_distance(a, b)), lambda v: f"{v:.4f}")
    if importlib.util.find_spec("scipy") is not None:
        row("FD (scipy sqrtm reference)", lambda: scipy_fd(a, b), lambda v: f"{v:.4f} (diff {v - fd:+.1e})")
    row(f"FD 95% basic CI, {fd_boot} boot", lambda: quiet(lambda: frechet_distance_ci(a, b, n_boot=fd_boot)), interval)
    ours = row("KID (100 subsets)", lambda: kid(a, b, subset_size=n, subsets=100),
               lambda r: f"{r.mean:.5f} ± {r.std:.1e}")
    row("KID (per-subset loop reference)", lambda: loop_kid(a, b, n, 100, 0),
        lambda v: f"{v:.5f} (diff {v - ours.mean:+.1e})")
    row("KID half subsets (100 x n/2)", lambda: kid(a, b, subset_size=n // 2, subsets=100),
        lambda r: f"{r.mean:.5f} ± {r.std:.1e}")
    row(f"KID 95% CI, {n_boot} boot", lambda: kid_ci(a, b, n_boot=n_boot), interval)
    row("CMMD", lambda: cmmd(a, b), lambda v: f"{v:.4f}")
    row(f"CMMD 95% CI, {n_boot} boot", lambda: cmmd_ci(a, b, n_boot=n_boot), interval)
    score = row("CLIP score", lambda: clip_score(b, texts[::captions]), lambda s: f"{s.mean:.3f}")
    row(f"CLIP score 95% CI, {n_boot} boot", lambda: score.ci(n_boot=n_boot), interval)
    sim = row(f"cosine matrix {n} x {n * captions}", lambda: cosine_similarity_matrix(b, texts), lambda s: str(s.shape))
    prompts = row("prompt retrieval top-1/top-5", lambda: prompt_retrieval(sim[:, ::captions], np.arange(n)),
                  lambda r: f"{r.top1:.3f} / {r.top5:.3f}")
    row(f"prompt top-1 95% CI, {n_boot} boot", lambda: bootstrap_ci(prompts.ranks <= 1, n_boot=n_boot), interval)
    retrieval = row(f"cross-modal R@1/5/10 ({captions} capt.)", lambda: cross_modal_retrieval(sim, owner),
                    lambda r: " ".join(f"{r.image_to_text(k):.3f}/{r.text_to_image(k):.3f}" for k in (1, 5, 10)))
    row(f"i2t R@1 95% CI, {n_boot} boot", lambda: bootstrap_ci(retrieval.image_ranks <= 1, n_boot=n_boot), interval)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="items per set")
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 768])
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for all but FD")
    parser.add_argument("--fd-boot", type=int, default=1000, help="bootstrap replicates for FD (one eigensolve each)")
    parser.add_argument("--captions", type=int, default=5, help="captions per image for retrieval")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads (needs threadpoolctl; else OMP_NUM_THREADS)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        print("threadpoolctl not installed: BLAS threads follow OMP_NUM_THREADS")
    if importlib.util.find_spec("scipy") is not None:
        import scipy.linalg  # noqa: F401  (import time is not the reference's run time)
    grand_total = 0.0
    for dim in args.dims:
        rows = run_dim(dim, args.n, args.n_boot, args.fd_boot, args.captions, args.seed)
        print(f"\n{args.n} vs {args.n} features, dim {dim}")
        print(f"{'metric':40s} {'value':42s} {'seconds':>8s}")
        for name, value, seconds in rows:
            print(f"{name:40s} {value:42s} {seconds:8.3f}")
        ours = sum(s for name, _, s in rows if "reference" not in name)
        by_name = {name: s for name, _, s in rows}
        print(f"metrics total (references excluded): {ours:.2f} s")
        fd_ratio = by_name.get("FD (scipy sqrtm reference)", float("nan")) / by_name["FD"]
        print(f"speed-up vs reference: FD {fd_ratio:.1f}x, "
              f"KID {by_name['KID (per-subset loop reference)'] / by_name['KID (100 subsets)']:.1f}x")
        grand_total += ours
    print(f"\nall dims, all metrics with CIs: {grand_total:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

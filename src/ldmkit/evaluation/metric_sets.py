"""The metric groups of an evaluation, each as JSON-ready dicts of {"estimate", "low", "high"}.

    alignment_metrics(dual, image_emb, prompts, own)     # CLIP score, prompt retrieval top-1 / top-5
    fidelity_metrics(gen_emb, real_emb, ...)              # FD, KID, CMMD, FD-infinity against the real images
    real_vs_real(real_emb, ...)                           # the same on two disjoint halves: the floor
    fidelity_difference(gen_a, gen_b, real_emb, ...)      # B - A of FD, KID, CMMD: two models, same prompts

Warnings the metrics raise (rank-deficient covariances, FD bias) are kept as notes for the report.
"""

from __future__ import annotations

import hashlib
import json
import platform
import warnings
from pathlib import Path

import numpy as np

from ldmkit.errors import UsageError
from ldmkit.metrics.bootstrap import bootstrap_ci, paired_difference_ci
from ldmkit.evaluation.clip_score import clip_score, cosine_similarity_matrix
from ldmkit.evaluation.frechet import frechet_distance_ci, frechet_distance_counts, frechet_distance_extrapolated
from ldmkit.evaluation.kernel_metrics import cmmd_ci, cmmd_counts, kid_ci, kid_counts
from ldmkit.metrics.feature_arrays import as_matrix, l2_normalize, same_dim
from ldmkit.metrics.retrieval import distinct_prompts, prompt_retrieval

PACKAGES = ("ldmkit", "torch", "diffusers", "transformers", "numpy", "Pillow", "matplotlib")


def interval(ci) -> dict:
    """A ConfidenceInterval as {"estimate", "low", "high"}."""
    return {"estimate": float(ci.estimate), "low": float(ci.low), "high": float(ci.high)}


def alignment_metrics(dual, image_emb: np.ndarray, prompts: list[str], own: list[int], n_boot: int,
                      seed: int) -> dict:
    """CLIP score of each image with its own prompt, and where that prompt ranks among the K distinct
    evaluation prompts (top-1 / top-5 accuracy). own[i] is the index into prompts of image i's prompt."""
    own_emb, ranks = own_prompt_ranks(dual, image_emb, prompts, own)
    score = clip_score(image_emb, own_emb)
    return {
        "clip_score": interval(score.ci(n_boot=n_boot, seed=seed)),
        "retrieval_top1": interval(bootstrap_ci((ranks.ranks <= 1).astype(float), n_boot=n_boot, seed=seed)),
        "retrieval_top5": interval(bootstrap_ci((ranks.ranks <= 5).astype(float), n_boot=n_boot, seed=seed)),
        "retrieval_candidates": ranks.candidates,
    }


def own_prompt_ranks(dual, image_emb: np.ndarray, prompts: list[str], own: list[int]):
    """(the text embedding of each image's own prompt, PromptRetrieval: where that prompt ranks among the distinct
    prompts). own[i] is the index into prompts of image i's prompt."""
    from ldmkit.evaluation.features import text_embeddings

    candidates, columns = distinct_prompts(prompts)
    text_emb = text_embeddings(dual, candidates)
    own_column = columns[np.asarray(own, dtype=np.int64)]
    return text_emb[own_column], prompt_retrieval(cosine_similarity_matrix(image_emb, text_emb), own_column)


def fidelity_metrics(gen_emb: np.ndarray, real_emb: np.ndarray, n_boot: int, seed: int, notes: list[str], *,
                     extrapolate: bool = True) -> dict:
    """FD, KID (raw MMD^2_u, not x1000), CMMD and FD-infinity between generated and real image embeddings;
    a metric whose interval is undefined at these sizes is left out, with a note.

    FD-infinity ("fd_inf", frechet_distance_extrapolated) is the FD with its small-sample bias extrapolated
    away, so unlike FD it compares across sample sizes and two samples of one distribution give ~0; it needs
    ~7 samples per feature dimension in each set (subsets of 60% of a half hold 2 per dimension).
    extrapolate=False leaves it out (for a caller that fits it itself and prints the fit)."""
    sets = (gen_emb, real_emb)
    result = {"sizes": [len(gen_emb), len(real_emb)]}
    metrics = [("fd", "FD", frechet_distance_ci), ("kid", "KID", kid_ci), ("cmmd", "CMMD", cmmd_ci)]
    if extrapolate:
        metrics.append(("fd_inf", "FD-infinity", _fd_infinity))
    for key, label, metric in metrics:
        ci = catch_warnings_into(notes, lambda: _guarded(label, metric, sets, n_boot, seed, notes))
        if ci is not None:
            result[key] = ci
    return result


def fidelity_difference(gen_a: np.ndarray, gen_b: np.ndarray, real_emb: np.ndarray, n_boot: int, seed: int) -> dict:
    """B - A of FD, KID and CMMD against the same real images, where row i of gen_a and of gen_b embed two models'
    images of the same prompt and seed (two evals of one prompt set with --seed-per-image).

    One bootstrap resamples the prompts (row i of both sets together) and the real images, so the variation the
    two models share cancels: the interval is that of the difference, narrower than two separate intervals would
    suggest. FD's small-sample bias is about the same for both at equal sizes and largely cancels too. Intervals:
    basic for FD (as frechet_distance_ci), percentile for KID and CMMD."""
    a = as_matrix(gen_a, "gen_a", min_rows=2)
    b = as_matrix(gen_b, "gen_b", min_rows=2)
    real = as_matrix(real_emb, "real_emb", min_rows=2)
    same_dim(a, b, "gen_a", "gen_b")
    same_dim(a, real, "gen_a", "real_emb")
    unit = [l2_normalize(x, name) for x, name in ((a, "gen_a"), (b, "gen_b"), (real, "real_emb"))]
    result = {"sizes": [len(a), len(real)]}
    for key, counts, sets, method in (("fd", frechet_distance_counts, (a, b, real), "basic"),
                                      ("kid", kid_counts, (a, b, real), "percentile"),
                                      ("cmmd", cmmd_counts, unit, "percentile")):
        result[key] = interval(paired_difference_ci(counts, *sets, n_boot=n_boot, seed=seed, method=method))
    return result


def _fd_infinity(features_a, features_b, *, n_boot: int, seed: int):
    """FD-infinity with its half-sampling interval (n_boot does not apply: the interval uses 50 halves)."""
    del n_boot
    return frechet_distance_extrapolated(features_a, features_b, seed=seed)


def _guarded(label: str, metric, sets, n_boot: int, seed: int, notes: list[str]) -> dict | None:
    """The metric's interval, or None with a note when some bootstrap resample leaves it undefined
    (tiny sets: a resample of one distinct image has no within-set kernel mean)."""
    try:
        return interval(metric(*sets, n_boot=n_boot, seed=seed))
    except UsageError as err:
        notes.append(f"{label} skipped at sizes {len(sets[0])} vs {len(sets[1])}: {err}")
        return None


def disjoint_halves(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Even and odd positions: two disjoint halves of range(count) covering it."""
    index = np.arange(count)
    return index[0::2], index[1::2]


def real_vs_real(real_emb: np.ndarray, n_boot: int, seed: int, notes: list[str]) -> dict:
    """Fidelity metrics of one half of the real images against the other: what no generator can beat
    at this sample size (FD is biased upward for small sets, so its floor is not 0)."""
    first, second = disjoint_halves(len(real_emb))
    if len(second) < 2:
        notes.append(f"real-vs-real floor skipped: {len(real_emb)} real images cannot make two halves of >= 2")
        return {}
    result = fidelity_metrics(real_emb[first], real_emb[second], n_boot, seed, notes)
    result["halves"] = [first.tolist(), second.tolist()]
    return result


def catch_warnings_into(notes: list[str], compute):
    """compute() with the Python warnings it raises appended to notes (once each) instead of printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = compute()
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in notes:
            notes.append(text)
    return value


def run_environment(model: Path, dual, clip: Path | None) -> dict:
    """Model hash, dual-encoder weight hash, package versions, Python and platform."""
    from importlib.metadata import PackageNotFoundError, version

    from ldmkit.models.folder import model_hash

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    env = {"model_hash": model_hash(model), "packages": versions, "python": platform.python_version(),
           "platform": platform.platform()}
    if dual is not None:
        from ldmkit.models.dual_encoder import CLIP_FOLDER, WEIGHTS_FILE

        root = Path(clip) if clip is not None else Path(model)
        if not (root / CLIP_FOLDER).is_dir() and (root / "final" / CLIP_FOLDER).is_dir():
            root = root / "final"  # a `train clip` run folder (load_dual_encoder reads its final/)
        folder = root / CLIP_FOLDER if (root / CLIP_FOLDER).is_dir() else root
        digest = hashlib.sha256()
        files = [folder / WEIGHTS_FILE] if (folder / WEIGHTS_FILE).is_file() else sorted(folder.glob("*.safetensors"))
        for weights in files:  # a sharded CLIPModel: every shard, in name order
            digest.update(weights.read_bytes())
        env["dual_encoder"] = {"path": str(folder), "weights_sha256": digest.hexdigest()[:12]}
    return env


def write_json(path: Path, data: dict) -> None:
    """Write data as indented JSON (numpy scalars converted), creating the file exclusively."""
    def convert(value):
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"cannot write {type(value).__name__} to JSON")

    with open(path, "x", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=convert, allow_nan=False)
        handle.write("\n")

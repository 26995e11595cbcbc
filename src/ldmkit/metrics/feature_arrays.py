"""Turn user features (torch tensors, numpy arrays, nested lists) into checked float64 numpy arrays.

Every metric in `ldmkit.metrics` and `ldmkit.evaluation` works in float64 numpy: feature sets are small
(thousands of rows), and the matrix square root of the Fréchet distance loses digits in float32.
"""

from __future__ import annotations

import numpy as np

from ldmkit.errors import UsageError


def to_numpy(values) -> np.ndarray:
    """A float64 copy-or-view of values; torch tensors are detached and moved to the CPU (torch stays lazy)."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch.Tensor, without importing torch
        values = values.detach().cpu().double().numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise UsageError(f"expected numbers (a numpy array or torch tensor), "
                         f"got {type(values).__name__}: {err}") from err


def as_matrix(values, name: str, *, min_rows: int = 1) -> np.ndarray:
    """values as an (n, dim) float64 matrix with n >= min_rows and only finite entries."""
    matrix = to_numpy(values)
    if matrix.ndim != 2:
        raise UsageError(f"{name} must be a 2-D (samples, dim) array; got shape {tuple(matrix.shape)}")
    if matrix.shape[0] < min_rows:
        raise UsageError(f"{name} needs at least {min_rows} rows (samples); got {matrix.shape[0]}")
    if matrix.shape[1] < 1:
        raise UsageError(f"{name} has 0 feature columns; expected at least 1")
    _check_finite(matrix, name)
    return matrix


def as_vector(values, name: str, *, min_length: int = 1) -> np.ndarray:
    """values as a 1-D float64 vector with at least min_length finite entries."""
    vector = to_numpy(values)
    if vector.ndim != 1:
        raise UsageError(f"{name} must be a 1-D array; got shape {tuple(vector.shape)}")
    if vector.shape[0] < min_length:
        raise UsageError(f"{name} needs at least {min_length} values; got {vector.shape[0]}")
    _check_finite(vector, name)
    return vector


def same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise if two feature matrices have different widths (features of different models)."""
    if a.shape[1] != b.shape[1]:
        raise UsageError(f"{name_a} has dim {a.shape[1]} but {name_b} has dim {b.shape[1]}; "
                         "both sets must come from the same feature extractor")


def l2_normalize(matrix: np.ndarray, name: str) -> np.ndarray:
    """Rows scaled to unit L2 norm; an all-zero row is an error (it has no direction)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise UsageError(f"{name} row {int(zero[0])} is all zeros and cannot be L2-normalised "
                         f"({zero.size} such rows)")
    return matrix / norms


def _check_finite(array: np.ndarray, name: str) -> None:
    bad = np.argwhere(~np.isfinite(array))
    if bad.size:
        where = ", ".join(str(int(i)) for i in bad[0])
        raise UsageError(f"{name} has a non-finite value (NaN or inf) at index ({where}); "
                         f"{len(bad)} non-finite entries in all")

"""Similarity of representations and directions across model versions.

- :func:`cosine_matrix`: pairwise cosine of unit vectors (same width only: two models of
  one architecture fine-tuned from each other share a basis, so their directions can be
  compared coordinate by coordinate).
- :func:`linear_cka`: linear Centered Kernel Alignment (Kornblith et al. 2019, "Similarity
  of Neural Network Representations Revisited", arXiv:1905.00414) between two
  representations of the *same examples*, possibly of different widths. It is invariant to
  orthogonal transforms and isotropic scaling of either side, which is exactly what makes
  it usable across architectures: SmolLM2 (576) and MiniLM (384) have no shared basis.
- :func:`correspondence`: for each layer of model A, the layer of model B with the highest CKA.

>>> x = np.random.default_rng(0).normal(size=(50, 8))
>>> round(linear_cka(x, 3.0 * x), 6)
1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.types import GnomonError

__all__ = ["cka_matrix", "correspondence", "cosine_matrix", "linear_cka", "pearson"]


def cosine_matrix(vectors: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """(k, k) cosine similarity of ``vectors`` (k rows of one width), computed in float64.

    Symmetric with ones on the diagonal by construction (rows are normalised first)."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 1:
        raise GnomonError("cosine_matrix needs a (k, d) stack of vectors of one width")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise GnomonError("cosine_matrix: a direction is the zero vector (nothing to compare)")
    u = v / norms
    c = np.clip(u @ u.T, -1.0, 1.0)
    c = 0.5 * (c + c.T)                 # exact symmetry despite rounding
    np.fill_diagonal(c, 1.0)
    return c


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of ``x`` (n, d1) and ``y`` (n, d2): rows are the same n examples.

    ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` after centering each column; uses the
    (d, d) Gram form, cheap when n >> d is false too (d <= 1024 here).
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise GnomonError(f"linear_cka needs two (n, d) arrays over the same n examples; got {a.shape} and {b.shape}")
    if a.shape[0] < 2:
        raise GnomonError("linear_cka needs at least two examples")
    a = a - a.mean(0)
    b = b - b.mean(0)
    cross = np.linalg.norm(b.T @ a, "fro") ** 2
    den = np.linalg.norm(a.T @ a, "fro") * np.linalg.norm(b.T @ b, "fro")
    return float(cross / den) if den > 0 else float("nan")


def cka_matrix(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> np.ndarray:
    """(len(xs), len(ys)) linear CKA of every layer pair (each entry (n, d_layer))."""
    return np.array([[linear_cka(x, y) for y in ys] for x in xs])


def correspondence(cka: np.ndarray, layers_a: Sequence[int], layers_b: Sequence[int]) -> list[tuple[int, int, float]]:
    """For each layer of A, the layer of B with the highest CKA: ``(layer_a, layer_b, cka)``
    (a layer whose CKA is undefined everywhere, a constant representation, is left out)."""
    out = []
    for i, la in enumerate(layers_a):
        if not np.isfinite(cka[i]).any():
            continue
        j = int(np.nanargmax(cka[i]))
        out.append((int(la), int(layers_b[j]), float(cka[i, j])))
    return out


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation in float64; NaN when either side is constant or n < 2."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise GnomonError(f"pearson needs two series of one length; got {a.size} and {b.size}")
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / np.sqrt((a @ a) * (b @ b)))

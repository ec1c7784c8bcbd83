"""The one object every engine receives, and the helpers engines share."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse

#: bytes of gathered sphere data per batch of spheres
BUDGET = 64 * 1024**2


def _ignore(*args):
    return None


@dataclass
class EngineContext:
    """What a searchlight engine needs: samples, labels, folds, spheres and options.

    Attributes
    ----------
    estimator : scikit-learn estimator
        The resolved estimator (engines read its parameters).
    X : ndarray of shape (n_samples, n_voxels)
        Samples, C-contiguous; the columns are those of ``A``. float64, or float32 (the
        caller's precision, kept to save memory) for engines that upcast what they
        compute on (:func:`gather`, :func:`column_mean`).
    A : scipy.sparse.csr_matrix of shape (n_spheres, n_voxels)
        Sphere x voxel adjacency with sorted indices, every row non-empty.
    labels : ndarray of shape (n_sets, n_samples)
        Class codes ``0..n_classes-1``; the observed labels first, then permutations.
    folds : list of (train, test) index arrays
        Cross-validation folds.
    n_classes : int
        Number of classes.
    need_dec : bool
        Also report decision values (for ROC AUC).
    n_jobs : int
        Worker threads.
    consume : callable
        ``consume(set_index, sphere_indices, pred, dec)`` receives results.
    progress : callable
        ``progress(n)`` is told that ``n`` spheres x label sets are done.
    source : ndarray of shape (n_samples, n_all_voxels) or None
        The caller's samples over every voxel, when ``X`` holds only the voxels the spheres
        touch (for statistics over whole patterns, such as :attr:`pattern_mean`).
    """

    estimator: object
    X: np.ndarray
    A: sparse.csr_matrix
    labels: np.ndarray
    folds: list
    n_classes: int
    need_dec: bool = False
    n_jobs: int = 1
    consume: Callable = _ignore
    progress: Callable = _ignore
    source: np.ndarray | None = None

    @property
    def n_samples(self):
        return self.X.shape[0]

    @property
    def n_spheres(self):
        return self.A.shape[0]

    @property
    def n_sets(self):
        return len(self.labels)

    @cached_property
    def pattern_mean(self):
        """Mean of every sample over all the caller's voxels (n_samples,), float64."""
        src = self.X if self.source is None else self.source
        return np.mean(src, axis=1, dtype=np.float64)

    @cached_property
    def test_offsets(self):
        """Start of every fold's test block in the concatenated test samples (+ the end)."""
        return np.r_[0, np.cumsum([len(te) for _, te in self.folds])].astype(np.intp)

    @cached_property
    def atoms(self):
        """Samples grouped by identical fold membership: (atom of every sample, n_atoms,
        training atoms of every fold, test atoms of every fold)."""
        M = np.zeros((self.n_samples, len(self.folds)), dtype=np.int8)
        for f, (tr, te) in enumerate(self.folds):
            M[tr, f] = 1
            M[te, f] = 2
        _, atom = np.unique(M, axis=0, return_inverse=True)
        atom = atom.ravel()
        n_atoms = int(atom.max()) + 1
        train = [np.unique(atom[tr]) for tr, _ in self.folds]
        test = [np.setdiff1d(np.arange(n_atoms), ta) for ta in train]
        return atom, n_atoms, train, test


# --------------------------------------------------------------------------- #
# helpers shared by engines
# --------------------------------------------------------------------------- #
def restrict_columns(A, X, keep=1.0, dtype=np.float64):
    """The columns of ``X`` that rows of CSR ``A`` use, and ``A`` re-indexed to them.

    Returns (cols, X[:, cols] as C-contiguous ``dtype``, A over those columns). When the used
    columns exceed ``keep`` times all columns, nothing is removed (copying nearly every
    column costs more than it saves): ``cols`` is None and ``X`` is only made ``dtype``
    C-contiguous. Column order is kept, so every row's entries keep their order, and an
    engine's answers are the same either way.
    """
    used = np.zeros(A.shape[1], dtype=bool)
    used[A.indices] = True
    if used.sum() >= keep * A.shape[1]:
        return None, np.ascontiguousarray(X, dtype=dtype), A
    cols = np.flatnonzero(used)
    remap = np.cumsum(used, dtype=np.int64) - 1
    A_used = sparse.csr_matrix(
        (A.data, remap[A.indices].astype(A.indices.dtype), A.indptr), shape=(A.shape[0], len(cols))
    )
    A_used.has_sorted_indices = A.has_sorted_indices
    return cols, np.ascontiguousarray(X[:, cols], dtype=dtype), A_used


def spmm(A, Q, n_jobs):
    """``A @ Q`` with the rows split over threads (scipy.sparse releases the GIL)."""
    if n_jobs <= 1 or A.shape[0] < 2000:
        return np.asarray(A @ Q)
    bounds = np.linspace(0, A.shape[0], n_jobs + 1).astype(int)
    out = np.empty((A.shape[0], Q.shape[1]))

    def work(i):
        out[bounds[i] : bounds[i + 1]] = A[bounds[i] : bounds[i + 1]] @ Q

    with ThreadPoolExecutor(n_jobs) as ex:
        list(ex.map(work, range(n_jobs)))
    return out


def row_max(A, v):
    """Maximum of ``v`` over the columns of every (non-empty) row of CSR ``A``."""
    return np.maximum.reduceat(v[A.indices], A.indptr[:-1])


def size_batches(A, bytes_per_sphere, budget=BUDGET):
    """Batches of spheres of one size: a list of (k, rows, cols (n_rows, k)).

    Spheres of equal size ``k`` are stacked, at most ``budget // bytes_per_sphere(k)`` per
    batch, so every batch is one set of batched array operations.
    """
    sizes = np.diff(A.indptr)
    out = []
    for k in np.unique(sizes):
        rows = np.flatnonzero(sizes == k)
        step = max(1, int(budget // max(1, bytes_per_sphere(int(k)))))
        for c0 in range(0, len(rows), step):
            r = rows[c0 : c0 + step]
            cols = A.indices[A.indptr[r][:, None] + np.arange(k)[None, :]]
            out.append((int(k), r, cols))
    return out


def sample_rows(Xg, rows):
    """``Xg[:, rows]`` of a batch (B, n, k), C-contiguous.

    Indexing the middle axis returns a layout that depends on the batch size, and matrix
    products on differently strided operands may sum in a different order; a contiguous
    copy keeps every sphere's arithmetic independent of its batch.
    """
    return np.ascontiguousarray(Xg[:, rows])


def gather(X, cols, shift=None):
    """(n_spheres, n_samples, k) float64 block of ``X - shift`` for the spheres' columns.

    ``X`` may be stored as float32: the values are upcast before ``shift`` (n_voxels,) is
    subtracted, so the block is bit-identical to the one gathered from a float64 copy.
    """
    G = np.ascontiguousarray(X[:, cols].transpose(1, 0, 2), dtype=np.float64)
    if shift is not None:
        G -= shift[cols][:, None, :]
    return G


def column_mean(X, chunk=8192):
    """Mean of every column of ``X`` (float32 or float64) in float64, bit-identical to
    ``X.astype(np.float64).mean(axis=0)`` without the full float64 copy."""
    out = np.empty(X.shape[1])
    for c0 in range(0, X.shape[1], chunk):
        block = np.asarray(X[:, c0 : c0 + chunk], dtype=np.float64)
        out[c0 : c0 + chunk] = block.mean(axis=0)
    return out


def solve(M, R):
    """Batched ``M^-1 R``; least squares for the (rare) singular systems, decided system by
    system (so a system's answer never depends on the others of its batch)."""
    try:
        return np.linalg.solve(M, R)
    except np.linalg.LinAlgError:
        out = np.empty(M.shape[:2] + R.shape[2:])
        for i in range(len(M)):
            try:
                out[i] = np.linalg.solve(M[i : i + 1], R[i : i + 1])[0]
            except np.linalg.LinAlgError:
                out[i] = np.linalg.lstsq(M[i], R[i], rcond=None)[0]
        return out


def solve_spd(M, R):
    """Batched ``M^-1 R`` for symmetric matrices expected positive definite: Cholesky
    (LAPACK ``posv``, half the work of an LU), system by system; one that is not positive
    definite numerically goes to :func:`solve` on its own."""
    from scipy.linalg import lapack

    out = np.empty(M.shape[:2] + R.shape[2:])
    for i in range(len(M)):
        _, x, info = lapack.dposv(M[i], R[i], lower=1)
        out[i] = x if info == 0 else solve(M[i : i + 1], R[i : i + 1])[0]
    return out

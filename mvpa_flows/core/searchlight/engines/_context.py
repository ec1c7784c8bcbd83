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
        Samples, float64, C-contiguous; the columns are those of ``A``.
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


def gather(X, cols):
    """(n_spheres, n_samples, k) block of ``X`` for the spheres' columns."""
    return np.ascontiguousarray(X[:, cols].transpose(1, 0, 2))


def sum_atoms(stats, train_atoms, n_atoms, total=None):
    """Sum of per-atom statistics (atom axis first) over the training atoms."""
    if len(train_atoms) * 2 > n_atoms:
        rest = np.setdiff1d(np.arange(n_atoms), train_atoms)
        out = stats.sum(axis=0) if total is None else total
        for a in rest:
            out = out - stats[a]
        return out
    out = stats[train_atoms[0]].copy()
    for a in train_atoms[1:]:
        out = out + stats[a]
    return out


def solve(M, R):
    """Batched ``M^-1 R``; least squares for the (rare) singular systems."""
    try:
        return np.linalg.solve(M, R)
    except np.linalg.LinAlgError:
        out = np.empty(M.shape[:2] + R.shape[2:])
        for i in range(len(M)):
            out[i] = np.linalg.lstsq(M[i], R[i], rcond=None)[0]
        return out

"""Orthogonal Procrustes alignment between two (n_samples, n_voxels) arrays.

The solution follows PyMVPA's ``ProcrusteanMapper`` (``mvpa2/mappers/procrustean.py``)
with its defaults (``demean=True, scaling=True, reflection=True, reduction=True``):

* both arrays are centred (source on its own mean, which becomes the input offset; the
  target's mean becomes the output offset),
* the rotation ``R`` maximises ``trace(R.T @ A.T @ B)`` over matrices with orthonormal
  rows or columns (``A``, ``B`` the centred source and target): ``R = U @ Vt`` from the
  singular value decomposition ``A.T @ B = U @ S @ Vt``; this is
  :func:`scipy.linalg.orthogonal_procrustes`,
* the scale is the least-squares factor ``sum(S) / ||A||_F**2`` (PyMVPA's
  ``ss * norm_target / norm_source`` on the normalised data is the same number),
* different voxel counts give a rectangular ``R`` (PyMVPA zero-pads the smaller side and
  trims the square solution; the result is the same).

Two numerical routes, chosen automatically:

``direct`` (n_samples >= n_voxels)
    Form the (n_voxels_source, n_voxels_target) cross-product and take its polar factor
    (eigendecomposition of ``M.T @ M`` when ``M`` is well conditioned, SVD otherwise).
``thin`` (n_samples < n_voxels)
    Factor each data matrix through its (n_samples, n_samples) Gram matrix first
    (``A = L_a @ Q_a.T`` with orthonormal ``Q_a``; a rank-revealing equivalent of "QR
    first", robust to the rank n_samples - 1 of centred data), solve the small
    (rank_a, rank_b) problem and keep ``R = Q_a @ P @ Q_b.T`` in factored form. 5,000
    voxels x 1,000 samples costs a fraction of a second instead of a 5,000 x 5,000 SVD.

Where the data do not determine the rotation (fewer samples than voxels, constant
voxels), ``R`` is the *partial isometry* that is exact on the span of the training data
and maps everything orthogonal to it to zero. PyMVPA and SciPy instead return an
arbitrary orthogonal completion produced by LAPACK; a deliberate deviation, because an
arbitrary completion sends test-data components outside the training span to random
directions of the target space. :func:`procrustes` warns when this happens.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

from mvpa_flows.core.alignment.maps import ProcrustesMap, _as_2d
from mvpa_flows.core.errors import InputValidationError

__all__ = [
    "ProcrustesMap",
    "UnderdeterminedRotationWarning",
    "procrustes",
    "zscore_columns",
]

# Singular-value ratios: up to _EIGH_MAX_COND the eigh route (which squares the condition
# number) is accurate as is; up to _EIGH_NS_COND two Newton-Schulz steps restore
# orthogonality to machine precision; beyond, the SVD is used.
_EIGH_MAX_COND = 1e4
_EIGH_NS_COND = 1e6


def _conditioned_for_eigh(S, max_cond):
    """Whether the symmetric positive semi-definite ``S`` has ``cond(S) <= max_cond``,
    decided before any eigendecomposition.

    A Cholesky factorisation (a sixth of the cost of ``syevd``; NumPy's, without the GIL)
    fails on a numerically singular matrix; otherwise LAPACK's ``pocon`` estimates the
    reciprocal 1-norm condition number from the factor in O(k**2). The 1-norm estimate
    is at most ``k`` times the 2-norm one, so the test errs towards the SVD, never
    towards an inaccurate eigendecomposition.
    """
    if S.shape[0] == 0:
        return False
    try:
        L = np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        return False
    anorm = float(np.abs(S).sum(axis=0).max())
    rcond, info = linalg.lapack.dpocon(L, anorm, uplo="L")
    return info == 0 and rcond * max_cond >= 1.0


def _eigh(S):
    """Symmetric eigendecomposition (LAPACK ``syevd``), ascending eigenvalues.

    NumPy's gufunc releases the GIL while LAPACK runs (SciPy's wrapper holds it), so the
    independent fits of hyperalignment's levels 2 and 3 run concurrently on threads.
    """
    return np.linalg.eigh(S)


class UnderdeterminedRotationWarning(UserWarning):
    """The training data do not span every voxel: the rotation is partial."""


def zscore_columns(X, copy=True):
    """Z-score every column as PyMVPA's ``zscore(x, chunks_attr=None)``.

    Population standard deviation (``ddof=0``); constant columns are centred (left at
    zero) rather than divided by zero, exactly as PyMVPA's ``ZScoreMapper``.
    """
    X = np.array(X, dtype=np.float64, copy=copy)
    mean = X.mean(axis=0)
    X -= mean
    std = np.sqrt(np.einsum("ij,ij->j", X, X) / max(X.shape[0], 1))
    # Constant columns: centring leaves round-off of order eps * |mean|; treat as zero.
    const = std <= 100 * np.finfo(np.float64).eps * np.abs(mean)
    inv = np.divide(1.0, std, out=np.zeros_like(std), where=(std > 0) & ~const)
    X *= inv
    return X


def _polar(C, reflection=True):
    """Polar factor of C (partial isometry on its range) and the sum of its singular values.

    Returns ``(P, trace, rank)`` with ``P = U @ Vt`` over the non-negligible singular
    values. The route is decided before any decomposition (:func:`_conditioned_for_eigh`):
    the eigendecomposition of the smaller Gram matrix when it is well conditioned (about
    2-3x faster than a divide-and-conquer SVD at 500-1,000 voxels), else the SVD
    (``gesdd``, then ``gesvd``: PyMVPA's occasional "SVD did not converge").
    """
    m, k = C.shape
    if m < k:
        P, tr, r = _polar(C.T, reflection)
        return P.T, tr, r
    S = C.T @ C
    if not np.isfinite(S).all():
        raise InputValidationError("Procrustes input contains NaN or infinite values.")
    # A numerically singular or badly conditioned cross-product (data stored in float32
    # have a condition number ~1e7 per subject, ~1e14 for the product) goes straight to
    # the SVD: no eigendecomposition is computed and then discarded.
    if not _conditioned_for_eigh(S, _EIGH_NS_COND**2):
        return _polar_svd(C, reflection)
    lam, V = _eigh(S)
    lam_max = lam[-1]
    ratio = lam[0] / lam_max if lam_max > 0 else 0.0
    if not ratio * _EIGH_NS_COND**2 >= 1.0:  # the estimate erred: rare
        return _polar_svd(C, reflection)
    sig = np.sqrt(lam)
    if ratio < 1.0 / _EIGH_MAX_COND**2:
        U = (C @ V) / sig
        for _ in range(2):  # Newton-Schulz on the range: U <- U (3I - U'U) / 2
            U = U @ (1.5 * np.eye(U.shape[1]) - 0.5 * (U.T @ U))
        P = U @ V.T
        u_min = U[:, 0]
    else:
        # P = C V S^-1 V' = C (W W') with W = V S^-1/2 (a symmetric rank-k update)
        W = V / np.sqrt(sig)
        P = C @ (W @ W.T)
        u_min = (C @ V[:, 0]) / sig[0]
    return _fix_reflection(P, float(sig.sum()), k, sig[0], u_min, V[:, 0], reflection)


def _polar_svd(C, reflection):
    """:func:`_polar` through the SVD of ``C`` (m >= k); the rank to ~eps * s_max."""
    m, k = C.shape
    try:
        U, s, Vt = np.linalg.svd(C, full_matrices=False)  # gesdd, without the GIL
    except np.linalg.LinAlgError:
        U, s, Vt = linalg.svd(C, full_matrices=False, check_finite=False, lapack_driver="gesvd")
    keep = s > (s[0] * max(m, k) * np.finfo(np.float64).eps if s.size else 0.0)
    rank = int(keep.sum())
    if rank == 0:
        return np.zeros_like(C), 0.0, 0
    U, s, Vt = U[:, keep], s[keep], Vt[keep]
    return _fix_reflection(U @ Vt, float(s.sum()), rank, s[-1], U[:, -1], Vt[-1], reflection)


def _fix_reflection(P, trace, rank, s_min, u_min, v_min, reflection):
    m, k = P.shape
    if not reflection and m == k and rank == k:
        sign, _ = np.linalg.slogdet(P)
        if sign < 0:
            # Flip the direction of the smallest singular value (Kabsch / Umeyama).
            P = P - 2.0 * np.outer(u_min, v_min)
            trace -= 2.0 * s_min
    return P, trace, rank


class _RowFactor:
    """``A = L @ Qt`` with orthonormal rows ``Qt = K @ A`` via the Gram matrix ``A @ A.T``."""

    __slots__ = ("A", "L", "K", "rank")

    def __init__(self, A):
        G = A @ A.T
        lam, E = _eigh(G)
        lam_max = lam[-1]
        tol = max(lam_max, 0.0) * max(A.shape) * np.finfo(np.float64).eps * 10
        keep = lam > tol
        lam, E = lam[keep], E[:, keep]
        sq = np.sqrt(lam)
        self.A = A
        self.L = E * sq  # (n, r)
        self.K = (E / sq).T  # (r, n); Qt = K @ A
        self.rank = int(keep.sum())

    def basis(self):
        """Q (n_voxels, r) with orthonormal columns spanning the rows of A."""
        return (self.K @ self.A).T


def _validate_pair(source, target):
    A = _as_2d(source, "source")
    B = _as_2d(target, "target")
    if A.shape[0] != B.shape[0]:
        raise InputValidationError(
            f"`source` and `target` must have the same samples (rows) in the same order; "
            f"got {A.shape[0]} and {B.shape[0]} rows. Align both on the same time points "
            "or trials before fitting."
        )
    if not (np.isfinite(A).all() and np.isfinite(B).all()):
        raise InputValidationError(
            "`source` and `target` must be finite; found NaN or infinite values. Mask or "
            "impute them first."
        )
    return A, B


class _Solution:
    """A solved Procrustes problem; builds the projection or the map on request."""

    def __init__(
        self, A0, B0, mu_a, mu_b, scaling, reflection, fa=None, fb=None, thin=None, gram_b=None
    ):
        n, va = A0.shape
        vb = B0.shape[1]
        self.A0, self.B0, self.mu_a, self.mu_b = A0, B0, mu_a, mu_b
        norm_a2 = float(np.einsum("ij,ij->", A0, A0))
        if norm_a2 == 0.0 or float(np.einsum("ij,ij->", B0, B0)) == 0.0:
            which = "source" if norm_a2 == 0.0 else "target"
            raise InputValidationError(
                f"Every voxel of `{which}` is constant over samples; Procrustes alignment "
                "needs data that vary over time. Check the mask and the input runs."
            )
        self.thin = (n < max(va, vb)) if thin is None else bool(thin)
        self._PN = None
        if self.thin:
            self.fa = fa if fa is not None else _RowFactor(A0)
            trace = self._one_sided(gram_b)
            if trace is None:
                self.fb = fb if fb is not None else _RowFactor(B0)
                C = self.fa.L.T @ self.fb.L  # (ra, rb)
                self.P, trace, self.rank = _polar(C, reflection)
            self.underdetermined = self.rank < min(va, vb)
        else:
            M = A0.T @ B0
            self.P, trace, self.rank = _polar(M, reflection)
            self.underdetermined = self.rank < min(va, vb)
        self.scale = trace / norm_a2 if scaling else 1.0

    def _one_sided(self, gram_b):
        """Thin route needing only the source factor: ``A0.T @ B0 = Q_a @ N`` with
        ``N = L_a.T @ B0``; ``polar(N) = (N N.T)^(-1/2) N`` from the (r_a, r_a)
        eigenproblem ``N N.T = L_a.T (B0 B0.T) L_a``. Returns the trace, or None when
        ``N`` is rank-deficient or ill-conditioned (then the two-sided SVD route runs)."""
        La = self.fa.L
        if La.shape[1] == 0:
            return None
        G = gram_b if gram_b is not None else self.B0 @ self.B0.T
        S = La.T @ G @ La
        S = 0.5 * (S + S.T)
        if not _conditioned_for_eigh(S, _EIGH_MAX_COND**2):
            return None
        lam, V = _eigh(S)
        lam_max = lam[-1]
        if not lam_max > 0 or lam[0] <= lam_max / _EIGH_MAX_COND**2:
            return None
        sig = np.sqrt(lam)
        self._PN = (V / sig) @ V.T
        self.rank = La.shape[1]
        return float(sig.sum())

    def projected(self):
        """``scale * A0 @ R + mu_b``: the source training data in target space."""
        if self._PN is not None:
            La = self.fa.L
            out = ((La @ self._PN) @ La.T) @ self.B0
        elif self.thin:
            W = self.fa.L @ self.P @ self.fb.K  # (n, n)
            out = W @ self.B0
        else:
            out = self.A0 @ self.P
        out *= self.scale
        out += self.mu_b
        return out

    def to_map(self, params=None):
        if self._PN is not None:
            left = self.fa.basis()  # (va, ra)
            right = self.B0.T @ (self.fa.L @ self._PN)  # (vb, ra)
        elif self.thin:
            left = self.fa.basis() @ self.P  # (va, rb)
            right = self.fb.basis()  # (vb, rb)
        else:
            return ProcrustesMap(
                self.scale, self.mu_a, self.mu_b, dense=self.P, rank=self.rank, params=params
            )
        return ProcrustesMap(
            self.scale,
            self.mu_a,
            self.mu_b,
            left=left,
            right=right,
            rank=self.rank,
            params=params,
        )


def _solve(A, B, scaling=True, reflection=True, demean=True, fa=None, thin=None):
    """Internal: centre, solve and return a :class:`_Solution` (A, B validated)."""
    if demean:
        mu_a, mu_b = A.mean(axis=0), B.mean(axis=0)
        A0, B0 = A - mu_a, B - mu_b
    else:
        mu_a, mu_b = np.zeros(A.shape[1]), np.zeros(B.shape[1])
        A0, B0 = A, B
    return _Solution(A0, B0, mu_a, mu_b, scaling, reflection, fa=fa, thin=thin)


def procrustes(
    source,
    target,
    scaling=True,
    reflection=True,
    demean=True,
    method="auto",
    warn_underdetermined=True,
):
    """Orthogonal Procrustes transform from ``source`` to ``target``.

    Parameters
    ----------
    source : array-like, shape (n_samples, n_voxels_source)
    target : array-like, shape (n_samples, n_voxels_target)
        Same samples (rows) in the same order; voxel counts may differ.
    scaling : bool, default True
        Fit a global scale factor (PyMVPA default). ``False``: rigid rotation.
    reflection : bool, default True
        Allow improper rotations (det = -1), as PyMVPA and SciPy do. ``False`` enforces
        det = +1 where the rotation is fully determined (square, full rank); where it is
        not, the orientation of the undetermined part is free and the flag has no effect.
        (PyMVPA's ``reflection=False`` branch builds the transposed matrix and sums the
        modified singular values for the scale; this is the standard Kabsch correction.)
    demean : bool, default True
        Centre source and target on their own means first (PyMVPA ``demean``). ``False``
        with ``scaling=False`` is exactly :func:`scipy.linalg.orthogonal_procrustes`.
    method : {"auto", "direct", "thin"}
        ``auto`` uses ``thin`` when there are fewer samples than voxels.
    warn_underdetermined : bool, default True
        Warn (:class:`UnderdeterminedRotationWarning`) when the data do not determine
        the whole rotation (fewer samples than voxels, constant voxels).

    Returns
    -------
    ProcrustesMap
        ``transform(X) = scale * (X - source_mean) @ R + target_mean``.
    """
    if method not in ("auto", "direct", "thin"):
        raise InputValidationError(f"`method` must be 'auto', 'direct' or 'thin'; got {method!r}.")
    A, B = _validate_pair(source, target)
    thin = None if method == "auto" else method == "thin"
    sol = _solve(A, B, scaling=scaling, reflection=reflection, demean=demean, thin=thin)
    if sol.underdetermined and warn_underdetermined:
        warnings.warn(
            f"The Procrustes rotation is determined only on a {sol.rank}-dimensional "
            f"subspace of the {A.shape[1]} source voxels ({A.shape[0]} samples; constant "
            "voxels or collinear data lower the rank). Outside the span of the training "
            "data the map is zero: components of new data there are discarded. Use more "
            "samples than voxels for a full rotation.",
            UnderdeterminedRotationWarning,
            stacklevel=2,
        )
    return sol.to_map(params={"scaling": scaling, "reflection": reflection, "demean": demean})

"""Ridge maps into a common space, the penalty chosen by blocked cross-validation.

``W = argmin ||X0 @ W - T0||_F**2 + alpha * ||W||_F**2`` maps a subject's centred training
data ``X0`` (n_samples, n_voxels) onto the centred template ``T0`` (n_samples,
n_components). The penalty is chosen among ``alphas`` by cross-validation over
``cv_blocks`` contiguous blocks of the *training* samples (fMRI samples are
autocorrelated: shuffled folds would put neighbours of every held-out sample in
training); each fold is centred on its own training part. The error summed over the
held-out blocks picks ``alpha``, then ``W`` is refitted on every training sample.

One eigendecomposition per fold serves every candidate ``alpha``: with the Gram
``X_tr.T @ X_tr = V diag(lam) V.T`` (or the kernel ``X_tr @ X_tr.T`` when there are fewer
samples than voxels, the same algebra), the held-out prediction is
``P diag(1 / (lam + alpha)) Q`` with fixed ``P`` and ``Q``, and its squared error is a
quadratic form in ``d = 1 / (lam + alpha)``: ``d @ H @ d - 2 g @ d + ||R||**2``.
"""

from __future__ import annotations

import numbers

import numpy as np

from mvpa_flows.core.alignment.maps import RidgeMap, _as_2d
from mvpa_flows.core.errors import InputValidationError

__all__ = ["DEFAULT_ALPHAS", "contiguous_blocks", "ridge_map", "check_alphas"]

#: Candidate penalties (for z-scored data: 0.1 to 1e6, half-decade steps).
DEFAULT_ALPHAS = tuple(float(a) for a in 10.0 ** np.arange(-1.0, 6.01, 0.5))


def check_alphas(alphas):
    """``alphas`` as a 1-D array of positive finite numbers (``None``: the default grid)."""
    if alphas is None:
        return np.asarray(DEFAULT_ALPHAS)
    a = np.atleast_1d(np.asarray(alphas, dtype=object))
    try:
        a = a.astype(np.float64)
    except (TypeError, ValueError):
        a = None
    if a is None or a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise InputValidationError(
            f"Parameter 'alphas' must be a non-empty list of positive finite penalties; got "
            f"{alphas!r}. Pass e.g. alphas=[1, 10, 100] or None for the default grid."
        )
    return np.unique(a)


def contiguous_blocks(n_samples, cv_blocks):
    """``cv_blocks`` contiguous, near-equal (start, stop) blocks of ``range(n_samples)``.

    Raises
    ------
    InputValidationError
        Fewer than 3 blocks, or blocks of fewer than 2 samples.
    """
    if not isinstance(cv_blocks, numbers.Integral) or isinstance(cv_blocks, bool) or cv_blocks < 3:
        raise InputValidationError(
            f"Parameter 'cv_blocks' must be an integer >= 3 (contiguous blocks of the "
            f"training samples for choosing the ridge penalty); got {cv_blocks!r}. Pass "
            "e.g. cv_blocks=5."
        )
    if n_samples < 2 * cv_blocks:
        raise InputValidationError(
            f"Ridge alignment needs at least 3 contiguous training blocks of at least 2 "
            f"samples to choose its penalty; {n_samples} training samples cannot make "
            f"cv_blocks={cv_blocks} blocks. Use more training samples or fewer blocks "
            "(cv_blocks >= 3)."
        )
    edges = np.linspace(0, n_samples, int(cv_blocks) + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def _spectral(X0, Y0):
    """``(lam, left, Q)``: ridge solutions for any alpha are ``left @ diag(1/(lam+a)) @ Q``
    (primal: ``left = V``, ``Q = V.T X0.T Y0``; dual: ``left = X0.T E``, ``Q = E.T Y0``)."""
    n, v = X0.shape
    if v <= n:
        lam, V = np.linalg.eigh(X0.T @ X0)
        return np.maximum(lam, 0.0), V, V.T @ (X0.T @ Y0)
    lam, E = np.linalg.eigh(X0 @ X0.T)
    return np.maximum(lam, 0.0), X0.T @ E, E.T @ Y0


def _fold_errors(X, Y, start, stop, alphas):
    train = np.r_[0:start, stop : X.shape[0]]
    Xtr, Ytr = X[train], Y[train]
    mx, my = Xtr.mean(axis=0), Ytr.mean(axis=0)
    lam, left, Q = _spectral(Xtr - mx, Ytr - my)
    P = (X[start:stop] - mx) @ left  # (n_b, k)
    R = Y[start:stop] - my  # (n_b, d)
    H = (P.T @ P) * (Q @ Q.T)
    g = np.einsum("tk,tk->k", P, R @ Q.T)
    rr = float(np.einsum("ij,ij->", R, R))
    D = 1.0 / (lam[None, :] + alphas[:, None])  # (n_alphas, k)
    return np.einsum("ak,kl,al->a", D, H, D) - 2.0 * D @ g + rr


def ridge_map(X, Y, alphas=None, cv_blocks=5, params=None):
    """Ridge map from ``X`` (n_samples, n_voxels) onto ``Y`` (n_samples, n_components).

    Parameters
    ----------
    X, Y : array-like
        Same samples in the same order; only these (training) samples are used.
    alphas : sequence of float or None
        Candidate penalties (default :data:`DEFAULT_ALPHAS`). A single value skips the
        cross-validation.
    cv_blocks : int, default 5
        Contiguous blocks of the samples for the cross-validation (at least 3).
    params : dict, optional
        Stored in the map for provenance.

    Returns
    -------
    RidgeMap
        ``transform(x) = (x - mean(X)) @ W + mean(Y)``; ``info`` holds ``alpha``,
        ``alphas`` and ``cv_error`` (held-out squared error per candidate).
    """
    X = _as_2d(X, "X")
    Y = _as_2d(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise InputValidationError(
            f"`X` and `Y` must have the same samples; got {X.shape[0]} and {Y.shape[0]} rows."
        )
    alphas = check_alphas(alphas)
    n = X.shape[0]
    if alphas.size > 1:
        blocks = contiguous_blocks(n, cv_blocks)
        errors = sum(_fold_errors(X, Y, a, b, alphas) for a, b in blocks)
        alpha = float(alphas[int(np.argmin(errors))])
    else:
        errors, alpha = np.full(1, np.nan), float(alphas[0])
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    lam, left, Q = _spectral(X - mx, Y - my)
    W = (left / (lam + alpha)) @ Q
    info = {
        "alpha": alpha,
        "alphas": alphas.tolist(),
        "cv_error": np.asarray(errors, dtype=float).tolist(),
        "cv_blocks": int(cv_blocks) if alphas.size > 1 else None,
    }
    return RidgeMap(1.0, mx, my, dense=W, params=params, info=info)

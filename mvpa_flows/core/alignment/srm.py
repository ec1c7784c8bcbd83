"""Shared response model (SRM): BrainIAK's deterministic and probabilistic algorithms.

Chen et al. (2015, NIPS) model every subject's data as a subject-specific basis with
orthonormal columns applied to one shared response: ``X_i (n_samples, n_voxels_i) ~
S @ W_i.T + mean_i`` with ``S`` (n_samples, n_components) and ``W_i.T @ W_i = I``. The
updates follow BrainIAK 0.12 (``brainiak/funcalign/srm.py``, ``DetSRM`` and ``SRM``)
step by step, in the (samples, voxels) layout of the rest of this package:

* initial bases: ``RandomState(random_state)`` draws one seed per subject
  (``randint(2**32)``); each subject's ``RandomState(seed).random_sample((n_voxels,
  n_components))`` is orthonormalised by QR (same numbers as BrainIAK for the same seed);
* deterministic (block coordinate descent): ``S`` is the mean of ``X0_i @ W_i``; each
  ``W_i`` is the polar factor of ``X0_i.T @ S`` plus 0.001 on its diagonal (BrainIAK's
  perturbation);
* probabilistic (EM, Anderson et al., 2016): the E-step
  ``S = (Sigma_s (I - rho0 inv(inv(Sigma_s) + rho0 I))) sum_i W_i.T X0_i / rho2_i``,
  ``Sigma_s = inv(inv(Sigma_s) + rho0 I) + S.T S / n``; the M-step updates ``W_i`` as
  above and ``rho2_i = (||X0_i||^2 - 2 tr(W_i.T X0_i.T S) + n tr(Sigma_s)) / (n v_i)``.

Deliberate differences from BrainIAK (identical results on centred data):

* every subject's training mean is removed first and kept as the map's offset
  (BrainIAK's deterministic model does not centre; its probabilistic model centres the
  data but computes ``||X_i||^2`` on the uncentred data, which inflates ``rho2_i`` by the
  squared mean);
* ``transform`` subtracts the training mean (BrainIAK applies ``W_i.T`` to raw data).
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator, TransformerMixin

from mvpa_flows.core._parallel import fit_blas_limits, resolve_n_jobs, thread_map
from mvpa_flows.core.alignment.hyperalignment import validate_datasets
from mvpa_flows.core.alignment.maps import SRMMap
from mvpa_flows.core.alignment.procrustes import _polar
from mvpa_flows.core.errors import InputValidationError

__all__ = ["SharedResponseModel", "shared_response_model", "srm_basis"]

_PERTURBATION = 0.001  # BrainIAK's diagonal perturbation before each basis update


def _initial_bases(voxels, n_components, random_state):
    """BrainIAK's ``_init_w_transforms``: one seeded random orthonormal basis per subject."""
    rs = np.random.RandomState(random_state)
    seeds = [rs.randint(2**32) for _ in voxels]
    out = []
    for v, seed in zip(voxels, seeds, strict=True):
        q, _ = np.linalg.qr(np.random.RandomState(seed).random_sample((v, n_components)))
        out.append(q)
    return out


def srm_basis(X0, S, perturbation=0.0):
    """Orthonormal basis ``W`` (n_voxels, n_components) maximising ``tr(W.T X0.T S)``:
    the polar factor of ``X0.T @ S`` (+ ``perturbation`` on its diagonal)."""
    return _basis(X0.T @ S, perturbation)


def _basis(A, perturbation=0.0):
    if perturbation:
        A = A.copy()
        k = min(A.shape)
        A[np.arange(k), np.arange(k)] += perturbation
    P, _, rank = _polar(A, reflection=True)
    if rank < min(A.shape):
        # A rank-deficient cross-product leaves directions free; complete them with the
        # full SVD so that W keeps orthonormal columns (BrainIAK's U @ Vt).
        U, _, Vt = np.linalg.svd(A, full_matrices=False)
        P = U @ Vt
    return P


def _deterministic(X0s, n_components, n_iter, random_state, n_jobs):
    W = _initial_bases([X.shape[1] for X in X0s], n_components, random_state)
    S = sum(X @ w for X, w in zip(X0s, W, strict=True)) / len(X0s)
    for _ in range(n_iter):
        W = thread_map(lambda X, S=S: srm_basis(X, S, _PERTURBATION), X0s, n_jobs)
        S = sum(X @ w for X, w in zip(X0s, W, strict=True)) / len(X0s)
    return W, S, {}


def _probabilistic(X0s, n_components, n_iter, random_state, n_jobs):
    n = X0s[0].shape[0]
    k = n_components
    voxels = np.array([X.shape[1] for X in X0s])
    W = _initial_bases(voxels, k, random_state)
    trace_xtx = np.array([float(np.einsum("ij,ij->", X, X)) for X in X0s])
    rho2 = np.ones(len(X0s))
    sigma_s = np.eye(k)
    S = np.zeros((n, k))
    eye = np.eye(k)
    for _ in range(n_iter):
        # E-step
        rho0 = float((1.0 / rho2).sum())
        inv_sigma_s = linalg.cho_solve(linalg.cho_factor(sigma_s, check_finite=False), eye)
        inv_sigma_s_rhos = linalg.cho_solve(
            linalg.cho_factor(inv_sigma_s + rho0 * eye, check_finite=False), eye
        )
        wt_invpsi_x = sum(X @ w / r for X, w, r in zip(X0s, W, rho2, strict=True))  # (n, k)
        S = wt_invpsi_x @ (sigma_s @ (eye - rho0 * inv_sigma_s_rhos)).T
        # M-step
        sigma_s = inv_sigma_s_rhos + S.T @ S / n
        trace_sigma_s = n * np.trace(sigma_s)

        def _update(i, S=S, trace_sigma_s=trace_sigma_s):
            A = X0s[i].T @ S
            w = _basis(A, _PERTURBATION)
            r = (trace_xtx[i] - 2.0 * float(np.einsum("ij,ij->", w, A)) + trace_sigma_s) / (
                n * voxels[i]
            )
            return w, r

        out = thread_map(_update, range(len(X0s)), n_jobs)
        W = [w for w, _ in out]
        rho2 = np.array([r for _, r in out])
    return W, S, {"sigma_s": sigma_s, "rho2": rho2}


def _check_components(n_components, n_samples, voxels):
    if (
        not isinstance(n_components, numbers.Integral)
        or isinstance(n_components, bool)
        or n_components < 1
    ):
        raise InputValidationError(
            f"Parameter 'n_components' must be a positive integer; got {n_components!r}."
        )
    limit = min(n_samples, min(voxels))
    if n_components > limit:
        which = (
            f"{n_samples} training samples"
            if n_samples <= min(voxels)
            else f"{min(voxels)} voxels (subject {int(np.argmin(voxels))})"
        )
        raise InputValidationError(
            f"Parameter 'n_components'={n_components} exceeds the {which}: a shared "
            f"response model needs n_components <= min(samples, voxels) = {limit} "
            f"(samples {n_samples}, voxels per subject {list(map(int, voxels))}). Pass "
            f"n_components <= {limit}."
        )


def shared_response_model(
    datasets, n_components=50, method="probabilistic", n_iter=10, random_state=0, n_jobs=1
):
    """Fit a shared response model on (n_samples, n_voxels_i) arrays.

    Returns
    -------
    dict with ``shared_response`` (n_samples, n_components), ``maps`` (one
    :class:`SRMMap` per subject), ``means`` (per subject), and for the probabilistic model
    ``sigma_s`` (n_components, n_components) and ``rho2`` (noise variance per subject).
    """
    datasets = validate_datasets(datasets)
    if method not in ("deterministic", "probabilistic"):
        raise InputValidationError(
            f"Parameter 'method' must be 'deterministic' or 'probabilistic'; got {method!r}."
        )
    if not isinstance(n_iter, numbers.Integral) or isinstance(n_iter, bool) or n_iter < 1:
        raise InputValidationError(f"Parameter 'n_iter' must be an integer >= 1; got {n_iter!r}.")
    if random_state is not None and (
        not isinstance(random_state, numbers.Integral) or isinstance(random_state, bool)
    ):
        raise InputValidationError(
            f"Parameter 'random_state' must be an integer seed or None; got {random_state!r}."
        )
    n_jobs = resolve_n_jobs(n_jobs)
    voxels = [X.shape[1] for X in datasets]
    _check_components(n_components, datasets[0].shape[0], voxels)
    means = [X.mean(axis=0) for X in datasets]
    X0s = [X - m for X, m in zip(datasets, means, strict=True)]
    fit = _deterministic if method == "deterministic" else _probabilistic
    with fit_blas_limits(n_jobs):
        W, S, extra = fit(X0s, int(n_components), int(n_iter), random_state, n_jobs)
    params = {"method": method, "n_components": int(n_components)}
    maps = [
        SRMMap(1.0, m, np.zeros(n_components), dense=w, params=params)
        for w, m in zip(W, means, strict=True)
    ]
    return {"shared_response": S, "maps": maps, "means": means, **extra}


class SharedResponseModel(TransformerMixin, BaseEstimator):
    """Shared response model of several subjects (BrainIAK ``DetSRM`` / ``SRM``).

    Parameters
    ----------
    n_components : int, default 50
        Dimensions of the shared space (BrainIAK ``features``); at most the number of
        training samples and of every subject's voxels.
    method : {"probabilistic", "deterministic"}, default "probabilistic"
        EM for the probabilistic model (BrainIAK ``SRM``) or block coordinate descent for
        the deterministic one (``DetSRM``).
    n_iter : int, default 10
        Iterations (BrainIAK's default).
    random_state : int or None, default 0
        Seed of the initial bases (BrainIAK ``rand_seed``: same seed, same numbers).
    n_jobs : int, default 1
        Threads for the per-subject updates; BLAS threads are limited so that threads x
        BLAS threads never exceed the cores.

    Attributes
    ----------
    model_ : AlignmentModel
        The fitted model (shared response as template, one :class:`SRMMap` per subject).
    shared_response_ : ndarray (n_samples, n_components)
    maps_ : list of SRMMap
        ``maps_[i].rotation`` is BrainIAK's ``w_[i]`` (n_voxels_i, n_components).
    sigma_s_, rho2_ : probabilistic model only
    n_features_in_ : int
        Voxels per subject when every subject has the same number (scikit-learn's
        meaning); absent otherwise.
    n_features_per_subject_ : list of int
    """

    def __init__(
        self, n_components=50, method="probabilistic", n_iter=10, random_state=0, n_jobs=1
    ):
        self.n_components = n_components
        self.method = method
        self.n_iter = n_iter
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, datasets, y=None):
        """Fit on a list of (n_samples, n_voxels_i) arrays (same samples, same order)."""
        from mvpa_flows.core.alignment.model import AlignmentModel

        res = shared_response_model(datasets, **self.get_params())
        self.shared_response_ = res["shared_response"]
        self.maps_ = res["maps"]
        if self.method == "probabilistic":
            self.sigma_s_ = res["sigma_s"]
            self.rho2_ = res["rho2"]
        info = {k: res[k] for k in ("sigma_s", "rho2") if k in res}
        self.model_ = AlignmentModel(
            "srm", self.shared_response_, self.maps_, params=self.get_params(), info=info
        )
        _set_feature_counts(self, self.maps_)
        return self

    def transform(self, datasets):
        """Each subject's data (any number of samples) in the shared space."""
        return _fitted_model(self).transform(datasets)

    def inverse_transform(self, datasets):
        """Shared-space data back into each subject's voxels (``S @ W_i.T + mean_i``)."""
        return _fitted_model(self).inverse_transform(datasets)

    def fit_subject(self, X):
        """Map a new subject with data on the training samples into the fitted space
        (BrainIAK ``transform_subject``); returns an :class:`SRMMap`."""
        return _fitted_model(self).fit_subject(X)


def _set_feature_counts(est, maps):
    counts = [int(m.shape[0]) for m in maps]
    est.n_features_per_subject_ = counts
    if len(set(counts)) == 1:
        est.n_features_in_ = counts[0]
    elif hasattr(est, "n_features_in_"):
        del est.n_features_in_


def _fitted_model(est):
    if not hasattr(est, "model_"):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(
            f"This {type(est).__name__} instance is not fitted yet; call fit(datasets) first."
        )
    return est.model_

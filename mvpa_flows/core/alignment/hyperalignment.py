"""Procrustes hyperalignment (Haxby et al., 2011) on arrays, as in PyMVPA.

This is PyMVPA's ``mvpa2.algorithms.hyperalignment.Hyperalignment`` with ``alpha=1``
(no CCA regularisation) and its default ``ProcrusteanMapper(scaling=True,
reflection=True, reduction=True, demean=True)``, re-implemented on numpy arrays:

Level 1
    The common space starts as the reference subject's data (z-scored when
    ``zscore_common``). Every other subject, in order, is Procrustes-aligned to the current
    common space; its projection (z-scored) is averaged into the common space
    (``combiner1``: ``(projection + common) / 2``, or a running mean with
    ``level1_equal_weight=True``), and the common space is z-scored again.
Level 2 (``level2_n_iter`` passes, default 1)
    The common space is the mean of the level-1 data (the reference subject enters with
    its *original* samples, as in PyMVPA). Each subject is re-aligned to the mean of the
    *others* (``(n * common - own) / (n - 1)``, z-scored), projections are z-scored, and
    after the pass the common space is their mean (``combiner2``). The final common space
    (the *template*) is z-scored.
Level 3
    Every subject is aligned from scratch to the template; these maps are the result.

Deviations from PyMVPA (all documented at the parameter):

* ``level1_equal_weight=True`` gives every subject the same weight, as the parameter's
  documentation promises; PyMVPA passes ``weights=(counts, 1)`` to
  ``mean_xy(projection, common)``, which weights the *newest* subject by ``counts``.
* Under-determined rotations (fewer samples than voxels, constant voxels) are partial
  isometries instead of an arbitrary LAPACK completion (see
  :mod:`mvpa_flows.core.alignment.procrustes`).
* ``alpha < 1`` (regularised CCA), custom combiners and ``output_dim`` are not
  implemented; ``nproc`` is ``n_jobs`` (threads, levels 2 and 3).
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from mvpa_flows.core._parallel import fit_blas_limits, resolve_n_jobs, thread_map
from mvpa_flows.core.alignment.procrustes import (
    ProcrustesMap,
    UnderdeterminedRotationWarning,
    _RowFactor,
    _Solution,
    zscore_columns,
)
from mvpa_flows.core.errors import InputValidationError

__all__ = [
    "DEFAULT_PARAMS",
    "Hyperalignment",
    "fit_procrustes_map",
    "hyperalign",
    "pca_template",
    "validate_datasets",
]

#: PyMVPA's defaults (alpha=1), under our names.
DEFAULT_PARAMS = {
    "ref_ds": None,
    "level2_n_iter": 1,
    "zscore_all": False,
    "zscore_common": True,
    "level1_equal_weight": False,
    "scaling": True,
    "reflection": True,
    "demean": True,
}


def validate_datasets(datasets, name="datasets", min_subjects=2, keep_float32=False, block=4096):
    """Check a list of (n_samples, n_voxels) arrays with the same samples.

    Returns float64 arrays; with ``keep_float32``, float32 arrays are returned as they are
    (no float64 copy: every alignment estimator converts them exactly at its own entry).
    Values are checked in blocks of ``block`` voxels, so the checks' temporaries stay small.
    """
    if isinstance(datasets, np.ndarray) and datasets.ndim == 3:
        datasets = list(datasets)
    if not isinstance(datasets, (list, tuple)):
        raise InputValidationError(
            f"`{name}` must be a list of 2-D arrays (n_samples, n_voxels), one per subject; "
            f"got {type(datasets).__name__}."
        )
    if len(datasets) < min_subjects:
        raise InputValidationError(
            f"`{name}` must hold at least {min_subjects} subjects to align them to a common "
            f"space; got {len(datasets)}. Pass every subject's data in one list."
        )
    kept = (np.float64, np.float32) if keep_float32 else (np.float64,)
    out = []
    for i, X in enumerate(datasets):
        X = np.asarray(X)
        if X.ndim != 2:
            raise InputValidationError(
                f"`{name}[{i}]` must be 2-D (n_samples, n_voxels); got shape {X.shape}."
            )
        if X.dtype not in kept:
            X = X.astype(np.float64)
        if not all(
            np.isfinite(X[:, start : start + block]).all() for start in range(0, X.shape[1], block)
        ):
            raise InputValidationError(
                f"`{name}[{i}]` contains NaN or infinite values; mask or impute them first."
            )
        out.append(X)
    n_samples = [X.shape[0] for X in out]
    if len(set(n_samples)) != 1:
        raise InputValidationError(
            f"Every subject in `{name}` must have the same samples in the same order "
            f"(e.g. the same movie time points); got numbers of samples {n_samples}. Crop "
            "the runs to a common length (or select the same trials) before hyperalignment."
        )
    for i, X in enumerate(out):
        varies = X.shape[0] >= 2 and any(
            np.any(X[:, start : start + block].std(axis=0) > 0)
            for start in range(0, X.shape[1], block)
        )
        if not varies:
            raise InputValidationError(
                f"`{name}[{i}]` has no voxel that varies over samples; check its mask and run."
            )
    return out


def _check_params(params, n_subjects):
    unknown = set(params) - set(DEFAULT_PARAMS)
    if unknown:
        raise InputValidationError(
            f"Unknown hyperalignment parameter(s) {sorted(unknown)}; valid names are "
            f"{sorted(DEFAULT_PARAMS)}."
        )
    p = {**DEFAULT_PARAMS, **params}
    ref = p["ref_ds"]
    if ref is not None and (
        not isinstance(ref, numbers.Integral) or isinstance(ref, bool) or not 0 <= ref < n_subjects
    ):
        raise InputValidationError(
            f"`ref_ds` must be None or a subject index in [0, {n_subjects - 1}]; got {ref!r}."
        )
    n_iter = p["level2_n_iter"]
    if not isinstance(n_iter, numbers.Integral) or isinstance(n_iter, bool) or n_iter < 0:
        raise InputValidationError(
            f"`level2_n_iter` must be a non-negative integer; got {n_iter!r}."
        )
    for key in (
        "zscore_all",
        "zscore_common",
        "level1_equal_weight",
        "scaling",
        "reflection",
        "demean",
    ):
        if not isinstance(p[key], (bool, np.bool_)):
            raise InputValidationError(f"`{key}` must be True or False; got {p[key]!r}.")
    return p


class _Subject:
    """One subject's training data with cached centring and Gram factor."""

    def __init__(self, X, demean):
        self.X = X
        self.mu = X.mean(axis=0) if demean else np.zeros(X.shape[1])
        self.X0 = X - self.mu if demean else X
        self._factor = None

    def thin(self, n_target_voxels):
        """Whether a fit to a target with ``n_target_voxels`` takes the thin route."""
        n, va = self.X0.shape
        return n < max(va, n_target_voxels)

    def factor(self):
        """The Gram factor of the thin route (computed once, reused by every level)."""
        if self._factor is None:
            self._factor = _RowFactor(self.X0)
        return self._factor

    def solve(self, target, p, target_cache=None):
        """Procrustes fit of this subject to ``target``; ``target_cache`` (a dict) keeps
        the target's centring and Gram matrix when several subjects share one target."""
        cache = target_cache if target_cache is not None else {}
        B = target
        if "B0" not in cache:
            mu_b = B.mean(axis=0) if p["demean"] else np.zeros(B.shape[1])
            cache["mu_b"], cache["B0"] = mu_b, (B - mu_b if p["demean"] else B)
        mu_b, B0 = cache["mu_b"], cache["B0"]
        thin = self.thin(B.shape[1])
        gram = None
        if thin:
            self.factor()
            if target_cache is not None:
                if "gram" not in cache:
                    cache["gram"] = B0 @ B0.T
                gram = cache["gram"]
        return _Solution(
            self.X0,
            B0,
            self.mu,
            mu_b,
            p["scaling"],
            p["reflection"],
            fa=self._factor if thin else None,
            thin=thin,
            gram_b=gram,
        )


def _mean(arrays):
    """Mean of equally shaped arrays without stacking them into one (n, ...) copy."""
    out = np.array(arrays[0], dtype=np.float64, copy=True)
    for a in arrays[1:]:
        out += a
    out /= len(arrays)
    return out


def hyperalign(datasets, n_jobs=1, **params):
    """Fit Procrustes hyperalignment; return the template and one map per subject.

    Parameters
    ----------
    datasets : list of array-like, each (n_samples, n_voxels_i)
        One array per subject, same samples (time points, trials) in the same order.
        Voxel counts may differ (the common space has the reference subject's voxels;
        maps are rectangular, PyMVPA's zero-padding).
    ref_ds : int or None, default None
        Level-1 reference subject; ``None`` picks the subject with most voxels (first one
        on ties), as PyMVPA.
    level2_n_iter : int, default 1
        Number of level-2 passes (PyMVPA ``level2_niter``).
    zscore_all : bool, default False
        Z-score every subject's data (per voxel) before alignment; the returned maps then
        expect z-scored input (:func:`mvpa_flows.core.alignment.procrustes.zscore_columns`).
    zscore_common : bool, default True
        Z-score the common space and every projection after each update.
    level1_equal_weight : bool, default False
        Running mean over subjects in level 1 instead of PyMVPA's ``(new + common) / 2``
        (later subjects weigh more by default). Equal weights as documented by PyMVPA (its
        code weights the newest subject by the count instead).
    scaling, reflection, demean : bool, default True
        Passed to every Procrustes fit (:func:`mvpa_flows.core.alignment.procrustes.procrustes`).
    n_jobs : int, default 1
        Threads for the independent fits of level 2 and level 3 (PyMVPA ``nproc``
        parallelises level 3 only); each thread uses one BLAS thread. Results do not
        depend on it.

    Returns
    -------
    dict with
        ``template`` (n_samples, n_voxels_ref): the final common space;
        ``transforms``: list of :class:`ProcrustesMap` (level 3);
        ``ref_ds``: index used; ``residuals``: (level2_n_iter + 1, n_subjects) Frobenius
        norms of projection minus common space (rows: level 1, then each level-2 pass;
        the reference subject's level-1 entry is 0), PyMVPA's
        ``training_residual_errors``;
        ``underdetermined``: per subject, whether its final rotation is partial;
        ``zscore_params``: per subject (mean, std) when ``zscore_all`` else None;
        ``params``: the parameters used.
    """
    datasets = validate_datasets(datasets)
    p = _check_params(params, len(datasets))
    try:
        n_jobs = resolve_n_jobs(n_jobs)
    except ValueError as exc:
        raise InputValidationError(str(exc)) from None
    # BLAS threads x n_jobs never exceed the cores (on a loaded machine, more BLAS
    # threads than free cores spin instead of computing).
    with fit_blas_limits(n_jobs):
        return _fit_levels(datasets, p, n_jobs)


def _fit_levels(datasets, p, n_jobs, level3=True):
    """PyMVPA's levels 1 and 2 (the template) and, with ``level3``, the final maps."""
    n = len(datasets)
    nfeatures = [X.shape[1] for X in datasets]
    ref = int(np.argmax(nfeatures)) if p["ref_ds"] is None else int(p["ref_ds"])
    zscore_params = None
    if p["zscore_all"]:
        zscore_params = [(X.mean(axis=0), X.std(axis=0)) for X in datasets]
        datasets = [zscore_columns(X) for X in datasets]
    subjects = [_Subject(X, p["demean"]) for X in datasets]
    residuals = np.zeros((p["level2_n_iter"] + 1, n))

    def _z(Y):
        return zscore_columns(Y, copy=False) if p["zscore_common"] else Y

    # The thin route's subject factors (one eigendecomposition each) do not depend on the
    # common space: compute them up front, concurrently.
    n_ref = datasets[ref].shape[1]
    thread_map(lambda s: s.factor(), [s for s in subjects if s.thin(n_ref)], n_jobs)

    # Level 1 --------------------------------------------------------------------------
    common = datasets[ref]
    if p["zscore_common"] and not p["zscore_all"]:
        common = zscore_columns(common)
    data_mapped = list(datasets)  # the reference keeps its original samples
    counts = 1
    for i in range(n):
        if i == ref:
            continue
        proj = _z(subjects[i].solve(common, p).projected())
        data_mapped[i] = proj
        residuals[0, i] = np.linalg.norm(proj - common)
        if p["level1_equal_weight"]:
            common = (counts * common + proj) / (counts + 1)
        else:
            common = 0.5 * (proj + common)
        counts += 1
        if p["zscore_common"]:
            common = zscore_columns(common, copy=False)

    # Level 2 --------------------------------------------------------------------------
    common = _mean(data_mapped)
    for loop in range(p["level2_n_iter"]):
        # Within a pass every subject sees the same `common`: independent fits.
        def _level2(i, common=common):
            temp = _z((common * n - data_mapped[i]) / (n - 1))
            return _z(subjects[i].solve(temp, p).projected())

        for i, proj in enumerate(thread_map(_level2, range(n), n_jobs)):
            residuals[1 + loop, i] = np.linalg.norm(proj - common)
            data_mapped[i] = proj
        common = _mean(data_mapped)
    if p["zscore_common"]:
        common = zscore_columns(common, copy=False)
    template = common
    if not level3:
        return {
            "template": template,
            "ref_ds": ref,
            "residuals": residuals,
            "zscore_params": zscore_params,
            "params": dict(p),
        }

    # Level 3 --------------------------------------------------------------------------
    # Centring and Gram matrix of the template, shared by all level-3 fits (filled here
    # so that threads only read it).
    mu_t = template.mean(axis=0) if p["demean"] else np.zeros(template.shape[1])
    template_cache = {"mu_b": mu_t, "B0": template - mu_t if p["demean"] else template}
    if any(s.thin(template.shape[1]) for s in subjects):
        template_cache["gram"] = template_cache["B0"] @ template_cache["B0"].T
    map_params = {k: p[k] for k in ("scaling", "reflection", "demean")}

    def _level3(i):
        sol = subjects[i].solve(template, p, template_cache)
        return sol.to_map(params=map_params), bool(sol.underdetermined)

    level3 = thread_map(_level3, range(n), n_jobs)
    transforms = [t for t, _ in level3]
    underdetermined = [u for _, u in level3]
    if any(underdetermined):
        which = [i for i, u in enumerate(underdetermined) if u]
        warnings.warn(
            f"Hyperalignment rotations of subject(s) {which} are determined only on the "
            f"span of their training data (ranks {[t.rank for t in transforms]} for "
            f"{nfeatures} voxels, {datasets[0].shape[0]} samples; fewer samples than voxels, "
            "constant voxels or collinear data): components of new data outside "
            "that span are discarded. Use more training samples than voxels for full "
            "rotations.",
            UnderdeterminedRotationWarning,
            stacklevel=3,
        )
    return {
        "template": template,
        "transforms": transforms,
        "ref_ds": ref,
        "residuals": residuals,
        "underdetermined": underdetermined,
        "zscore_params": zscore_params,
        "params": {**p, "ref_ds": p["ref_ds"]},
    }


__all__ += ["ProcrustesMap"]


# ------------------------------------------------------------------------- estimator


def _fold_zscore(m, mean, std):
    """``m`` fitted on z-scored data, as a map of the raw data (the z-scoring folded into
    its offsets and per-voxel scale; constant voxels get scale 0, as PyMVPA's zscore)."""
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    const = std <= 100 * np.finfo(np.float64).eps * np.abs(mean)
    inv = np.divide(1.0, std, out=np.zeros_like(std), where=(std > 0) & ~const)
    source_mean = mean + np.where(inv > 0, m.source_mean * std, 0.0)
    left, right = m.factors
    kw = {"dense": left} if right is None else {"left": left, "right": right}
    return type(m)(
        m.scale,
        source_mean,
        m.target_mean,
        rank=m.rank,
        params=m.params,
        source_scale=inv,
        info=m.info,
        **kw,
    )


def fit_procrustes_map(X, template, params):
    """Procrustes map of one subject's training data ``X`` onto a fitted ``template``
    (hyperalignment's level 3, for a subject that was not part of the fit)."""
    p = {**DEFAULT_PARAMS, **{k: v for k, v in params.items() if k in DEFAULT_PARAMS}}
    X = np.asarray(X, dtype=np.float64)
    mean, std = X.mean(axis=0), X.std(axis=0)
    Xz = zscore_columns(X) if p["zscore_all"] else X
    map_params = {k: p[k] for k in ("scaling", "reflection", "demean")}
    sol = _Subject(Xz, p["demean"]).solve(np.asarray(template, dtype=np.float64), p)
    m = sol.to_map(params=map_params)
    return _fold_zscore(m, mean, std) if p["zscore_all"] else m


def pca_template(datasets, n_components=None):
    """PCA template: the leading principal components of the subjects' centred data
    concatenated over voxels, scaled by ``1 / sqrt(n_subjects)`` (hyperalignment 0.1.1's
    ``compute_template(kind="pca")`` with centring)."""
    X = np.hstack([D - D.mean(axis=0) for D in datasets])
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    rank = int(np.sum(s > s[0] * max(X.shape) * np.finfo(np.float64).eps))
    k = rank if n_components is None else min(int(n_components), rank)
    return U[:, :k] * (s[:k] / np.sqrt(len(datasets)))


_METHODS = ("procrustes", "ridge")
_TEMPLATES = ("procrustes", "pca")


class Hyperalignment(TransformerMixin, BaseEstimator):
    """Hyperalignment of several subjects into a common space (Haxby et al., 2011).

    ``method="procrustes"`` is PyMVPA's three-level algorithm with its defaults (same
    template and maps, see the module docstring); ``method="ridge"`` maps every subject
    onto the template with ridge regression instead of a rotation, its penalty chosen
    per subject by cross-validation over contiguous blocks of the training samples.

    Parameters
    ----------
    method : {"procrustes", "ridge"}, default "procrustes"
    ref_ds, level2_n_iter, zscore_all, zscore_common, level1_equal_weight, scaling,
    reflection, demean
        PyMVPA's parameters of the Procrustes template and maps (see :func:`hyperalign`).
    template : {"procrustes", "pca"}, default "procrustes"
        Ridge only: the common space is PyMVPA's Procrustes template (levels 1 and 2) or
        the principal components of the concatenated subjects (:func:`pca_template`).
    alphas : sequence of float or None, default None
        Ridge only: candidate penalties
        (:data:`mvpa_flows.core.alignment.ridge.DEFAULT_ALPHAS`).
    cv_blocks : int, default 5
        Ridge only: contiguous blocks of the training samples for choosing the penalty
        (at least 3).
    n_jobs : int, default 1
        Threads for the independent fits; BLAS threads are limited so that n_jobs x BLAS
        threads never exceed the cores. Does not change the result.

    Attributes
    ----------
    model_ : AlignmentModel
        The fitted model (template, maps, parameters, fit details): what evaluation, new
        subjects and files use.
    transforms_ : list of LinearMap
        One map per subject (``ProcrustesMap`` or ``RidgeMap``); ``np.asarray(t)`` is the
        dense (n_voxels_i, n_components) linear part, ``t.transform(X)`` includes the
        offsets (and the z-scoring of ``zscore_all``).
    template_ : ndarray (n_samples, n_components)
        The common space over the training samples.
    ref_ds_ : int or None
        Level-1 reference subject (None for a PCA template).
    residuals_ : ndarray (level2_n_iter + 1, n_subjects) or None
        PyMVPA's ``training_residual_errors`` of the Procrustes template.
    alphas_ : list of float
        Ridge only: the penalty chosen for each subject.
    n_subjects_ : int
    n_features_in_ : int
        Voxels per subject when every subject has the same number (scikit-learn's
        meaning); absent otherwise.
    n_features_per_subject_ : list of int
    """

    def __init__(
        self,
        method="procrustes",
        ref_ds=None,
        level2_n_iter=1,
        zscore_all=False,
        zscore_common=True,
        level1_equal_weight=False,
        scaling=True,
        reflection=True,
        demean=True,
        template="procrustes",
        alphas=None,
        cv_blocks=5,
        n_jobs=1,
    ):
        self.method = method
        self.ref_ds = ref_ds
        self.level2_n_iter = level2_n_iter
        self.zscore_all = zscore_all
        self.zscore_common = zscore_common
        self.level1_equal_weight = level1_equal_weight
        self.scaling = scaling
        self.reflection = reflection
        self.demean = demean
        self.template = template
        self.alphas = alphas
        self.cv_blocks = cv_blocks
        self.n_jobs = n_jobs

    def _validate(self, datasets):
        """Every check before any heavy work; returns (datasets, PyMVPA params, n_jobs)."""
        from mvpa_flows.core.alignment.ridge import check_alphas, contiguous_blocks

        if self.method not in _METHODS:
            raise InputValidationError(
                f"Parameter 'method' must be one of {list(_METHODS)}; got {self.method!r}. "
                "For a shared response model use SharedResponseModel."
            )
        datasets = validate_datasets(datasets)
        p = _check_params({k: getattr(self, k) for k in DEFAULT_PARAMS}, len(datasets))
        try:
            n_jobs = resolve_n_jobs(self.n_jobs)
        except ValueError as exc:
            raise InputValidationError(str(exc)) from None
        if self.method == "ridge":
            if self.template not in _TEMPLATES:
                raise InputValidationError(
                    f"Parameter 'template' must be one of {list(_TEMPLATES)}; got "
                    f"{self.template!r}."
                )
            check_alphas(self.alphas)
            contiguous_blocks(datasets[0].shape[0], self.cv_blocks)
        return datasets, p, n_jobs

    def fit(self, datasets, y=None):
        """Fit on a list of (n_samples, n_voxels_i) arrays (same samples, same order)."""
        from mvpa_flows.core.alignment.model import AlignmentModel
        from mvpa_flows.core.alignment.srm import _set_feature_counts

        datasets, p, n_jobs = self._validate(datasets)
        info = {}
        with fit_blas_limits(n_jobs):
            if self.method == "procrustes":
                res = _fit_levels(datasets, p, n_jobs)
                maps = res["transforms"]
                if p["zscore_all"]:
                    zp = res["zscore_params"]
                    maps = [_fold_zscore(m, *z) for m, z in zip(maps, zp, strict=True)]
                info["underdetermined"] = res["underdetermined"]
                self.underdetermined_ = res["underdetermined"]
            else:
                maps, res = self._fit_ridge(datasets, p, n_jobs)
                self.alphas_ = [m.info["alpha"] for m in maps]
                info["alphas"] = self.alphas_
        self.template_ = res["template"]
        self.ref_ds_ = res["ref_ds"]
        self.residuals_ = res["residuals"]
        self.zscore_params_ = res["zscore_params"]
        info.update(ref_ds=res["ref_ds"], residuals=res["residuals"])
        self.model_ = AlignmentModel(
            self.method, self.template_, maps, params=self.get_params(), info=info
        )
        self.transforms_ = maps
        self.n_subjects_ = len(maps)
        _set_feature_counts(self, maps)
        return self

    def _fit_ridge(self, datasets, p, n_jobs):
        from mvpa_flows.core.alignment.ridge import ridge_map

        if self.template == "pca":
            width = max(X.shape[1] for X in datasets)
            res = {
                "template": pca_template(datasets, width),
                "ref_ds": None,
                "residuals": None,
                "zscore_params": None,
            }
        else:
            res = _fit_levels(datasets, p, n_jobs, level3=False)
        template = res["template"]
        params = {"method": "ridge", "template": self.template}
        maps = thread_map(
            lambda X: ridge_map(X, template, self.alphas, self.cv_blocks, params),
            datasets,
            n_jobs,
        )
        return maps, res

    def _model(self):
        from mvpa_flows.core.alignment.srm import _fitted_model

        return _fitted_model(self)

    def transform(self, datasets):
        """Map each subject's data (any number of samples) into the common space."""
        return self._model().transform(datasets)

    def inverse_transform(self, datasets):
        """Map common-space data (one array per subject) back to each subject's voxels."""
        return self._model().inverse_transform(datasets)

    def fit_subject(self, X):
        """Map a new subject into the fitted (unchanged) common space.

        Parameters
        ----------
        X : array (n_samples, n_voxels)
            The new subject's data on the training samples (same stimulus, same length).

        Returns
        -------
        LinearMap
            The subject's map (``transform(X_test)`` puts new data in the common space),
            fitted as the model's own subjects were fitted to the final template.
        """
        return self._model().fit_subject(X)

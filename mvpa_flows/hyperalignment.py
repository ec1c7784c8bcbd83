"""Hyperalignment: a common model space for many subjects' voxels (Haxby et al., 2011).

Scikit-learn-style estimator over :mod:`mvpa_flows.core.alignment.hyperalignment` (PyMVPA's
three-level Procrustes algorithm)::

    from mvpa_flows.hyperalignment import Hyperalignment
    ha = Hyperalignment().fit(movie_run1)          # list of (n_timepoints, n_voxels)
    common = ha.transform(movie_run2)              # same subjects, new data
    back = ha.inverse_transform(common)
"""

from __future__ import annotations

from mvpa_flows.core.alignment.hyperalignment import (
    DEFAULT_PARAMS,
    apply_transforms,
    hyperalign,
    inverse_transforms,
)
from mvpa_flows.core.alignment.procrustes import ProcrustesMap, procrustes

__all__ = ["Hyperalignment", "ProcrustesMap", "procrustes"]

_PARAMS = {**DEFAULT_PARAMS, "n_jobs": 1}


class Hyperalignment:
    """Procrustes hyperalignment of several subjects into a common space.

    Parameters (PyMVPA ``Hyperalignment`` with ``alpha=1``; same defaults)
    ----------------------------------------------------------------------
    ref_ds : int or None, default None
        Level-1 reference subject; ``None``: the subject with most voxels.
    level2_n_iter : int, default 1
        Passes of level 2 (each subject re-aligned to the mean of the others).
    zscore_all : bool, default False
        Z-score each subject's voxels first (training mean/std reused in ``transform``).
    zscore_common : bool, default True
        Z-score the common space and the projections after every update.
    level1_equal_weight : bool, default False
        Equal subject weights in level 1 (running mean) instead of ``(new + common)/2``.
    scaling : bool, default True
        Fit a global scale per subject (PyMVPA ``ProcrusteanMapper`` default).
    reflection : bool, default True
        Allow improper rotations.
    demean : bool, default True
        Centre data before each Procrustes fit (offsets kept in the maps).
    n_jobs : int, default 1
        Threads for the independent fits of levels 2 and 3 (PyMVPA ``nproc``); -1 for
        all cores. Does not change the result.

    Attributes
    ----------
    transforms_ : list of ProcrustesMap
        One map per subject into the common space: ``np.asarray(t)`` is the dense
        (n_voxels_i, n_voxels_common) matrix ``scale * R``; ``t.transform(X)`` includes
        the offsets. Maps fitted on fewer samples than voxels are kept factored.
    template_ : ndarray (n_samples, n_voxels_common)
        The final common space (z-scored when ``zscore_common``).
    ref_ds_ : int
    residuals_ : ndarray (level2_n_iter + 1, n_subjects)
        Level-1 and level-2 training residuals (PyMVPA ``training_residual_errors``).
    n_subjects_ : int
    n_features_in_ : list of int
    """

    def __init__(
        self,
        ref_ds=None,
        level2_n_iter=1,
        zscore_all=False,
        zscore_common=True,
        level1_equal_weight=False,
        scaling=True,
        reflection=True,
        demean=True,
        n_jobs=1,
    ):
        self.ref_ds = ref_ds
        self.level2_n_iter = level2_n_iter
        self.zscore_all = zscore_all
        self.zscore_common = zscore_common
        self.level1_equal_weight = level1_equal_weight
        self.scaling = scaling
        self.reflection = reflection
        self.demean = demean
        self.n_jobs = n_jobs

    def get_params(self, deep=True):
        return {k: getattr(self, k) for k in _PARAMS}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in _PARAMS:
                raise ValueError(
                    f"Invalid parameter {k!r} for Hyperalignment; valid: {sorted(_PARAMS)}."
                )
            setattr(self, k, v)
        return self

    def fit(self, datasets, y=None):
        """Fit on a list of (n_samples, n_voxels_i) arrays (same samples, same order)."""
        res = hyperalign(datasets, **self.get_params())
        self.transforms_ = res["transforms"]
        self.template_ = res["template"]
        self.ref_ds_ = res["ref_ds"]
        self.residuals_ = res["residuals"]
        self.underdetermined_ = res["underdetermined"]
        self.zscore_params_ = res["zscore_params"]
        self.n_subjects_ = len(self.transforms_)
        self.n_features_in_ = [t.shape[0] for t in self.transforms_]
        return self

    def _check_fitted(self):
        if not hasattr(self, "transforms_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                "This Hyperalignment instance is not fitted yet; call fit(datasets) first."
            )

    def transform(self, datasets):
        """Map each subject's data (any number of samples) into the common space."""
        self._check_fitted()
        return apply_transforms(self.transforms_, datasets, self.zscore_params_)

    def fit_transform(self, datasets, y=None):
        return self.fit(datasets).transform(datasets)

    def inverse_transform(self, datasets):
        """Map common-space data (one array per subject) back to each subject's voxels."""
        self._check_fitted()
        return inverse_transforms(self.transforms_, datasets, self.zscore_params_)

    def __repr__(self):
        args = ", ".join(
            f"{k}={getattr(self, k)!r}" for k in _PARAMS if getattr(self, k) != _PARAMS[k]
        )
        return f"Hyperalignment({args})"

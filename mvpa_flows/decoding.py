"""Drop-in, fast replacement for ``nilearn.decoding.SearchLight``.

Change ``from nilearn.decoding import SearchLight`` into
``from mvpa_flows.decoding import SearchLight`` and get the same map (same
neighbourhoods, same estimators, same cross-validation and scores) in seconds
instead of minutes.  Differences from nilearn, all documented on the class:
``cv=None`` with ``groups`` means leave-one-run-out; ``'logistic'`` is an
lbfgs ``LogisticRegression`` and ``'ridge'`` a ``RidgeClassifier``; a process
mask partly outside the mask is intersected with it (with a warning).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from .core._validation import check_labels
from .core.searchlight import check_decoding, resolve_estimator, search_light, select_engine
from .core.searchlight.base import samples_dtype
from .core.searchlight.neighbourhoods import check_radius, sphere_adjacency

__all__ = ["SearchLight"]


def _load_mask(img, ref, name):
    from nilearn.image import check_niimg_3d, resample_to_img

    img = check_niimg_3d(img)
    if img.shape[:3] != ref.shape[:3] or not np.allclose(img.affine, ref.affine):
        img = resample_to_img(
            img, ref, interpolation="nearest", copy_header=True, force_resample=True
        )
    data = np.asarray(img.dataobj)
    vals = np.unique(data)
    if len(vals) > 2 and name == "mask_img":
        raise ValueError(
            f"Parameter '{name}' must be a binary mask; got {len(vals)} distinct values. "
            "Threshold it first (e.g. nilearn.image.binarize_img)."
        )
    return img, data != 0


def _masked_samples(imgs, mask, engine_name):
    """(n_volumes, n_mask_voxels) C-ordered samples, one volume at a time.

    In the precision the searchlight keeps for this engine
    (:func:`~mvpa_flows.core.searchlight.base.samples_dtype`): float32 when the image's
    values fit it exactly and the engine upcasts the voxels it computes on (its answers are
    those of a float64 copy), so no further copy of the samples is made.
    """
    data = np.asanyarray(imgs.dataobj)
    dtype = samples_dtype(engine_name, data.dtype)
    X = np.empty((data.shape[3], int(mask.sum())), dtype=dtype)
    for i in range(data.shape[3]):
        X[i] = data[..., i][mask]
    return X


class SearchLight(BaseEstimator):
    """Searchlight decoding with the interface of ``nilearn.decoding.SearchLight``.

    Parameters
    ----------
    mask_img : Niimg-like or None
        Voxels whose signal enters the spheres (all voxels when None).
    process_mask_img : Niimg-like or None, default=None
        Sphere centres (defaults to ``mask_img``).  Voxels outside
        ``mask_img`` are dropped with a warning; a process mask entirely
        outside ``mask_img`` raises ``ValueError``.
    radius : float, default=2.0
        Sphere radius in millimetres, finite and > 0 (every mask voxel whose centre
        lies within ``radius`` of the sphere centre, the centre included).
    estimator : str or scikit-learn classifier, default='svc'
        ``'svc'``, ``'gnb'``, ``'lda'``, ``'logistic'``, ``'ridge'``,
        ``'correlation'`` or a classifier instance (regressors are refused); see
        :func:`mvpa_flows.core.searchlight.resolve_estimator`.
    n_jobs : int, default=1
        Cores to use (-1 for all).
    scoring : {None, 'accuracy', 'balanced_accuracy', 'roc_auc'}, default=None
        Fold score (accuracy when None).
    cv : None, int, 'loro', 'kfold:N' or scikit-learn splitter, default=None
        Cross-validation (at least 2 folds); leave-one-run-out when ``groups`` are
        given, else ``StratifiedKFold(5)``.
    verbose : int, default=0
        Print progress to stderr when > 0.
    random_state : int or None, default=0
        Seed of ``'svc'`` and of the permutations.
    estimator_args : dict or None, default=None
        Parameters set on the estimator (as nilearn's ``estimator_args``), e.g.
        ``{'C': 0.1}`` with ``estimator='svc'``.
    n_permutations : int, default=0
        Label permutations within runs for voxel-wise p-values.
    return_fold_scores : bool, default=False
        Keep one score map per fold in ``fold_scores_``.

    Attributes
    ----------
    scores_ : ndarray of shape (nx, ny, nz)
        Score of every process-mask voxel (0 elsewhere).
    masked_scores_ : ndarray of shape (n_centres,)
        Scores of the process-mask voxels, in ``np.where`` order.
    scores_img_ : Nifti1Image
        ``scores_`` as an image.
    process_mask_ : ndarray of bool
        Sphere centres.
    mask_img_ : Nifti1Image
        Mask used (resampled to the images if needed).
    n_elements_ : int
        Number of sphere centres.
    pvalues_ : ndarray of shape (nx, ny, nz) or None
        Permutation p-values (when ``n_permutations > 0``).
    fold_scores_ : ndarray of shape (n_folds, nx, ny, nz) or None
        Per-fold score maps (when ``return_fold_scores``).
    result_ : SearchlightResult
        Everything :func:`~mvpa_flows.core.searchlight.search_light` returned.
    """

    def __init__(
        self,
        mask_img=None,
        process_mask_img=None,
        radius=2.0,
        estimator="svc",
        n_jobs=1,
        scoring=None,
        cv=None,
        verbose=0,
        random_state=0,
        estimator_args=None,
        n_permutations=0,
        return_fold_scores=False,
    ):
        self.mask_img = mask_img
        self.process_mask_img = process_mask_img
        self.radius = radius
        self.estimator = estimator
        self.n_jobs = n_jobs
        self.scoring = scoring
        self.cv = cv
        self.verbose = verbose
        self.random_state = random_state
        self.estimator_args = estimator_args
        self.n_permutations = n_permutations
        self.return_fold_scores = return_fold_scores

    def fit(self, imgs, y, groups=None):
        """Fit the searchlight.

        Parameters
        ----------
        imgs : Niimg-like
            4D image, one volume per sample.
        y : array-like of shape (n_samples,)
            Labels (NaN or None are refused: a missing label is not a class).
        groups : array-like of shape (n_samples,), optional
            Run of every sample.

        Returns
        -------
        self : SearchLight

        Raises
        ------
        ValueError, TypeError
            Bad labels, radius, estimator, cross-validation or masks, before the images
            are read.
        """
        import nibabel as nib
        from nilearn.image import check_niimg_4d

        # every parameter is checked before the images are read
        y = check_labels(y, "y")
        radius = check_radius(self.radius)
        estimator = self._estimator()
        imgs = check_niimg_4d(imgs)
        if len(y) != imgs.shape[3]:
            raise ValueError(
                f"Parameter 'y' must have one label per volume ({imgs.shape[3]}); got "
                f"shape {y.shape}."
            )
        setup = check_decoding(
            y,
            estimator,
            groups=groups,
            cv=self.cv,
            scoring=self.scoring,
            n_permutations=self.n_permutations,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        )
        if self.mask_img is None:
            mask = np.ones(imgs.shape[:3], dtype=bool)
            self.mask_img_ = nib.Nifti1Image(mask.astype(np.int8), imgs.affine)
        else:
            self.mask_img_, mask = _load_mask(self.mask_img, imgs, "mask_img")
        if self.process_mask_img is None:
            process_mask = mask
        else:
            _, process_mask = _load_mask(self.process_mask_img, imgs, "process_mask_img")
        A = sphere_adjacency(mask, imgs.affine, radius, process_mask)
        process_mask = process_mask & mask
        X = _masked_samples(imgs, mask, select_engine(setup.estimator, len(setup.classes)))
        res = search_light(
            X,
            y,
            setup.estimator,
            A,
            groups=groups,
            cv=setup.cv,
            scoring=setup.scoring,
            n_permutations=setup.n_permutations,
            random_state=self.random_state,
            n_jobs=setup.n_jobs,
            return_fold_scores=self.return_fold_scores,
            verbose=self.verbose,
        )
        self.result_ = res
        self.engine_ = res.engine
        self.process_mask_ = process_mask
        self.n_elements_ = int(process_mask.sum())
        self.masked_scores_ = res.scores
        self.scores_ = np.zeros(process_mask.shape)
        self.scores_[process_mask] = res.scores
        self.pvalues_ = None
        if res.pvalues is not None:
            self.pvalues_ = np.zeros(process_mask.shape)
            self.pvalues_[process_mask] = res.pvalues
        self.fold_scores_ = None
        if res.fold_scores is not None:
            self.fold_scores_ = np.zeros((res.n_folds, *process_mask.shape))
            self.fold_scores_[:, process_mask] = res.fold_scores
        return self

    def _estimator(self):
        """The resolved estimator with ``estimator_args`` set."""
        estimator = resolve_estimator(
            self.estimator, random_state=0 if self.random_state is None else self.random_state
        )
        if not self.estimator_args:
            return estimator
        if not isinstance(self.estimator_args, dict):
            raise TypeError(
                "Parameter 'estimator_args' must be a dict of estimator parameters; got "
                f"{type(self.estimator_args).__name__}. Pass e.g. {{'C': 0.1}}."
            )
        try:
            estimator.set_params(**self.estimator_args)
        except ValueError as exc:
            raise ValueError(
                f"Parameter 'estimator_args' does not fit {type(estimator).__name__}: {exc}"
            ) from exc
        return estimator

    def __sklearn_is_fitted__(self):
        return hasattr(self, "scores_")

    @property
    def scores_img_(self):
        """``scores_`` as a Nifti1Image on the mask grid."""
        from nilearn.image import new_img_like
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        return new_img_like(self.mask_img_, self.scores_)

    @property
    def pvalues_img_(self):
        """``pvalues_`` as a Nifti1Image (None without permutations)."""
        from nilearn.image import new_img_like
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        if self.pvalues_ is None:
            return None
        return new_img_like(self.mask_img_, self.pvalues_)

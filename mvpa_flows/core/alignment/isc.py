"""Inter-subject correlation (ISC), leave-one-out, voxel by voxel.

Hasson et al. (2004); the leave-one-out form of Nastase et al. (2019) and BrainIAK's
``isc(data, pairwise=False)``: every subject's time series at a voxel (or common-space
dimension) is correlated with the mean time series of the other subjects at the same
voxel. Before alignment the voxels are the anatomical ones (same mask for everyone);
after alignment they are the dimensions of the common space, where a good alignment
raises the correlation (:func:`isc_before_after`).
"""

from __future__ import annotations

import warnings

import numpy as np

from mvpa_flows.core.alignment.maps import RidgeMap
from mvpa_flows.core.errors import InputValidationError

__all__ = ["isc", "isc_before_after", "isc_maps", "isc_subject_space", "mean_isc"]


def _stack(datasets, name):
    if isinstance(datasets, np.ndarray) and datasets.ndim == 3:
        datasets = list(datasets)
    if not isinstance(datasets, (list, tuple)) or len(datasets) < 2:
        raise InputValidationError(
            f"`{name}` must be a list of at least 2 subjects' (n_samples, n_voxels) arrays; "
            f"got {type(datasets).__name__}"
            + (f" of {len(datasets)}" if isinstance(datasets, (list, tuple)) else "")
            + "."
        )
    arrays = [np.asarray(X, dtype=np.float64) for X in datasets]
    shapes = {X.shape for X in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 2:
        raise InputValidationError(
            f"Every subject in `{name}` must have the same (n_samples, n_voxels) shape (same "
            f"time points, same voxels or common-space dimensions); got "
            f"{[X.shape for X in arrays]}."
        )
    if arrays[0].shape[0] < 3:
        raise InputValidationError(
            f"`{name}` needs at least 3 time points per subject; got {arrays[0].shape[0]}."
        )
    for i, X in enumerate(arrays):
        if not np.isfinite(X).all():
            raise InputValidationError(
                f"`{name}[{i}]` contains NaN or infinite values; mask or impute them first."
            )
    return arrays


def _standardize(X):
    X = X - X.mean(axis=0)
    norm = np.sqrt(np.einsum("ij,ij->j", X, X))
    return X, norm


def isc(datasets):
    """Leave-one-out inter-subject correlation of every column.

    Parameters
    ----------
    datasets : list of (n_samples, n_voxels) arrays
        One per subject, the same time points and the same voxels (or common-space
        dimensions) for everyone.

    Returns
    -------
    ndarray (n_subjects, n_voxels)
        Pearson correlation of each subject's time series with the mean of the others';
        NaN where either is constant. Average over subjects (or Fisher-z average) for a
        group map.
    """
    arrays = _stack(datasets, "datasets")
    n = len(arrays)
    total = np.sum(arrays, axis=0)
    out = np.empty((n, arrays[0].shape[1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        for s, X in enumerate(arrays):
            a, na = _standardize(X)
            b, nb = _standardize((total - X) / (n - 1))
            r = np.einsum("ij,ij->j", a, b) / (na * nb)
            r[(na == 0) | (nb == 0)] = np.nan
            out[s] = r
    return out


def isc_before_after(model, test_datasets):
    """ISC of the test data in the anatomical voxels and in the model's common space.

    Parameters
    ----------
    model : AlignmentModel or fitted estimator (with ``model_``)
    test_datasets : list of (n_samples, n_voxels_i) arrays
        The fitted subjects' test data (independent of the training data).

    Returns
    -------
    dict
        ``anatomical`` (n_subjects, n_voxels) or None when the subjects' voxel counts
        differ; ``aligned`` (n_subjects, n_components).
    """
    model = getattr(model, "model_", model)
    aligned = model.transform(test_datasets, name="test_datasets")
    same = len({np.shape(X)[1] for X in test_datasets}) == 1
    return {
        "anatomical": isc(test_datasets) if same else None,
        "aligned": isc(aligned),
    }


def mean_isc(r):
    """Group ISC of every column: Fisher z averaged over subjects, back to r.

    Parameters
    ----------
    r : ndarray (n_subjects, n_voxels)
        Leave-one-out correlations (:func:`isc`); NaN entries are left out.

    Returns
    -------
    ndarray (n_voxels,)
        ``tanh(nanmean(arctanh(r)))``; NaN where every subject is NaN.
    """
    r = np.clip(np.asarray(r, dtype=np.float64), -1 + 1e-12, 1 - 1e-12)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        return np.tanh(np.nanmean(np.arctanh(r), axis=0))


def isc_subject_space(test_datasets, aligned, maps):
    """Leave-one-out ISC after alignment, in each subject's own voxels.

    The mean of the other subjects' aligned test data is mapped back into subject
    ``s``'s voxels with the inverse of its map and correlated, voxel by voxel, with
    ``s``'s test data.

    Parameters
    ----------
    test_datasets : list of (n_samples, n_voxels_i) arrays
    aligned : list of (n_samples, n_components) arrays
        The same test data in the common space.
    maps : list of LinearMap
        Each subject's map (with ``inverse_transform``).

    Returns
    -------
    list of ndarray (n_voxels_i,)
    """
    total = np.sum([np.asarray(a, dtype=np.float64) for a in aligned], axis=0)
    n = len(aligned)
    out = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for X, A, m in zip(test_datasets, aligned, maps, strict=True):
            others = m.inverse_transform((total - A) / (n - 1))
            a, na = _standardize(np.asarray(X, dtype=np.float64))
            b, nb = _standardize(others)
            r = np.einsum("ij,ij->j", a, b) / (na * nb)
            r[(na == 0) | (nb == 0)] = np.nan
            out.append(r)
    return out


def common_space_is_voxels(model):
    """Whether the dimensions of ``model``'s common space are voxels of the ROI.

    PyMVPA's Procrustes template lives in the reference subject's voxels (ridge maps onto
    it keep them), and so does searchlight hyperalignment (the mask's voxels); a PCA
    template or a shared response has components instead.
    """
    if model.method in ("procrustes", "searchlight"):
        return True
    return model.method == "ridge" and model.params.get("template", "procrustes") == "procrustes"


def isc_maps(model, test_datasets, aligned, maps=None):
    """Voxel-wise leave-one-out ISC before and after alignment, for group maps.

    Parameters
    ----------
    model : AlignmentModel
        The fitted model (its method decides where the aligned ISC is measured).
    test_datasets : list of (n_samples, n_voxels) arrays
        Every subject's test data in the ROI voxels (the same voxels for everyone).
    aligned : list of (n_samples, n_components) arrays
        The same data in the common space.
    maps : list of LinearMap, optional
        Each subject's map (default: the model's), for the subject-space ISC.

    Returns
    -------
    dict
        ``anatomical`` and ``aligned``: (n_subjects, n_voxels) arrays (``aligned`` None
        when it cannot be voxel-wise: ridge onto a PCA template); ``aligned_space``:
        ``"common"`` (the common space's dimensions are the ROI voxels: Procrustes, ridge
        onto the Procrustes template) or ``"subject"`` (the others' data mapped back into
        each subject's voxels: shared response model).
    """
    model = getattr(model, "model_", model)
    anatomical = isc(test_datasets)
    maps = model.maps if maps is None else maps
    n_voxels = anatomical.shape[1]
    if common_space_is_voxels(model) and np.shape(aligned[0])[1] == n_voxels:
        return {"anatomical": anatomical, "aligned": isc(aligned), "aligned_space": "common"}
    if all(type(m).inverse_transform is not RidgeMap.inverse_transform for m in maps):
        rows = isc_subject_space(test_datasets, aligned, maps)
        return {"anatomical": anatomical, "aligned": np.vstack(rows), "aligned_space": "subject"}
    return {"anatomical": anatomical, "aligned": None, "aligned_space": None}

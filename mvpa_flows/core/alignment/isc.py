"""Inter-subject correlation (ISC), leave-one-out, voxel by voxel.

Hasson et al. (2004); the leave-one-out form of Nastase et al. (2019) and BrainIAK's
``isc(data, pairwise=False)``: every subject's time series at a voxel (or common-space
dimension) is correlated with the mean time series of the other subjects at the same
voxel. Before alignment the voxels are the anatomical ones (same mask for everyone);
after alignment they are the dimensions of the common space, where a good alignment
raises the correlation (:func:`isc_before_after`).
"""

from __future__ import annotations

import numpy as np

from mvpa_flows.core.errors import InputValidationError

__all__ = ["isc", "isc_before_after"]


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

"""Univariate one-way ANOVA F-test, vectorised over voxels."""

from __future__ import annotations

import numpy as np
from scipy import special

from mvpa_flows.core.errors import InputValidationError


def f_oneway_voxels(X, y):
    """One-way ANOVA F statistic and p-value for every column of ``X``.

    The same statistic as :func:`sklearn.feature_selection.f_classif`, computed with
    one matrix product for the class sums instead of one pass per class, in float64.

    Parameters
    ----------
    X : array-like, shape (n_samples, n_voxels)
    y : array-like, shape (n_samples,)
        Condition labels; at least two classes.

    Returns
    -------
    F : ndarray (n_voxels,)
        F statistic; ``nan`` for voxels constant over all samples (as f_classif).
    p : ndarray (n_voxels,)
        Upper-tail p-value of F with (k - 1, n - k) degrees of freedom.
    """
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise InputValidationError(
            f"X must be (n_samples, n_voxels) and y (n_samples,); got X {X.shape}, y {y.shape}."
        )
    classes, codes = np.unique(y, return_inverse=True)
    n_classes, n_samples = classes.size, y.size
    if n_classes < 2:
        raise InputValidationError(
            f"The F-test needs at least two conditions; y holds only {classes.tolist()}."
        )
    if n_samples <= n_classes:
        raise InputValidationError(
            f"The F-test needs more samples ({n_samples}) than conditions ({n_classes})."
        )
    onehot = np.zeros((n_classes, n_samples), dtype=X.dtype)
    onehot[codes, np.arange(n_samples)] = 1.0
    counts = np.bincount(codes).astype(np.float64)
    class_sums = (onehot @ X).astype(np.float64)
    total_sum = class_sums.sum(axis=0)
    sum_squares = np.einsum("ij,ij->j", X, X, dtype=np.float64)
    ss_total = sum_squares - total_sum**2 / n_samples
    ss_between = (class_sums**2 / counts[:, None]).sum(axis=0) - total_sum**2 / n_samples
    ss_within = ss_total - ss_between
    df_between, df_within = n_classes - 1, n_samples - n_classes
    with np.errstate(divide="ignore", invalid="ignore"):
        F = (ss_between / df_between) / (ss_within / df_within)
    p = special.fdtrc(df_between, df_within, F)
    return F, p

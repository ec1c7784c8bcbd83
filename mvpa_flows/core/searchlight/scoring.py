"""Scores of the searchlight folds, vectorised over spheres."""

from __future__ import annotations

import numpy as np

__all__ = ["SCORINGS", "check_scoring", "chance_level", "fold_scores"]

SCORINGS = ("accuracy", "balanced_accuracy", "roc_auc")


def check_scoring(scoring, estimator=None, n_classes=None, folds=None, y_codes=None):
    """The scoring name (accuracy when None), checked against the problem.

    Parameters
    ----------
    scoring : None or str
        One of :data:`SCORINGS`.
    estimator : scikit-learn estimator, optional
        For ``'roc_auc'``: must have ``decision_function`` or ``predict_proba``.
    n_classes : int, optional
        For ``'roc_auc'``: must be 2.
    folds, y_codes : optional
        For ``'roc_auc'``: every test set must hold both classes.

    Returns
    -------
    str
    """
    name = "accuracy" if scoring is None else scoring
    if name not in SCORINGS:
        raise ValueError(
            f"Parameter 'scoring' must be one of {[None, *SCORINGS]}; got {scoring!r}."
        )
    if name != "roc_auc":
        return name
    if estimator is not None and not (
        hasattr(estimator, "decision_function") or hasattr(estimator, "predict_proba")
    ):
        raise TypeError(
            f"Parameter 'scoring'='roc_auc' needs continuous decisions, but the estimator "
            f"{type(estimator).__name__} has neither decision_function nor predict_proba. "
            "Use scoring='accuracy', or a classifier with one of them."
        )
    if n_classes is not None and n_classes != 2:
        raise ValueError(
            f"Parameter 'scoring'='roc_auc' needs 2 classes; got {n_classes}. Use "
            "'accuracy' or 'balanced_accuracy'."
        )
    for f, (_, te) in enumerate(folds or []):
        if len(np.unique(y_codes[te])) < 2:
            raise ValueError(
                f"Parameter 'scoring'='roc_auc' is undefined for fold {f}, whose test "
                "set holds a single class. Use 'accuracy' or a CV scheme whose test "
                "folds hold both classes."
            )
    return name


def chance_level(scoring, n_classes):
    """Expected score under the null: 0.5 for ROC AUC, ``1 / n_classes`` otherwise."""
    return 0.5 if scoring == "roc_auc" else 1.0 / n_classes


def fold_scores(pred, dec, y_codes, folds, scoring):
    """Score of every fold and sphere.

    Parameters
    ----------
    pred : ndarray of shape (n_spheres, n_test_all)
        Predicted class codes of the concatenated test sets of ``folds``.
    dec : ndarray of shape (n_spheres, n_test_all) or None
        Decision values (class 1 positive), for ``'roc_auc'``.
    y_codes : ndarray of shape (n_samples,)
        True class codes.
    folds : list of (train, test)
        Cross-validation folds.
    scoring : str
        One of :data:`SCORINGS`.

    Returns
    -------
    ndarray of shape (n_folds, n_spheres)
    """
    n_sph = pred.shape[0]
    out = np.empty((len(folds), n_sph))
    start = 0
    for f, (_, te) in enumerate(folds):
        sl = slice(start, start + len(te))
        start += len(te)
        yt = y_codes[te]
        if scoring == "accuracy":
            out[f] = np.mean(pred[:, sl] == yt[None, :], axis=1)
        elif scoring == "balanced_accuracy":
            present = np.unique(yt)
            rec = np.empty((len(present), n_sph))
            for i, c in enumerate(present):
                m = yt == c
                rec[i] = np.mean(pred[:, sl][:, m] == c, axis=1)
            out[f] = np.mean(rec.T, axis=1) if len(present) > 1 else rec[0]
        else:  # roc_auc, binary, positive class = code 1
            from scipy.stats import rankdata

            d = dec[:, sl]
            pos = yt == 1
            n_pos, n_neg = pos.sum(), (~pos).sum()
            ranks = rankdata(d, axis=1)
            out[f] = (ranks[:, pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out

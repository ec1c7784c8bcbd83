"""Estimators of the searchlight: names, checks, the engine that reproduces each exactly,
and the Haxby (2001) correlation classifier that scikit-learn lacks."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "ESTIMATOR_STRINGS",
    "CorrelationClassifier",
    "check_classifier",
    "resolve_estimator",
    "select_engine",
]

ESTIMATOR_STRINGS = ("svc", "gnb", "lda", "logistic", "ridge", "correlation")


class CorrelationClassifier(ClassifierMixin, BaseEstimator):
    """Haxby et al. (2001) nearest-centroid correlation classifier.

    ``fit`` stores the mean training pattern of every class; a test pattern is
    assigned to the class whose centroid it correlates with best (Pearson
    correlation across features).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    centroids_ : ndarray of shape (n_classes, n_features)
        Mean training pattern of each class.

    References
    ----------
    Haxby, J. V. et al. (2001). Distributed and overlapping representations of
    faces and objects in ventral temporal cortex. Science 293, 2425-2430.
    """

    def fit(self, X, y):
        """Store the class centroids.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training patterns.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : CorrelationClassifier
        """
        X, y = validate_data(self, X, y)
        self.classes_ = unique_labels(y)
        self.centroids_ = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
        return self

    def _correlations(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        Xc = X - X.mean(axis=1, keepdims=True)
        Mc = self.centroids_ - self.centroids_.mean(axis=1, keepdims=True)
        num = Xc @ Mc.T
        den = np.sqrt(np.sum(Xc**2, axis=1))[:, None] * np.sqrt(np.sum(Mc**2, axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = num / den
        return np.nan_to_num(r, nan=0.0)

    def decision_function(self, X):
        """Correlation with the class centroids.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            For two classes, correlation with the second class minus
            correlation with the first (positive means ``classes_[1]``).
            Constant patterns correlate 0 with everything.
        """
        r = self._correlations(X)
        if len(self.classes_) == 2:
            return r[:, 1] - r[:, 0]
        return r

    def predict(self, X):
        """Class of the best-correlated centroid.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        return self.classes_[np.argmax(self._correlations(X), axis=1)]


def resolve_estimator(estimator, random_state=0):
    """Turn an estimator name or instance into an unfitted scikit-learn estimator.

    Parameters
    ----------
    estimator : str or estimator instance
        ``'svc'`` (nilearn's ``LinearSVC(penalty='l2', max_iter=10000)``),
        ``'gnb'`` (``GaussianNB()``), ``'lda'``
        (``LinearDiscriminantAnalysis(solver='lsqr', shrinkage='auto')``),
        ``'logistic'`` (``LogisticRegression()``, lbfgs; note that nilearn's
        ``'logistic'`` is a ``LogisticRegressionCV``), ``'ridge'``
        (``RidgeClassifier()``), ``'correlation'``
        (:class:`CorrelationClassifier`), or any scikit-learn classifier
        instance (cloned).
    random_state : int or None, default=0
        Passed to ``'svc'`` (as nilearn does).

    Returns
    -------
    estimator : scikit-learn estimator
        A fresh, unfitted estimator.

    Raises
    ------
    ValueError
        Unknown estimator name.
    TypeError
        A class instead of an instance, an estimator that cannot be cloned, one
        without ``fit`` and ``predict``, or one that is not a classifier (see
        :func:`check_classifier`).
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.naive_bayes import GaussianNB
    from sklearn.svm import LinearSVC

    if isinstance(estimator, str):
        name = estimator.lower()
        if name in ("svc", "svc_l2"):
            return LinearSVC(penalty="l2", max_iter=10000, random_state=random_state)
        if name == "gnb":
            return GaussianNB()
        if name == "lda":
            return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
        if name == "logistic":
            return LogisticRegression()
        if name in ("ridge", "ridge_classifier"):
            return RidgeClassifier()
        if name == "correlation":
            return CorrelationClassifier()
        raise ValueError(
            f"Parameter 'estimator' must be one of {list(ESTIMATOR_STRINGS)} or a "
            f"scikit-learn classifier instance; got {estimator!r}. Pass e.g. "
            "estimator='svc' or estimator=GaussianNB()."
        )
    if isinstance(estimator, type):
        raise TypeError(
            "Parameter 'estimator' must be an estimator *instance*; got the class "
            f"{estimator.__name__}. Pass {estimator.__name__}() instead."
        )
    if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")):
        raise TypeError(
            "Parameter 'estimator' must implement fit(X, y) and predict(X); got "
            f"{type(estimator).__name__}, which lacks "
            f"{' and '.join(m for m in ('fit', 'predict') if not hasattr(estimator, m))}. "
            "Pass a scikit-learn classifier."
        )
    try:
        est = clone(estimator)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(
            f"Parameter 'estimator' ({type(estimator).__name__}) cannot be cloned with "
            f"sklearn.base.clone ({exc}). Make it a scikit-learn compatible estimator "
            "(derive from BaseEstimator; __init__ only stores its parameters)."
        ) from exc
    check_classifier(est)
    return est


def check_classifier(estimator):
    """Refuse estimators that declare themselves something else than a classifier.

    Searchlight scores (accuracy, balanced accuracy, ROC AUC) compare predicted classes
    with the labels, so a regressor (whose continuous predictions would be cast to classes)
    or a clusterer is refused. Estimators that declare no type (no scikit-learn tags) are
    accepted when they have ``fit`` and ``predict``.

    Raises
    ------
    TypeError
        ``estimator`` is tagged as a regressor, clusterer, outlier detector or transformer.
    """
    from sklearn.utils import get_tags

    try:
        kind = get_tags(estimator).estimator_type
    except Exception:  # noqa: BLE001 - duck-typed estimators have no tags
        return
    if kind in (None, "classifier"):
        return
    raise TypeError(
        f"Parameter 'estimator' must be a classifier: searchlight scores compare predicted "
        f"classes with the labels; got {type(estimator).__name__}, a {kind}. Pass a "
        "classifier, e.g. LinearSVC(), LogisticRegression() or RidgeClassifier() (or the "
        "names 'svc', 'logistic', 'ridge')."
    )


def select_engine(estimator, n_classes=2):
    """Name of the engine that reproduces ``estimator`` exactly.

    Parameters
    ----------
    estimator : scikit-learn estimator
        Resolved estimator.
    n_classes : int, default=2
        Number of classes.

    Returns
    -------
    str
        One of ``'gnb'``, ``'lda'``, ``'ridge'``, ``'correlation'``, ``'svc'``,
        ``'logistic'``, ``'generic'``.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.naive_bayes import GaussianNB
    from sklearn.svm import LinearSVC

    t = type(estimator)
    p = estimator.get_params(deep=False) if hasattr(estimator, "get_params") else {}
    if t is GaussianNB and p.get("priors") is None:
        return "gnb"
    if t is CorrelationClassifier:
        return "correlation"
    if (
        t is LinearDiscriminantAnalysis
        and p.get("solver") == "lsqr"
        and p.get("priors") is None
        and p.get("covariance_estimator") is None
        and (
            p.get("shrinkage") in (None, "auto", "empirical")
            or (
                isinstance(p.get("shrinkage"), float | int)
                and not isinstance(p.get("shrinkage"), bool)
                and 0 <= p.get("shrinkage") <= 1
            )
        )
    ):
        return "lda"
    if (
        t is RidgeClassifier
        and p.get("fit_intercept", True)
        and p.get("class_weight") is None
        and not p.get("positive", False)
        and p.get("solver", "auto") in ("auto", "cholesky", "svd")
        and np.ndim(p.get("alpha", 1.0)) == 0
        and float(p.get("alpha", 1.0)) > 0
    ):
        return "ridge"
    if (
        t is LinearSVC
        and n_classes == 2
        and p.get("penalty") == "l2"
        and p.get("loss") == "squared_hinge"
        and p.get("fit_intercept", True)
        and p.get("class_weight") is None
        and p.get("multi_class", "ovr") == "ovr"
    ):
        return "svc"
    if (
        t is LogisticRegression
        and n_classes == 2
        and p.get("solver") in ("lbfgs", "newton-cg", "newton-cholesky")
        and p.get("penalty", "deprecated") in ("deprecated", "l2")
        and p.get("l1_ratio") in (None, 0, 0.0)
        and p.get("fit_intercept", True)
        and p.get("class_weight") is None
        and p.get("C") is not None
        and np.isfinite(p.get("C"))
    ):
        return "logistic"
    return "generic"

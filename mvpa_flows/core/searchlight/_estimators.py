"""Estimators that scikit-learn lacks but searchlight users expect."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["CorrelationClassifier"]


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

"""Fitted per-subject maps into a common space: one affine form for every method.

Every alignment method maps a subject's (n_samples, n_voxels) data with

``y = scale * ((x - source_mean) * source_scale) @ W + target_mean``

where ``source_scale`` is an optional per-voxel factor (the inverse standard deviation of
the training data when they were z-scored first; 0 for constant voxels, as PyMVPA's
``zscore``) and ``W`` is stored densely or as ``left @ right.T`` (never forming a
voxels x voxels matrix when the training data have fewer samples than voxels).

========================  ===========================  ==============================
class                     ``W``                        ``inverse_transform``
========================  ===========================  ==============================
:class:`ProcrustesMap`    orthogonal / partial isom.   ``W.T / scale`` (PyMVPA)
:class:`RidgeMap`         ridge coefficients           refused (not an isometry)
:class:`SRMMap`           orthonormal columns          ``W.T`` (BrainIAK's ``W S``)
========================  ===========================  ==============================
"""

from __future__ import annotations

import numpy as np

from mvpa_flows.core.errors import InputValidationError

__all__ = ["LinearMap", "ProcrustesMap", "RidgeMap", "SRMMap", "MAP_KINDS"]


def _as_2d(X, name):
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputValidationError(
            f"`{name}` must be a 2-D array (n_samples, n_voxels); got shape {X.shape}."
        )
    if X.dtype != np.float64:
        X = X.astype(np.float64)
    return X


class LinearMap:
    """A fitted affine map of one subject's voxels into a common space.

    Parameters
    ----------
    scale : float
        Global factor of the linear part.
    source_mean : ndarray (n_voxels_source,)
        Subtracted from the input.
    target_mean : ndarray (n_components,)
        Added to the output.
    dense : ndarray (n_voxels_source, n_components), optional
        The linear part ``W``.
    left, right : ndarray, optional
        ``W = left @ right.T`` (factored form), instead of ``dense``.
    rank : int, optional
        Rank of ``W`` (default: the smaller dimension).
    params : dict, optional
        The fit's parameters, kept for provenance.
    source_scale : ndarray (n_voxels_source,), optional
        Per-voxel factor applied after centring (``1 / std`` of z-scored training data).
    info : dict, optional
        Fit details (e.g. the penalty chosen by cross-validation).

    Attributes
    ----------
    shape : tuple
        ``(n_voxels_source, n_components)``.
    """

    kind = "linear"

    def __init__(
        self,
        scale,
        source_mean,
        target_mean,
        dense=None,
        left=None,
        right=None,
        rank=None,
        params=None,
        source_scale=None,
        info=None,
    ):
        self.scale = float(scale)
        self.source_mean = np.asarray(source_mean, dtype=np.float64)
        self.target_mean = np.asarray(target_mean, dtype=np.float64)
        if (dense is None) == (left is None or right is None):
            raise ValueError(f"{type(self).__name__} needs `dense` or both `left` and `right`.")
        self._dense = dense
        self._left = left
        self._right = right
        if dense is not None:
            self.shape = tuple(dense.shape)
        else:
            self.shape = (left.shape[0], right.shape[0])
        self.rank = int(rank) if rank is not None else min(self.shape)
        self.params = dict(params or {})
        self.source_scale = (
            None if source_scale is None else np.asarray(source_scale, dtype=np.float64)
        )
        self.info = dict(info or {})

    # -- dense views -------------------------------------------------------------
    @property
    def rotation(self):
        """The linear part ``W`` without the scale, dense."""
        if self._dense is not None:
            return self._dense
        return self._left @ self._right.T

    @property
    def matrix(self):
        """The dense linear part ``scale * W`` (PyMVPA's ``proj`` for Procrustes)."""
        return self.scale * self.rotation

    @property
    def is_factored(self):
        return self._dense is None

    @property
    def factors(self):
        """``(left, right)`` with ``W = left @ right.T``, or ``(W, None)`` when dense."""
        if self._dense is not None:
            return self._dense, None
        return self._left, self._right

    @property
    def n_features_in_(self):
        """Voxels of the subject (scikit-learn's name for the input width)."""
        return self.shape[0]

    @property
    def n_components(self):
        """Dimensions of the common space."""
        return self.shape[1]

    def __array__(self, dtype=None, copy=None):
        out = self.matrix
        return out if dtype is None else out.astype(dtype)

    def __rmatmul__(self, X):
        """``X @ m`` applies the linear part only (no offsets, no per-voxel scale)."""
        return self._apply(np.asarray(X, dtype=np.float64)) * self.scale

    def _apply(self, X):
        if self._dense is not None:
            return X @ self._dense
        return (X @ self._left) @ self._right.T

    def _apply_t(self, Y):
        if self._dense is not None:
            return Y @ self._dense.T
        return (Y @ self._right) @ self._left.T

    # -- mapping -----------------------------------------------------------------
    def transform(self, X):
        """Map (n, n_voxels_source) data into the common space."""
        X = _as_2d(X, "X")
        if X.shape[1] != self.shape[0]:
            raise InputValidationError(
                f"X has {X.shape[1]} voxels but this map was fitted on {self.shape[0]}; pass "
                "data from the same voxels (same mask) as in fit."
            )
        X = X - self.source_mean
        if self.source_scale is not None:
            X *= self.source_scale
        out = self._apply(X)
        if self.scale != 1.0:
            out *= self.scale
        out += self.target_mean
        return out

    def inverse_transform(self, Y):
        """Map common-space data back into the subject's voxels (``W.T / scale``)."""
        Y = _as_2d(Y, "Y")
        if Y.shape[1] != self.shape[1]:
            raise InputValidationError(
                f"Y has {Y.shape[1]} columns but the common space of this map has {self.shape[1]}."
            )
        if self.scale == 0:
            raise InputValidationError(f"Cannot invert a {type(self).__name__} with scale 0.")
        X = self._apply_t(Y - self.target_mean) / self.scale
        if self.source_scale is not None:
            inv = np.divide(
                1.0,
                self.source_scale,
                out=np.zeros_like(self.source_scale),
                where=self.source_scale != 0,
            )
            X *= inv
        return X + self.source_mean

    def __repr__(self):
        kind = "factored" if self.is_factored else "dense"
        return (
            f"{type(self).__name__}(shape={self.shape}, rank={self.rank}, "
            f"scale={self.scale:.4g}, {kind})"
        )


class ProcrustesMap(LinearMap):
    """A fitted Procrustes transform ``y = scale * (x - source_mean) @ R + target_mean``.

    ``R`` (:attr:`rotation`) is orthogonal, or a partial isometry where the training data
    do not determine it; ``np.asarray(m)`` and :attr:`matrix` give ``scale * R``.
    """

    kind = "procrustes"


class RidgeMap(LinearMap):
    """A fitted ridge regression from a subject's voxels onto the common space.

    ``info["alpha"]`` is the penalty chosen by cross-validation, ``info["cv_error"]``
    the held-out squared error for every candidate.
    """

    kind = "ridge"

    def inverse_transform(self, Y):
        raise InputValidationError(
            "A ridge map is not an isometry and has no inverse; map data back with a "
            "Procrustes or SRM model (method='procrustes' or SharedResponseModel)."
        )


class SRMMap(LinearMap):
    """A shared response model basis ``W`` (orthonormal columns): ``y = (x - mean) @ W``;
    ``inverse_transform`` reconstructs ``y @ W.T + mean`` (BrainIAK's ``W S``)."""

    kind = "srm"


#: Map classes by their ``kind`` (the HDF5 files store it).
MAP_KINDS = {cls.kind: cls for cls in (LinearMap, ProcrustesMap, RidgeMap, SRMMap)}

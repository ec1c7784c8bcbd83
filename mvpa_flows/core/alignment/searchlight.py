"""Searchlight hyperalignment (Guntupalli et al., 2016): one sparse whole-brain map per subject.

``SearchlightHyperalignment`` has the contract of the ROI alignment estimators
(:class:`~mvpa_flows.core.alignment.hyperalignment.Hyperalignment`): ``fit`` on a list of
(n_samples, n_voxels) arrays, ``transform``, ``fit_subject`` returning a fitted map, and
``model_`` (a :class:`SearchlightModel`, an
:class:`~mvpa_flows.core.alignment.model.AlignmentModel` with sparse maps) for evaluation
(:func:`~mvpa_flows.core.alignment.bsc.between_subject_classification` with
``alignment=``), new subjects and files.

The algorithm is PyMVPA 2.6's ``SearchlightHyperalignment`` with its defaults:

1. **Centres.** Every mask voxel, or (``sparse_radius``) a greedy scatter: the last
   remaining voxel (mask order) becomes a centre and every voxel within
   ``sparse_radius`` of it is removed, until none is left (PyMVPA's
   ``scatter_neighborhoods(Sphere(sparse_radius), ..., deterministic=True)``; PyMVPA
   counts the radius in voxels, here it is in millimetres: ``sparse_radius = 3`` voxels
   of 3 mm is ``sparse_radius=9``).
2. **Spheres.** Every mask voxel within ``radius`` mm of a centre
   (:func:`mvpa_flows.core.searchlight.neighbourhoods.sphere_adjacency`, nilearn's
   definition; PyMVPA's ``Sphere(radius)`` in voxels is the same set on isotropic grids).
3. **Local hyperalignment.** In every sphere, PyMVPA's three-level Procrustes
   hyperalignment (:mod:`mvpa_flows.core.alignment.hyperalignment`) with the reference
   subject ``ref_ds`` (default 0): levels 1 and 2 build a local common space from the
   subjects not in ``exclude_from_model``, level 3 maps every subject onto it. Optional
   feature selection (``featsel``, PyMVPA's feature scores). ``method="ridge"`` (not in
   PyMVPA) fits level 3 by ridge regression instead of a rotation, each subject's
   penalty chosen by blocked cross-validation on the training samples.
4. **Aggregation.** Each subject's local (sphere x sphere) map ``scale * R`` is added into
   one sparse (n_voxels x n_voxels) matrix at (sphere voxels, the reference's sphere
   voxels); with ``combine_neighbormappers=False`` only the centre's column is kept.
   A subject's data map to the common space as ``X @ T`` (PyMVPA's
   ``StaticProjectionMapper``: no offsets, so inputs should be z-scored per voxel) and
   back as ``Y @ T.T`` (``compute_recon=True``).

How it is computed
------------------
Spheres of equal size are solved together: stacked arrays (subjects, spheres, samples,
voxels), one ``np.matmul``/``np.linalg.eigh`` call per step for the whole batch (the
polar factor from the eigendecomposition of ``M.T @ M``, the SVD only where that is
ill-conditioned, as :func:`mvpa_flows.core.alignment.procrustes.procrustes`). Batches
run on ``n_jobs`` threads with one BLAS thread each; memory is one batch per thread plus
the accumulators of the output.

The sums are exact: every local map is rounded to a fixed-point grid (a power of two
chosen from a bound on the map entries computed from the data before any sphere is
solved, about 2**-50 of the largest possible entry) and added as 64-bit integers.
Integer addition is associative, so the result does not depend on the order of the
spheres, on ``n_jobs``, or on how the centres are split into chunks: the chunks of
:meth:`SearchlightHyperalignment.fit_partial` merged by
:meth:`SearchlightHyperalignment.merge_partials` equal :meth:`~SearchlightHyperalignment.fit`
bit for bit, whichever jobs computed them.

Deviations from PyMVPA
----------------------
* PyMVPA casts every local map to ``dtype`` (float32) before adding it; here the sum is
  formed exactly and cast once (the float32 result is the correctly rounded sum).
* Under-determined local rotations (fewer samples than sphere voxels) are partial
  isometries (see :mod:`mvpa_flows.core.alignment.procrustes`).
* Z-scoring treats columns whose standard deviation is round-off of their mean as
  constant (as :func:`~mvpa_flows.core.alignment.procrustes.zscore_columns`).
* Additions: ``template_`` (the whole-brain common space: each voxel's mean over the
  local common spaces of the spheres that contain it, z-scored) for
  :meth:`~SearchlightHyperalignment.fit_subject`; ``common_space="mask"`` (one ROI
  hyperalignment of the whole mask as the common space, then only level 3 in the
  spheres); ``method="ridge"``; ``zscore_all`` and ``zscore_output``.
* PyMVPA's centre list for ``mask_node_ids`` follows the order given; ``centres`` here
  is taken in mask order (the same set when the ids are sorted).

HDF5 layouts (plain datasets and attributes; nothing pickled)
-------------------------------------------------------------
Per-subject transform (``*_xfm.h5``, :func:`save_transform`)::

    /data     (nnz,) float32|float64   CSR values of T (n_voxels x n_voxels)
    /indices  (nnz,) int32             column (common-space voxel) of each value
    /indptr   (n_voxels + 1,) int64    row (subject voxel) pointers
    /mask     (X, Y, Z) uint8          the analysis mask; voxels in np.where (C) order
    /affine   (4, 4)                   its voxel-to-world affine
    /zscore_mean, /zscore_std (n_voxels,)   optional: applied to data first
    attrs: format="mvpa_flows-searchlight-xfm", format_version, kind="sparse-csr",
           shape, nnz, zscore_output, and the parameters (JSON-encoded when not scalar)

``transform(X) = ((X - zscore_mean) / zscore_std) @ T`` (z-scored per voxel afterwards
when ``zscore_output``); ``inverse_transform(Y) = Y @ T.T`` (then un-z-scored).

Model (:meth:`SearchlightModel.save`; read by
:func:`mvpa_flows.core.alignment.model.load_model`, which also reads the ROI models)::

    /template     (n_samples, n_voxels) the common space over the training samples
    /subjects     (n_subjects,) subject labels (UTF-8)
    /mask, /affine, /centres (mask indices of the sphere centres), optional
    /centre_candidates (the ``centres`` parameter as mask indices)
    /maps/<i>/{data,indices,indptr}   subject i's CSR matrix; optional zscore_mean,
                  zscore_std; attrs kind="searchlight", info (JSON), zscore_output
    attrs: format="mvpa_flows-searchlight-model", format_version, method="searchlight",
           n_subjects, n_samples, n_components, params, info, metadata (JSON: task,
           space, training runs, ...), mvpa_flows_version

Chunk partial (:func:`save_partial`): the integer sums of one chunk,
``/pattern_indptr``, ``/pattern_indices`` (CSR pattern), ``/values`` (n_subjects, nnz)
int64 (map sums in units of ``2**-exponent``), ``/template_rows``, ``/template_values``
(int64 local-common-space sums of the voxels the chunk covers, units
``2**-template_exponent``), ``/counts`` (spheres per voxel), ``/centre_positions``
(positions in the centre list), ``/zscore_mean``, ``/zscore_std``, optional
``/template`` (``common_space="mask"``, chunk 0), ``/alpha`` and ``/cv_errors``
(ridge); attrs ``format="mvpa_flows-searchlight-partial"``, ``exponent``,
``template_exponent``, ``fingerprint`` (of the data and parameters), ``chunk``,
``n_centres``, ``n_samples``, ``params``.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from scipy import linalg, sparse
from sklearn.base import BaseEstimator, TransformerMixin
from threadpoolctl import threadpool_limits

from mvpa_flows.core._parallel import fit_blas_limits, resolve_n_jobs, thread_imap, thread_map
from mvpa_flows.core.alignment.model import (
    SEARCHLIGHT_MODEL_FORMAT,
    AlignmentModel,
    check_model_metadata,
)
from mvpa_flows.core.alignment.procrustes import UnderdeterminedRotationWarning
from mvpa_flows.core.alignment.ridge import DEFAULT_ALPHAS, check_alphas, contiguous_blocks
from mvpa_flows.core.errors import InputValidationError
from mvpa_flows.core.searchlight.neighbourhoods import sphere_adjacency

__all__ = [
    "SearchlightHyperalignment",
    "SearchlightModel",
    "SearchlightPartial",
    "SparseTransform",
    "load_partial",
    "load_transform",
    "read_searchlight_model",
    "save_partial",
    "save_transform",
    "scatter_centres",
]

FORMAT_TRANSFORM = "mvpa_flows-searchlight-xfm"
FORMAT_MODEL = SEARCHLIGHT_MODEL_FORMAT
FORMAT_PARTIAL = "mvpa_flows-searchlight-partial"
FORMAT_VERSION = "1.0"

# Same thresholds as the ROI Procrustes (procrustes._polar): up to _EIGH_MAX_COND the
# eigh route is exact as is, up to _EIGH_NS_COND two Newton-Schulz steps restore
# orthogonality, beyond (or rank-deficient) the SVD decides.
_EIGH_MAX_COND = 1e4
_EIGH_NS_COND = 1e6
_EPS = np.finfo(np.float64).eps
# Fixed-point sums: every accumulated entry stays below 2**_FIXED_BITS.
_FIXED_BITS = 61
# Working memory of one batch of spheres (per thread), in bytes.
_BATCH_BYTES = 96 * 2**20
_MAX_BATCH = 64


# ---------------------------------------------------------------------------------------
# Batched linear algebra
# ---------------------------------------------------------------------------------------
def _zscore(X):
    """Z-score the columns of stacked (..., n, v) arrays in place (``zscore_columns``)."""
    n = X.shape[-2]
    mean = X.mean(axis=-2, keepdims=True)
    X -= mean
    std = np.sqrt(np.einsum("...ij,...ij->...j", X, X) / max(n, 1))[..., None, :]
    const = std <= 100 * _EPS * np.abs(mean)
    inv = np.divide(1.0, std, out=np.zeros_like(std), where=(std > 0) & ~const)
    X *= inv
    return X


def _zscore_centred(X):
    """``_zscore`` for arrays whose columns are centred up to round-off: scale only."""
    n = X.shape[-2]
    ss = np.einsum("...ij,...ij->...j", X, X)[..., None, :]
    inv = np.divide(1.0, np.sqrt(ss / max(n, 1)), out=np.zeros_like(ss), where=ss > 0)
    X *= inv
    return X


def _polar(M, reflection=True):
    """Polar factors of stacked (B, m, k) matrices, m >= k.

    Returns ``(P, trace, rank)``: ``P = U @ Vt`` over the non-negligible singular values
    (a partial isometry when rank-deficient), the sum of the singular values and the
    rank, per matrix. The same branches as the ROI Procrustes, batched.
    """
    B, m, k = M.shape
    if m < k:
        P, tr, rank = _polar(np.swapaxes(M, 1, 2), reflection)
        return np.swapaxes(P, 1, 2), tr, rank
    S = np.matmul(np.swapaxes(M, 1, 2), M)
    lam, V = np.linalg.eigh(S)
    lam_max = lam[:, -1]
    if not np.all(np.isfinite(lam_max)):
        raise InputValidationError("Searchlight data contain NaN or infinite values.")
    tol = np.maximum(lam_max, 0.0) * max(m, k) * _EPS * 10
    full = lam[:, 0] > tol
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(lam_max > 0, lam[:, 0] / lam_max, 0.0)
    P = np.empty((B, m, k))
    trace = np.zeros(B)
    rank = np.full(B, k)
    s_min = np.zeros(B)
    u_min = np.zeros((B, m))
    v_min = np.zeros((B, k))
    easy = full & (ratio >= 1.0 / _EIGH_MAX_COND**2)
    newton = full & ~easy & (ratio >= 1.0 / _EIGH_NS_COND**2)
    hard = ~(easy | newton)
    if easy.any():
        lk, Vk, Mk = lam[easy], V[easy], M[easy]
        sig = np.sqrt(lk)
        W = Vk / np.sqrt(sig)[:, None, :]
        P[easy] = np.matmul(Mk, np.matmul(W, np.swapaxes(W, 1, 2)))
        trace[easy] = sig.sum(axis=1)
        if not reflection:
            s_min[easy] = sig[:, 0]
            v_min[easy] = Vk[:, :, 0]
            u_min[easy] = np.matmul(Mk, Vk[:, :, :1])[:, :, 0] / sig[:, :1]
    if newton.any():
        lk, Vk, Mk = lam[newton], V[newton], M[newton]
        sig = np.sqrt(lk)
        U = np.matmul(Mk, Vk) / sig[:, None, :]
        eye = np.eye(k)
        for _ in range(2):
            U = np.matmul(U, 1.5 * eye - 0.5 * np.matmul(np.swapaxes(U, 1, 2), U))
        P[newton] = np.matmul(U, np.swapaxes(Vk, 1, 2))
        trace[newton] = sig.sum(axis=1)
        s_min[newton], u_min[newton], v_min[newton] = sig[:, 0], U[:, :, 0], Vk[:, :, 0]
    hard_ids = np.flatnonzero(hard & (lam_max > 0))
    P[hard & ~(lam_max > 0)] = 0.0
    rank[hard & ~(lam_max > 0)] = 0
    svds = {}
    if hard_ids.size:
        try:
            U_all, s_all, Vt_all = np.linalg.svd(M[hard_ids], full_matrices=False)
            svds = {b: (U_all[j], s_all[j], Vt_all[j]) for j, b in enumerate(hard_ids)}
        except np.linalg.LinAlgError:
            svds = {}
    for b in hard_ids:
        if b in svds:
            U, s, Vt = svds[b]
        else:
            try:
                U, s, Vt = np.linalg.svd(M[b], full_matrices=False)  # gesdd
            except np.linalg.LinAlgError:
                U, s, Vt = linalg.svd(
                    M[b], full_matrices=False, check_finite=False, lapack_driver="gesvd"
                )
        keep = s > s[0] * max(m, k) * _EPS
        rank[b] = int(keep.sum())
        U, s, Vt = U[:, keep], s[keep], Vt[keep]
        P[b] = U @ Vt
        trace[b] = s.sum()
        s_min[b], u_min[b], v_min[b] = s[-1], U[:, -1], Vt[-1]
    if not reflection and m == k:
        flip = rank == k
        if flip.any():
            sign = np.linalg.slogdet(P[flip])[0]
            which = np.flatnonzero(flip)[sign < 0]
            if which.size:
                P[which] -= 2.0 * u_min[which][:, :, None] * v_min[which][:, None, :]
                trace[which] -= 2.0 * s_min[which]
    return P, trace, rank


class _Fit:
    """Batched Procrustes of centred sources (B, n, v) onto targets (B, n, w).

    ``centred_target``: the targets are known to be centred (every intermediate of the
    local hyperalignment is a combination of centred data), so their mean is not
    subtracted again; it is zero up to round-off, and the source is centred, so the
    cross-product is the same.
    """

    __slots__ = ("P", "scale", "rank")

    def __init__(self, A0, norm2, target, scaling, reflection, centred_target=True):
        if np.any(norm2 <= 0):
            raise InputValidationError(
                "A searchlight sphere has no voxel that varies over samples for one "
                "subject; Procrustes needs data that vary. Restrict the mask to voxels "
                "with signal in every subject."
            )
        if not centred_target:
            target = target - target.mean(axis=1, keepdims=True)
        M = np.matmul(np.swapaxes(A0, 1, 2), target)
        P, trace, rank = _polar(M, reflection)
        self.P = P
        self.scale = trace / norm2 if scaling else np.ones(len(P))
        self.rank = rank

    def maps(self):
        return self.P * self.scale[:, None, None]

    def project(self, A0):
        """``scale * A0 @ P`` (the target's mean, zero, is not added back)."""
        return np.matmul(A0, self.maps())


def _ridge_maps(A0, target, alpha):
    """Ridge maps ``(A0.T A0 + alpha I)^-1 A0.T T0`` of stacked centred sources."""
    T0 = target - target.mean(axis=1, keepdims=True)
    At = np.swapaxes(A0, 1, 2)
    n, v = A0.shape[1], A0.shape[2]
    if n >= v:
        G = np.matmul(At, A0)
        G[:, np.arange(v), np.arange(v)] += alpha
        return np.linalg.solve(G, np.matmul(At, T0))
    K = np.matmul(A0, At)  # kernel form: A0.T (A0 A0.T + alpha I)^-1 T0
    K[:, np.arange(n), np.arange(n)] += alpha
    return np.matmul(At, np.linalg.solve(K, T0))


def _mean(arrays):
    out = arrays[0].copy()
    for a in arrays[1:]:
        out += a
    out /= len(arrays)
    return out


def _local_common(A0, norm2, train, ref, p):
    """Levels 1 and 2 of PyMVPA's hyperalignment in stacked spheres.

    ``A0`` (S, B, n, v): centred data of every subject; ``train``: subjects building the
    common space, ``ref``: the level-1 reference (a subject index in ``train``).
    Means are dropped throughout (Procrustes centres its inputs and z-scoring centres
    its output, so they never reach the maps).
    """
    zc = p["zscore_common"]
    common = A0[ref].copy()
    if zc and not p["zscore_all"]:
        _zscore_centred(common)
    mapped = {i: A0[i] for i in train}
    counts = 1
    for i in train:
        if i == ref:
            continue
        proj = _Fit(A0[i], norm2[i], common, p["scaling"], p["reflection"]).project(A0[i])
        if zc:
            _zscore_centred(proj)
        mapped[i] = proj
        if p["level1_equal_weight"]:
            common = (counts * common + proj) / (counts + 1.0)
        else:
            common = 0.5 * (proj + common)
        counts += 1
        if zc:
            _zscore_centred(common)
    n_train = len(train)
    common = _mean([mapped[i] for i in train])
    for _ in range(p["level2_n_iter"]):
        new = {}
        for i in train:
            temp = (common * n_train - mapped[i]) / (n_train - 1)
            if zc:
                _zscore_centred(temp)
            proj = _Fit(A0[i], norm2[i], temp, p["scaling"], p["reflection"]).project(A0[i])
            if zc:
                _zscore_centred(proj)
            new[i] = proj
        mapped = new
        common = _mean([mapped[i] for i in train])
    if zc:
        _zscore_centred(common)
    return common


def _level3(A0, norm2, subjects, common, p, centred=True):
    """Local maps (S, B, v, w) of ``subjects`` onto ``common``, and the smallest rank of
    an under-determined rotation (None when every rotation is fully determined)."""
    maps = np.empty((len(subjects), A0.shape[1], A0.shape[3], common.shape[2]))
    full = min(A0.shape[3], common.shape[2])
    low = None
    for j, i in enumerate(subjects):
        if p["method"] == "ridge":
            maps[j] = _ridge_maps(A0[i], common, p["alpha"][i])
        else:
            fit = _Fit(A0[i], norm2[i], common, p["scaling"], p["reflection"], centred)
            maps[j] = fit.maps()
            r = int(fit.rank.min())
            if r < full:
                low = r if low is None else min(low, r)
    return maps, low


def _feature_scores(A0, train):
    """PyMVPA's ``compute_feature_scores`` on stacked spheres: (S, B, v)."""
    S = A0.shape[0]
    scores = np.zeros((S, A0.shape[1], A0.shape[3]))
    excluded = set(range(S)) - set(train)
    for i in range(S):
        for j in range(i + 1, S):
            corr = np.matmul(np.swapaxes(A0[i], 1, 2), A0[j])
            if j not in excluded:
                scores[i] += corr.max(axis=2)
            if i not in excluded:
                scores[j] += corr.max(axis=1)
    return scores


# ---------------------------------------------------------------------------------------
# Centres and the plan
# ---------------------------------------------------------------------------------------
def scatter_centres(mask, affine, sparse_radius, candidates=None):
    """PyMVPA's deterministic sparse centres, as mask voxel indices (sorted).

    Going from the last candidate voxel (mask order) to the first, a voxel becomes a
    centre unless it lies within ``sparse_radius`` mm of an earlier centre.

    Parameters
    ----------
    mask : ndarray (X, Y, Z) bool
    affine : ndarray (4, 4)
    sparse_radius : float
        Minimum distance (mm, exclusive) between centres.
    candidates : ndarray of int, optional
        Mask voxel indices allowed as centres (default: all).
    """
    mask = np.asarray(mask, bool)
    n_vox = int(mask.sum())
    cand_mask = mask
    if candidates is not None:
        cand_mask = np.zeros(mask.shape, bool)
        coords = np.stack(np.where(mask), axis=1)[np.asarray(candidates)]
        cand_mask[tuple(coords.T)] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        adj = sphere_adjacency(cand_mask, affine, sparse_radius)
    n_cand = adj.shape[0]
    removed = np.zeros(n_cand, bool)
    seeds = []
    indptr, indices = adj.indptr, adj.indices
    for i in range(n_cand - 1, -1, -1):
        if removed[i]:
            continue
        seeds.append(i)
        removed[indices[indptr[i] : indptr[i + 1]]] = True
    seeds = np.array(sorted(seeds), dtype=np.int64)
    if candidates is None:
        return seeds
    cand_sorted = np.flatnonzero(
        np.isin(np.arange(n_vox), np.asarray(candidates)),
    )
    return cand_sorted[seeds]


def _load_mask(mask_img, name="mask_img"):
    """(mask bool 3-D, affine) from an image, a path or a list of them (one per subject)."""
    import nibabel as nib

    def _one(img, label):
        if isinstance(img, (str, os.PathLike)):
            if not Path(img).exists():
                raise InputValidationError(f"Parameter '{label}': no file at {img}.")
            img = nib.load(img)
        if not hasattr(img, "get_fdata") or not hasattr(img, "affine"):
            raise InputValidationError(
                f"Parameter '{label}' must be a 3-D NIfTI image or a path to one; got "
                f"{type(img).__name__}."
            )
        data = np.asanyarray(img.dataobj)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise InputValidationError(
                f"Parameter '{label}' must be a 3-D mask; got shape {data.shape}."
            )
        mask = data != 0
        if not mask.any():
            raise InputValidationError(f"Parameter '{label}' selects no voxel.")
        return mask, np.asarray(img.affine, dtype=float)

    if isinstance(mask_img, (list, tuple)):
        if not mask_img:
            raise InputValidationError(f"Parameter '{name}' is an empty list.")
        masks = [_one(m, f"{name}[{i}]") for i, m in enumerate(mask_img)]
        mask0, aff0 = masks[0]
        for i, (m, a) in enumerate(masks[1:], start=1):
            if m.shape != mask0.shape or not np.allclose(a, aff0, atol=1e-5):
                raise InputValidationError(
                    f"The masks of subject 0 and subject {i} are on different grids "
                    f"(shapes {mask0.shape} and {m.shape}); searchlight hyperalignment "
                    "needs every subject in one space. Resample the data and masks to one "
                    "template grid (fMRIPrep --output-spaces) first."
                )
        inter = np.logical_and.reduce([m for m, _ in masks])
        differ = [i for i, (m, _) in enumerate(masks) if not np.array_equal(m, mask0)]
        if differ:
            sizes = [int(m.sum()) for m, _ in masks]
            raise InputValidationError(
                f"The subjects' masks differ (voxels per subject: {sizes}; subject(s) "
                f"{differ} differ from subject 0); spheres must hold the same voxels in "
                f"every subject. Their intersection has {int(inter.sum())} voxels: pass it "
                "as mask_img (nilearn.masking.intersect_masks(masks, threshold=1)) and "
                "extract every subject's data with it."
            )
        return mask0, aff0
    return _one(mask_img, name)


def _as_index_array(centres, mask, affine, name="centres"):
    """Centre candidates (mask voxel indices) from an array of indices or a 3-D mask."""
    n_vox = int(mask.sum())
    if hasattr(centres, "get_fdata") or isinstance(centres, (str, os.PathLike)):
        cm, caff = _load_mask(centres, name)
        if cm.shape != mask.shape or not np.allclose(caff, affine, atol=1e-5):
            raise InputValidationError(
                f"Parameter '{name}' must be on the grid of mask_img {mask.shape}; got "
                f"shape {cm.shape}. Resample it to the mask."
            )
        centres = cm
    c = np.asarray(centres)
    if c.ndim == 3:
        if c.shape != mask.shape:
            raise InputValidationError(
                f"Parameter '{name}' (a 3-D mask) must have the mask's shape {mask.shape}; "
                f"got {c.shape}."
            )
        c = c != 0
        outside = int((c & ~mask).sum())
        if outside:
            warnings.warn(
                f"'{name}' has {outside} voxel(s) outside mask_img; they are dropped.",
                UserWarning,
                stacklevel=3,
            )
        idx = np.flatnonzero(c[mask])
    else:
        if c.ndim != 1 or (c.size and not np.issubdtype(c.dtype, np.integer)):
            raise InputValidationError(
                f"Parameter '{name}' must be a 3-D mask or a 1-D array of mask voxel "
                f"indices; got an array of shape {c.shape} and dtype {c.dtype}."
            )
        if c.size and (c.min() < 0 or c.max() >= n_vox):
            raise InputValidationError(
                f"Parameter '{name}' has indices outside [0, {n_vox - 1}] (the mask has "
                f"{n_vox} voxels)."
            )
        idx = np.unique(c.astype(np.int64))
    if idx.size == 0:
        raise InputValidationError(f"Parameter '{name}' selects no voxel of mask_img.")
    return idx


class _Plan:
    """Centres, spheres and the coverage of a searchlight on one mask (no data)."""

    def __init__(self, mask, affine, radius, sparse_radius, centres, combine):
        self.mask = mask
        self.affine = affine
        self.n_voxels = int(mask.sum())
        cand = None if centres is None else _as_index_array(centres, mask, affine)
        if sparse_radius is not None:
            cent = scatter_centres(mask, affine, sparse_radius, cand)
        else:
            cent = np.arange(self.n_voxels) if cand is None else cand
        self.centres = np.asarray(cent, dtype=np.int64)
        proc = np.zeros(mask.shape, bool)
        coords = np.stack(np.where(mask), axis=1)[self.centres]
        proc[tuple(coords.T)] = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            adj = sphere_adjacency(mask, affine, radius, process_mask=proc)
        self.adjacency = adj
        self.sizes = np.diff(adj.indptr)
        if self.sizes.max() < 2:
            spacing = np.linalg.norm(affine[:3, :3], axis=0)
            raise InputValidationError(
                f"Parameter 'radius' ({radius} mm) gives spheres of a single voxel on this "
                f"grid (voxel size {', '.join(f'{v:.3g}' for v in spacing)} mm); local "
                "hyperalignment needs at least 2 voxels per sphere. Pass a radius of at "
                f"least {spacing.min():.3g} mm (PyMVPA's default is 3 voxels)."
            )
        if combine:
            cover = np.bincount(adj.indices, minlength=self.n_voxels)
            self.n_cover = int(cover.max())
        else:
            self.n_cover = 1
        self.max_size = int(self.sizes.max())

    def chunk(self, chunk, n_chunks):
        return np.array_split(np.arange(len(self.centres)), n_chunks)[chunk]

    def spheres(self, positions):
        ip, ind = self.adjacency.indptr, self.adjacency.indices
        return [ind[ip[i] : ip[i + 1]] for i in positions]


# ---------------------------------------------------------------------------------------
# Fixed-point accumulators
# ---------------------------------------------------------------------------------------
def _exponent(bound):
    """Largest power-of-two scale keeping ``bound * 2**e`` below 2**_FIXED_BITS."""
    if not np.isfinite(bound) or bound <= 0:
        bound = 1.0
    e = int(np.floor(_FIXED_BITS - np.log2(bound))) - 1
    return int(np.clip(e, -1000, 1000))


def _to_fixed(values, exponent, limit):
    scaled = np.ldexp(values, exponent)
    if np.abs(scaled).max(initial=0.0) >= limit:
        raise InputValidationError(
            "A local map has entries far above the bound expected from the data (ridge "
            "without a penalty on nearly collinear sphere data?). Use alpha > 0."
        )
    return np.rint(scaled).astype(np.int64)


class _Accumulator:
    """Integer sums of local maps on the CSR pattern of a set of spheres."""

    def __init__(self, plan, positions, n_subjects, n_samples, combine, with_template):
        V = plan.n_voxels
        spheres = plan.spheres(positions)
        if combine:
            rows = sparse.csr_matrix(
                (
                    np.ones(sum(len(s) for s in spheres), np.float32),
                    np.concatenate(spheres),
                    np.r_[0, np.cumsum([len(s) for s in spheres])],
                ),
                shape=(len(spheres), V),
            )
            pattern = (rows.T @ rows).tocsr()
        else:
            r = np.concatenate(spheres)
            c = np.repeat(plan.centres[positions], [len(s) for s in spheres])
            pattern = sparse.csr_matrix(
                (np.ones(len(r), np.float32), (r, c)), shape=(V, V)
            ).tocsr()
        pattern.sum_duplicates()
        pattern.sort_indices()
        self.indptr = pattern.indptr.astype(np.int64)
        self.indices = pattern.indices.astype(np.int32)
        nnz = len(self.indices)
        self.keys = (
            np.repeat(np.arange(V, dtype=np.int64), np.diff(self.indptr)) * V + self.indices
        )
        self.values = np.zeros((n_subjects, nnz), np.int64)
        self.V = V
        self.counts = np.zeros(V, np.int64)
        self.template = np.zeros((V, n_samples), np.int64) if with_template else None
        self.lock = threading.Lock()

    def positions(self, rows, cols):
        keys = (rows.astype(np.int64)[:, None] * self.V + cols[None, :]).ravel()
        return np.searchsorted(self.keys, keys)

    def add(self, positions, fixed_maps, per_subject, template_cols=None, template_fixed=None):
        """Add fixed-point maps (S, B, v, w); ``positions[b]`` (shared by the subjects) or,
        with ``per_subject``, ``positions[k][b]``: their places in ``values``."""
        with self.lock:
            for k in range(fixed_maps.shape[0]):
                for b in range(fixed_maps.shape[1]):
                    pos = positions[k][b] if per_subject else positions[b]
                    self.values[k, pos] += fixed_maps[k, b].ravel()
            if template_fixed is not None:
                for b, cols in enumerate(template_cols):
                    self.template[cols] += template_fixed[b]
                    self.counts[cols] += 1


# ---------------------------------------------------------------------------------------
# Public objects
# ---------------------------------------------------------------------------------------
class SparseTransform:
    """One subject's searchlight transform: ``X @ matrix`` into the common space.

    The public surface of the ROI alignment maps (``transform``, ``inverse_transform``,
    ``shape``, ``n_features_in_``, ``n_components``, ``kind``, ``params``, ``info``)
    with a sparse linear part and no offsets (PyMVPA's ``StaticProjectionMapper``).

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix (n_voxels, n_voxels)
        Rows: the subject's voxels; columns: common-space voxels (both in mask order).
    zscore_params : tuple of ndarray or None
        Per-voxel (mean, std) applied to the data first (``zscore_all``).
    zscore_output : bool
        Z-score every output voxel over samples (over the rows of ``X``).
    params, info : dict
        The fit's parameters and details (e.g. the ridge penalty).
    """

    kind = "searchlight"

    def __init__(self, matrix, zscore_params=None, zscore_output=False, params=None, info=None):
        self.matrix = sparse.csr_matrix(matrix)
        self.zscore_params = zscore_params
        self.zscore_output = bool(zscore_output)
        self.shape = self.matrix.shape
        self.params = dict(params or {})
        self.info = dict(info or {})

    @property
    def n_features_in_(self):
        """Voxels of the subject."""
        return self.shape[0]

    @property
    def n_components(self):
        """Dimensions (voxels) of the common space."""
        return self.shape[1]

    def _check(self, X, n, name):
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != n:
            raise InputValidationError(
                f"`{name}` must be (n_samples, {n}) (one column per mask voxel, in the "
                f"mask's order); got shape {X.shape}."
            )
        return X.astype(np.float64, copy=False)

    def transform(self, X, name="X"):
        X = self._check(X, self.shape[0], name)
        if self.zscore_params is not None:
            mean, std = self.zscore_params
            X = (X - mean) / np.where(std > 0, std, 1.0)
        Y = np.asarray(X @ self.matrix, dtype=np.float64)
        if self.zscore_output:
            _zscore(Y)
        return Y

    def inverse_transform(self, Y, name="Y"):
        """``Y @ matrix.T`` (PyMVPA's ``recon``), then the input z-scoring undone."""
        Y = self._check(Y, self.shape[1], name)
        X = np.asarray(Y @ self.matrix.T, dtype=np.float64)
        if self.zscore_params is not None:
            mean, std = self.zscore_params
            X = X * np.where(std > 0, std, 1.0) + mean
        return X

    def __repr__(self):
        return f"SparseTransform(shape={self.shape}, nnz={self.matrix.nnz})"


class SearchlightPartial:
    """Integer sums of the local maps of one chunk of centres (see ``fit_partial``).

    Attributes mirror the HDF5 layout of :func:`save_partial`: ``values`` (one int64
    array per subject, on the CSR pattern ``pattern_indptr``/``pattern_indices``),
    ``exponent``, ``template_values``/``template_rows``/``template_exponent``,
    ``counts``, ``centre_positions``, ``chunk``, ``n_centres``, ``fingerprint``,
    ``params``, ``alpha``, ``cv_errors``, ``template``, ``zscore_mean``, ``zscore_std``.
    """

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __repr__(self):
        return (
            f"SearchlightPartial(chunk={self.chunk}, centres={len(self.centre_positions)}"
            f"/{self.n_centres}, subjects={len(self.values)}, nnz={len(self.pattern_indices)})"
        )


_HA_KEYS = ("level2_n_iter", "zscore_all", "zscore_common", "level1_equal_weight")


class SearchlightHyperalignment(TransformerMixin, BaseEstimator):
    """Searchlight hyperalignment into one common space (PyMVPA's algorithm, batched).

    Parameters
    ----------
    mask_img : Niimg-like or path, or a list of them (one per subject)
        The analysis mask; every subject's data are its voxels in ``np.where`` (C) order
        (nilearn's ``apply_mask``). A list must hold identical masks (if they differ the
        error gives the size of their intersection).
    radius : float
        Sphere radius in mm (nilearn's sphere: voxel centres within ``radius``).
    sparse_radius : float or None, default None
        Minimum distance in mm between sphere centres (PyMVPA's ``sparse_radius`` times
        the voxel size); None: a sphere at every voxel (of ``centres``).
    method : {"procrustes", "ridge"}, default "procrustes"
        Level-3 maps: scaled rotations, or ridge regression onto the local common space.
    alphas : sequence of float or None, default None
        Ridge penalties (``method="ridge"``); None: ``DEFAULT_ALPHAS`` (0.1 to 1e6). With
        several, each subject's penalty is chosen inside ``fit`` from the training data
        alone: ``cv_blocks`` contiguous blocks of samples, the penalty whose maps best
        predict the held-out blocks of the local common spaces (squared error summed over
        up to 256 evenly spaced spheres); stored in ``alpha_``. A single 0 (no penalty)
        needs more training samples than voxels in every sphere.
    cv_blocks : int, default 5
        Contiguous blocks of training samples for choosing the penalty (at least 3).
    centres : array of int, 3-D mask or image, optional
        Candidate centres (mask voxel indices or a mask on the grid; PyMVPA's
        ``mask_node_ids``). Spheres still draw on every mask voxel.
    common_space : {"searchlight", "mask"}, default "searchlight"
        ``searchlight``: levels 1-2 of hyperalignment in every sphere (PyMVPA).
        ``mask``: one ROI hyperalignment of the whole mask gives the common space
        (``template_``); every sphere then fits level 3 only (faster).
    ref_ds : int, default 0
        Reference subject of level 1 and of the common-space voxels.
    featsel : float or int, default 1.0
        PyMVPA's feature selection in every sphere: 1.0 none; a fraction < 1 keeps that
        share of the voxels with the highest scores; an integer >= 2 at most that many.
    use_same_features : bool, default False
        Select the same voxels for every subject (mean scores).
    exclude_from_model : sequence of int, default ()
        Subjects that get maps but do not shape the common space (nor the scores).
    combine_neighbormappers : bool, default True
        Sum every sphere's whole map (True) or only the column of its centre voxel.
    level2_n_iter, zscore_common, level1_equal_weight, scaling, reflection
        Local hyperalignment, as :class:`mvpa_flows.hyperalignment.Hyperalignment`
        (PyMVPA's defaults: 1, True, False, True, True).
    zscore_all : bool, default False
        Z-score every voxel of every subject first (the training mean and std are reused
        by ``transform``). PyMVPA expects z-scored input; a warning says when the data
        are not.
    zscore_output : bool, default False
        Z-score every voxel of the mapped data (``transform``).
    dtype : {"float32", "float64"}, default "float32"
        Values of the sparse transforms (PyMVPA's default float32).
    n_jobs : int, default 1
        Threads over batches of spheres (one BLAS thread each); the result does not
        depend on it.

    Attributes
    ----------
    model_ : SearchlightModel
        The fitted model (template, maps, parameters, fit details): what evaluation, new
        subjects and files use (``model_.save(path)``; ``load_model(path)``).
    transforms_ : list of SparseTransform
        One sparse (n_voxels x n_voxels) transform per subject.
    template_ : ndarray (n_samples, n_voxels)
        The common space (see the module notes).
    centres_ : ndarray of int
        Mask voxel indices of the sphere centres.
    sphere_sizes_ : ndarray of int
    alpha_ : ndarray (n_subjects,)
        Ridge penalty of every subject (``method="ridge"``).
    cv_errors_ : ndarray (n_subjects, n_alphas) or None
        Held-out squared errors of the candidate penalties (``method="ridge"``).
    n_subjects_, n_features_in_, n_samples_ : int
    mask_, affine_ : the mask (3-D bool) and its affine.

    Examples
    --------
    >>> sl = SearchlightHyperalignment(mask_img, radius=9.0, sparse_radius=9.0)  # doctest: +SKIP
    >>> common = sl.fit(train_runs).transform(test_runs)  # doctest: +SKIP
    >>> parts = [sl.fit_partial(train_runs, k, 10) for k in range(10)]  # doctest: +SKIP
    >>> sl.merge_partials(parts)  # the same model, bit for bit  # doctest: +SKIP
    """

    def __init__(
        self,
        mask_img,
        radius,
        sparse_radius=None,
        method="procrustes",
        alphas=None,
        cv_blocks=5,
        centres=None,
        common_space="searchlight",
        ref_ds=0,
        featsel=1.0,
        use_same_features=False,
        exclude_from_model=(),
        combine_neighbormappers=True,
        level2_n_iter=1,
        zscore_all=False,
        zscore_common=True,
        level1_equal_weight=False,
        scaling=True,
        reflection=True,
        zscore_output=False,
        dtype="float32",
        n_jobs=1,
    ):
        self.mask_img = mask_img
        self.radius = radius
        self.sparse_radius = sparse_radius
        self.method = method
        self.alphas = alphas
        self.cv_blocks = cv_blocks
        self.centres = centres
        self.common_space = common_space
        self.ref_ds = ref_ds
        self.featsel = featsel
        self.use_same_features = use_same_features
        self.exclude_from_model = exclude_from_model
        self.combine_neighbormappers = combine_neighbormappers
        self.level2_n_iter = level2_n_iter
        self.zscore_all = zscore_all
        self.zscore_common = zscore_common
        self.level1_equal_weight = level1_equal_weight
        self.scaling = scaling
        self.reflection = reflection
        self.zscore_output = zscore_output
        self.dtype = dtype
        self.n_jobs = n_jobs

    # -- validation ---------------------------------------------------------------------
    def _params(self):
        """Checked parameters (a dict), before any data are touched."""

        def _number(value, name, low, low_open=False, allow_none=False, fix=""):
            if value is None and allow_none:
                return None
            ok = (
                isinstance(value, numbers.Real)
                and not isinstance(value, bool)
                and np.isfinite(value)
                and (value > low if low_open else value >= low)
            )
            if not ok:
                op = ">" if low_open else ">="
                raise InputValidationError(
                    f"Parameter '{name}' must be a finite number {op} {low:g}"
                    f"{' or None' if allow_none else ''}; got {value!r}.{fix}"
                )
            return float(value)

        p = {
            "radius": _number(self.radius, "radius", 0, True, fix=" Pass e.g. radius=9 (mm)."),
            "sparse_radius": _number(self.sparse_radius, "sparse_radius", 0, True, True),
        }
        # the ROI ridge alignment's grid and checks; a single 0 (no penalty) is allowed
        single = np.atleast_1d(np.asarray(DEFAULT_ALPHAS if self.alphas is None else self.alphas))
        if single.shape == (1,) and isinstance(single[0], numbers.Real) and single[0] == 0:
            p["alphas"] = (0.0,)
        else:
            p["alphas"] = tuple(float(a) for a in check_alphas(self.alphas))
        p["alpha"] = None
        p["cv_blocks"] = self.cv_blocks
        for key, options in (
            ("method", ("procrustes", "ridge")),
            ("common_space", ("searchlight", "mask")),
            ("dtype", ("float32", "float64")),
        ):
            value = getattr(self, key)
            value = np.dtype(value).name if key == "dtype" and _is_dtype(value) else value
            if value not in options:
                raise InputValidationError(
                    f"Parameter '{key}' must be one of {list(options)}; got {value!r}."
                )
            p[key] = value
        for key in (
            "use_same_features",
            "combine_neighbormappers",
            "zscore_all",
            "zscore_common",
            "level1_equal_weight",
            "scaling",
            "reflection",
            "zscore_output",
        ):
            value = getattr(self, key)
            if not isinstance(value, (bool, np.bool_)):
                raise InputValidationError(
                    f"Parameter '{key}' must be True or False; got {value!r}."
                )
            p[key] = bool(value)
        n_iter = self.level2_n_iter
        if not isinstance(n_iter, numbers.Integral) or isinstance(n_iter, bool) or n_iter < 0:
            raise InputValidationError(
                f"Parameter 'level2_n_iter' must be a non-negative integer; got {n_iter!r}."
            )
        p["level2_n_iter"] = int(n_iter)
        fs = self.featsel
        ok = isinstance(fs, numbers.Real) and not isinstance(fs, bool)
        if ok and isinstance(fs, numbers.Integral):
            ok = fs == 1 or fs >= 2
        elif ok:
            ok = 0 < fs <= 1
        if not ok:
            raise InputValidationError(
                "Parameter 'featsel' must be a fraction in (0, 1] (share of sphere voxels "
                f"kept) or an integer >= 2 (voxels kept); got {fs!r}."
            )
        p["featsel"] = fs
        ref = self.ref_ds
        if not isinstance(ref, numbers.Integral) or isinstance(ref, bool) or ref < 0:
            raise InputValidationError(
                f"Parameter 'ref_ds' must be a subject index >= 0; got {ref!r}."
            )
        p["ref_ds"] = int(ref)
        excl = self.exclude_from_model
        if excl is None:
            excl = ()
        try:
            excl = sorted({int(i) for i in excl})
        except (TypeError, ValueError):
            raise InputValidationError(
                "Parameter 'exclude_from_model' must be a sequence of subject indices; got "
                f"{self.exclude_from_model!r}."
            ) from None
        if p["ref_ds"] in excl:
            raise InputValidationError(
                f"Parameter 'ref_ds' ({p['ref_ds']}) is also in 'exclude_from_model' "
                f"{excl}; the reference subject must build the common space."
            )
        p["exclude_from_model"] = excl
        try:
            p["n_jobs"] = resolve_n_jobs(self.n_jobs)
        except ValueError as exc:
            raise InputValidationError(str(exc)) from None
        if p["common_space"] == "mask" and p["featsel"] != 1:
            raise InputValidationError(
                "Parameter 'featsel' applies to common_space='searchlight' only (feature "
                "selection inside each sphere's hyperalignment); pass featsel=1.0."
            )
        if p["method"] == "ridge" and p["featsel"] != 1:
            raise InputValidationError(
                "Parameter 'featsel' applies to method='procrustes' only (PyMVPA's feature "
                "selection before local rotations; ridge maps weight the voxels "
                "themselves); pass featsel=1.0."
            )
        return p

    def check_inputs(self, n_samples, n_voxels=None, n_subjects=None):
        """Refuse, before any data are read, what the data's shape cannot support.

        Checks the parameters, the mask and its spheres (a radius that gives
        single-voxel spheres), the voxel count against the mask, the ridge blocks and
        ridge without a penalty on fewer samples than sphere voxels.

        Parameters
        ----------
        n_samples : int
            Training samples (time points) per subject.
        n_voxels : int or list of int, optional
            Voxels per subject (must be the mask's voxel count).
        n_subjects : int, optional

        Returns
        -------
        self
        """
        p = self._params()
        self._check_plan(p, self._plan(p), int(n_samples), n_voxels, n_subjects)
        return self

    def _plan(self, p):
        mask, affine = _load_mask(self.mask_img)
        return _Plan(
            mask,
            affine,
            p["radius"],
            p["sparse_radius"],
            self.centres,
            p["combine_neighbormappers"],
        )

    def _check_plan(self, p, plan, n, n_voxels=None, S=None):
        if n_voxels is not None:
            counts = [int(n_voxels)] if np.ndim(n_voxels) == 0 else [int(v) for v in n_voxels]
            wrong = sorted({v for v in counts if v != plan.n_voxels})
            if wrong:
                raise InputValidationError(
                    f"The subjects' data have {wrong} voxels but mask_img has "
                    f"{plan.n_voxels}; every subject's data must be the mask's voxels in its "
                    "order (nilearn apply_mask / NiftiMasker with this mask). If the "
                    "subjects' masks differ, use their intersection as mask_img."
                )
        if S is not None:
            if p["ref_ds"] >= S:
                raise InputValidationError(
                    f"Parameter 'ref_ds' ({p['ref_ds']}) is not a subject index; there are "
                    f"{S} subjects."
                )
            bad = [i for i in p["exclude_from_model"] if i >= S]
            if bad:
                raise InputValidationError(
                    f"Parameter 'exclude_from_model' has indices {bad} beyond the {S} subjects."
                )
            n_train = S - len(p["exclude_from_model"])
            if n_train < 2:
                raise InputValidationError(
                    f"Searchlight hyperalignment needs at least 2 subjects to build the "
                    f"common space; got {n_train} (of {S}, excluding "
                    f"{p['exclude_from_model']})."
                )
        if p["method"] == "ridge" and len(p["alphas"]) > 1:
            contiguous_blocks(n, p["cv_blocks"])
        if p["method"] == "ridge" and p["alphas"] == (0.0,) and n - 1 < plan.max_size:
            raise InputValidationError(
                f"Ridge without a penalty (alphas=[0], alpha=0) needs more training samples "
                f"than voxels in every sphere: the largest sphere has {plan.max_size} voxels "
                f"and there are {n} samples ({n - 1} degrees of freedom after centring). Pass "
                "penalties > 0 (alphas=None for the default grid), a smaller radius, or more "
                "training samples."
            )

    def _setup(self, datasets, p):
        """Checks every input against the plan; returns (plan, datasets, stats)."""
        plan = self._plan(p)
        datasets = _check_datasets(datasets, plan.n_voxels)
        self._check_plan(p, plan, datasets[0].shape[0], S=len(datasets))
        stats = _data_stats(datasets, p["zscore_all"])
        _check_constant_spheres(plan, stats)
        return plan, datasets, stats

    # -- fitting -------------------------------------------------------------------------
    def fit(self, datasets, y=None):
        """Fit on a list of (n_samples, n_voxels) arrays, one per subject, in mask order."""
        return self._merge([self.fit_partial(datasets)], consume=True)

    def fit_partial(self, datasets, chunk=0, n_chunks=1):
        """The integer sums of the local maps of one chunk of centres.

        The centres (mask order, as ``centres_``) are split into ``n_chunks`` contiguous,
        near-equal ranges (``numpy.array_split``); this computes chunk ``chunk``
        (0-based). Every chunk reads all the data (spheres draw on every voxel) and
        repeats the cheap global steps (centres, bounds, the ridge penalties, the
        ``common_space="mask"`` template). :meth:`merge_partials` on the partials
        of every chunk equals :meth:`fit` bit for bit, however the centres were split.
        Partials can be written with :func:`save_partial` (one cluster job each).
        """
        p = self._params()
        ok = (
            isinstance(n_chunks, numbers.Integral)
            and not isinstance(n_chunks, bool)
            and n_chunks >= 1
            and isinstance(chunk, numbers.Integral)
            and not isinstance(chunk, bool)
            and 0 <= chunk < n_chunks
        )
        if not ok:
            raise InputValidationError(
                f"Parameters 'chunk' and 'n_chunks' must be integers with 0 <= chunk < "
                f"n_chunks; got chunk={chunk!r}, n_chunks={n_chunks!r}."
            )
        plan, datasets, stats = self._setup(datasets, p)
        if n_chunks > len(plan.centres):
            raise InputValidationError(
                f"Parameter 'n_chunks' ({n_chunks}) exceeds the number of sphere centres "
                f"({len(plan.centres)}); use at most that many chunks."
            )
        positions = plan.chunk(chunk, n_chunks)
        # BLAS threads x n_jobs never exceed the free cores (the sphere batches below run
        # with one BLAS thread each; this bounds the whole-mask steps)
        with fit_blas_limits(p["n_jobs"]):
            return self._fit_chunk(plan, datasets, stats, p, positions, chunk, n_chunks)

    def _fit_chunk(self, plan, datasets, stats, p, positions, chunk, n_chunks):
        S, n = len(datasets), datasets[0].shape[0]
        template = None
        if p["common_space"] == "mask":
            template = _mask_template(datasets, stats, p)
        cv_errors = None
        if p["method"] == "ridge":
            if len(p["alphas"]) > 1:
                p["alpha"], cv_errors = _choose_alpha(plan, datasets, stats, p, template)
            else:
                p["alpha"] = np.full(S, p["alphas"][0])
        e_map, e_tpl, cbound = _exponents(plan, stats, p, n, template)
        acc = _Accumulator(
            plan,
            positions,
            S,
            n,
            p["combine_neighbormappers"],
            with_template=p["common_space"] == "searchlight",
        )
        min_rank = _run(
            plan, positions, datasets, stats, p, acc, e_map, e_tpl, template, list(range(S))
        )
        if min_rank is not None:
            warnings.warn(
                "Some local Procrustes rotations are determined only on the span of the "
                f"training data (rank {min_rank} in a sphere of up to {plan.max_size} "
                f"voxels, {n} samples; fewer samples than voxels, constant voxels or "
                "collinear data): components of new data outside that span are discarded. "
                "Use more samples than voxels per sphere (or a smaller radius) for full "
                "rotations.",
                UnderdeterminedRotationWarning,
                stacklevel=2,
            )
        return SearchlightPartial(
            chunk=(int(chunk), int(n_chunks)),
            n_centres=len(plan.centres),
            centre_positions=positions,
            pattern_indptr=acc.indptr,
            pattern_indices=acc.indices,
            values=list(acc.values),
            template_rows=None,
            template_values=acc.template,
            counts=acc.counts,
            exponent=e_map,
            template_exponent=e_tpl,
            template=template if chunk == 0 else None,
            zscore_mean=stats["zmean"],
            zscore_std=stats["zstd"],
            n_samples=n,
            fingerprint=_fingerprint(stats, p, plan),
            params=_json_params(self, p),
            alpha=p["alpha"],
            cv_errors=cv_errors,
        )

    def merge_partials(self, partials, consume=False):
        """Sum the partials of every chunk (any order) into the fitted model; returns self.

        Parameters
        ----------
        partials : list of partial fits
            One per chunk of one split (:meth:`fit_partial`, :func:`load_partial`).
        consume : bool, default False
            Release each partial's summed values as soon as they are added, so that the
            merge holds one subject's sums at a time instead of every chunk's (the
            partials are then spent: merging them again is refused).
        """
        partials = list(partials)
        if any(v is None for q in partials for v in q.values):
            raise InputValidationError(
                "These partials were already merged with consume=True (their values were "
                "released); load them again with load_partial to merge them once more."
            )
        return self._merge(partials, consume=bool(consume))

    def _merge(self, partials, consume):
        p = self._params()
        if not partials:
            raise InputValidationError("`partials` is empty; pass one partial per chunk.")
        first = partials[0]
        for q in partials[1:]:
            if q.fingerprint != first.fingerprint:
                raise InputValidationError(
                    f"Partial of chunk {q.chunk} was computed on other data or parameters "
                    f"than chunk {first.chunk}; recompute every chunk with the same inputs."
                )
        if first.params != _json_params(self, p):
            raise InputValidationError(
                "The partials were computed with other parameters than this estimator's "
                f"({first.params}); merge them with the estimator that computed them."
            )
        covered = np.concatenate([q.centre_positions for q in partials])
        if len(covered) != first.n_centres or len(np.unique(covered)) != len(covered):
            missing = np.setdiff1d(np.arange(first.n_centres), covered)
            raise InputValidationError(
                f"The partials cover {len(np.unique(covered))} of {first.n_centres} centres "
                f"({len(covered) - len(np.unique(covered))} twice; first missing: "
                f"{missing[:5].tolist()}). Pass every chunk of one split exactly once."
            )
        mask, affine = _load_mask(self.mask_img)
        V = int(mask.sum())
        S = len(first.values)
        dtype = np.dtype(p["dtype"])
        pjson = json.loads(first.params)
        indices = indptr = None
        transforms = []
        for k in range(S):
            # exact integer sums (scipy adds int64 CSR matrices exactly)
            total = None
            for q in partials:
                m = sparse.csr_matrix(
                    (q.values[k], q.pattern_indices, q.pattern_indptr), shape=(V, V)
                )
                total = m if total is None else total + m
                if consume:
                    q.values[k] = None
            total.sort_indices()
            if indices is None:
                # one read-only index structure shared by every subject's matrix
                indices = np.array(total.indices, dtype=np.int32)
                indptr = np.array(total.indptr, dtype=np.int64)
                indices.flags.writeable = False
                indptr.flags.writeable = False
            elif not (
                np.array_equal(total.indptr, indptr) and np.array_equal(total.indices, indices)
            ):  # pragma: no cover - every subject gets every sphere's block
                raise RuntimeError("internal error: the subjects' sparsity patterns differ")
            data = np.ldexp(total.data.astype(np.float64), -first.exponent).astype(dtype)
            del total, m
            mat = sparse.csr_matrix((V, V), dtype=dtype)
            mat.data, mat.indices, mat.indptr = data, indices, indptr
            mat.has_sorted_indices = True
            zparams = (first.zscore_mean[k], first.zscore_std[k]) if p["zscore_all"] else None
            info = {"alpha": float(first.alpha[k])} if p["method"] == "ridge" else {}
            transforms.append(SparseTransform(mat, zparams, p["zscore_output"], pjson, info))
        if p["common_space"] == "mask":
            template = next(q.template for q in partials if q.template is not None)
        else:
            template = _merge_template(partials, V, first, p["zscore_common"], consume)
        plan = _Plan(
            mask,
            affine,
            p["radius"],
            p["sparse_radius"],
            self.centres,
            p["combine_neighbormappers"],
        )
        info = {
            "ref_ds": p["ref_ds"],
            "n_centres": int(len(plan.centres)),
            "sphere_voxels": [int(plan.sizes.min()), int(plan.sizes.max())],
        }
        if p["method"] == "ridge":
            self.alpha_ = np.asarray(first.alpha, dtype=float)
            self.cv_errors_ = first.cv_errors
            info["alpha"] = self.alpha_.tolist()
            if first.cv_errors is not None:
                info["cv_errors"] = np.asarray(first.cv_errors).tolist()
        candidates = None if self.centres is None else _as_index_array(self.centres, mask, affine)
        self.model_ = SearchlightModel(
            template,
            transforms,
            _model_params(self, p),
            mask,
            affine,
            plan.centres,
            centre_candidates=candidates,
            info=info,
        )
        self.transforms_ = transforms
        self.template_ = template
        self.centres_ = plan.centres
        self.sphere_sizes_ = plan.sizes
        self.mask_ = mask
        self.affine_ = affine
        self.n_subjects_ = S
        self.n_features_in_ = V
        self.n_samples_ = first.n_samples
        return self

    def fit_subject(self, X):
        """Map a new subject into the fitted common space (level 3 in every sphere).

        ``X`` (n_samples, n_voxels): the new subject's data on the training samples
        (same stimulus, same order), in the mask's voxel order. Returns a
        :class:`SparseTransform` (``transform(X_test)`` puts new data in the common
        space); the model is not changed. See :meth:`SearchlightModel.fit_subject`.
        """
        self._check_fitted()
        return self.model_.fit_subject(X)

    # -- mapping -------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "model_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                "This SearchlightHyperalignment instance is not fitted yet; call "
                "fit(datasets) first."
            )

    def transform(self, datasets):
        """Map each subject's (n_i, n_voxels) data into the common space.

        Subjects run on ``n_jobs`` threads (SciPy's sparse products release the GIL).
        """
        self._check_fitted()
        return self.model_.transform(datasets)

    def inverse_transform(self, datasets):
        """Map common-space data back to each subject's voxels (``Y @ T.T``)."""
        self._check_fitted()
        return self.model_.inverse_transform(datasets)


class SearchlightModel(AlignmentModel):
    """A fitted searchlight hyperalignment: :class:`AlignmentModel` with sparse maps.

    The contract of the ROI models (``transform``, ``inverse_transform``,
    ``check_new_subject``, ``fit_subject``, ``save``; ``template``, ``maps``,
    ``params``, ``info``, ``subjects``, ``metadata``) with one
    :class:`SparseTransform` per subject. ``method`` is ``"searchlight"``;
    ``params["method"]`` names the local maps (``"procrustes"`` or ``"ridge"``).

    Parameters
    ----------
    template : ndarray (n_samples, n_voxels)
        The whole-mask common space over the training samples.
    maps : list of SparseTransform
    params : dict
        The estimator's parameters other than ``mask_img`` and ``centres`` (JSON-able).
    mask : ndarray (X, Y, Z) bool
        The analysis mask (also ``roi``; ``voxel_indices`` are its flat indices).
    affine : ndarray (4, 4)
    centres : ndarray of int
        Mask voxel indices of the sphere centres.
    centre_candidates : ndarray of int, optional
        The ``centres`` parameter as mask voxel indices.
    info, subjects, metadata
        As :class:`AlignmentModel` (``info``: ``ref_ds``, ``n_centres``,
        ``sphere_voxels`` [min, max], ridge ``alpha`` per subject and ``cv_errors``).
    """

    methods = ("searchlight",)

    def __init__(
        self,
        template,
        maps,
        params,
        mask,
        affine,
        centres,
        centre_candidates=None,
        info=None,
        subjects=None,
        metadata=None,
    ):
        mask = np.asarray(mask) != 0
        super().__init__(
            "searchlight",
            template,
            maps,
            params=params,
            info=info,
            subjects=subjects,
            metadata=metadata,
            voxel_indices=np.flatnonzero(mask),
            roi=mask,
        )
        self.affine = np.asarray(affine, dtype=float)
        self.centres = np.asarray(centres, dtype=np.int64)
        self.centre_candidates = (
            None if centre_candidates is None else np.asarray(centre_candidates, np.int64)
        )

    @property
    def mask(self):
        """The analysis mask (3-D bool); subjects' voxels are its voxels in C order."""
        return np.asarray(self.roi) != 0

    def estimator(self):
        """An unfitted :class:`SearchlightHyperalignment` with this model's parameters."""
        import nibabel as nib

        img = nib.Nifti1Image(self.mask.astype(np.uint8), self.affine)
        return SearchlightHyperalignment(img, centres=self.centre_candidates, **self.params)

    def _n_jobs(self):
        return resolve_n_jobs(self.params.get("n_jobs", 1))

    def transform(self, datasets, name="datasets"):
        """Map each fitted subject's data into the common space (subjects on threads)."""
        data = self._per_subject(datasets, name)
        with threadpool_limits(limits=1):
            return thread_map(
                lambda i: self.maps[i].transform(data[i], f"{name}[{i}]"),
                range(len(data)),
                self._n_jobs(),
            )

    def inverse_transform(self, datasets, name="datasets"):
        """Common-space data back to each subject's voxels (``Y @ T.T``, un-z-scored)."""
        data = self._per_subject(datasets, name, inverse=True)
        with threadpool_limits(limits=1):
            return thread_map(
                lambda i: self.maps[i].inverse_transform(data[i], f"{name}[{i}]"),
                range(len(data)),
                self._n_jobs(),
            )

    def fit_subject(self, X):
        """Fit a new subject's sparse map into this (unchanged) common space.

        Level 3 in every sphere of the model (the same centres and spheres), onto the
        model's ``template``: a local rotation, or a ridge map with its penalty chosen by
        blocked cross-validation on ``X`` when the model's ``params["method"]`` is
        ``"ridge"``; feature selection is not applied (PyMVPA maps every voxel).

        Parameters
        ----------
        X : array (n_samples, n_voxels)
            The new subject's data on the model's training samples, in mask order.

        Returns
        -------
        SparseTransform
        """
        X = self.check_new_subject(X)
        est = self.estimator()
        p = est._params()
        plan = _Plan(
            self.mask,
            self.affine,
            p["radius"],
            p["sparse_radius"],
            self.centre_candidates,
            p["combine_neighbormappers"],
        )
        stats = _data_stats([X], p["zscore_all"])
        _check_constant_spheres(plan, stats, label="The new subject (X)")
        q = dict(p, featsel=1.0, common_space="mask")
        with fit_blas_limits(p["n_jobs"]):
            if p["method"] == "ridge":
                if len(p["alphas"]) > 1:
                    q["alpha"], _ = _choose_alpha(plan, [X], stats, q, self.template)
                else:
                    q["alpha"] = np.full(1, p["alphas"][0])
            e_map, _, _ = _exponents(plan, stats, q, X.shape[0], self.template)
            positions = np.arange(len(plan.centres))
            acc = _Accumulator(plan, positions, 1, X.shape[0], p["combine_neighbormappers"], False)
            _run(plan, positions, [X], stats, q, acc, e_map, 0, self.template, [0])
        data = np.ldexp(acc.values[0].astype(np.float64), -e_map).astype(np.dtype(p["dtype"]))
        V = plan.n_voxels
        mat = sparse.csr_matrix((data, acc.indices, acc.indptr), shape=(V, V))
        zp = (stats["zmean"][0], stats["zstd"][0]) if p["zscore_all"] else None
        info = {"alpha": float(q["alpha"][0])} if p["method"] == "ridge" else {}
        return SparseTransform(mat, zp, p["zscore_output"], dict(self.params), info)

    def save(self, path, compression="gzip"):
        """Write the model to ``path`` (HDF5, layout in the module notes), atomically;
        :func:`mvpa_flows.core.alignment.model.load_model` reads it back."""
        import h5py

        from mvpa_flows.core.alignment.model import _json
        from mvpa_flows.core.io import atomic_path

        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            self._write_header(f, FORMAT_MODEL, FORMAT_VERSION, compression)
            f.create_dataset("mask", data=self.mask.astype(np.uint8), compression=compression)
            f.create_dataset("affine", data=self.affine)
            f.create_dataset("centres", data=self.centres)
            if self.centre_candidates is not None:
                f.create_dataset("centre_candidates", data=self.centre_candidates)
            for i, t in enumerate(self.maps):
                g = f.create_group(f"maps/{i}")
                g.attrs["kind"] = t.kind
                g.attrs["info"] = _json(t.info)
                g.attrs["zscore_output"] = t.zscore_output
                _write_csr(g, t.matrix, compression)
                if t.zscore_params is not None:
                    g.create_dataset("zscore_mean", data=t.zscore_params[0])
                    g.create_dataset("zscore_std", data=t.zscore_params[1])
        return Path(path)


def _model_params(est, p):
    """The estimator's parameters without ``mask_img``/``centres``, as checked values
    (JSON-able; ``alphas`` the grid actually used)."""
    params = est.get_params()
    params.pop("mask_img")
    params.pop("centres")
    for key in params:
        if key in p and key != "n_jobs":
            params[key] = p[key]
    params["alphas"] = list(p["alphas"])
    params["exclude_from_model"] = list(p["exclude_from_model"])
    return params


def _merge_template(partials, V, first, zscore_common, consume):
    """Each voxel's mean over the local common spaces (exact sums), (n_samples, V)."""
    n = first.n_samples
    counts = np.zeros(V, np.int64)
    acc = None
    for q in partials:
        counts += q.counts
        if q.template_rows is None and acc is None and consume:
            acc = q.template_values  # the whole accumulator: reuse it
        elif q.template_rows is None:
            if acc is None:
                acc = np.zeros((V, n), np.int64)
            acc += q.template_values
        else:
            if acc is None:
                acc = np.zeros((V, n), np.int64)
            acc[q.template_rows] += q.template_values
        if consume:
            q.template_values = None
    template = np.zeros((n, V))
    step = 4096
    for start in range(0, V, step):
        block = slice(start, start + step)
        c = counts[block]
        vals = np.ldexp(acc[block].astype(np.float64), -first.template_exponent)
        vals /= np.maximum(c, 1)[:, None]
        template[:, block] = vals.T
    del acc
    if zscore_common:
        _zscore(template)
    return template


def _is_dtype(value):
    try:
        np.dtype(value)
    except TypeError:
        return False
    return True


def _check_datasets(datasets, n_voxels, name="datasets", min_subjects=2):
    """Validate a list of (n_samples, n_voxels) float arrays without copying them."""
    if isinstance(datasets, np.ndarray) and datasets.ndim == 3:
        datasets = list(datasets)
    if not isinstance(datasets, (list, tuple)):
        raise InputValidationError(
            f"`{name}` must be a list of 2-D arrays (n_samples, n_voxels), one per subject; "
            f"got {type(datasets).__name__}."
        )
    if len(datasets) < min_subjects:
        raise InputValidationError(
            f"`{name}` must hold at least {min_subjects} subjects; got {len(datasets)}."
        )
    out = []
    for i, X in enumerate(datasets):
        label = name if min_subjects == 1 and len(datasets) == 1 else f"{name}[{i}]"
        X = np.asarray(X)
        if X.ndim != 2:
            raise InputValidationError(
                f"`{label}` must be 2-D (n_samples, n_voxels); got shape {X.shape}."
            )
        if X.shape[1] != n_voxels:
            raise InputValidationError(
                f"`{label}` has {X.shape[1]} voxels but mask_img has {n_voxels}; every "
                "subject's data must be the mask's voxels in its order (nilearn "
                "apply_mask / NiftiMasker with this mask). If the subjects' masks differ, "
                "use their intersection as mask_img."
            )
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        for start in range(0, X.shape[1], 8192):
            block = X[:, start : start + 8192]
            if not np.isfinite(block).all():
                cols = start + np.flatnonzero(~np.isfinite(block).all(axis=0))
                raise InputValidationError(
                    f"`{label}` contains NaN or infinite values (voxels {cols[:5].tolist()}"
                    "...); mask or impute them first."
                )
        out.append(X)
    n = {X.shape[0] for X in out}
    if len(n) != 1:
        raise InputValidationError(
            f"Every subject in `{name}` must have the same samples in the same order; got "
            f"numbers of samples {[X.shape[0] for X in out]}."
        )
    if out[0].shape[0] < 3:
        raise InputValidationError(
            f"`{name}` needs at least 3 samples (time points) per subject; got {out[0].shape[0]}."
        )
    return out


#: How far a voxel's standard deviation may be from 1 for z-scored data (ddof 0 or 1,
#: runs of 25 volumes or more).
ZSCORE_STD_TOLERANCE = 0.02


def _data_stats(datasets, zscore_all):
    """Per subject and voxel: mean, std (ddof 0) and the centred sum of squares after the
    optional z-scoring; warns when the data are not z-scored (PyMVPA's check)."""
    S = len(datasets)
    n, V = datasets[0].shape
    mean = np.empty((S, V))
    std = np.empty((S, V))
    for k, X in enumerate(datasets):
        for start in range(0, V, 4096):
            blk = np.asarray(X[:, start : start + 4096], dtype=np.float64)
            m = blk.mean(axis=0)
            mean[k, start : start + 4096] = m
            d = blk - m
            std[k, start : start + 4096] = np.sqrt(np.einsum("ij,ij->j", d, d) / n)
    const = std <= 100 * _EPS * np.abs(mean)
    if zscore_all:
        ss = np.where(const, 0.0, float(n))
    else:
        ss = np.where(const, 0.0, n * std**2)
        off = np.abs(mean) > 1e-5
        # z-scoring per run with either ddof convention counts as z-scored: with ddof=1 a
        # run of r volumes has standard deviation sqrt((r - 1) / r) (0.99 for 50 volumes)
        off_std = (np.abs(std - 1) > ZSCORE_STD_TOLERANCE) & ~const
        if off.any() or off_std.any():
            warnings.warn(
                f"The data are not z-scored per voxel ({int(off.sum())} means differ from 0, "
                f"{int(off_std.sum())} standard deviations from 1, over {S} subjects); the "
                "searchlight transforms have no offsets (PyMVPA's static projection), so "
                "they expect z-scored data. Pass zscore_all=True or z-score each run first.",
                UserWarning,
                stacklevel=4,
            )
    zstd = np.where(const, 0.0, std)
    return {
        "mean": mean,
        "zmean": mean,
        "zstd": zstd,
        "ss": ss,
        "const": const,
        "zscore_all": zscore_all,
    }


def _check_constant_spheres(plan, stats, label=None):
    """Refuse spheres with no varying voxel in some subject, before any sphere is solved."""
    adj = plan.adjacency.astype(np.float64)
    for k, ss in enumerate(stats["ss"]):
        dead = np.flatnonzero(adj @ (ss > 0) == 0)
        if dead.size:
            coords = np.stack(np.where(plan.mask), axis=1)[plan.centres[dead[:3]]]
            raise InputValidationError(
                f"{label or f'Subject {k}'} has {dead.size} sphere(s) whose voxels are all "
                f"constant over samples (centres at voxels {coords.tolist()}...); the mask "
                "includes voxels without signal in this subject. Use the intersection of "
                "the subjects' brain masks (nilearn.masking.intersect_masks) as mask_img."
            )


def _mask_template(datasets, stats, p):
    """ROI hyperalignment of the whole mask (the ``common_space='mask'`` template):
    levels 1 and 2 of :mod:`mvpa_flows.core.alignment.hyperalignment`, no level-3 maps."""
    from mvpa_flows.core.alignment.hyperalignment import (
        _check_params,
        _fit_levels,
        validate_datasets,
    )

    train = [i for i in range(len(datasets)) if i not in p["exclude_from_model"]]
    subjects = validate_datasets([datasets[i] for i in train])
    hp = _check_params(
        {
            "ref_ds": train.index(p["ref_ds"]),
            "scaling": p["scaling"],
            "reflection": p["reflection"],
            **{k: p[k] for k in _HA_KEYS},
        },
        len(subjects),
    )
    res = _fit_levels(subjects, hp, p["n_jobs"], level3=False)
    return np.asarray(res["template"], dtype=np.float64)


def _exponents(plan, stats, p, n, template):
    """Fixed-point exponents of the maps and of the template sums (see module notes)."""
    ss = stats["ss"]
    nz = ss > 0
    if not nz.any():
        raise InputValidationError("No voxel varies over samples in any subject.")
    amin = np.sqrt(ss[nz].min())
    amax = np.sqrt(ss.max())
    v = plan.max_size
    if template is not None:
        t0 = template - template.mean(axis=0)
        cmax = float(np.sqrt(np.einsum("ij,ij->j", t0, t0).max()))
    elif p["zscore_common"]:
        cmax = np.sqrt(n)
    else:
        cmax = np.sqrt(v) * amax
    cmax = max(cmax, 1e-300)
    if p["method"] == "ridge":
        alpha = float(np.min(p["alpha"]))
        if alpha > 0:
            bound = np.sqrt(v) * cmax / (2 * np.sqrt(alpha))
        else:
            bound = np.sqrt(v) * cmax / amin * 2.0**20
    elif p["scaling"]:
        bound = np.sqrt(v) * cmax / amin
    else:
        bound = 1.0
    e_map = _exponent(bound * plan.n_cover)
    cover = int(np.bincount(plan.adjacency.indices, minlength=plan.n_voxels).max())
    e_tpl = _exponent(cmax * cover)
    return e_map, e_tpl, cmax


def _fingerprint(stats, p, plan):
    h = hashlib.sha256()
    for a in (stats["mean"], stats["ss"], plan.centres, plan.adjacency.indices):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps({k: str(v) for k, v in sorted(p.items()) if k != "n_jobs"}).encode())
    return h.hexdigest()


def _json_params(est, p):
    out = {k: v for k, v in p.items() if k not in ("n_jobs", "alpha")}
    centres = est.centres
    out["centres"] = None if centres is None else "given"
    return json.dumps(out, sort_keys=True, default=str)


def _choose_alpha(plan, datasets, stats, p, template, max_spheres=256):
    """Each subject's ridge penalty among ``p['alphas']``: the one whose maps best predict
    held-out contiguous blocks of the common space, over up to ``max_spheres`` evenly
    spaced spheres.

    Returns ``(alpha, errors)``: ``alpha`` (n_subjects,), ``errors`` (n_subjects,
    n_alphas) held-out squared errors summed over spheres and blocks. Deterministic: the
    spheres, the blocks and the order of the sums do not depend on chunks or threads.
    """
    S = len(datasets)
    n = datasets[0].shape[0]
    alphas = np.asarray(p["alphas"])
    n_c = len(plan.centres)
    positions = np.unique(np.linspace(0, n_c - 1, min(n_c, max_spheres)).round().astype(int))
    folds = [np.arange(a, b) for a, b in contiguous_blocks(n, p["cv_blocks"])]
    train = [i for i in range(S) if i not in p["exclude_from_model"]]
    ip, ind = plan.adjacency.indptr, plan.adjacency.indices

    def errors(batch):
        spheres = [ind[ip[i] : ip[i + 1]] for i in batch]
        A0, norm2 = _gather(datasets, stats, spheres, list(range(S)), p["zscore_all"])
        if template is not None:
            common = np.stack([template[:, idx] for idx in spheres])
        else:
            common = _local_common(A0, norm2, train, p["ref_ds"], p)
        err = np.zeros((S, len(alphas)))
        sc = common.sum(axis=1)  # (B, w)
        for i in range(S):
            X = A0[i]  # centred over all samples
            Xt = np.swapaxes(X, 1, 2)
            G = np.matmul(Xt, X)
            XC = np.matmul(Xt, common)
            for f in folds:
                n_tr = n - len(f)
                Xf, Cf = X[:, f], common[:, f]
                Xft = np.swapaxes(Xf, 1, 2)
                # training-block moments as downdates of the full ones
                mx = -Xf.sum(axis=1) / n_tr  # the full columns sum to zero
                mc = (sc - Cf.sum(axis=1)) / n_tr
                Gtr = G - np.matmul(Xft, Xf) - n_tr * mx[:, :, None] * mx[:, None, :]
                XCtr = XC - np.matmul(Xft, Cf) - n_tr * mx[:, :, None] * mc[:, None, :]
                lam, V = np.linalg.eigh(Gtr)
                R = np.matmul(np.swapaxes(V, 1, 2), XCtr)  # (B, v, w)
                Z = np.matmul(Xf - mx[:, None, :], V)  # held-out block in the eigenbasis
                Ct = Cf - mc[:, None, :]
                # ||Ct - Z D R||^2 = ||Ct||^2 - 2 d.(K*R)1 + d.(Q * R R')d, D = diag(d)
                Q = np.matmul(np.swapaxes(Z, 1, 2), Z)
                K = np.matmul(np.swapaxes(Z, 1, 2), Ct)
                kr = np.einsum("bij,bij->bi", K, R)
                QRR = Q * np.matmul(R, np.swapaxes(R, 1, 2))
                ct2 = np.einsum("bij,bij->", Ct, Ct)
                for j, a in enumerate(alphas):
                    d = 1.0 / (lam + a)  # (B, v)
                    quad = np.einsum("bi,bij,bj->", d, QRR, d)
                    err[i, j] += ct2 - 2.0 * np.einsum("bi,bi->", d, kr) + quad
        return err

    err = np.zeros((S, len(alphas)))
    with threadpool_limits(limits=1):
        for e in thread_imap(errors, _batches(plan, positions, S, n), p["n_jobs"]):
            err += e
    return alphas[np.argmin(err, axis=1)], err


def _batches(plan, positions, n_subjects, n_samples):
    """Positions grouped by sphere size, in batches that fit the working memory."""
    sizes = plan.sizes[positions]
    order = np.argsort(sizes, kind="stable")
    out = []
    for size in np.unique(sizes):
        group = positions[order[sizes[order] == size]]
        per = 4 * n_subjects * n_samples * max(int(size), 1) * 8
        step = int(np.clip(_BATCH_BYTES // max(per, 1), 1, _MAX_BATCH))
        for s in range(0, len(group), step):
            out.append(group[s : s + step])
    return out


def _gather(datasets, stats, spheres, subjects, zscore_all):
    """Centred (and optionally z-scored) sphere data: (S, B, n, v) float64."""
    S = len(subjects)
    n = datasets[0].shape[0]
    v = len(spheres[0])
    A0 = np.empty((S, len(spheres), n, v))
    norm2 = np.empty((S, len(spheres)))
    for j, k in enumerate(subjects):
        X = datasets[k]
        mean, std = stats["mean"][k], stats["zstd"][k]
        for b, idx in enumerate(spheres):
            blk = A0[j, b]
            blk[...] = X[:, idx]
            blk -= mean[idx]
            if zscore_all:
                s = std[idx]
                blk *= np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
            norm2[j, b] = np.einsum("ij,ij->", blk, blk)
    return A0, norm2


def _select(A0, scores, seed_pos, featsel, same, train):
    """PyMVPA's per-sphere feature selection: indices (S, B, nsel) into the sphere."""
    S, B, _, v = A0.shape
    nsel = v
    if featsel < 1.0 and int(featsel * v) > 0:
        nsel = int(featsel * v)
    if featsel > 1.0:
        nsel = min(v, int(featsel))
    if same:
        mean = scores[train].mean(axis=0)  # (B, v)
        mean[np.arange(B), seed_pos] = mean.max(axis=1)
        sel = np.argsort(mean, axis=1)[:, v - nsel :]
        return np.broadcast_to(sel, (S, B, nsel)).copy()
    sc = scores.copy()
    sc[:, np.arange(B), seed_pos] = sc.max(axis=2)
    return np.argsort(sc, axis=2)[:, :, v - nsel :]


def _run(plan, positions, datasets, stats, p, acc, e_map, e_tpl, template, subjects):
    """Solve every sphere of ``positions`` and add the local maps into ``acc``."""
    S = len(subjects)
    n = datasets[0].shape[0]
    train = [i for i in range(S) if i not in p["exclude_from_model"]]
    ref = p["ref_ds"]
    combine = p["combine_neighbormappers"]
    map_limit = 2.0**_FIXED_BITS / plan.n_cover
    tpl_limit = 2.0**_FIXED_BITS / max(1, int(np.bincount(plan.adjacency.indices).max()))
    n_jobs = p["n_jobs"]
    batches = _batches(plan, positions, S, n)
    ip, ind = plan.adjacency.indptr, plan.adjacency.indices

    def solve(batch):
        spheres = [ind[ip[i] : ip[i + 1]] for i in batch]
        centres = plan.centres[batch]
        A0, norm2 = _gather(datasets, stats, spheres, subjects, p["zscore_all"])
        sel = None
        if template is not None:
            common = np.stack([template[:, idx] for idx in spheres])
            maps, rank = _level3(A0, norm2, range(S), common, p, centred=False)
            common = None
        else:
            seed_pos = np.array(
                [np.searchsorted(s, c) for s, c in zip(spheres, centres, strict=True)]
            )
            if p["featsel"] != 1:
                scores = _feature_scores(A0, train)
                sel = _select(A0, scores, seed_pos, p["featsel"], p["use_same_features"], train)
                A0 = np.take_along_axis(A0, sel[:, :, None, :], axis=3)
                norm2 = np.einsum("sbij,sbij->sb", A0, A0)
            common = _local_common(A0, norm2, train, ref, p)
            maps, rank = _level3(A0, norm2, range(S), common, p)
        fixed = _to_fixed(maps, e_map, map_limit) if combine else None
        if sel is None:
            if combine:
                pos = [acc.positions(idx, idx) for idx in spheres]
            else:
                # the centre's column only: (sphere voxels, centre)
                cols = [np.searchsorted(s, c) for s, c in zip(spheres, centres, strict=True)]
                fixed = _to_fixed(
                    np.stack([maps[:, b, :, c] for b, c in enumerate(cols)], axis=1)[..., None],
                    e_map,
                    map_limit,
                )
                pos = [
                    acc.positions(idx, np.array([c]))
                    for idx, c in zip(spheres, centres, strict=True)
                ]
        else:
            ref_cols = [spheres[b][sel[ref, b]] for b in range(len(spheres))]
            if combine:
                pos = [
                    [
                        acc.positions(spheres[b][sel[k, b]], ref_cols[b])
                        for b in range(len(spheres))
                    ]
                    for k in range(S)
                ]
            else:
                seed_in_ref = [
                    int(np.flatnonzero(rc == c)[0])
                    for rc, c in zip(ref_cols, centres, strict=True)
                ]
                fixed = _to_fixed(
                    np.stack([maps[:, b, :, j] for b, j in enumerate(seed_in_ref)], axis=1)[
                        ..., None
                    ],
                    e_map,
                    map_limit,
                )
                pos = [
                    [
                        acc.positions(spheres[b][sel[k, b]], np.array([centres[b]]))
                        for b in range(len(spheres))
                    ]
                    for k in range(S)
                ]
        tcols = tfixed = None
        if acc.template is not None:
            tcols = spheres if sel is None else ref_cols
            tfixed = _to_fixed(np.swapaxes(common, 1, 2), e_tpl, tpl_limit)
        del A0
        return pos, fixed, sel is not None, tcols, tfixed, rank

    min_rank = None
    # Sphere-sized products gain nothing from BLAS threads: parallelism is over batches.
    with threadpool_limits(limits=1):
        for pos, fixed, per_subject, tcols, tfixed, rank in thread_imap(solve, batches, n_jobs):
            acc.add(pos, fixed, per_subject, tcols, tfixed)
            if rank is not None:
                min_rank = rank if min_rank is None else min(min_rank, rank)
    return min_rank


# ---------------------------------------------------------------------------------------
# HDF5
# ---------------------------------------------------------------------------------------
def _atomic_h5(path, write):
    import h5py

    from mvpa_flows.core.io import atomic_path

    path = Path(path)
    if path.suffix != ".h5":
        raise InputValidationError(f"`path` must end in .h5; got {path.name!r}.")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        write(f)
    return path


def _open_h5(path, fmt):
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputValidationError(f"No file at {path}.")
    f = h5py.File(path, "r")
    found = f.attrs.get("format")
    if isinstance(found, bytes):
        found = found.decode()
    if found != fmt:
        f.close()
        raise InputValidationError(
            f"{path} is not an mvpa_flows file of kind {fmt!r} (attribute format={found!r})."
        )
    return f


def _write_csr(g, mat, compression):
    g.create_dataset("data", data=mat.data, compression=compression)
    g.create_dataset("indices", data=mat.indices.astype(np.int32), compression=compression)
    g.create_dataset("indptr", data=mat.indptr.astype(np.int64), compression=compression)


def _read_csr(g, V):
    return sparse.csr_matrix((g["data"][()], g["indices"][()], g["indptr"][()]), shape=(V, V))


_XFM_RESERVED = {"format", "format_version", "kind", "shape", "nnz", "zscore_output", "info"}


def save_transform(path, transform, mask, affine=None, params=None, compression="gzip"):
    """Write one subject's :class:`SparseTransform` (layout in the module notes).

    ``params`` (attributes) are added to the transform's own ``params``; ``affine`` is
    the mask's (stored when given). :func:`mvpa_flows.core.alignment.xfm.save_transform`
    calls this for sparse transforms.
    """
    if not isinstance(transform, SparseTransform):
        raise InputValidationError(
            f"`transform` must be a SparseTransform (SearchlightHyperalignment.transforms_ "
            f"or fit_subject); got {type(transform).__name__}."
        )
    mask = np.asarray(mask) != 0
    if int(mask.sum()) != transform.shape[0]:
        raise InputValidationError(
            f"`mask` has {int(mask.sum())} voxels but the transform has {transform.shape[0]}."
        )

    def write(f):
        _write_csr(f, transform.matrix, compression)
        f.create_dataset("mask", data=mask.astype(np.uint8), compression=compression)
        if affine is not None:
            f.create_dataset("affine", data=np.asarray(affine, dtype=float))
        if transform.zscore_params is not None:
            f.create_dataset("zscore_mean", data=transform.zscore_params[0])
            f.create_dataset("zscore_std", data=transform.zscore_params[1])
        f.attrs["format"] = FORMAT_TRANSFORM
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["kind"] = "sparse-csr"
        f.attrs["shape"] = np.asarray(transform.shape)
        f.attrs["nnz"] = transform.matrix.nnz
        f.attrs["zscore_output"] = transform.zscore_output
        f.attrs["info"] = json.dumps(transform.info, default=str)
        attrs = {**transform.params, **(params or {})}
        for key, value in attrs.items():
            if key in _XFM_RESERVED:
                continue
            f.attrs[key] = (
                value
                if isinstance(value, (str, int, float, bool))
                else json.dumps(value, default=str)
            )

    return _atomic_h5(path, write)


def load_transform(path):
    """Read :func:`save_transform`'s file: ``(SparseTransform, info)``; ``info`` has
    ``mask`` (also as ``roi``), ``voxel_indices`` (its flat indices), ``affine`` (or None)
    and ``params``."""
    with _open_h5(path, FORMAT_TRANSFORM) as f:
        V = int(f.attrs["shape"][0])
        mat = _read_csr(f, V)
        zp = (f["zscore_mean"][()], f["zscore_std"][()]) if "zscore_mean" in f else None
        params = {k: _attr(v) for k, v in f.attrs.items() if k not in _XFM_RESERVED}
        details = _attr(f.attrs["info"]) if "info" in f.attrs else {}
        t = SparseTransform(mat, zp, bool(f.attrs["zscore_output"]), params, details)
        mask = f["mask"][()] != 0
        info = {
            "mask": mask,
            "roi": mask,
            "voxel_indices": np.flatnonzero(mask),
            "affine": f["affine"][()] if "affine" in f else None,
            "params": params,
        }
    return t, info


def _attr(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and (v[:1] in "[{" or v == "null"):
        try:
            return json.loads(v)
        except ValueError:
            return v
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_searchlight_model(f, path, task=None, space=None):
    """The :class:`SearchlightModel` in the open HDF5 file ``f`` (written by
    :meth:`SearchlightModel.save`; read through
    :func:`mvpa_flows.core.alignment.model.load_model`)."""
    version = f.attrs.get("format_version")
    version = version.decode() if isinstance(version, bytes) else str(version)
    if version != FORMAT_VERSION:
        raise InputValidationError(
            f"{path} is a searchlight model of format version {version}; this version of "
            f"mvpa_flows reads {FORMAT_VERSION}. Fit the model again."
        )
    metadata = json.loads(f.attrs["metadata"])
    check_model_metadata(path, metadata, task=task, space=space)
    params = json.loads(f.attrs["params"])
    mask = f["mask"][()] != 0
    V = int(mask.sum())
    maps = []
    for i in range(int(f.attrs["n_subjects"])):
        g = f["maps"][str(i)]
        zp = (g["zscore_mean"][()], g["zscore_std"][()]) if "zscore_mean" in g else None
        maps.append(
            SparseTransform(
                _read_csr(g, V),
                zp,
                bool(g.attrs["zscore_output"]),
                params,
                json.loads(g.attrs["info"]),
            )
        )
    subjects = [s.decode() if isinstance(s, bytes) else str(s) for s in f["subjects"][()]]
    return SearchlightModel(
        f["template"][()],
        maps,
        params,
        mask,
        f["affine"][()],
        f["centres"][()],
        centre_candidates=f["centre_candidates"][()] if "centre_candidates" in f else None,
        info=json.loads(f.attrs["info"]),
        subjects=subjects,
        metadata=metadata,
    )


def save_partial(path, partial, compression="gzip"):
    """Write one chunk's :class:`SearchlightPartial` (layout in the module notes)."""

    def write(f):
        f.create_dataset("values", data=np.stack(partial.values), compression=compression)
        for key in (
            "pattern_indptr",
            "pattern_indices",
            "counts",
            "centre_positions",
            "zscore_mean",
            "zscore_std",
        ):
            f.create_dataset(key, data=getattr(partial, key), compression=compression)
        if partial.template_values is not None:
            rows = partial.template_rows
            values = partial.template_values
            if rows is None:  # keep only the voxels this chunk's spheres cover
                rows = np.flatnonzero(partial.counts)
                values = values[rows]
            f.create_dataset("template_rows", data=rows)
            f.create_dataset("template_values", data=values, compression=compression)
        if partial.template is not None:
            f.create_dataset("template", data=partial.template, compression=compression)
        if partial.alpha is not None:
            f.create_dataset("alpha", data=np.asarray(partial.alpha, dtype=float))
        if partial.cv_errors is not None:
            f.create_dataset("cv_errors", data=partial.cv_errors)
        f.attrs["format"] = FORMAT_PARTIAL
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["chunk"] = np.asarray(partial.chunk)
        for key in (
            "n_centres",
            "exponent",
            "template_exponent",
            "n_samples",
            "fingerprint",
            "params",
        ):
            f.attrs[key] = getattr(partial, key)

    return _atomic_h5(path, write)


def load_partial(path):
    """Read :func:`save_partial`'s file."""
    with _open_h5(path, FORMAT_PARTIAL) as f:
        fields = {
            key: f[key][()]
            for key in (
                "pattern_indptr",
                "pattern_indices",
                "values",
                "counts",
                "centre_positions",
                "zscore_mean",
                "zscore_std",
            )
        }
        fields["values"] = list(fields["values"])
        fields["template_rows"] = f["template_rows"][()] if "template_rows" in f else None
        fields["template_values"] = f["template_values"][()] if "template_values" in f else None
        fields["template"] = f["template"][()] if "template" in f else None
        fields["alpha"] = f["alpha"][()] if "alpha" in f else None
        fields["cv_errors"] = f["cv_errors"][()] if "cv_errors" in f else None
        fields["chunk"] = tuple(int(c) for c in f.attrs["chunk"])
        for key in ("n_centres", "exponent", "template_exponent", "n_samples"):
            fields[key] = int(f.attrs[key])
        for key in ("fingerprint", "params"):
            v = f.attrs[key]
            fields[key] = v.decode() if isinstance(v, bytes) else str(v)
    return SearchlightPartial(**fields)

"""Searchlight sphere neighbourhoods as a sparse sphere x voxel matrix.

nilearn builds searchlight spheres with a KD-tree radius query followed by a
Python ``list.index`` search for every seed (quadratic in the number of mask
voxels: about 30 s for a 45,000-voxel mask).  :func:`sphere_adjacency` gives the
same neighbourhoods in well under a second by enumerating the integer voxel
offsets that fit in the ball once and shifting the grid by each of them.  Memory is
bounded by the mask, whatever the radius: offsets reach at most across the mask's
bounding box, and centres are processed in chunks.

Definition (identical to ``nilearn.decoding.SearchLight``): the sphere of a
centre holds every *mask* voxel whose centre lies within ``radius`` millimetres
(``<=``, Euclidean distance in world coordinates given by ``affine``) of the
centre voxel, the centre voxel included when it is in the mask.  Pairs whose
distance is within 1e-9 (relative) of the radius are decided with the very
floating-point expression scikit-learn's ``KDTree`` uses on the world
coordinates nilearn computes, so ties fall the same way.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse

from .._validation import check_number

__all__ = ["check_radius", "sphere_adjacency", "sphere_offsets"]

#: entries of the (centre x offset) table built at once; bounds memory for any radius
_TABLE_ENTRIES = 1024**2


def _check_mask(mask, name):
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(
            f"Parameter '{name}' must be a 3D boolean array; got an array with "
            f"{mask.ndim} dimension(s) and shape {mask.shape}. Pass the 3D mask "
            "data (e.g. nibabel's img.get_fdata() > 0)."
        )
    if mask.dtype != bool:
        mask = mask != 0
    return mask


def check_radius(radius):
    """The sphere radius in mm: a finite number > 0.

    Raises
    ------
    ValueError
        ``radius`` is not a number, not finite, or not positive.
    """
    return check_number(
        radius, "radius", low=0, low_open=True, unit="mm", fix="Pass e.g. radius=6."
    )


def sphere_offsets(affine, radius, margin=1e-9, max_offset=None):
    """Integer voxel offsets whose world distance can fall within ``radius``.

    Parameters
    ----------
    affine : array-like of shape (4, 4)
        Voxel-to-world affine.
    radius : float
        Sphere radius in millimetres.
    margin : float, default=1e-9
        Relative margin defining ties.
    max_offset : array-like of 3 int, optional
        Largest useful offset along each voxel axis (the extent of the mask: offsets
        beyond it never join two mask voxels), which bounds the enumeration.

    Returns
    -------
    sure : ndarray of shape (n_sure, 3)
        Offsets clearly within the radius.
    ties : ndarray of shape (n_ties, 3)
        Offsets whose distance equals the radius up to ``margin``; they are
        decided per voxel pair.
    """
    M = np.asarray(affine, dtype=float)[:3, :3]
    inv = np.linalg.inv(M)
    half = np.ceil(radius * np.linalg.norm(inv, axis=1)).astype(np.int64) + 1
    if max_offset is not None:
        half = np.minimum(half, np.asarray(max_offset, dtype=np.int64))
    r2 = float(radius) ** 2
    lo, hi = r2 * (1 - margin), r2 * (1 + margin) + 1e-12
    sure, ties = [], []
    # one plane of offsets at a time: memory of the order of the result
    gj, gk = np.meshgrid(
        np.arange(-half[1], half[1] + 1), np.arange(-half[2], half[2] + 1), indexing="ij"
    )
    plane = np.stack([np.zeros(gj.size, np.int64), gj.ravel(), gk.ravel()], axis=1)
    for i in range(-half[0], half[0] + 1):
        plane[:, 0] = i
        d2 = np.sum((plane @ M.T) ** 2, axis=1)
        sure.append(plane[d2 < lo])
        ties.append(plane[(d2 >= lo) & (d2 <= hi)])
    return np.concatenate(sure), np.concatenate(ties)


def sphere_adjacency(mask, affine, radius, process_mask=None):
    """Sparse sphere x voxel adjacency of a searchlight.

    Parameters
    ----------
    mask : ndarray of shape (nx, ny, nz), bool
        Voxels whose data enter the spheres (the columns, in ``np.where``
        order, which is nilearn's masker order).
    affine : ndarray of shape (4, 4)
        Voxel-to-world affine of ``mask`` (and ``process_mask``).
    radius : float
        Sphere radius in millimetres, finite and > 0.  A radius smaller than the
        smallest voxel spacing leaves every sphere with its centre only (a
        ``UserWarning`` says so).
    process_mask : ndarray of shape (nx, ny, nz), bool, optional
        Sphere centres (the rows, in ``np.where`` order).  Defaults to
        ``mask``.  Voxels outside ``mask`` are dropped with a ``UserWarning``
        (their spheres would hold no centre voxel); a process mask with no
        voxel in ``mask`` raises ``ValueError``.

    Returns
    -------
    A : scipy.sparse.csr_matrix of shape (n_centres, n_mask_voxels), bool
        ``A[i, j]`` is True when mask voxel ``j`` belongs to the sphere of
        centre ``i``.  Column indices are sorted within each row.

    Raises
    ------
    ValueError
        If ``radius`` is not a positive finite number, the masks are not 3D or
        differ in shape, ``mask`` is empty, or ``process_mask`` selects no
        voxel of ``mask``.

    Notes
    -----
    Memory is that of the result plus a bounded working table, whatever the radius: the
    column indices are written once, into a buffer grown and trimmed in place.
    """
    mask = _check_mask(mask, "mask")
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise ValueError(f"Parameter 'affine' must be a 4x4 array; got shape {affine.shape}.")
    radius = check_radius(radius)
    if not mask.any():
        raise ValueError(
            "Parameter 'mask' selects no voxel. Pass a mask with at least one non-zero voxel."
        )
    process_mask = _check_process_mask(process_mask, mask)

    # work inside the mask's bounding box: no offset needs to reach beyond it
    idx = np.where(mask)
    lo = np.array([a.min() for a in idx])
    extent = np.array([a.max() for a in idx]) - lo
    box = tuple(slice(a, b + 1) for a, b in zip(lo, lo + extent, strict=True))
    sure, ties = sphere_offsets(affine, radius, max_offset=extent)
    offsets = np.concatenate([sure, ties]).astype(np.int64)
    n_mask = int(mask.sum())
    # mask column index on the box padded by the largest offset, so that every
    # shifted centre stays inside the array without bounds checks
    pad = np.abs(offsets).max(axis=0)
    inner = mask[box]
    col_of = np.full(tuple(np.array(inner.shape) + 2 * pad), -1, dtype=np.int32)
    col_of[tuple(slice(p, p + s) for p, s in zip(pad, inner.shape, strict=True))][inner] = (
        np.arange(n_mask, dtype=np.int32)
    )
    strides = np.array([col_of.shape[1] * col_of.shape[2], col_of.shape[2], 1])
    centres = np.stack(np.where(process_mask), axis=1) - lo  # (n_centres, 3) in the box
    n_centres = len(centres)
    flat_c = (centres + pad) @ strides
    flat_o = offsets @ strides
    # columns are in C order of the grid, so sorting the offsets by flat index
    # makes every row of the gathered (centre x offset) table ascending
    order = np.argsort(flat_o, kind="stable")
    is_tie = np.r_[np.zeros(len(sure), bool), np.ones(len(ties), bool)][order]
    offsets, flat_o = offsets[order], flat_o[order]
    if is_tie.any():
        # decide ties exactly as nilearn/scikit-learn do: world coordinates from
        # nilearn's coord_transform, squared distance compared with r * r
        from nilearn.image.resampling import coord_transform

        mask_world = np.asarray(coord_transform(*idx, affine)).T
        cen_world = np.asarray(coord_transform(*np.where(process_mask), affine)).T
    col_flat = col_of.ravel()
    step = max(1, _TABLE_ENTRIES // len(flat_o))
    counts = np.empty(n_centres, dtype=np.int64)
    # the column indices are written into one growing int32 buffer (grown and trimmed in
    # place by realloc), so the build never holds the indices twice
    indices = np.empty(min(n_centres * len(flat_o), _TABLE_ENTRIES), dtype=np.int32)
    nnz = 0
    for c0 in range(0, n_centres, step):
        rows = slice(c0, min(n_centres, c0 + step))
        table = col_flat[flat_c[rows, None] + flat_o[None, :]]  # (chunk, n_off)
        for j in np.flatnonzero(is_tie):
            c = table[:, j]
            r = np.flatnonzero(c >= 0)
            d = mask_world[c[r]] - cen_world[rows][r]
            d2 = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2]
            table[r[d2 > radius * radius], j] = -1
        present = table >= 0
        counts[rows] = present.sum(axis=1)
        found = table[present]
        if nnz + len(found) > len(indices):
            # room for the rest at this chunk's density, and at least 1.5 times the buffer
            rest = int(len(found) / (rows.stop - c0) * (n_centres - c0))
            size = max(nnz + rest, len(indices) * 3 // 2)
            indices.resize(min(n_centres * len(flat_o), size), refcheck=False)
        indices[nnz : nnz + len(found)] = found
        nnz += len(found)
        del table, present, found
    indices.resize(nnz, refcheck=False)
    # 32-bit indices whenever they fit (scipy widens the indices to the indptr's type)
    index_type = np.int32 if nnz < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(n_centres + 1, dtype=index_type)
    np.cumsum(counts, out=indptr[1:])
    A = sparse.csr_matrix(
        (np.ones(nnz, dtype=bool), indices, indptr), shape=(n_centres, n_mask), copy=False
    )
    A.has_sorted_indices = True
    if n_centres and counts.max() <= 1:
        warnings.warn(
            f"radius={radius} mm is smaller than the voxel spacing "
            f"({', '.join(f'{v:.3g}' for v in np.linalg.norm(affine[:3, :3], axis=0))}"
            " mm): every sphere holds its centre voxel only, so the searchlight "
            "decodes single voxels. Increase 'radius' to include neighbours.",
            UserWarning,
            stacklevel=2,
        )
    return A


def _check_process_mask(process_mask, mask):
    if process_mask is None:
        return mask
    process_mask = _check_mask(process_mask, "process_mask")
    if process_mask.shape != mask.shape:
        raise ValueError(
            f"Parameter 'process_mask' must have the shape of 'mask' "
            f"{mask.shape}; got {process_mask.shape}. Resample it to the "
            "mask grid."
        )
    if not process_mask.any():
        raise ValueError(
            "Parameter 'process_mask' selects no voxel. Pass a process mask "
            "with at least one non-zero voxel, or None to use the mask."
        )
    outside = process_mask & ~mask
    if outside.any():
        if outside.sum() == process_mask.sum():
            raise ValueError(
                "Parameter 'process_mask' lies entirely outside 'mask' "
                f"({int(outside.sum())} voxels, none in the mask). Pass a "
                "process mask that overlaps the mask."
            )
        warnings.warn(
            f"'process_mask' has {int(outside.sum())} voxel(s) outside "
            "'mask'; they are dropped (searchlight centres must be mask "
            "voxels).",
            UserWarning,
            stacklevel=3,
        )
        process_mask = process_mask & mask
    return process_mask

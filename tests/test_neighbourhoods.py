"""Sphere neighbourhoods: identical to nilearn's, fast, with clear errors."""

import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nilearn.image.resampling import coord_transform
from nilearn.maskers.nifti_spheres_masker import apply_mask_and_get_affinity

from mvpa_flows.core.searchlight.neighbourhoods import sphere_adjacency

HAXBY = Path(__file__).resolve().parents[2] / "shared" / "data" / "haxby2001-slice"


def _case(seed=0, shape=(9, 8, 7), zooms=(3.5, 3.75, 3.1)):
    rng = np.random.default_rng(seed)
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.0]
    mask = rng.random(shape) > 0.3
    return rng, affine, mask


def _nilearn_adjacency(mask, affine, radius, process_mask):
    rng = np.random.default_rng(1)
    img = nib.Nifti1Image(rng.standard_normal((*mask.shape, 2)), affine)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    seeds = np.asarray(coord_transform(*np.where(process_mask), affine)).T
    _, A = apply_mask_and_get_affinity(seeds, img, radius, True, mask_img=mask_img)
    return A.tocsr().astype(bool)


@pytest.mark.parametrize("radius", [3.75, 5.6, 7.0, 7.5, 11.0])
def test_matches_nilearn_anisotropic_with_ties_and_edges(radius):
    # 7.5 mm = 2 x 3.75 mm: exact ties decided like scikit-learn's KDTree
    _, affine, mask = _case()
    process = mask.copy()
    process[:3] = False
    A = sphere_adjacency(mask, affine, radius, process)
    An = _nilearn_adjacency(mask, affine, radius, process)
    assert A.shape == An.shape
    assert (A != An).nnz == 0
    assert A.has_sorted_indices


def test_oblique_affine_matches_nilearn():
    _, affine, mask = _case(2, shape=(7, 6, 5))
    rot = np.array([[0.96, -0.28, 0], [0.28, 0.96, 0], [0, 0, 1.0]])
    affine[:3, :3] = rot @ affine[:3, :3]
    A = sphere_adjacency(mask, affine, 6.0)
    assert (A != _nilearn_adjacency(mask, affine, 6.0, mask)).nnz == 0


def test_orders_rows_and_columns_like_nilearn():
    _, affine, mask = _case()
    A = sphere_adjacency(mask, affine, 4.0)
    # the centre voxel of row i is mask column i when process_mask == mask
    assert all(A[i, i] for i in range(A.shape[0]))


def test_small_radius_warns_and_keeps_centre():
    _, affine, mask = _case()
    with pytest.warns(UserWarning, match="smaller than the voxel spacing"):
        A = sphere_adjacency(mask, affine, 1.0)
    assert np.all(np.diff(A.indptr) == 1)


def test_process_mask_errors_and_intersection():
    _, affine, mask = _case()
    with pytest.raises(ValueError, match="'process_mask' selects no voxel"):
        sphere_adjacency(mask, affine, 5.0, np.zeros_like(mask))
    with pytest.raises(ValueError, match="'process_mask' lies entirely outside 'mask'"):
        sphere_adjacency(mask, affine, 5.0, ~mask)
    partial = mask.copy()
    partial[~mask] = True
    partial[:, :, 3:] = False
    with pytest.warns(UserWarning, match="outside 'mask'; they are dropped"):
        A = sphere_adjacency(mask, affine, 5.0, partial)
    assert A.shape[0] == (partial & mask).sum()
    with pytest.raises(ValueError, match="must have the shape of 'mask'"):
        sphere_adjacency(mask, affine, 5.0, mask[:-1])


def test_bad_radius_and_mask():
    _, affine, mask = _case()
    for radius in (-1, 0.0, np.nan, np.inf, None):
        with pytest.raises(ValueError, match=r"'radius' must be a finite number > 0 \(mm\)"):
            sphere_adjacency(mask, affine, radius)
    with pytest.raises(ValueError, match="'mask' selects no voxel"):
        sphere_adjacency(np.zeros_like(mask), affine, 5.0)
    with pytest.raises(ValueError, match="'mask' must be a 3D boolean array"):
        sphere_adjacency(mask[..., 0], affine, 5.0)


def test_haxby_sized_mask_is_fast():
    import time

    shape = (40, 64, 64)
    ii, jj, kk = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    mask = ((ii - 20) / 19) ** 2 + ((jj - 32) / 27) ** 2 + ((kk - 32) / 27) ** 2 < 1
    t0 = time.perf_counter()
    A = sphere_adjacency(mask, np.diag([3.5, 3.75, 3.75, 1.0]), 5.6)
    assert A.shape == (mask.sum(), mask.sum())
    assert time.perf_counter() - t0 < 5  # about 0.02 s; generous for loaded CI


def test_huge_radius_memory_is_bounded_by_the_mask():
    """radius=1000 on the Haxby slice (530 voxels): every sphere is the whole mask, built
    in bounded memory (the radius cube would be about 4 GiB), identical to nilearn."""
    func = HAXBY / "derivatives" / "fmriprep" / "sub-1" / "func"
    masks = sorted(func.glob("*_desc-brain_mask.nii.gz"))
    if not masks:
        pytest.skip(f"real data {HAXBY} is absent (../shared/data beside the checkout)")
    img = nib.load(masks[0])
    mask = np.all([np.asarray(nib.load(m).dataobj) > 0 for m in masks], axis=0)
    assert mask.sum() == 530
    tracemalloc.start()
    try:
        A = sphere_adjacency(mask, img.affine, 1000.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 1024**2, f"peak {peak / 1024**2:.0f} MiB"
    assert A.shape == (530, 530) and A.nnz == 530 * 530
    assert (A != _nilearn_adjacency(mask, img.affine, 1000.0, mask)).nnz == 0


def test_radius_beyond_the_mask_matches_nilearn_on_synthetic_grid():
    _, affine, mask = _case(3, shape=(6, 5, 4))
    A = sphere_adjacency(mask, affine, 40.0)  # ~2x the box: every sphere is the whole mask
    assert (A != _nilearn_adjacency(mask, affine, 40.0, mask)).nnz == 0
    assert A.nnz == mask.sum() ** 2


def test_growing_index_buffer_gives_the_same_adjacency(monkeypatch):
    """The indices are written into a buffer grown in place; a tiny working table (many
    chunks, many growths) gives the adjacency of the default one, and nilearn's."""
    from mvpa_flows.core.searchlight import neighbourhoods

    _, affine, mask = _case(5, shape=(9, 8, 7))
    A = sphere_adjacency(mask, affine, 7.0)
    monkeypatch.setattr(neighbourhoods, "_TABLE_ENTRIES", 50)
    B = sphere_adjacency(mask, affine, 7.0)
    assert B.indices.dtype == np.int32 and B.indptr.dtype == np.int32
    np.testing.assert_array_equal(B.indptr, A.indptr)
    np.testing.assert_array_equal(B.indices, A.indices)
    assert (B != _nilearn_adjacency(mask, affine, 7.0, mask)).nnz == 0

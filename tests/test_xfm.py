"""HDF5 transform files: round trip, layout, errors."""

import warnings

import h5py
import numpy as np
import pytest

from mvpa_flows.core.alignment.procrustes import procrustes
from mvpa_flows.core.alignment.xfm import FORMAT, load_transform, save_transform
from mvpa_flows.core.errors import InputValidationError


def _map(n=80, v=12, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, v))
    B = A @ np.linalg.qr(rng.standard_normal((v, v)))[0] * 2 + 1
    return A, procrustes(A, B)


def test_round_trip_dense(tmp_path):
    A, m = _map()
    idx = np.arange(12) * 3
    roi = np.zeros((4, 4, 3), dtype=np.uint8)
    roi.flat[idx] = 1
    path = save_transform(
        tmp_path / "sub-01_task-movie_from-MNI_to-common_mode-image_desc-procrustes_xfm.h5",
        m,
        voxel_indices=idx,
        roi=roi,
        params={
            "level2_n_iter": 1,
            "ref_ds": None,
            "subjects": ["01", "02"],
            "template": "sherlock",
        },
    )
    m2, info = load_transform(path)
    np.testing.assert_array_equal(m2.rotation, m.rotation)
    assert m2.scale == m.scale and m2.rank == m.rank
    np.testing.assert_allclose(m2.transform(A), m.transform(A))
    np.testing.assert_array_equal(info["voxel_indices"], idx)
    np.testing.assert_array_equal(info["roi"], roi)
    assert info["params"]["level2_n_iter"] == 1 and info["params"]["ref_ds"] is None
    assert info["params"]["subjects"] == ["01", "02"]
    assert info["params"]["scaling"] is True or info["params"]["scaling"] == 1
    with h5py.File(path) as f:
        assert f.attrs["format"] == FORMAT and "matrix" in f
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


def test_round_trip_factored(tmp_path):
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((20, 50)), rng.standard_normal((20, 50))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = procrustes(A, B)
    assert m.is_factored
    m2, _ = load_transform(save_transform(tmp_path / "x_xfm.h5", m))
    assert m2.is_factored
    np.testing.assert_allclose(m2.transform(A), m.transform(A))
    np.testing.assert_allclose(np.asarray(m2), np.asarray(m))


def test_errors(tmp_path):
    _, m = _map()
    with pytest.raises(InputValidationError, match=".h5"):
        save_transform(tmp_path / "x.mat", m)
    with pytest.raises(InputValidationError, match="ProcrustesMap, RidgeMap or SRMMap"):
        save_transform(tmp_path / "x.h5", np.eye(3))
    with pytest.raises(InputValidationError, match="voxel_indices"):
        save_transform(tmp_path / "x.h5", m, voxel_indices=np.arange(3))
    with pytest.raises(InputValidationError, match="reserved"):
        save_transform(tmp_path / "x.h5", m, params={"scale": 2})
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something"
    with pytest.raises(InputValidationError, match="not an mvpa_flows"):
        load_transform(tmp_path / "other.h5")
    with pytest.raises(InputValidationError, match="No transform"):
        load_transform(tmp_path / "missing.h5")

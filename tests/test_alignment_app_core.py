"""What the group app needs from the alignment core: estimators by name, checks before the
data are read, voxel-wise ISC maps before and after alignment, transform files of every
map kind."""

import numpy as np
import pytest
from test_alignment_model import _movie

from mvpa_flows.core.alignment.evaluate import (
    alignment_estimator,
    alignment_parameters,
    check_alignment,
)
from mvpa_flows.core.alignment.isc import isc, isc_maps, isc_subject_space, mean_isc
from mvpa_flows.core.alignment.maps import RidgeMap, SRMMap
from mvpa_flows.core.alignment.ridge import DEFAULT_ALPHAS
from mvpa_flows.core.alignment.xfm import load_transform, save_transform
from mvpa_flows.core.errors import InputValidationError
from mvpa_flows.hyperalignment import Hyperalignment, SharedResponseModel


def test_alignment_estimator_by_name_and_recorded_parameters():
    est = alignment_estimator("srm", n_components=5, srm_method="deterministic")
    assert isinstance(est, SharedResponseModel) and est.method == "deterministic"
    assert alignment_parameters(est) == {
        "method": "deterministic",
        "n_components": 5,
        "n_iter": 10,
        "random_state": 0,
    }
    ridge = alignment_estimator("ridge", cv_blocks=4)
    assert isinstance(ridge, Hyperalignment) and ridge.method == "ridge"
    params = alignment_parameters(ridge)
    # defaults are written out, not left as None
    assert params["alphas"] == list(DEFAULT_ALPHAS) and params["cv_blocks"] == 4
    assert params["template"] == "procrustes" and params["level2_n_iter"] == 1
    assert alignment_parameters(alignment_estimator("procrustes"))["scaling"] is True
    with pytest.raises(InputValidationError, match="one of \\['procrustes', 'ridge', 'srm'\\]"):
        alignment_estimator("cca")
    with pytest.raises(InputValidationError, match=r"Unknown parameter\(s\) \['n_components'\]"):
        alignment_estimator("ridge", n_components=3)


def test_check_alignment_refuses_before_any_data():
    with pytest.raises(InputValidationError, match="'n_components'=60 exceeds the 50 voxels"):
        check_alignment(alignment_estimator("srm", n_components=60), 100, 50)
    with pytest.raises(InputValidationError, match="exceeds the 40 training samples"):
        check_alignment(alignment_estimator("srm", n_components=45), 40, 50)
    with pytest.raises(InputValidationError, match="at least 3 contiguous training blocks"):
        check_alignment(alignment_estimator("ridge", cv_blocks=5), 9, 50)
    with pytest.raises(InputValidationError, match="'cv_blocks' must be an integer >= 3"):
        check_alignment(alignment_estimator("ridge", cv_blocks=2), 100, 50)
    with pytest.raises(InputValidationError, match="'alphas'"):
        check_alignment(alignment_estimator("ridge", alphas=[-1.0]), 100, 50)
    est = alignment_estimator("procrustes")
    assert check_alignment(est, 3, 50) is est  # Procrustes has nothing to refuse here


def _loo_reference(own, others_mean):
    return np.array([np.corrcoef(own[:, v], others_mean[:, v])[0, 1] for v in range(own.shape[1])])


def test_isc_maps_against_loops_of_correlations():
    train, test = _movie(n_subjects=4, noise=0.8, seed=5)
    # Procrustes: the common space has the reference subject's voxels
    ha = Hyperalignment().fit(train)
    aligned = ha.transform(test)
    out = isc_maps(ha.model_, test, aligned)
    assert out["aligned_space"] == "common"
    np.testing.assert_allclose(out["aligned"], isc(aligned))
    np.testing.assert_allclose(out["anatomical"], isc(test))
    assert np.median(mean_isc(out["aligned"])) > np.median(mean_isc(out["anatomical"])) + 0.3
    # SRM: the others' shared responses mapped back into each subject's voxels
    srm = SharedResponseModel(8, n_iter=5).fit(train)
    aligned = srm.transform(test)
    out = isc_maps(srm.model_, test, aligned)
    assert out["aligned_space"] == "subject" and out["aligned"].shape == (4, 20)
    for s in range(4):
        shared = np.mean([aligned[j] for j in range(4) if j != s], axis=0)
        back = shared @ srm.maps_[s].rotation.T + srm.maps_[s].source_mean
        np.testing.assert_allclose(out["aligned"][s], _loo_reference(test[s], back), atol=1e-10)
    # ridge onto a PCA template: components, not voxels, and no inverse
    pca = Hyperalignment(method="ridge", template="pca", alphas=[10.0]).fit(train)
    assert isc_maps(pca.model_, test, pca.transform(test))["aligned"] is None


def test_isc_subject_space_for_procrustes_is_the_inverse_map():
    train, test = _movie(n_subjects=3, noise=0.5, seed=9)
    ha = Hyperalignment().fit(train)
    aligned = ha.transform(test)
    rows = isc_subject_space(test, aligned, ha.transforms_)
    for s in range(3):
        others = np.mean([aligned[j] for j in range(3) if j != s], axis=0)
        back = ha.transforms_[s].inverse_transform(others)
        np.testing.assert_allclose(rows[s], _loo_reference(test[s], back), atol=1e-10)


def test_mean_isc_is_the_fisher_z_average():
    r = np.array([[0.1, 0.9, np.nan], [0.5, -0.2, np.nan]])
    expected = np.tanh(np.mean(np.arctanh(r[:, :2]), axis=0))
    got = mean_isc(r)
    np.testing.assert_allclose(got[:2], expected)
    assert np.isnan(got[2])


@pytest.mark.parametrize(
    "est",
    [
        Hyperalignment(method="ridge", alphas=[1.0, 100.0], cv_blocks=3),
        SharedResponseModel(6, n_iter=3),
        Hyperalignment(zscore_all=True),
    ],
    ids=["ridge", "srm", "procrustes-zscore_all"],
)
def test_transform_files_keep_every_map_kind(est, tmp_path):
    train, test = _movie(n_subjects=3, seed=4)
    est.fit(train)
    m = est.model_.maps[1]
    path = save_transform(tmp_path / "sub-02_xfm.h5", m, params={"subject": "02"})
    back, info = load_transform(path)
    assert type(back) is type(m) and info["params"]["subject"] == "02"
    np.testing.assert_allclose(back.transform(test[1]), m.transform(test[1]), atol=1e-12)
    assert isinstance(back, (RidgeMap, SRMMap)) or back.source_scale is not None

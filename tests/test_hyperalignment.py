"""Hyperalignment: agreement with a step-by-step PyMVPA transcription, recovery, errors."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from pymvpa_reference import ProcrusteanMapper
from sklearn.base import clone

from mvpa_flows.core.alignment.hyperalignment import hyperalign
from mvpa_flows.core.alignment.procrustes import UnderdeterminedRotationWarning
from mvpa_flows.core.errors import InputValidationError
from mvpa_flows.hyperalignment import Hyperalignment

# ---------------------------------------------------------------------------------------
# Independent reference: a literal transcription of PyMVPA 2.6
# (mvpa2/algorithms/hyperalignment.py, mvpa2/mappers/procrustean.py), full SVD with
# zero-padding, alpha=1. One intentional difference: level1_equal_weight gives the common
# space the weight of the subjects already in it (PyMVPA passes the weights reversed).
# ---------------------------------------------------------------------------------------


def _zscore(x):
    x = np.array(x, dtype=float)
    mean, std = x.mean(axis=0), x.std(axis=0)
    x -= mean
    nz = std > 100 * np.finfo(float).eps * np.abs(mean)
    x[:, nz] /= std[nz]
    return x


def _pymvpa_hyperalign(
    datasets,
    ref_ds=None,
    level2_niter=1,
    zscore_all=False,
    zscore_common=True,
    level1_equal_weight=False,
    scaling=True,
):
    datasets = [np.asarray(d, dtype=float) for d in datasets]
    n = len(datasets)
    if ref_ds is None:
        ref_ds = int(np.argmax([d.shape[1] for d in datasets]))
    if zscore_all:
        datasets = [_zscore(d) for d in datasets]
    commonspace = datasets[ref_ds]
    if zscore_common and not zscore_all:
        commonspace = _zscore(commonspace)
    data_mapped = list(datasets)
    counts = 1
    for i, ds in enumerate(datasets):  # level 1
        if i == ref_ds:
            continue
        ds_ = ProcrusteanMapper(scaling).train(ds, commonspace).forward(ds)
        if zscore_common:
            ds_ = _zscore(ds_)
        data_mapped[i] = ds_
        if level1_equal_weight:
            commonspace = (counts * commonspace + ds_) / (counts + 1.0)
        else:
            commonspace = 0.5 * (ds_ + commonspace)
        counts += 1
        if zscore_common:
            commonspace = _zscore(commonspace)
    commonspace = np.mean(data_mapped, axis=0)  # level 2
    for _ in range(level2_niter):
        for i, ds in enumerate(datasets):
            temp = (commonspace * n - data_mapped[i]) / (n - 1)
            if zscore_common:
                temp = _zscore(temp)
            ds_ = ProcrusteanMapper(scaling).train(ds, temp).forward(ds)
            if zscore_common:
                ds_ = _zscore(ds_)
            data_mapped[i] = ds_
        commonspace = np.mean(data_mapped, axis=0)
    if zscore_common:
        commonspace = _zscore(commonspace)
    mappers = [ProcrusteanMapper(scaling).train(ds, commonspace) for ds in datasets]
    return commonspace, mappers  # level 3


def _subjects(n_subjects=5, n_samples=120, n_voxels=20, noise=0.5, seed=0, voxels=None):
    """Shared response rotated per subject (random orthogonal) plus noise."""
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((n_samples, n_voxels))
    out = []
    for i in range(n_subjects):
        v = voxels[i] if voxels else n_voxels
        Q = np.linalg.qr(rng.standard_normal((n_voxels, n_voxels)))[0][:, :v]
        out.append(
            S @ Q * rng.uniform(0.5, 2)
            + noise * rng.standard_normal((n_samples, v))
            + rng.normal(size=v)
        )
    return S, out


CASES = [
    {},
    {"ref_ds": 2},
    {"level2_n_iter": 3},
    {"level2_n_iter": 0},
    {"zscore_all": True},
    {"zscore_common": False},
    {"level1_equal_weight": True},
    {"scaling": False},
]


@pytest.mark.parametrize("params", CASES, ids=[str(c) or "defaults" for c in CASES])
def test_agrees_with_step_by_step_pymvpa(params):
    _, dss = _subjects(seed=1)
    ref_params = {("level2_niter" if k == "level2_n_iter" else k): v for k, v in params.items()}
    common_ref, mappers_ref = _pymvpa_hyperalign(dss, **ref_params)
    ha = Hyperalignment(**params).fit(dss)
    np.testing.assert_allclose(ha.template_, common_ref, atol=1e-8)
    for t, m in zip(ha.transforms_, mappers_ref, strict=True):
        np.testing.assert_allclose(np.asarray(t), m.proj, atol=1e-8)
    Z = ha.transform(dss)
    zs = [_zscore(d) for d in dss] if params.get("zscore_all") else dss
    for z, m, d in zip(Z, mappers_ref, zs, strict=True):
        np.testing.assert_allclose(z, m.forward(d), atol=1e-8)


def test_agrees_with_pymvpa_for_different_voxel_counts():
    _, dss = _subjects(n_voxels=20, voxels=[16, 20, 18, 12], n_subjects=4, seed=2)
    common_ref, mappers_ref = _pymvpa_hyperalign(dss)
    ha = Hyperalignment().fit(dss)
    assert ha.ref_ds_ == 1 and ha.template_.shape == (120, 20)
    np.testing.assert_allclose(ha.template_, common_ref, atol=1e-8)
    for t, m in zip(ha.transforms_, mappers_ref, strict=True):
        assert t.shape == m.proj.shape
        np.testing.assert_allclose(np.asarray(t), m.proj, atol=1e-8)


def test_thin_route_agrees_with_pymvpa_on_training_projections():
    # fewer samples than voxels: rotations are only determined on the data span
    _, dss = _subjects(n_samples=40, n_voxels=60, n_subjects=4, seed=3)
    common_ref, mappers_ref = _pymvpa_hyperalign(dss)
    with pytest.warns(UnderdeterminedRotationWarning):
        ha = Hyperalignment().fit(dss)
    assert all(t.is_factored for t in ha.transforms_)
    np.testing.assert_allclose(ha.template_, common_ref, atol=1e-7)
    for z, m, d in zip(ha.transform(dss), mappers_ref, dss, strict=True):
        np.testing.assert_allclose(z, m.forward(d), atol=1e-7)


def test_recovers_rotations_of_a_shared_response():
    S, dss = _subjects(n_subjects=6, n_samples=300, n_voxels=30, noise=0.3, seed=4)
    ha = Hyperalignment().fit(dss)
    Z = ha.transform(dss)
    r_hyper = [np.corrcoef(Z[0].ravel(), z.ravel())[0, 1] for z in Z[1:]]
    r_anat = [np.corrcoef(dss[0].ravel(), d.ravel())[0, 1] for d in dss[1:]]
    assert min(r_hyper) > 0.85
    assert max(np.abs(r_anat)) < 0.3
    # the template is the shared response up to one common rotation
    R = np.linalg.lstsq(S, ha.template_, rcond=None)[0]
    resid = ha.template_ - S @ R
    assert np.linalg.norm(resid) / np.linalg.norm(ha.template_) < 0.15
    # full-rank rotations: inverse_transform undoes transform exactly
    for b, d in zip(ha.inverse_transform(Z), dss, strict=True):
        np.testing.assert_allclose(b, d, atol=1e-8)


def test_sklearn_conventions():
    ha = Hyperalignment(level2_n_iter=2)
    assert ha.get_params()["level2_n_iter"] == 2
    assert not any(k.endswith("_") for k in vars(ha))
    c = clone(ha)
    assert c.get_params() == ha.get_params()
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ha.transform([np.zeros((3, 2))])
    assert "level2_n_iter=2" in repr(ha)


def test_constant_voxels_do_not_break_the_fit():
    _, dss = _subjects(n_subjects=4, seed=6)
    dss[1][:, 4] = 3.0
    dss[2][:, 0] = 0.0
    with pytest.warns(UnderdeterminedRotationWarning):
        ha = Hyperalignment().fit(dss)
    assert all(np.isfinite(np.asarray(t)).all() for t in ha.transforms_)
    np.testing.assert_allclose(np.asarray(ha.transforms_[1])[4], 0, atol=1e-12)


def test_bad_input():
    _, dss = _subjects(n_subjects=3)
    with pytest.raises(InputValidationError, match="at least 2 subjects"):
        hyperalign(dss[:1])
    with pytest.raises(InputValidationError, match="same samples"):
        hyperalign([dss[0], dss[1][:-5], dss[2]])
    with pytest.raises(InputValidationError, match="ref_ds"):
        hyperalign(dss, ref_ds=5)
    with pytest.raises(InputValidationError, match="level2_n_iter"):
        hyperalign(dss, level2_n_iter=-1)
    with pytest.raises(InputValidationError, match="Unknown"):
        hyperalign(dss, alpha=0.5)
    bad = [d.copy() for d in dss]
    bad[1][0, 0] = np.nan
    with pytest.raises(InputValidationError, match="NaN"):
        hyperalign(bad)
    with pytest.raises(InputValidationError, match="list"):
        hyperalign(dss[0])
    ha = Hyperalignment().fit(dss)
    with pytest.raises(InputValidationError, match="one array per fitted subject"):
        ha.transform(dss[:2])
    with pytest.raises(InputValidationError, match="n_samples, 20"):
        ha.transform([d[:, :10] for d in dss])


def test_no_warning_when_fully_determined():
    _, dss = _subjects(n_subjects=3, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Hyperalignment().fit(dss)


def test_n_jobs_does_not_change_the_result():
    _, dss = _subjects(n_subjects=5, seed=8)
    a = Hyperalignment().fit(dss)
    b = Hyperalignment(n_jobs=2, level2_n_iter=1).fit(dss)
    np.testing.assert_allclose(a.template_, b.template_, atol=1e-12)
    for ta, tb in zip(a.transforms_, b.transforms_, strict=True):
        np.testing.assert_allclose(np.asarray(ta), np.asarray(tb), atol=1e-12)
    with pytest.raises(InputValidationError, match="n_jobs"):
        hyperalign(dss, n_jobs=0)


SHERLOCK = Path(__file__).parents[2] / "shared" / "data" / "sherlock-pmc"


@pytest.mark.shared_data
@pytest.mark.skipif(not SHERLOCK.exists(), reason=f"shared Sherlock data not found at {SHERLOCK}")
def test_agrees_with_pymvpa_on_sherlock():
    nib = pytest.importorskip("nibabel")
    dss = []
    for sub in range(1, 7):
        func = SHERLOCK / "derivatives" / "fmriprep" / f"sub-{sub:02d}" / "func"
        stem = f"sub-{sub:02d}_task-sherlock_run-1_space-MNI152NLin6Asym"
        mask = nib.load(func / f"{stem}_desc-brain_mask.nii.gz").get_fdata() > 0
        dss.append(nib.load(func / f"{stem}_desc-preproc_bold.nii.gz").get_fdata()[mask].T)
    common_ref, mappers_ref = _pymvpa_hyperalign(dss)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderdeterminedRotationWarning)
        ha = Hyperalignment().fit(dss)
    # a few data directions are numerically collinear (singular values ~1e-16 of the
    # largest), where both solutions are determined only to round-off amplified by that
    # conditioning: agreement to ~1e-4 of the data scale
    assert np.abs(ha.template_ - common_ref).max() < 2e-3
    for z, m, d in zip(ha.transform(dss), mappers_ref, dss, strict=True):
        ref = m.forward(d)
        assert np.linalg.norm(z - ref) / np.linalg.norm(ref) < 1e-3

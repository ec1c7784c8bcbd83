"""Masking and cleaning against a plain numpy reference."""

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from mvpa_flows.core.data.cleaning import (
    analysis_mask,
    clean_run,
    masked_run_data,
    prepare_samples,
    read_image_data,
)
from mvpa_flows.core.data.confounds import select_confounds
from mvpa_flows.core.errors import InputValidationError


def _reference_clean(data, confounds):
    """Regress [1, linear trend, z-scored confounds] out, then z-score (ddof=1)."""
    n = data.shape[0]
    trend = np.arange(n, dtype=float)
    conf = (confounds - confounds.mean(0)) / confounds.std(0)
    design = np.column_stack([np.ones(n), trend, conf])
    beta, *_ = np.linalg.lstsq(design, data, rcond=None)
    resid = data - design @ beta
    return (resid - resid.mean(0)) / resid.std(0, ddof=1)


def test_clean_run_matches_joint_regression_reference():
    rng = np.random.default_rng(0)
    n = 80
    confounds = rng.standard_normal((n, 3))
    data = rng.standard_normal((n, 20)) + confounds @ rng.standard_normal((3, 20))
    data += np.linspace(0, 5, n)[:, None] + 100
    ours = clean_run(data, confounds, detrend=True, standardize="zscore_run")
    np.testing.assert_allclose(ours, _reference_clean(data, confounds), atol=1e-8)
    assert np.allclose(ours.mean(0), 0) and np.allclose(ours.std(0, ddof=1), 1)


def test_constant_voxel_stays_finite():
    data = np.ones((30, 2))
    data[:, 1] = np.arange(30) % 3
    out = clean_run(data, None, detrend=True)
    assert np.isfinite(out).all() and np.allclose(out[:, 0], 0)


def test_standardize_none_keeps_scale_and_rejects_unknown():
    rng = np.random.default_rng(1)
    data = rng.standard_normal((40, 5)) * 7
    out = clean_run(data, None, detrend=False, standardize="none")
    np.testing.assert_allclose(out, data, atol=1e-12)
    out = clean_run(data, None, detrend=True, standardize="none")
    trend = np.polyval(np.polyfit(np.arange(40), data, 1)[:, 0], np.arange(40))
    np.testing.assert_allclose(out[:, 0], data[:, 0] - trend, atol=1e-10)
    with pytest.raises(InputValidationError, match="standardize must be one of"):
        clean_run(data, None, standardize="psc")


def test_select_confounds_defaults_and_errors():
    table = pd.DataFrame(
        np.arange(24.0).reshape(4, 6),
        columns=["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"],
    )
    table["fd"] = [np.nan, 1, 2, 3]
    values, names = select_confounds(table, None)
    assert names == list(table.columns[:6]) and values.shape == (4, 6)
    assert select_confounds(table, ["none"]) == (None, [])
    values, _ = select_confounds(table, ["fd"])
    assert values[:, 0].tolist() == [0, 1, 2, 3]
    assert select_confounds(table[["fd"]], None) == (None, [])
    with pytest.raises(InputValidationError, match=r"\['csf'\] are missing from c.tsv"):
        select_confounds(table, ["csf"], source="c.tsv")


def test_select_confounds_takes_shell_patterns_per_run():
    run1 = pd.DataFrame(np.ones((4, 3)), columns=["a_comp_cor_00", "a_comp_cor_01", "csf"])
    run2 = pd.DataFrame(np.ones((4, 4)), columns=[f"a_comp_cor_0{i}" for i in range(3)] + ["x"])
    assert select_confounds(run1, ["a_comp_cor_*"])[1] == ["a_comp_cor_00", "a_comp_cor_01"]
    assert select_confounds(run2, ["a_comp_cor_*", "x"])[1] == [
        "a_comp_cor_00",
        "a_comp_cor_01",
        "a_comp_cor_02",
        "x",
    ]
    # a pattern may match nothing in a run (no motion outlier there): nothing regressed
    assert select_confounds(run1, ["motion_outlier*"]) == (None, [])


def test_masks_must_share_the_bold_grid():
    bold = nb.Nifti1Image(np.ones((4, 4, 4, 5), np.float32), np.eye(4))
    mask = nb.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4))
    other = nb.Nifti1Image(np.ones((4, 4, 3), np.uint8), np.eye(4))
    assert analysis_mask([mask, mask], [bold, bold]).get_fdata().sum() == 64
    with pytest.raises(InputValidationError, match="m2.nii.gz .* is not on the grid of b2"):
        analysis_mask([mask, other], [bold, bold], ["m1.nii.gz", "m2.nii.gz"], ["b1", "b2"])


def test_truncated_image_is_reported_with_the_file(tmp_path):
    path = tmp_path / "run-1_bold.nii.gz"
    data = np.random.default_rng(0).standard_normal((4, 4, 4, 20)).astype(np.float32)
    nb.Nifti1Image(data, np.eye(4)).to_filename(path)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(InputValidationError, match=r"run-1_bold.nii.gz cannot be read .*trunc"):
        read_image_data(nb.load(path), path.name)


def test_censored_volumes_leave_the_cleaning_like_nilearn():
    """prepare_samples with a sample mask equals nilearn's clean(sample_mask=...) rows."""
    from nilearn import signal

    rng = np.random.default_rng(2)
    data = rng.standard_normal((2, 2, 2, 30)).astype(np.float32)
    img = nb.Nifti1Image(data, np.eye(4))
    mask = nb.Nifti1Image(np.ones((2, 2, 2), np.uint8), np.eye(4))
    kept = np.setdiff1d(np.arange(30), [0, 11, 12])
    table = pd.DataFrame({"run": 1, "volume": [3, 4, 13, 20], "label": ["a", "a", "b", "b"]})
    X = prepare_samples([img], mask, table, [1], sample_masks=[kept], t_r=[2.0])
    ref = signal.clean(
        data.reshape(-1, 30).T.astype(float),
        detrend=True,
        standardize="zscore_sample",
        sample_mask=kept,
        t_r=2.0,
    )
    np.testing.assert_allclose(X, ref[np.searchsorted(kept, [3, 4, 13, 20])], atol=1e-10)
    with pytest.raises(InputValidationError, match="censored volumes"):
        prepare_samples([img], mask, table.assign(volume=[3, 4, 11, 20]), [1], sample_masks=[kept])


def test_nan_in_bold_is_reported_with_the_file():
    data = np.ones((3, 3, 3, 4), np.float32)
    data[1, 1, 1, 2] = np.nan
    img = nb.Nifti1Image(data, np.eye(4))
    with pytest.raises(InputValidationError, match=r"run-2_bold.nii.gz holds NaN .* 1 voxel"):
        masked_run_data(img, np.ones((3, 3, 3), bool), "run-2_bold.nii.gz")

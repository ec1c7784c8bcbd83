"""The vectorised F-test agrees with sklearn's f_classif."""

import numpy as np
import pytest
from sklearn.feature_selection import f_classif

from mvpa_flows.core.errors import InputValidationError
from mvpa_flows.core.stats.ftest import f_oneway_voxels


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_matches_f_classif_on_synthetic(n_classes):
    rng = np.random.default_rng(n_classes)
    X = rng.standard_normal((120, 300))
    y = rng.integers(0, n_classes, 120)
    X[y == 1, :10] += 1.5
    F, p = f_oneway_voxels(X, y)
    F_ref, p_ref = f_classif(X, y)
    np.testing.assert_allclose(F, F_ref, rtol=1e-10)
    np.testing.assert_allclose(p, p_ref, rtol=1e-8, atol=1e-300)
    assert (p[:10] < 1e-3).all()


def test_string_labels_and_float32():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 7)).astype(np.float32)
    y = np.array(["face", "house"] * 20)
    F, _ = f_oneway_voxels(X, y)
    np.testing.assert_allclose(F, f_classif(X.astype(np.float64), y)[0], rtol=1e-5)


def test_errors():
    with pytest.raises(InputValidationError, match="at least two conditions"):
        f_oneway_voxels(np.ones((4, 2)), ["a"] * 4)
    with pytest.raises(InputValidationError, match="more samples"):
        f_oneway_voxels(np.ones((2, 2)), ["a", "b"])


def test_matches_f_classif_on_cleaned_haxby_samples(haxby_dir):
    from mvpa_flows.core.data.dataset import load_samples

    func = haxby_dir / "derivatives" / "fmriprep" / "sub-1" / "func"
    stems = [f"sub-1_task-objectviewing_run-{r:02d}" for r in range(1, 13)]
    X, table, mask, info = load_samples(
        [func / f"{s}_desc-preproc_bold.nii.gz" for s in stems],
        [func / f"{s}_desc-brain_mask.nii.gz" for s in stems],
        [haxby_dir / "sub-1" / "func" / f"{s}_events.tsv" for s in stems],
        confounds_files=[func / f"{s}_desc-confounds_timeseries.tsv" for s in stems],
        conditions=["face", "house"],
    )
    assert X.shape == (216, 530) and info["SampleCounts"] == {"face": 108, "house": 108}
    F, p = f_oneway_voxels(X, table["label"].to_numpy())
    F_ref, p_ref = f_classif(X, table["label"].to_numpy())
    np.testing.assert_allclose(F, F_ref, rtol=1e-6)
    np.testing.assert_allclose(p, p_ref, rtol=1e-6)
    assert (p < 1e-10).sum() > 10  # face vs house is decodable on this slice

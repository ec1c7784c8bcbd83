"""Between-subject classification: synthetic ground truth, circularity, Sherlock."""

import warnings
from pathlib import Path

import numpy as np
import pytest

from mvpa_flows.core.alignment.bsc import between_subject_classification
from mvpa_flows.core.alignment.procrustes import UnderdeterminedRotationWarning
from mvpa_flows.core.errors import InputValidationError

DATA = Path(__file__).parents[2] / "shared" / "data" / "sherlock-pmc"


def _movie(n_subjects=5, n_train=400, n_test=240, n_voxels=40, noise=1.0, seed=0):
    """A shared movie response seen through a random orthogonal rotation per subject."""
    rng = np.random.default_rng(seed)
    s_train = rng.standard_normal((n_train, n_voxels))
    s_test = rng.standard_normal((n_test, n_voxels))
    train, test = [], []
    for _ in range(n_subjects):
        Q = np.linalg.qr(rng.standard_normal((n_voxels, n_voxels)))[0]
        train.append(s_train @ Q + noise * rng.standard_normal((n_train, n_voxels)))
        test.append(s_test @ Q + noise * rng.standard_normal((n_test, n_voxels)))
    return train, test


def test_segments_synthetic_ground_truth():
    train, test = _movie(noise=2.0)
    df = between_subject_classification(train, test, mode="segments", tr=2.0, segment_length=12.0)
    assert list(df.columns[:5]) == [
        "subject",
        "anatomical",
        "hyperaligned",
        "within_subject",
        "chance",
    ]
    assert (df.n_segments == 40).all() and np.allclose(df.chance, 1 / 40)
    assert df.hyperaligned.min() > 0.7  # measured 0.80-0.90
    assert df.anatomical.mean() < 0.15
    assert df.within_subject.isna().all()
    assert "within_subject" in df.attrs["within_subject_note"]


def test_conditions_synthetic_ground_truth():
    rng = np.random.default_rng(1)
    n_voxels, n_classes, n_per = 30, 4, 20
    protos = rng.standard_normal((n_classes, n_voxels))
    y = np.repeat(np.arange(n_classes), n_per)
    groups = np.tile(np.arange(4), n_classes * n_per // 4)
    s_train = rng.standard_normal((300, n_voxels))
    train, test = [], []
    for _ in range(6):
        Q = np.linalg.qr(rng.standard_normal((n_voxels, n_voxels)))[0]
        train.append(s_train @ Q + 0.5 * rng.standard_normal((300, n_voxels)))
        test.append(protos[y] @ Q + 1.5 * rng.standard_normal((y.size, n_voxels)))
    df = between_subject_classification(
        train, test, mode="conditions", test_labels=y, test_groups=groups
    )
    assert np.allclose(df.chance, 0.25) and (df.n_samples == 80).all()
    assert df.hyperaligned.mean() > 0.8
    assert df.within_subject.mean() > 0.7
    assert df.hyperaligned.mean() > df.within_subject.mean() - 0.1  # near within-subject
    assert df.anatomical.mean() < 0.45
    # any scikit-learn classifier
    from sklearn.neighbors import KNeighborsClassifier

    df2 = between_subject_classification(
        train, test, mode="conditions", test_labels=y, estimator=KNeighborsClassifier(5)
    )
    assert df2.within_subject.isna().all() and df2.hyperaligned.mean() > 0.7


def test_refuses_circular_analysis():
    train, test = _movie(n_subjects=3, n_train=60, n_test=60, n_voxels=10)
    with pytest.raises(InputValidationError, match="circular"):
        between_subject_classification(train, train, tr=2.0, segment_length=6.0)
    with pytest.raises(InputValidationError, match="circular"):
        between_subject_classification(
            train, [t.copy() for t in train], tr=2.0, segment_length=6.0
        )
    with pytest.raises(InputValidationError, match="circular"):
        between_subject_classification(
            train, [train[0][:30]] + test[1:], tr=2.0, segment_length=6.0
        )
    with pytest.raises(InputValidationError, match="different runs"):
        between_subject_classification(
            train, test, tr=2.0, segment_length=6.0, train_runs=[1, 2], test_runs=[2]
        )


def test_bad_input():
    train, test = _movie(n_subjects=3, n_train=60, n_test=60, n_voxels=10)
    with pytest.raises(InputValidationError, match="at least 2 subjects"):
        between_subject_classification(train[:1], test[:1], tr=2.0)
    with pytest.raises(InputValidationError, match="same samples"):
        between_subject_classification([train[0], train[1][:50], train[2]], test, tr=2.0)
    with pytest.raises(InputValidationError, match="tr"):
        between_subject_classification(train, test)
    with pytest.raises(InputValidationError, match="test_labels"):
        between_subject_classification(train, test, mode="conditions")
    with pytest.raises(InputValidationError, match="mode"):
        between_subject_classification(train, test, mode="voxels")
    with pytest.raises(InputValidationError, match="2 segments"):
        between_subject_classification(train, test, tr=2.0, segment_length=100.0)


def _load_sherlock(run):
    nb = pytest.importorskip("nibabel")
    out = []
    for sub in range(1, 7):
        func = DATA / "derivatives" / "fmriprep" / f"sub-{sub:02d}" / "func"
        stem = f"sub-{sub:02d}_task-sherlock_run-{run}_space-MNI152NLin6Asym"
        mask = nb.load(func / f"{stem}_desc-brain_mask.nii.gz").get_fdata() > 0
        bold = nb.load(func / f"{stem}_desc-preproc_bold.nii.gz").get_fdata(dtype=np.float32)
        out.append(bold[mask].T.astype(np.float64))
    return out


@pytest.mark.shared_data
@pytest.mark.skipif(not DATA.exists(), reason=f"shared Sherlock data not found at {DATA}")
def test_sherlock_segments_hyperaligned_beats_anatomical():
    train, test = _load_sherlock(1), _load_sherlock(2)
    assert [x.shape for x in train] == [(946, 481)] * 6
    with warnings.catch_warnings():
        # run 1 has a few collinear directions (rotation partial there)
        warnings.simplefilter("ignore", UnderdeterminedRotationWarning)
        df = between_subject_classification(
            train,
            test,
            mode="segments",
            tr=1.5,
            segment_length=18.0,
            subject_labels=[f"sub-{s:02d}" for s in range(1, 7)],
            train_runs=[1],
            test_runs=[2],
        )
    print(df.to_string())
    assert (df.n_segments == 85).all()
    assert df.chance.iloc[0] == pytest.approx(1 / 85)
    # measured: anatomical 0.143, hyperaligned 0.237 (chance 0.012)
    assert df.hyperaligned.mean() > df.anatomical.mean() + 0.05
    assert (df.hyperaligned >= df.anatomical).all()
    assert df.anatomical.mean() > 5 * df.chance.mean()


def test_different_voxel_counts_anatomical_undefined():
    rng = np.random.default_rng(3)
    s_train, s_test = rng.standard_normal((200, 20)), rng.standard_normal((120, 20))
    train, test = [], []
    for v in (20, 18, 16, 20):
        Q = np.linalg.qr(rng.standard_normal((20, 20)))[0][:, :v]
        train.append(s_train @ Q + 0.5 * rng.standard_normal((200, v)))
        test.append(s_test @ Q + 0.5 * rng.standard_normal((120, v)))
    df = between_subject_classification(
        train, test, tr=1.0, segment_length=6.0, hyperalignment_params={"level2_n_iter": 2}
    )
    assert df.anatomical.isna().all() and not df.attrs["anatomical_defined"]
    assert df.hyperaligned.mean() > 0.8
    assert df.attrs["hyperalignment_params"]["level2_n_iter"] == 2

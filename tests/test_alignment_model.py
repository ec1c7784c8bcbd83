"""The fitted alignment model: new subjects, HDF5 files, one fit per evaluation, ISC, run
checks."""

import h5py
import numpy as np
import pytest
from sklearn.base import clone

from mvpa_flows.core.alignment import evaluate as evaluate_module
from mvpa_flows.core.alignment.evaluate import evaluate_new_subjects, hyperalign_and_evaluate
from mvpa_flows.core.alignment.isc import isc_before_after
from mvpa_flows.core.alignment.runs import (
    RunSelectionError,
    check_repetition_time,
    check_segments,
    check_training_samples,
    split_runs,
)
from mvpa_flows.core.errors import InputValidationError
from mvpa_flows.hyperalignment import (
    AlignmentModel,
    Hyperalignment,
    ProcrustesMap,
    SharedResponseModel,
    isc,
    load_model,
)

ESTIMATORS = {
    "procrustes": Hyperalignment(),
    "procrustes-zscore_all": Hyperalignment(zscore_all=True),
    "ridge": Hyperalignment(method="ridge", alphas=[1.0, 10.0, 100.0]),
    "srm": SharedResponseModel(8, n_iter=5),
}


def _movie(n_subjects=5, n_train=200, n_test=120, n_voxels=20, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    s_train = rng.standard_normal((n_train, n_voxels))
    s_test = rng.standard_normal((n_test, n_voxels))
    train, test = [], []
    for _ in range(n_subjects):
        Q = np.linalg.qr(rng.standard_normal((n_voxels, n_voxels)))[0]
        offset, gain = rng.normal(size=n_voxels), rng.uniform(0.5, 2, n_voxels)
        train.append((s_train @ Q + noise * rng.standard_normal((n_train, n_voxels))) * gain)
        test.append((s_test @ Q + noise * rng.standard_normal((n_test, n_voxels))) * gain)
        train[-1] += offset
        test[-1] += offset
    return train, test


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_save_load_round_trip_and_refusals(name, tmp_path):
    train, test = _movie()
    est = clone(ESTIMATORS[name]).fit(train)
    model = est.model_
    model.subjects = [f"0{i}" for i in range(1, 6)]
    model.metadata.update(task="movie", space="MNI152NLin6Asym", train_runs=[1], tr=2.0)
    model.voxel_indices = np.arange(20) * 2
    path = model.save(tmp_path / "tpl-movieHA_model.h5")
    loaded = load_model(path, task="movie", space="MNI152NLin6Asym")
    assert isinstance(loaded, AlignmentModel) and loaded.method == model.method
    assert loaded.subjects == model.subjects and loaded.metadata["train_runs"] == [1]
    np.testing.assert_array_equal(loaded.voxel_indices, model.voxel_indices)
    np.testing.assert_array_equal(loaded.template, model.template)
    for a, b in zip(loaded.transform(test), est.transform(test), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert [type(m) for m in loaded.maps] == [type(m) for m in model.maps]
    # a new subject into the loaded model equals one into the fitted model
    np.testing.assert_allclose(
        loaded.fit_subject(train[2]).transform(test[2]),
        est.fit_subject(train[2]).transform(test[2]),
        atol=1e-10,
    )
    with h5py.File(path) as f:
        assert f.attrs["format"] == "mvpa_flows-alignment-model"
        assert f["template"].shape == model.template.shape
        assert sorted(f["maps"]) == ["0", "1", "2", "3", "4"]
    with pytest.raises(InputValidationError, match="model of task 'movie', not of task 'rest'"):
        load_model(path, task="rest", space="MNI152NLin6Asym")
    with pytest.raises(InputValidationError, match="space 'MNI152NLin6Asym', not of space 'T1w'"):
        AlignmentModel.load(path, space="T1w")


def test_load_refuses_other_files(tmp_path):
    with pytest.raises(InputValidationError, match="No alignment model"):
        load_model(tmp_path / "missing.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "mvpa_flows-procrustes-xfm"
    with pytest.raises(InputValidationError, match="not an mvpa_flows alignment model"):
        load_model(other)
    text = tmp_path / "model.h5"
    text.write_text("not hdf5")
    with pytest.raises(InputValidationError, match="not an HDF5 alignment model"):
        load_model(text)


def test_fit_subject_of_a_fitted_subject_is_its_own_map():
    train, test = _movie(seed=1)
    for params in ({}, {"zscore_all": True}, {"scaling": False, "reflection": False}):
        ha = Hyperalignment(**params).fit(train)
        for i in (0, 3):
            m = ha.fit_subject(train[i])
            assert isinstance(m, ProcrustesMap)
            np.testing.assert_allclose(m.transform(test[i]), ha.transform(test)[i], atol=1e-9)


def test_new_subject_errors_name_both_counts():
    train, _ = _movie(n_subjects=3)
    ha = Hyperalignment().fit(train)
    with pytest.raises(InputValidationError, match="150 training samples but the model .* 200"):
        ha.fit_subject(train[0][:150])
    with pytest.raises(InputValidationError, match="12 voxels but the model's subjects have 20"):
        ha.fit_subject(train[0][:, :12])
    with pytest.raises(InputValidationError, match="NaN"):
        ha.fit_subject(np.full((200, 20), np.nan))


@pytest.mark.parametrize("name", ["procrustes", "ridge", "srm"])
def test_new_subjects_reach_most_of_the_in_fit_accuracy(name):
    train, test = _movie(n_subjects=6, noise=1.5, seed=2)
    est = ESTIMATORS[name]
    in_fit = hyperalign_and_evaluate(
        train, test, list("abcdef"), tr=2.0, segment_length=8.0, alignment=clone(est)
    )["scores"]
    new = []
    for s in range(6):
        others = [j for j in range(6) if j != s]
        model = clone(est).fit([train[j] for j in others])
        res = evaluate_new_subjects(
            model, [train[s]], [test[s]], [test[j] for j in others], tr=2.0, segment_length=8.0
        )
        assert res["scores"].subject.tolist() == ["new0"] and len(res["maps"]) == 1
        new.append(res["scores"].hyperaligned.iloc[0])
    assert in_fit.hyperaligned.mean() > 3 * in_fit.anatomical.mean()
    assert np.mean(new) >= 0.85 * in_fit.hyperaligned.mean()


def test_hyperalign_and_evaluate_fits_once_and_validates_first(monkeypatch):
    train, test = _movie(n_subjects=3, n_train=60, n_test=60)
    calls = []
    original = Hyperalignment.fit

    def counting_fit(self, datasets, y=None):
        calls.append(1)
        return original(self, datasets, y)

    monkeypatch.setattr(Hyperalignment, "fit", counting_fit)
    res = hyperalign_and_evaluate(
        train, test, ["a", "b", "c"], tr=2.0, segment_length=6.0, train_runs=[1], test_runs=[2]
    )
    assert len(calls) == 1
    assert res["model"].subjects == ["a", "b", "c"]
    assert res["model"].metadata == {"train_runs": [1], "test_runs": [2], "tr": 2.0}
    assert res["fit"]["transforms"] is res["model"].maps and res["fit"]["ref_ds"] == 0
    for bad in ({"tr": None}, {"tr": 2.0, "segment_length": 500.0}):
        with pytest.raises(InputValidationError, match="tr|segment"):
            hyperalign_and_evaluate(train, test, ["a", "b", "c"], **bad)
    with pytest.raises(InputValidationError, match="level2_n_iter"):
        hyperalign_and_evaluate(
            train, test, list("abc"), tr=2.0, hyperalignment_params={"level2_n_iter": -1}
        )
    assert len(calls) == 1  # nothing fitted for bad input
    assert evaluate_module.__all__ == [
        "ALIGNMENT_METHODS",
        "alignment_estimator",
        "alignment_parameters",
        "check_alignment",
        "check_searchlight_partials",
        "evaluate_new_subjects",
        "hyperalign_and_evaluate",
    ]


def test_scikit_learn_conventions():
    train, _ = _movie(n_subjects=3)
    assert "get_params" not in vars(Hyperalignment) and "set_params" not in vars(Hyperalignment)
    ha = Hyperalignment(method="ridge", cv_blocks=4)
    assert clone(ha).get_params() == ha.get_params()
    ha.set_params(cv_blocks=3)
    assert ha.cv_blocks == 3
    ha.fit(train)
    assert ha.n_features_in_ == 20 and ha.n_features_per_subject_ == [20, 20, 20]
    het = [train[0], train[1][:, :15], train[2]]
    ha2 = Hyperalignment().fit(het)
    assert ha2.n_features_per_subject_ == [20, 15, 20] and not hasattr(ha2, "n_features_in_")


def test_isc_matches_a_loop_of_correlations_and_rises_after_alignment():
    train, test = _movie(n_subjects=4, noise=0.8, seed=5)
    r = isc(test)
    for s in range(4):
        mean_others = np.mean([test[j] for j in range(4) if j != s], axis=0)
        ref = [np.corrcoef(test[s][:, v], mean_others[:, v])[0, 1] for v in range(20)]
        np.testing.assert_allclose(r[s], ref, atol=1e-12)
    const = [X.copy() for X in test]
    const[1][:, 3] = 2.0
    assert np.isnan(isc(const)[1, 3])
    out = isc_before_after(Hyperalignment().fit(train), test)
    assert out["aligned"].mean() > 0.5 > 0.2 > abs(out["anatomical"].mean())
    with pytest.raises(InputValidationError, match="same \\(n_samples, n_voxels\\) shape"):
        isc([test[0], test[1][:, :10]])
    with pytest.raises(InputValidationError, match="at least 2 subjects"):
        isc(test[:1])


def test_run_checks():
    runs = {"01": [1, 2, 3], "02": [1, 2, 3]}
    assert split_runs(runs) == ([1, 2], [3])
    assert split_runs(runs, train_runs=[1]) == ([1], [2, 3])
    assert split_runs(runs, test_runs=[1]) == ([2, 3], [1])
    with pytest.raises(RunSelectionError, match="circular"):
        split_runs(runs, [1, 2], [2])
    with pytest.raises(RunSelectionError, match="share the runs \\[1\\]"):
        split_runs({"01": [1, 2], "02": [1]})
    with pytest.raises(InputValidationError, match=r"sub-02 lacks training run\(s\) \[3\]"):
        split_runs({"01": [1, 2, 3], "02": [1, 2]}, [3], [1])
    vols = {"01": {1: 100, 2: 90}, "02": {1: 100, 2: 80}}
    assert check_training_samples(vols, [1]) == 100
    with pytest.raises(InputValidationError, match="different numbers of volumes"):
        check_training_samples(vols, [1, 2])
    assert check_repetition_time({"01": [1.5, 1.5], "02": [1.5]}) == 1.5
    with pytest.raises(InputValidationError, match="different TRs"):
        check_repetition_time({"01": [1.5], "02": [2.0]})
    assert check_segments(1.5, 18.0, 1030) == (12, 85)
    with pytest.raises(InputValidationError, match="'tr'"):
        check_segments(None, 18.0, 100)
    with pytest.raises(InputValidationError, match="'segment_length'"):
        check_segments(2.0, -1.0, 100)
    with pytest.raises(InputValidationError, match="2 segments"):
        check_segments(2.0, 150.0, 100)


def test_fit_blas_threads_limit_and_never_raise(monkeypatch):
    from threadpoolctl import threadpool_limits

    from mvpa_flows.core import _parallel

    monkeypatch.setattr(_parallel, "available_cores", lambda: 2)
    monkeypatch.setattr(_parallel, "_other_runnable", lambda: 0)
    with threadpool_limits(limits=1, user_api="blas"):
        assert _parallel.fit_blas_threads(1) == 1  # OMP_NUM_THREADS=1 stays 1
    with threadpool_limits(limits=2, user_api="blas"):
        assert _parallel.fit_blas_threads(1) == 2
        assert _parallel.fit_blas_threads(2) == 1  # n_jobs x threads <= cores
        monkeypatch.setattr(_parallel, "_other_runnable", lambda: 4)
        assert _parallel.fit_blas_threads(1) == 1  # 4 busy processes: no spare core

"""Trial-wise betas (LSS/LSA) against nilearn's FirstLevelModel, and their bad inputs."""

import inspect
import json
import warnings

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import FirstLevelModel, make_first_level_design_matrix
from nilearn.signal import standardize_signal

from mvpa_flows.core.data import betas as betas_module
from mvpa_flows.core.data.beta_samples import (
    beta_samples,
    check_beta_inputs,
    collinearity_notes,
    load_beta_samples,
    load_betaseries_samples,
    methods_text,
)
from mvpa_flows.core.data.betas import (
    DESIGN_DEFAULTS,
    MIN_ONSET,
    OVERSAMPLING,
    design_matrix,
    neighbour_correlation,
    repetition_time,
    run_betaseries,
    trial_betas,
    trial_betas_img,
)
from mvpa_flows.core.errors import InputValidationError
from mvpa_flows.datasets import make_event_related_data, make_event_related_dataset

RTOL = 1e-6
REFERENCE = {"t_r": None, "noise_model": "ols", "signal_scaling": False, "minimize_memory": True}


def _relative_error(ours, ref):
    return np.abs(ours - ref).max() / np.abs(ref).max()


def _as_image(data):
    """(n_volumes, n_voxels) -> a 4D image (n_voxels x 1 x 1) and an all-ones mask."""
    n, v = data.shape
    return (
        nb.Nifti1Image(data.T.reshape(v, 1, 1, n).astype(np.float64), np.eye(4)),
        nb.Nifti1Image(np.ones((v, 1, 1), np.uint8), np.eye(4)),
    )


def nilearn_betas(img, mask, events, tr, method, confounds=None, **design):
    """The reference: FirstLevelModel fitted per trial (LSS) or once (LSA)."""
    kw = {**REFERENCE, "t_r": tr, "mask_img": mask, **design}
    confounds = None if confounds is None else [confounds]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "lsa":
            lsa = events.assign(trial_type=[f"t{i:04d}" for i in range(len(events))])
            model = FirstLevelModel(**kw).fit(img, events=lsa, confounds=confounds)
            for name in lsa["trial_type"]:
                beta = model.compute_contrast(name, output_type="effect_size")
                out.append(model.masker_.transform(beta).ravel())
        else:
            for i in range(len(events)):
                single = events.copy()
                single.loc[single.index[i], "trial_type"] = "thistrial"
                model = FirstLevelModel(**kw).fit(img, events=single, confounds=confounds)
                beta = model.compute_contrast("thistrial", output_type="effect_size")
                out.append(model.masker_.transform(beta).ravel())
    return np.array(out)


@pytest.fixture(scope="module")
def rapid():
    """One rapid event-related run (ISI 3-5 s), three conditions, baseline 1000."""
    data = make_event_related_data(
        n_runs=1, n_volumes=120, n_voxels=12, conditions=("a", "b", "c"), seed=5
    )
    events = data["events"][0]
    events.loc[events.index[::7], "duration"] = 0.0  # impulses too
    return 1000 + 10 * data["data"][0], events, data["tr"]


def test_defaults_are_those_of_firstlevelmodel():
    params = FirstLevelModel().get_params()
    for key in ("hrf_model", "drift_model", "high_pass", "drift_order", "slice_time_ref"):
        assert DESIGN_DEFAULTS[key] == params[key], key
    assert params["min_onset"] == MIN_ONSET
    oversampling = inspect.signature(make_first_level_design_matrix).parameters["oversampling"]
    assert oversampling.default == OVERSAMPLING


@pytest.mark.parametrize("method", ["lss", "lsa"])
def test_betas_equal_nilearn_on_rapid_events(rapid, method):
    data, events, tr = rapid
    ours = trial_betas(data, events, tr, method=method)
    ref = nilearn_betas(*_as_image(data), events, tr, method)
    assert ours.shape == (len(events), data.shape[1])
    assert _relative_error(ours, ref) < RTOL


@pytest.mark.parametrize(
    ("method", "design"),
    [
        ("lss", {"hrf_model": "spm + derivative", "slice_time_ref": 0.5}),
        ("lsa", {"hrf_model": "spm + derivative", "slice_time_ref": 0.5}),
        ("lss", {"hrf_model": "glover + derivative + dispersion", "drift_model": "polynomial",
                 "drift_order": 3}),
        ("lsa", {"hrf_model": "glover + derivative", "drift_model": "polynomial",
                 "drift_order": 3}),
        ("lss", {"hrf_model": "spm", "drift_model": None}),
        ("lsa", {"hrf_model": "spm", "drift_model": None}),
    ],
    ids=["lss-spm+derivative", "lsa-spm+derivative", "lss-dispersion-polynomial",
         "lsa-derivative-polynomial", "lss-spm-nodrift", "lsa-spm-nodrift"],
)  # fmt:skip
def test_betas_equal_nilearn_with_confounds_and_other_designs(rapid, method, design):
    data, events, tr = rapid
    events = events.iloc[:24]
    rng = np.random.default_rng(0)
    confounds = pd.DataFrame(rng.standard_normal((data.shape[0], 3)), columns=["x", "y", "z"])
    ours = trial_betas(data, events, tr, confounds, method=method, **design)
    ref = nilearn_betas(*_as_image(data), events, tr, method, confounds, **design)
    assert _relative_error(ours, ref) < RTOL


@pytest.fixture(scope="module")
def haxby_run(haxby_dir):
    func = haxby_dir / "derivatives" / "fmriprep" / "sub-1" / "func"
    stem = "sub-1_task-objectviewing_run-{:02d}_desc-"
    return lambda run: {
        "bold": func / (stem.format(run) + "preproc_bold.nii.gz"),
        "mask": func / (stem.format(run) + "brain_mask.nii.gz"),
        "confounds": func / (stem.format(run) + "confounds_timeseries.tsv"),
        "events": haxby_dir / "sub-1" / "func" / (stem.format(run)[:-5] + "events.tsv"),
    }  # fmt:skip


@pytest.mark.parametrize("method", ["lss", "lsa"])
@pytest.mark.parametrize("confounds", [["none"], None], ids=["no-confounds", "motion"])
def test_haxby_block_betas_equal_nilearn(haxby_run, method, confounds):
    files = haxby_run(1)
    result = run_betaseries(
        files["bold"], files["mask"], files["events"], confounds_file=files["confounds"],
        confounds=confounds, method=method,
    )  # fmt:skip
    mask = np.asanyarray(nb.load(files["mask"]).dataobj) > 0
    ours = result.img.get_fdata()[mask].T
    events = pd.read_csv(files["events"], sep="\t")
    motion = None
    if confounds is None:
        motion = pd.read_csv(files["confounds"], sep="\t")[
            ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
        ]
    ref = nilearn_betas(str(files["bold"]), str(files["mask"]), events, 2.5, method, motion)
    assert result.img.shape[3] == len(events) == 8
    assert _relative_error(ours, ref) < RTOL
    assert result.trials["trial_type"].tolist() == events["trial_type"].tolist()
    assert result.metadata["Confounds"] == ([] if confounds else list(motion.columns))


def test_lss_equals_lsa_when_every_condition_has_one_trial(haxby_run):
    files = haxby_run(2)
    kw = {"confounds": ["none"]}
    lss = run_betaseries(files["bold"], files["mask"], files["events"], method="lss", **kw)
    lsa = run_betaseries(files["bold"], files["mask"], files["events"], method="lsa", **kw)
    np.testing.assert_allclose(lss.img.get_fdata(), lsa.img.get_fdata(), rtol=1e-5, atol=1e-4)


def test_trial_betas_img_matches_arrays(rapid):
    data, events, tr = rapid
    img, mask = _as_image(data)
    out = trial_betas_img(img, mask, events, tr, method="lss")
    assert out.shape == (data.shape[1], 1, 1, len(events))
    np.testing.assert_allclose(
        out.get_fdata()[:, 0, 0, :].T, trial_betas(data, events, tr), rtol=1e-6, atol=1e-3
    )


def test_design_matrix_and_neighbour_correlation(rapid):
    data, events, tr = rapid
    quadratic = np.arange(data.shape[0], dtype=float)[:, None] ** 2
    design = design_matrix(events, data.shape[0], tr, quadratic, ["quadratic"])
    labels = [f"{t}_{i:02d}" for i, t in enumerate(events["trial_type"])]
    assert list(design.columns[: len(events)]) == labels
    assert "quadratic" in design.columns and design.columns[-1] == "constant"
    np.testing.assert_allclose(design.index, np.arange(data.shape[0]) * tr)
    corr = neighbour_correlation(design, events)
    assert len(corr) == len(events) - 1
    i = 4
    expected = np.corrcoef(design[labels[i]], design[labels[i + 1]])[0, 1]
    assert corr.loc[corr["trial"] == i, "correlation"].item() == pytest.approx(expected)
    assert corr["correlation"].median() > 0.1  # 3-5 s apart: overlapping responses


# ------------------------------------------------------------------ samples


def test_beta_samples_zscore_within_run_then_select_conditions():
    rng = np.random.default_rng(1)
    betas = [rng.standard_normal((6, 4)) + 5, rng.standard_normal((5, 4)) - 3]
    trials = [
        pd.DataFrame({"onset": np.arange(6.0), "duration": 1.0,
                      "trial_type": ["a", "b", "c", "a", "b", "c"]}),
        pd.DataFrame({"onset": np.arange(5.0), "duration": 1.0,
                      "trial_type": ["b", "a", "c", "a", "b"]}),
    ]  # fmt:skip
    X, table, info = beta_samples(betas, trials, runs=[3, 7], conditions=["a", "b"])
    assert list(table.columns) == ["run", "volume", "onset", "duration", "label"]
    assert table["volume"].tolist() == [0, 1, 3, 4, 0, 1, 3, 4]
    assert table["run"].tolist() == [3] * 4 + [7] * 4
    expected = standardize_signal(betas[0], standardize="zscore_sample")[[0, 1, 3, 4]]
    np.testing.assert_allclose(X[:4], expected)
    assert info["SampleCountsPerRun"] == {"3": {"a": 2, "b": 2}, "7": {"a": 2, "b": 2}}
    raw, _, _ = beta_samples(betas, trials, conditions=["a", "b"], standardize="none")
    np.testing.assert_array_equal(raw[:4], betas[0][[0, 1, 3, 4]])


def test_load_beta_samples_from_bids_equals_per_run_betas_and_written_files(tmp_path):
    info = make_event_related_dataset(tmp_path / "bids", n_runs=2, n_volumes=80, seed=2)
    func = info["fmriprep_dir"] / "sub-01" / "func"
    bold = sorted(str(p) for p in func.glob("*preproc_bold.nii.gz"))
    mask = sorted(str(p) for p in func.glob("*brain_mask.nii.gz"))
    conf = sorted(str(p) for p in func.glob("*confounds_timeseries.tsv"))
    events = sorted(str(p) for p in (tmp_path / "bids" / "sub-01" / "func").glob("*events.tsv"))
    X, table, mask_img, meta = load_beta_samples(bold, mask, events, conf, runs=[1, 2])
    checked = check_beta_inputs(bold, mask, events, conf, runs=[1, 2])
    pd.testing.assert_frame_equal(checked["table"], table)
    assert checked["conditions"] == ["face", "house"] and checked["trs"] == [2.0, 2.0]
    assert meta["Samples"] == "lss" and meta["RepetitionTime"] == [2.0, 2.0]
    assert meta["Confounds"] == ["rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z"]
    assert meta["Design"]["HRFModel"] == "glover" and meta["Design"]["HighPass"] == 0.01
    inside = np.asanyarray(mask_img.dataobj) > 0
    for run in (1, 2):
        data = nb.load(bold[run - 1]).get_fdata()[inside].T
        motion = pd.read_csv(conf[run - 1], sep="\t")[meta["Confounds"]]
        ev = pd.read_csv(events[run - 1], sep="\t")
        expected = standardize_signal(
            trial_betas(data, ev, 2.0, motion), standardize="zscore_sample"
        )
        np.testing.assert_allclose(X[table["run"] == run], expected, rtol=1e-8, atol=1e-8)
    written = [run_betaseries(b, m, e, confounds_file=c) for b, m, e, c in zip(
        bold, mask, events, conf, strict=True)]  # fmt:skip
    paths = []
    for run, result in enumerate(written, 1):
        img_path, tsv_path = tmp_path / f"b{run}.nii.gz", tmp_path / f"b{run}.tsv"
        result.img.to_filename(img_path)
        result.trials.to_csv(tsv_path, sep="\t", index=False)
        paths.append((str(img_path), str(tsv_path)))
    X2, table2, _, meta2 = load_betaseries_samples(
        [p[0] for p in paths], [p[1] for p in paths], mask, runs=[1, 2],
        metadata=[r.metadata for r in written],
    )  # fmt:skip
    pd.testing.assert_frame_equal(table, table2)
    np.testing.assert_allclose(X, X2, atol=1e-4)  # betaseries are stored as float32
    assert meta2["Design"] == meta["Design"] and meta2["VolumesPerRun"] == [80, 80]
    text = methods_text(meta)
    assert "least-squares-separate [mumford2012]" in text and "trans_x" in text
    assert "z-scored over the trials of each run" in text


# ------------------------------------------------------------------ bad input


def _events(rows):
    return pd.DataFrame(rows, columns=["onset", "duration", "trial_type"])


GOOD = [(4.0, 1.0, "a"), (9.0, 1.0, "b"), (14.0, 1.0, "a"), (19.0, 1.0, "b")]


def test_events_outside_the_run_are_refused():
    data = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(InputValidationError, match=r"event\(s\) \[4\].*outside the run.*38 s"):
        trial_betas(data, _events(GOOD + [(45.0, 1.0, "a")]), 2.0)
    with pytest.raises(InputValidationError, match="outside the run"):
        trial_betas(data, _events([(-30.0, 1.0, "a")] + GOOD), 2.0)


def test_negative_durations_are_refused():
    data = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(InputValidationError, match=r"event\(s\) \[1\].*less than 0 s"):
        trial_betas(data, _events([(4.0, 1.0, "a"), (9.0, -1.0, "b")]), 2.0)


def test_fewer_than_two_trials_of_a_compared_condition_is_refused():
    trials = [_events(GOOD), _events(GOOD[:3])]
    betas = [np.zeros((4, 2)), np.zeros((3, 2))]
    with pytest.raises(InputValidationError, match=r"run-2.*fewer than 2 trials.*\{'b': 1\}"):
        beta_samples(betas, trials, names=["run-1", "run-2"])
    X, _, _ = beta_samples(betas, trials, min_trials_per_run=1, standardize="none")
    assert X.shape == (7, 2)


def test_rank_deficient_designs_name_the_colliding_regressors():
    data = np.random.default_rng(0).standard_normal((30, 3))
    duplicate = _events(GOOD + [(9.0, 1.0, "c")])
    for method in ("lss", "lsa"):
        with pytest.raises(InputValidationError, match="rank deficient") as err:
            trial_betas(data, duplicate, 2.0, method=method)
        assert "b_1" in str(err.value) or "trial 1 (b, onset 9 s)" in str(err.value)
        assert "c" in str(err.value)
    constant = np.full((30, 1), 3.0)
    with pytest.raises(
        InputValidationError, match=r"\['(motion|constant)', '(motion|constant)'\]"
    ):
        trial_betas(data, _events(GOOD), 2.0, constant, ["motion"])


def test_missing_repetition_time_is_refused(tmp_path):
    bold = tmp_path / "sub-01_task-x_run-1_desc-preproc_bold.nii.gz"
    with pytest.raises(InputValidationError, match="sidecar .*json does not exist.*pass tr"):
        repetition_time(bold)
    bold.with_name(bold.name.replace(".nii.gz", ".json")).write_text(json.dumps({"a": 1}))
    with pytest.raises(InputValidationError, match="has no RepetitionTime"):
        repetition_time(bold)
    assert repetition_time(bold, 1.5) == 1.5


def test_lsa_with_more_trials_than_volumes_is_refused():
    data = np.random.default_rng(0).standard_normal((20, 3))
    events = _events([(1.0 + 1.5 * i, 0.5, "ab"[i % 2]) for i in range(24)])
    with pytest.raises(InputValidationError, match="LSA .*24 events for 20 volumes.*lss"):
        trial_betas(data, events, 2.0, method="lsa")


def test_bad_options_name_the_parameter():
    data = np.zeros((20, 2))
    with pytest.raises(ValueError, match="'hrf_model'.*FIR"):
        trial_betas(data, _events(GOOD), 2.0, hrf_model="fir")
    with pytest.raises(ValueError, match="'method' must be one of"):
        trial_betas(data, _events(GOOD), 2.0, method="lsq")
    with pytest.raises(ValueError, match="'high_pass'"):
        trial_betas(data, _events(GOOD), 2.0, high_pass=-1)
    with pytest.raises(InputValidationError, match="confounds .*shape \\(10, 1\\).*20 volumes"):
        trial_betas(data, _events(GOOD), 2.0, np.zeros((10, 1)))


def test_bad_input_fails_before_the_bold_data_are_read(tmp_path, monkeypatch):
    info = make_event_related_dataset(tmp_path / "bids", n_runs=1, n_volumes=60, seed=0)
    func = info["fmriprep_dir"] / "sub-01" / "func"
    bold = next(func.glob("*preproc_bold.nii.gz"))
    mask = next(func.glob("*brain_mask.nii.gz"))
    events = tmp_path / "events.tsv"
    _events(GOOD + [(4.0, 1.0, "b")]).to_csv(events, sep="\t", index=False)

    def fail(*args, **kwargs):
        raise AssertionError("the BOLD data were read before the inputs were checked")

    monkeypatch.setattr(betas_module, "_masked_voxels", fail)
    with pytest.raises(InputValidationError, match="events.tsv is rank deficient|of events.tsv"):
        run_betaseries(bold, mask, events, method="lsa", confounds=["none"])
    with pytest.raises(InputValidationError, match="events.tsv has fewer than 2 trials"):
        run_betaseries(bold, mask, events, conditions=["a", "c"], confounds=["none"])
    with pytest.raises(InputValidationError, match="events.tsv has fewer than 3 trials"):
        load_beta_samples([bold], [mask], [events], conditions=["a", "b"], min_trials_per_run=3)


def test_collinearity_notes_name_the_fast_runs():
    metadata = [
        {"Method": "LSS", "NeighbourCorrelationMax": 0.4, "NeighbourCorrelationMedian": 0.2},
        {"Method": "LSA", "NeighbourCorrelationMax": 0.93, "NeighbourCorrelationMedian": 0.81},
        {"Method": "LSS"},  # a single trial: no pair
    ]
    notes = collinearity_notes(metadata, ["run-1.tsv", "run-2.tsv", "run-3.tsv"])
    assert len(notes) == 1
    assert notes[0].startswith(
        "run-2.tsv: the regressors of neighbouring trials correlate up to 0.93 (median 0.81); "
        "above 0.7 trial-wise betas are unstable (LSA estimates"
    )
    assert collinearity_notes(metadata, ["a", "b", "c"], threshold=0.95) == []

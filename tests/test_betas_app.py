"""The BIDS-App with trial-wise beta samples (--samples lss|lsa): outputs, sidecars, the
report, decoding on a rapid event-related design, and bad inputs refused up front."""

import json
import re
import shutil
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from conftest import bids_validate

from mvpa_flows.cli.run import main
from mvpa_flows.core.data.betas import run_betaseries
from mvpa_flows.datasets import make_event_related_dataset

SEARCHLIGHT = ["--analyses", "ftest", "searchlight", "--estimator", "gnb", "--radius", "4"]


def run(bids, out, *args):
    work = Path(out).parent / f"work-{Path(out).name}"
    return main([str(bids), str(out), "participant", "-w", str(work), "--nprocs", "1", *args])


@pytest.fixture(scope="module")
def rapid(tmp_path_factory):
    """Three rapid event-related runs (ISI 3-5 s): responses overlap, volumes cannot be
    labelled, each trial's beta can."""
    root = tmp_path_factory.mktemp("rapid_app")
    info = make_event_related_dataset(
        root / "bids", n_runs=3, n_volumes=120, shape=(6, 7, 4), signal=3.0, seed=0
    )
    return root, info


@pytest.fixture(scope="module")
def lss_run(rapid):
    root, info = rapid
    out = root / "out-lss"
    assert run(info["bids_dir"], out, "--samples", "lss", *SEARCHLIGHT) == 0
    return out


def _func(out):
    return out / "sub-01" / "func"


def test_lss_outputs_are_named_and_described(rapid, lss_run):
    root, info = rapid
    func = _func(lss_run)
    betaseries = sorted(p.name for p in func.glob("*_betaseries.*"))
    assert betaseries == [
        f"sub-01_task-rapid_run-{r}_desc-lss_betaseries.{ext}"
        for r in (1, 2, 3)
        for ext in ("json", "nii.gz", "tsv")
    ]
    for name in (
        "sub-01_task-rapid_contrast-faceVsHouse_stat-accuracy_desc-searchlight_statmap.nii.gz",
        "sub-01_task-rapid_contrast-faceVsHouse_stat-F_desc-anova_statmap.nii.gz",
        "sub-01_task-rapid_samples.tsv",
    ):
        assert (func / name).is_file(), name
    figures = {p.name for p in (lss_run / "sub-01" / "figures").glob("*.svg")}
    assert {
        "sub-01_task-rapid_contrast-faceVsHouse_desc-design_figure.svg",
        "sub-01_task-rapid_contrast-faceVsHouse_desc-collinearity_figure.svg",
    } <= figures
    # the sidecar records every design option (nilearn's FirstLevelModel defaults)
    meta = json.loads((func / "sub-01_task-rapid_run-2_desc-lss_betaseries.json").read_text())
    keys = ("Method", "HRFModel", "DriftModel", "HighPass", "NoiseModel")
    assert {k: meta[k] for k in keys} == {
        "Method": "LSS", "HRFModel": "glover", "DriftModel": "cosine", "HighPass": 0.01,
        "NoiseModel": "ols",
    }  # fmt:skip
    assert meta["SliceTimeRef"] == 0.0 and meta["SignalScaling"] is False
    assert meta["Confounds"] == ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    assert meta["Sources"][0] == (
        "bids:fmriprep:sub-01/func/sub-01_task-rapid_run-2_desc-preproc_bold.nii.gz"
    )
    samples = json.loads((func / "sub-01_task-rapid_samples.json").read_text())
    assert samples["Samples"] == "lss" and samples["Standardize"] == "zscore_run"
    assert samples["Design"]["HRFModel"] == "glover"
    # the .tsv holds the events, one row per beta volume, in the events file's order
    events = pd.read_csv(
        info["bids_dir"] / "sub-01" / "func" / "sub-01_task-rapid_run-2_events.tsv", sep="\t"
    )
    trials = pd.read_csv(func / "sub-01_task-rapid_run-2_desc-lss_betaseries.tsv", sep="\t")
    pd.testing.assert_frame_equal(trials, events)
    img = nb.load(func / "sub-01_task-rapid_run-2_desc-lss_betaseries.nii.gz")
    assert img.shape[3] == len(events)


def test_saved_betas_are_the_raw_glm_estimates(rapid, lss_run):
    """The app's betaseries equal the core's (checked against nilearn's FirstLevelModel in
    test_betas.py), not the per-run z-scored samples."""
    root, info = rapid
    dfunc = info["fmriprep_dir"] / "sub-01" / "func"
    stem = "sub-01_task-rapid_run-1"
    expected = run_betaseries(
        dfunc / f"{stem}_desc-preproc_bold.nii.gz",
        dfunc / f"{stem}_desc-brain_mask.nii.gz",
        info["bids_dir"] / "sub-01" / "func" / f"{stem}_events.tsv",
        confounds_file=dfunc / f"{stem}_desc-confounds_timeseries.tsv",
        method="lss",
    )
    written = nb.load(_func(lss_run) / f"{stem}_desc-lss_betaseries.nii.gz").get_fdata()
    np.testing.assert_allclose(written, expected.img.get_fdata(), rtol=1e-6, atol=1e-6)
    mask = np.asarray(expected.img.dataobj)[..., 0] != 0
    assert np.abs(written[mask].mean(axis=1)).max() > 0.5  # not z-scored per run


def test_lss_decodes_where_volumes_do_not(rapid, lss_run):
    root, info = rapid
    out = root / "out-volumes"
    assert run(info["bids_dir"], out, *SEARCHLIGHT) == 0
    name = "sub-01_task-rapid_contrast-faceVsHouse_stat-accuracy_desc-searchlight_statmap.nii.gz"
    patch = info["patch"]
    lss = nb.load(_func(lss_run) / name).get_fdata()[patch].mean()
    volumes = nb.load(_func(out) / name).get_fdata()[patch].mean()
    assert lss > 0.7, lss
    assert volumes < 0.6, volumes
    assert not list(_func(out).glob("*_betaseries.*"))


def test_lss_report_and_methods(lss_run):
    page = (lss_run / "sub-01.html").read_text()
    assert "Trial-wise betas" in page and "Design matrix (sub-01_task-rapid_run-1)" in page
    assert re.search(r"Neighbouring trials.*median 0\.\d+, maximum 0\.\d+", page, re.S)
    citation = (lss_run / "logs" / "CITATION.md").read_text()
    assert "least-squares-separate [mumford2012]" in citation
    assert "Confounds entered each GLM as regressors (the six head-motion parameters)" in (
        citation
    )
    assert "Mumford J.A., Turner B.O., Ashby F.G., Poldrack R.A. (2012)" in citation


def test_lss_outputs_pass_the_bids_validator(lss_run):
    errors, _ = bids_validate(lss_run)
    assert errors == []


def _events(bids, run=2):
    return bids / "sub-01" / "func" / f"sub-01_task-rapid_run-{run}_events.tsv"


def _edit_events(bids, edit):
    path = _events(bids)
    edit(pd.read_csv(path, sep="\t")).to_csv(path, sep="\t", index=False)


def _drop_tr(bids):
    sidecar = (
        bids.parent / "bids/derivatives/fmriprep/sub-01/func"
        / "sub-01_task-rapid_run-2_desc-preproc_bold.json"
    )  # fmt:skip
    meta = json.loads(sidecar.read_text())
    del meta["RepetitionTime"]
    sidecar.write_text(json.dumps(meta))


def _one_house(ev):
    return pd.concat([ev[ev.trial_type == "face"], ev[ev.trial_type == "house"].iloc[:1]])


BAD_INPUTS = {
    "event outside the run": (
        lambda b: _edit_events(b, lambda ev: pd.concat([ev, ev.iloc[[0]].assign(onset=900.0)])),
        [],
        r"run-2_events.tsv: event\(s\) \[\d+\] .*onsets \[900.0\] s\) fall outside the run, "
        r"whose 60 volumes are acquired from 0 s to 118 s",
    ),
    "negative duration": (
        lambda b: _edit_events(b, lambda ev: ev.assign(duration=[-1.0] + [1.0] * (len(ev) - 1))),
        [],
        r"run-2_events.tsv: event\(s\) \[0\] .*last less than 0 s \(durations \[-1.0\]\)",
    ),
    "too few trials": (
        lambda b: _edit_events(b, _one_house),
        [],
        r"run-2_events.tsv has fewer than 2 trials of compared condition\(s\) \{'house': 1\} "
        r"\(trials per condition: \{'face': \d+, 'house': 1\}\).* set --min-trials-per-run to 1",
    ),
    "duplicated trial": (
        lambda b: _edit_events(b, lambda ev: pd.concat([ev, ev.iloc[[3]]])),
        ["--samples", "lsa"],
        r"The LSA design of sub-01_task-rapid_run-2_events.tsv is rank deficient .*the "
        r"regressors \['\w+_\d+', '\w+_\d+'\] are collinear",
    ),
    "TR missing": (
        _drop_tr,
        [],
        r"No repetition time for sub-01_task-rapid_run-2_desc-preproc_bold.nii.gz: "
        r"sub-01_task-rapid_run-2_desc-preproc_bold.json has no RepetitionTime",
    ),
    "LSA with more trials than volumes": (
        lambda b: pd.DataFrame(
            {
                "onset": 4.0 + 0.5 * np.arange(90),
                "duration": 1.0,
                "trial_type": ["face", "house"] * 45,
            }
        ).to_csv(_events(b), sep="\t", index=False),
        ["--samples", "lsa"],
        r"LSA of sub-01_task-rapid_run-2_events.tsv needs fewer trials than volumes; the run "
        r"has 90 events for 60 volumes. Use --samples lss",
    ),
}


@pytest.fixture(scope="module")
def small_rapid(tmp_path_factory):
    root = tmp_path_factory.mktemp("rapid_small")
    make_event_related_dataset(root / "bids", n_runs=2, n_volumes=60, shape=(4, 4, 3), seed=1)
    return root / "bids"


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_beta_input_is_refused_before_any_work(case, small_rapid, tmp_path, capsys):
    bids = tmp_path / "bids"
    shutil.copytree(small_rapid, bids)
    prepare, args, message = BAD_INPUTS[case]
    prepare(bids)
    out = tmp_path / "out"
    assert run(bids, out, "--samples", "lss", *args) == 16
    err = capsys.readouterr().err.replace("\n", " ")
    assert re.search(r"mvpa-flows: invalid input: (sub-01_task-rapid_)?" + message, err), err
    assert not [p for p in out.rglob("sub-*") if p.is_file()]
    assert not (tmp_path / "work-out" / "mvpa_flows_wf").exists()


def test_design_options_and_refusals_on_the_command_line(small_rapid, tmp_path, capsys):
    out = tmp_path / "out"
    code = run(small_rapid, out, "--samples", "lss", "--confounds-strategy", "simple")
    assert code == 64
    assert "--confounds-strategy simple applies to --samples volumes only" in (
        capsys.readouterr().err.replace("\n", " ")
    )
    assert run(small_rapid, out, "--samples", "lss", "--high-pass", "0") == 64
    assert run(small_rapid, out, "--samples", "lss", "--hrf-model", "fir") == 64
    assert run(small_rapid, out, "--samples", "betas") == 64
    assert run(small_rapid, out, "--hrf-model", "spm", "--high-pass", "0.02") == 64
    assert "--hrf-model, --high-pass set(s) the trial-wise GLM, which only --samples lss" in (
        capsys.readouterr().err.replace("\n", " ")
    )


def test_design_flags_reach_the_sidecars_and_methods(small_rapid, tmp_path):
    """The design flags reach the sidecars (LSA, polynomial drift, no confounds, spm HRF)."""
    out = tmp_path / "out"
    args = ["--samples", "lsa", "--drift-model", "polynomial", "--drift-order", "2",
            "--hrf-model", "spm", "--confounds", "none", "--slice-time-ref", "0.5",
            "--standardize", "none"]  # fmt:skip
    assert run(small_rapid, out, *args) == 0
    meta = json.loads(
        (_func(out) / "sub-01_task-rapid_run-1_desc-lsa_betaseries.json").read_text()
    )
    assert {k: meta.get(k) for k in ("Method", "HRFModel", "DriftModel", "DriftOrder",
                                     "SliceTimeRef", "HighPass", "Confounds")} == {
        "Method": "LSA", "HRFModel": "spm", "DriftModel": "polynomial", "DriftOrder": 2,
        "SliceTimeRef": 0.5, "HighPass": None, "Confounds": [],
    }  # fmt:skip
    samples = json.loads((_func(out) / "sub-01_task-rapid_samples.json").read_text())
    assert samples["Samples"] == "lsa" and samples["Standardize"] == "none"
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "one regressor per trial (least-squares-all)" in citation
    assert "a polynomial drift of order 2" in citation and "mumford2012" not in citation


@pytest.mark.shared_data
def test_haxby_slice_block_betas_run(haxby_dir, tmp_path):
    """Each Haxby block is one trial per condition and run: --min-trials-per-run 1."""
    out = tmp_path / "out"
    args = ["--samples", "lss", "--conditions", "face", "house", "--min-trials-per-run", "1"]
    assert run(haxby_dir, out, *args) == 0
    func = out / "sub-1" / "func"
    assert len(list(func.glob("*_desc-lss_betaseries.nii.gz"))) == 12
    samples = pd.read_csv(next(func.glob("*_samples.tsv")), sep="\t")
    assert samples.groupby("label").size().to_dict() == {"face": 12, "house": 12}
    assert next(func.glob("*stat-F_desc-anova_statmap.nii.gz")).is_file()


@pytest.mark.shared_data
def test_haxby_slice_refuses_one_block_per_run_by_default(haxby_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(haxby_dir, out, "--samples", "lss", "--conditions", "face", "house") == 16
    assert "set --min-trials-per-run to 1 for block designs" in capsys.readouterr().err.replace(
        "\n", " "
    )


@pytest.fixture(scope="module")
def sessions_bids(tmp_path_factory):
    from mvpa_flows.datasets import make_fmriprep_dataset

    root = tmp_path_factory.mktemp("sessions")
    make_fmriprep_dataset(
        root / "bids", n_subjects=1, spaces=("MNI152NLin2009cAsym:res-2",), surfaces=False
    )
    return root / "bids"


@pytest.mark.parametrize("per_session", [False, True])
def test_sessions_and_spaces_name_the_betaseries(sessions_bids, tmp_path, per_session):
    out = tmp_path / "out"
    args = ["--samples", "lss", "--space", "MNI152NLin2009cAsym:res-2", "--conditions",
            "face", "house"] + (["--per-session"] if per_session else [])  # fmt:skip
    assert run(sessions_bids, out, *args) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*_betaseries.nii.gz"))
    assert written == [
        f"sub-01/ses-{s}/func/sub-01_ses-{s}_task-objects_run-{r}_space-MNI152NLin2009cAsym_"
        "res-2_desc-lss_betaseries.nii.gz"
        for s in (1, 2)
        for r in (1, 2)
    ]
    if per_session:
        tables = sorted(out.rglob("*_samples.tsv"))
        assert [p.name for p in tables] == [
            f"sub-01_ses-{s}_task-objects_space-MNI152NLin2009cAsym_res-2_samples.tsv"
            for s in (1, 2)
        ]
        assert sorted(set(pd.read_csv(tables[0], sep="\t")["run"])) == [1, 2]
        pages = sorted(p.name for p in out.glob("*.html"))
        assert pages == ["sub-01_ses-1.html", "sub-01_ses-2.html"]
        assert (
            "Design matrix (sub-01_ses-2_task-objects_run-1)"
            in (out / "sub-01_ses-2.html").read_text()
        )
    else:
        (table,) = out.rglob("*_samples.tsv")
        assert table.name == "sub-01_task-objects_space-MNI152NLin2009cAsym_res-2_samples.tsv"
        # like volume samples: a session column, the run label, groups session x run
        frame = pd.read_csv(table, sep="\t", dtype={"session": str})
        assert list(frame.columns[:2]) == ["session", "run"]
        pairs = sorted(set(zip(frame["session"], frame["run"], strict=True)))
        assert pairs == [("1", 1), ("1", 2), ("2", 1), ("2", 2)]
        meta = json.loads(table.with_suffix(".json").read_text())
        assert meta["CrossValidationGroups"] == "session x run"
    first = next(out.rglob("*_run-1_space-MNI152NLin2009cAsym_res-2_desc-lss_betaseries.json"))
    spatial = json.loads(first.read_text())
    assert spatial["SpatialReference"].startswith("https://templateflow")
    assert spatial["Resolution"]
    errors, _ = bids_validate(out)
    assert errors == []


def test_too_fast_design_is_warned_about(tmp_path, capsys):
    """Trials every 1-1.5 s: neighbouring regressors correlate above 0.7 (a warning)."""
    make_event_related_dataset(
        tmp_path / "bids", n_runs=2, n_volumes=60, shape=(4, 4, 3), isi=(1.0, 1.5), seed=2
    )
    out = tmp_path / "out"
    assert run(tmp_path / "bids", out, "--samples", "lss") == 0
    err = capsys.readouterr().err.replace("\n", " ")
    found = re.search(
        r"warning: sub-01: sub-01_task-rapid_run-1_events.tsv: the regressors of "
        r"neighbouring trials correlate up to (0\.\d+)",
        err,
    )
    assert found and float(found[1]) > 0.7, err
    meta = json.loads(
        (_func(out) / "sub-01_task-rapid_run-1_desc-lss_betaseries.json").read_text()
    )
    assert meta["NeighbourCorrelationMax"] == pytest.approx(float(found[1]), abs=0.005)
    page = (out / "sub-01.html").read_text()
    assert "neighbouring trials correlate up to" in page
    assert re.search(r"\d+ of \d+ pairs exceed 0\.7", page)


def test_app_defaults_are_nilearns_first_level_model():
    """The schema's defaults (what the app runs) are the core's design defaults, which
    are FirstLevelModel's (checked against nilearn's signature)."""
    import inspect

    from nilearn.glm.first_level import FirstLevelModel

    from mvpa_flows import bids_specs
    from mvpa_flows.core.data.betas import DESIGN_DEFAULTS, HRF_MODELS, MIN_TRIALS_PER_RUN

    schema = bids_specs.load("analysis.schema.json")["properties"]
    nilearn = inspect.signature(FirstLevelModel).parameters
    for key in ("hrf_model", "drift_model", "high_pass", "drift_order", "slice_time_ref"):
        assert schema[key]["default"] == DESIGN_DEFAULTS[key] == nilearn[key].default, key
    assert schema["samples"]["default"] == "volumes"
    assert tuple(schema["hrf_model"]["enum"]) == HRF_MODELS
    assert schema["min_trials_per_run"]["default"] == MIN_TRIALS_PER_RUN


@pytest.mark.slow
def test_group_searchlight_takes_beta_sample_maps(tmp_path):
    """The group level takes participant maps made from beta samples like any others."""
    info = make_event_related_dataset(
        tmp_path / "bids", n_subjects=2, n_runs=2, n_volumes=100, shape=(6, 7, 4), signal=3.0
    )
    out = tmp_path / "out"
    assert run(info["bids_dir"], out, "--samples", "lss", *SEARCHLIGHT) == 0
    work = ["-w", str(tmp_path / "work-group"), "--nprocs", "1"]
    args = ["--analyses", "searchlight", "--allow-subject-space", *work]
    assert main([str(info["bids_dir"]), str(out), "group", *args]) == 0
    (t_map,) = out.glob("task-rapid_contrast-faceVsHouse_stat-t_desc-searchlightgroup_*.nii.gz")
    t = nb.load(t_map).get_fdata()
    assert np.nanmean(t[info["patch"]]) > np.nanmean(t[~info["patch"]])

"""A realistically named fMRIPrep 24/25 dataset end to end: sessions, spaces, validity.

One dataset (two subjects, two sessions of two runs, ``space-T1w`` and
``space-MNI152NLin2009cAsym_res-2``, native minimal outputs, surfaces and CIFTI beside
the volumes, the full confounds table) goes through the participant level pooled and per
session, group searchlight statistics and group hyperalignment. Every output folder must
pass ``bids-validator-deno`` with 0 errors, and the inputs must be byte-identical after.
"""

import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from conftest import bids_validate, file_hashes, run_app

from mvpa_flows.datasets import make_fmriprep_dataset

MNI = "space-MNI152NLin2009cAsym_res-2"
GNB = "--conditions face house --hrf-delay 4 --estimator gnb --radius 5"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmriprep") / "bids"
    info = make_fmriprep_dataset(root, seed=7)
    info["hashes"] = file_hashes(root)
    return info


@pytest.fixture(scope="module")
def participant_out(dataset, tmp_path_factory):
    """Participant level on MNI res-2: sessions pooled, then per session, one folder."""
    out = tmp_path_factory.mktemp("participant") / "out"
    bids = dataset["bids_dir"]
    pooled = f"--space MNI152NLin2009cAsym:res-2 --analyses ftest searchlight {GNB}"
    assert run_app(bids, out, "participant", pooled) == 0
    per_session = f"--space MNI152NLin2009cAsym:res-2 --analyses searchlight {GNB} --per-session"
    assert run_app(bids, out, "participant", per_session) == 0
    return out


def test_fixture_is_named_like_fmriprep(dataset):
    fp = dataset["fmriprep_dir"]
    func = fp / "sub-01" / "ses-2" / "func"
    stem = "sub-01_ses-2_task-objects_run-1"
    for name in (
        f"{stem}_{MNI}_desc-preproc_bold.nii.gz",
        f"{stem}_{MNI}_desc-brain_mask.nii.gz",
        f"{stem}_{MNI}_boldref.nii.gz",
        f"{stem}_space-T1w_desc-preproc_bold.nii.gz",
        f"{stem}_desc-hmc_boldref.nii.gz",
        f"{stem}_desc-coreg_boldref.nii.gz",
        f"{stem}_desc-brain_mask.nii.gz",
        f"{stem}_from-boldref_to-T1w_mode-image_desc-coreg_xfm.txt",
        f"{stem}_from-orig_to-boldref_mode-image_desc-hmc_xfm.txt",
        f"{stem}_hemi-L_space-fsnative_bold.func.gii",
        f"{stem}_space-fsLR_den-91k_bold.dtseries.nii",
        f"{stem}_desc-confounds_timeseries.tsv",
        f"{stem}_desc-confounds_timeseries.json",
    ):
        assert (func / name).is_file(), name
    assert (fp / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.nii.gz").is_file()
    assert (fp / "sub-01" / "anat" / "sub-01_dseg.nii.gz").is_file()
    assert "*_boldref.nii.gz" in (fp / ".bidsignore").read_text().split()
    confounds = pd.read_csv(func / f"{stem}_desc-confounds_timeseries.tsv", sep="\t")
    expected = ["trans_x_derivative1_power2", "a_comp_cor_00", "cosine00", "csf_wm",
                "non_steady_state_outlier00", "framewise_displacement", "edge_comp_00"]  # fmt:skip
    assert set(expected) <= set(confounds.columns)
    assert confounds["framewise_displacement"].isna().tolist()[:2] == [True, False]
    # compcor components differ in number from run to run, as fMRIPrep's do
    other = pd.read_csv(
        str(func / f"{stem}_desc-confounds_timeseries.tsv").replace("run-1", "run-2"), sep="\t"
    )
    assert {c for c in confounds if c.startswith("a_comp_cor")} != {
        c for c in other if c.startswith("a_comp_cor")
    }


def test_pooled_sessions_keep_res_and_cite_every_session(participant_out):
    func = participant_out / "sub-01" / "func"
    stem = f"sub-01_task-objects_{MNI}"
    for name in (
        f"{stem}_contrast-faceVsHouse_stat-accuracy_desc-searchlight_statmap.nii.gz",
        f"{stem}_contrast-faceVsHouse_stat-F_desc-anova_statmap.nii.gz",
        f"{stem}_desc-analysis_mask.nii.gz",
        f"{stem}_boldref.nii.gz",
        f"{stem}_samples.tsv",
    ):
        assert (func / name).is_file(), name
    meta = json.loads(
        (
            func / f"{stem}_contrast-faceVsHouse_stat-accuracy_desc-searchlight_statmap.json"
        ).read_text()
    )
    assert meta["NumberOfFolds"] == 4 and meta["CrossValidationGroups"] == "session x run"
    assert sorted(meta["SampleCountsPerRun"]) == [
        "ses-1_run-1", "ses-1_run-2", "ses-2_run-1", "ses-2_run-2"
    ]  # fmt:skip
    bolds = [s for s in meta["Sources"] if s.endswith("desc-preproc_bold.nii.gz")]
    assert {s.split("/")[1] for s in bolds} == {"ses-1", "ses-2"} and len(bolds) == 4
    assert meta["Resolution"]["2"].startswith("Resolution 2 of MNI152NLin2009cAsym")
    assert meta["ConfoundsPerRun"]["ses-2_run-1"] == [
        "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"
    ]  # fmt:skip
    samples = pd.read_csv(func / f"{stem}_samples.tsv", sep="\t")
    assert list(samples.columns) == ["session", "run", "volume", "onset", "label"]
    assert not list(participant_out.glob("sub-01/func/*_ses-*"))
    mask = json.loads((func / f"{stem}_desc-analysis_mask.json").read_text())
    assert mask["Type"] == "Brain" and "tpl-MNI152NLin2009cAsym_res-02" in mask["SpatialReference"]
    img = nb.load(func / f"{stem}_desc-analysis_mask.nii.gz")
    assert img.header.get_xyzt_units()[0] == "mm"


def test_per_session_outputs_live_in_session_folders(participant_out):
    for session in ("1", "2"):
        func = participant_out / "sub-02" / f"ses-{session}" / "func"
        score = (
            f"sub-02_ses-{session}_task-objects_{MNI}_contrast-faceVsHouse_stat-accuracy"
            "_desc-searchlight_statmap"
        )
        meta = json.loads((func / f"{score}.json").read_text())
        assert meta["NumberOfFolds"] == 2
        assert all(f"/ses-{session}/" in s for s in meta["Sources"] if "preproc_bold" in s)
        assert (participant_out / f"sub-02_ses-{session}.html").is_file()


def test_group_finds_maps_with_and_without_sessions(participant_out, dataset):
    assert run_app(dataset["bids_dir"], participant_out, "group", "--analyses searchlight") == 0
    stem = f"task-objects_{MNI}_contrast-faceVsHouse_stat-t_desc-searchlightgroup_statmap"
    for prefix in ("", "ses-1_", "ses-2_"):
        path = participant_out / f"{prefix}{stem}.nii.gz"
        assert path.is_file(), path.name
        meta = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        assert meta["NumberOfSubjects"] == 2
        sessions = {s.split("/")[1] for s in meta["Sources"]}
        assert sessions == ({"func"} if not prefix else {prefix[:-1]})
    pooled = nb.load(participant_out / f"{stem}.nii.gz").get_fdata()
    assert np.isfinite(pooled).all() and pooled.max() > 2


def test_participant_and_group_outputs_validate(participant_out):
    errors, warnings = bids_validate(participant_out)
    assert errors == []
    assert not [w for w in warnings if w[0] != "TOO_FEW_AUTHORS"], warnings


def test_t1w_space_of_one_session(dataset, tmp_path):
    out = tmp_path / "out"
    options = "--space T1w --session-label ses-2 --conditions face house --hrf-delay 4"
    assert run_app(dataset["bids_dir"], out, "participant", options) == 0
    func = out / "sub-01" / "ses-2" / "func"
    stem = "sub-01_ses-2_task-objects_space-T1w"
    meta = json.loads((func / f"{stem}_desc-analysis_mask.json").read_text())
    assert meta["SpatialReference"] == "bids:fmriprep:sub-01/anat/sub-01_desc-preproc_T1w.nii.gz"
    assert (func / f"{stem}_contrast-faceVsHouse_stat-F_desc-anova_statmap.nii.gz").is_file()
    assert bids_validate(out)[0] == []


def test_hyperalignment_across_sessions(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    base = "--analyses hyperalignment --space MNI152NLin2009cAsym:res-2 --segment-length 8"
    assert run_app(dataset["bids_dir"], out, "group", f"{base} --ha-train-runs 1 2") == 64
    err = capsys.readouterr().err
    assert "numbered within sessions" in err and "SESSION:RUN" in err
    runs = "--ha-train-runs 1:1 1:2 ses-2:1 --ha-test-runs 2:2"
    assert run_app(dataset["bids_dir"], out, "group", f"{base} {runs}") == 0
    xfm = (
        out / "sub-02" / "func"
        / "sub-02_task-objects_from-MNI152NLin2009cAsym_to-objectsHA_mode-image_res-2"
        "_desc-procrustes_xfm.json"
    )  # fmt:skip
    meta = json.loads(xfm.read_text())
    assert meta["TrainingRuns"] == ["1:1", "1:2", "2:1"] and meta["TestRuns"] == ["2:2"]
    scores = pd.read_csv(out / f"task-objects_{MNI}_desc-bsc_scores.tsv", sep="\t")
    assert (scores["hyperaligned"] > scores["chance"]).all()
    roi = json.loads(
        (
            out / "tpl-objectsHA" / f"tpl-objectsHA_task-objects_{MNI}_desc-roi_mask.json"
        ).read_text()
    )
    assert roi["Type"] == "ROI" and roi["Resolution"]
    assert bids_validate(out)[0] == []


def test_inputs_are_byte_identical_afterwards(dataset, participant_out):
    assert file_hashes(dataset["bids_dir"]) == dataset["hashes"]


def _small(tmp_path, **kwargs):
    options = dict(n_subjects=1, sessions=None, n_runs=2, spaces=("MNI152NLin2009cAsym:res-2",),
                   surfaces=True, seed=1)  # fmt:skip
    options.update(kwargs)
    return make_fmriprep_dataset(tmp_path / "bids", **options)


def test_several_resolutions_must_be_chosen(tmp_path, capsys):
    info = _small(
        tmp_path, spaces=("MNI152NLin2009cAsym:res-2", "MNI152NLin2009cAsym:res-1"), n_runs=1,
        surfaces=False,
    )  # fmt:skip
    out = tmp_path / "out"
    assert run_app(info["bids_dir"], out, "participant", "--space MNI152NLin2009cAsym") == 16
    err = capsys.readouterr().err.replace("\n", " ")
    assert "several resolutions" in err
    assert "MNI152NLin2009cAsym:res-1" in err and "MNI152NLin2009cAsym:res-2" in err
    assert run_app(info["bids_dir"], out, "participant", "--space MNI152NLin6Asym") == 18
    assert "spaces present" in capsys.readouterr().err
    assert run_app(info["bids_dir"], out, "participant", "--space MNI:resolution-2") == 64
    assert "not res-<label>" in capsys.readouterr().err


def test_legacy_cifti_sidecar_is_ignored(tmp_path):
    info = _small(tmp_path, legacy_cifti_sidecar=True)
    out = tmp_path / "out"
    assert run_app(info["bids_dir"], out, "participant", "--conditions face house") == 0
    assert list(out.glob(f"sub-01/func/*{MNI}_contrast-faceVsHouse_stat-F_*.nii.gz"))


def test_confounds_patterns_and_strategies(tmp_path, capsys):
    info = _small(tmp_path)
    bids, out = info["bids_dir"], tmp_path / "out"
    stem = f"sub-01/func/sub-01_task-objects_{MNI}_contrast-faceVsHouse_stat-F_desc-anova_statmap"
    options = "--conditions face house --hrf-delay 4 --confounds trans_* a_comp_cor_* motion_out*"
    assert run_app(bids, out, "participant", options) == 0
    meta = json.loads((out / f"{stem}.json").read_text())
    per_run = meta["ConfoundsPerRun"]
    assert "motion_outlier00" in per_run["2"] and "motion_outlier00" not in per_run["1"]
    assert [c for c in per_run["1"] if c.startswith("a_comp")] != [
        c for c in per_run["2"] if c.startswith("a_comp")
    ]
    assert "trans_x_derivative1_power2" in per_run["1"]
    # nilearn's scrubbing: the confounds nilearn chooses, the volumes it censors
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    options = "--conditions face house --hrf-delay 4 --confounds-strategy scrubbing scrub=0"
    assert run_app(bids, out, "participant", options) == 0
    meta = json.loads((out / f"{stem}.json").read_text())
    bold = sorted(info["fmriprep_dir"].rglob(f"*run-2_{MNI}_desc-preproc_bold.nii.gz"))[0]
    reference, sample_mask = load_confounds_strategy(str(bold), "scrubbing", scrub=0)
    assert meta["ConfoundsPerRun"]["2"] == list(reference.columns)
    assert meta["CensoredVolumesPerRun"]["2"] == nb.load(bold).shape[3] - len(sample_mask)
    assert meta["ConfoundsStrategy"]["Name"] == "scrubbing"
    samples = pd.read_csv(out / stem.replace("contrast-faceVsHouse_stat-F_desc-anova_statmap",
                                             "samples.tsv"), sep="\t")  # fmt:skip
    assert not set(samples.loc[samples["run"] == 2, "volume"]) - set(sample_mask)
    # bad strategy option: usage error naming the flag and the accepted options
    bad = "--confounds-strategy compcor fd_threshold=0.2"
    assert run_app(bids, out, "participant", bad) == 64
    err = capsys.readouterr().err
    assert "--confounds-strategy" in err and "n_compcor" in err


def test_no_motion_columns_is_said_not_claimed(tmp_path, capsys):
    info = _small(tmp_path, n_runs=2, surfaces=False)
    for table in info["fmriprep_dir"].rglob("*_desc-confounds_timeseries.tsv"):
        frame = pd.read_csv(table, sep="\t")
        frame.drop(columns=[c for c in frame if c.startswith(("trans_", "rot_"))]).to_csv(
            table, sep="\t", index=False, na_rep="n/a"
        )
    out = tmp_path / "out"
    assert run_app(info["bids_dir"], out, "participant", "--conditions face house") == 0
    assert "No confounds regressed" in capsys.readouterr().err
    meta = json.loads(next(out.rglob("*stat-F_desc-anova_statmap.json")).read_text())
    assert meta["Confounds"] == [] and "No confounds regressed" in " ".join(meta["Warnings"])
    methods = (out / "logs" / "CITATION.md").read_text()
    assert "no confound regression" in methods and "head-motion" not in methods

"""The group level of the BIDS-App: hyperalignment and searchlight statistics."""

import json
import shutil

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from conftest import SEARCHLIGHT_GNB, bids_validate, run_app

from mvpa_flows.cli.run import main
from mvpa_flows.core.alignment.xfm import load_transform


def _group(bids, out, *args):
    return main(
        [str(bids), str(out), "group", "-w", str(out.parent / "work"), "--nprocs", "1", *args]
    )


def test_hyperalignment_outputs_on_synthetic(synthetic_bids, tmp_path):
    out = tmp_path / "out"
    assert (
        _group(
            synthetic_bids,
            out,
            "--analyses",
            "hyperalignment",
            "--ha-train-runs",
            "1",
            "2",
            "--ha-test-runs",
            "3",
            "--segment-length",
            "8",
        )
        == 0
    )
    for subject in ("01", "02"):
        xfm = (
            out / f"sub-{subject}/func/sub-{subject}_task-objects_from-boldref_to-objectsHA"
            "_mode-image_desc-procrustes_xfm.h5"
        )
        transform, info = load_transform(xfm)
        roi = nb.load(out / "tpl-objectsHA/tpl-objectsHA_task-objects_desc-roi_mask.nii.gz")
        n_roi = int(np.asarray(roi.dataobj).sum())
        assert transform.shape[0] == n_roi and info["voxel_indices"].size == n_roi
        meta = json.loads(xfm.with_name(xfm.name.replace(".h5", ".json")).read_text())
        assert meta["TrainingRuns"] == [1, 2] and meta["TestRuns"] == [3]
        assert meta["NumberOfFeatures"] == n_roi and meta["Scaling"] is True
        assert meta["ROIMask"].startswith("bids::tpl-objectsHA/")
    scores = pd.read_csv(
        out / "task-objects_desc-bsc_scores.tsv", sep="\t", dtype={"subject": str}
    )
    assert scores["subject"].tolist() == ["01", "02"]
    assert {"anatomical", "hyperaligned", "within_subject", "chance"} <= set(scores.columns)
    model = json.loads(
        (out / "tpl-objectsHA/tpl-objectsHA_task-objects_desc-common_model.json").read_text()
    )
    # the native BOLD grid (no space- entity): referenced by the BOLD series
    assert model["SpatialReference"].startswith("bids:fmriprep:sub-01/func/sub-01_task-objects")


BAD = {
    "one subject": (
        ["--participant-label", "01", "--ha-train-runs", "1", "--ha-test-runs", "2"],
        16,
        "at least two subjects",
    ),
    "overlap": (["--ha-train-runs", "1", "2", "--ha-test-runs", "2"], 64, "circular"),
    "per session": (
        ["--per-session", "--ha-train-runs", "1", "--ha-test-runs", "2"],
        64,
        "--per-session applies to the participant level and group searchlight",
    ),
    "missing run": (
        ["--ha-train-runs", "1", "7", "--ha-test-runs", "3"],
        16,
        r"sub-01 lacks training run\(s\) \[7\]",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_hyperalignment_bad_input(case, synthetic_bids, tmp_path, capsys):
    args, code, message = BAD[case]
    assert _group(synthetic_bids, tmp_path / "out", "--analyses", "hyperalignment", *args) == code
    import re

    assert re.search(message, capsys.readouterr().err)


def test_hyperalignment_refuses_different_grids_and_lengths(synthetic_bids, tmp_path, capsys):
    func = synthetic_bids / "derivatives/fmriprep/sub-02/func"
    bold = func / "sub-02_task-objects_run-1_desc-preproc_bold.nii.gz"
    img = nb.load(bold)
    nb.Nifti1Image(np.asarray(img.dataobj)[..., :-3], img.affine, img.header).to_filename(bold)
    pd.read_csv(func / "sub-02_task-objects_run-1_desc-confounds_timeseries.tsv", sep="\t").iloc[
        :-3
    ].to_csv(
        func / "sub-02_task-objects_run-1_desc-confounds_timeseries.tsv", sep="\t", index=False
    )
    assert (
        _group(
            synthetic_bids,
            tmp_path / "a",
            "--analyses",
            "hyperalignment",
            "--ha-train-runs",
            "1",
            "--ha-test-runs",
            "3",
        )
        == 16
    )
    assert "different numbers of volumes across subjects" in capsys.readouterr().err
    for name in ("preproc_bold", "brain_mask"):
        for run in (1, 2, 3):
            path = func / f"sub-02_task-objects_run-{run}_desc-{name}.nii.gz"
            img = nb.load(path)
            affine = img.affine.copy()
            affine[0, 3] += 3
            nb.Nifti1Image(np.asarray(img.dataobj), affine, img.header).to_filename(path)
    assert (
        _group(
            synthetic_bids,
            tmp_path / "b",
            "--analyses",
            "hyperalignment",
            "--ha-train-runs",
            "2",
            "--ha-test-runs",
            "3",
        )
        == 16
    )
    assert "is not on the grid of sub-01" in capsys.readouterr().err


def test_group_searchlight_statistics(synthetic_bids, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_app(synthetic_bids, out, "participant", SEARCHLIGHT_GNB + " --radius 7") == 0
    # the synthetic maps are in the native space: refused unless asked for
    assert _group(synthetic_bids, out, "--analyses", "searchlight") == 16
    err = capsys.readouterr().err.replace("\n", " ")
    assert "native (no space- entity), a space of each subject's own anatomy" in err
    assert "--allow-subject-space" in err
    assert not list(out.glob("*searchlightgroup*"))
    assert (
        _group(
            synthetic_bids,
            out,
            "--analyses",
            "searchlight",
            "--random-seed",
            "1",
            "--allow-subject-space",
        )
        == 0
    )
    stem = "task-objects_contrast-faceVsHouse_stat-{}_desc-searchlightgroup_statmap"
    t = nb.load(out / (stem.format("t") + ".nii.gz")).get_fdata()
    p = nb.load(out / (stem.format("p") + ".nii.gz")).get_fdata()
    mean = nb.load(out / (stem.format("accuracy") + ".nii.gz")).get_fdata()
    meta = json.loads((out / (stem.format("p") + ".json")).read_text())
    assert meta["NumberOfSubjects"] == 2 and meta["ChanceLevel"] == 0.5
    assert meta["ExactPermutation"] is True  # 2 subjects: all 4 sign flips enumerated
    assert p[p > 0].min() >= 0.25 - 1e-6  # with 2 subjects the smallest FWE p is 1/4
    inside = mean != 0
    assert np.isfinite(t[inside]).all() and mean.max() > 0.7
    assert any(s.startswith("bids::sub-01/func/") for s in meta["Sources"])


@pytest.mark.shared_data
def test_sherlock_hyperalignment_beats_anatomical(sherlock_dir, tmp_path):
    out = tmp_path / "out"
    assert (
        _group(
            sherlock_dir,
            out,
            "--analyses",
            "hyperalignment",
            "--ha-train-runs",
            "1",
            "--ha-test-runs",
            "2",
            "--confounds",
            "none",
            "--segment-length",
            "18",
        )
        == 0
    )
    scores = pd.read_csv(out / "task-sherlock_space-MNI152NLin6Asym_desc-bsc_scores.tsv", sep="\t")
    assert len(scores) == 6 and (scores["n_segments"] == 85).all()
    assert scores["hyperaligned"].mean() > scores["anatomical"].mean() + 0.05
    assert (scores["hyperaligned"] >= scores["anatomical"]).all()
    assert scores["anatomical"].mean() > 3 * scores["chance"].iloc[0]
    # the methods say what ran: no confound was regressed (the file has no motion columns)
    citation = (out / "logs" / "CITATION_group.md").read_text()
    assert "no confound regression" in citation and "motion" not in citation
    assert "classification of movie segments of 18 s on run 2" in citation
    assert not (out / "logs" / "CITATION.md").exists()  # the participant citation is apart
    assert "sub-01, sub-02, sub-03, sub-04, sub-05, sub-06" in (out / "group.html").read_text()
    errors, _ = bids_validate(out)
    assert errors == []
    shutil.rmtree(tmp_path / "work", ignore_errors=True)

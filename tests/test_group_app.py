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
from mvpa_flows.core.errors import InputValidationError


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
    # ISC before and after alignment: BIDS-named group maps, a figure, the methods
    stem = "task-sherlock_space-MNI152NLin6Asym_stat-r_desc-isc{}_statmap"
    isc = {
        k: json.loads((out / (stem.format(k) + ".json")).read_text())
        for k in ("anatomical", "aligned")
    }
    roi = np.asarray(nb.load(next(out.glob("tpl-sherlockHA/*_desc-roi_mask.nii.gz"))).dataobj)
    aligned = nb.load(out / (stem.format("aligned") + ".nii.gz")).get_fdata()[roi > 0]
    assert np.median(aligned) == pytest.approx(isc["aligned"]["MedianISCAligned"], abs=1e-6)
    assert isc["aligned"]["MedianISCAligned"] > isc["aligned"]["MedianISCAnatomical"]
    assert isc["anatomical"]["NumberOfSubjects"] == 6 and isc["anatomical"]["TestRuns"] == [2]
    assert (out / "figures/task-sherlock_space-MNI152NLin6Asym_desc-isc_figure.svg").is_file()
    assert "Voxel-wise leave-one-out inter-subject correlation [hasson2004" in citation
    assert "Procrustes hyperalignment [haxby2011]" in citation
    assert "Leave-one-out ISC of the test runs" in (out / "group.html").read_text()
    # the model file is the fitted AlignmentModel, refused for another task
    from mvpa_flows.core.alignment.model import load_model

    model_file = (
        out
        / "tpl-sherlockHA/tpl-sherlockHA_task-sherlock_space-MNI152NLin6Asym_desc-common_model.h5"
    )
    model = load_model(model_file, task="sherlock", space="MNI152NLin6Asym")
    assert model.subjects == ["01", "02", "03", "04", "05", "06"] and model.n_samples == 946
    assert model.metadata["train_runs"] == [1] and int(model.roi.sum()) == 481
    with pytest.raises(InputValidationError, match="is a model of task 'sherlock'"):
        load_model(model_file, task="movie")
    errors, _ = bids_validate(out)
    assert errors == []
    # a model of four subjects, then the other two mapped into it without refitting
    small = tmp_path / "small"
    base = "--analyses hyperalignment --confounds none --ha-train-runs 1 --ha-test-runs 2"
    assert run_app(sherlock_dir, small, "group", f"{base} --participant-label 01 02 03 04") == 0
    folder = small / "tpl-sherlockHA"
    model_before = sorted((p.name, p.read_bytes()) for p in folder.iterdir())
    assert (
        run_app(
            sherlock_dir,
            small,
            "group",
            f"--analyses hyperalignment --confounds none --ha-model {folder}",
            work=tmp_path / "work2",
        )
        == 0
    )
    assert sorted((p.name, p.read_bytes()) for p in folder.iterdir()) == model_before
    mapped = pd.read_csv(
        small / "task-sherlock_space-MNI152NLin6Asym_desc-bscmapped_scores.tsv",
        sep="\t",
        dtype={"subject": str},
    )
    assert mapped["subject"].tolist() == ["05", "06"]
    in_fit = scores.assign(subject=scores["subject"].astype(str).str.zfill(2)).set_index("subject")
    # measured: mapped 0.200/0.294, in the 6-subject fit 0.212/0.341 (89%)
    assert mapped["hyperaligned"].mean() >= 0.85 * in_fit.loc[["05", "06"], "hyperaligned"].mean()
    assert (mapped["hyperaligned"] > mapped["anatomical"]).all()
    for subject in ("05", "06"):
        assert (
            small / f"sub-{subject}/func/sub-{subject}_task-sherlock_from-MNI152NLin6Asym_to-"
            "sherlockHA_mode-image_desc-procrustes_xfm.h5"
        ).is_file()
    meta = json.loads(
        (small / "task-sherlock_space-MNI152NLin6Asym_desc-bscmapped_scores.json").read_text()
    )
    assert meta["ModelSubjects"] == ["01", "02", "03", "04"] and meta["NewSubjects"] == [
        "05",
        "06",
    ]
    citation = (small / "logs" / "CITATION_group.md").read_text()
    assert "sub-05 and sub-06 were mapped into an existing alignment model (Procrustes" in citation
    assert (small / (stem.format("alignedmapped") + ".nii.gz")).is_file()
    errors, _ = bids_validate(small)
    assert errors == []
    shutil.rmtree(tmp_path / "work", ignore_errors=True)
    shutil.rmtree(tmp_path / "work2", ignore_errors=True)


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "method, options, cited",
    [
        (
            "ridge",
            "--ha-alphas 100 1000 10000 --ha-cv-blocks 3",
            "ridge regression [bazeille2021]",
        ),
        ("srm", "--ha-n-components 10 --ha-n-iter 3", "probabilistic shared response model"),
    ],
    ids=["ridge", "srm"],
)
def test_sherlock_ridge_and_srm(method, options, cited, sherlock_dir, tmp_path):
    """Each method end to end on three subjects, small parameters (CI time)."""
    out = tmp_path / "out"
    base = "--analyses hyperalignment --confounds none --ha-train-runs 1 --ha-test-runs 2"
    assert (
        run_app(
            sherlock_dir,
            out,
            "group",
            f"{base} --participant-label 01 02 03 --ha-method {method} {options}",
        )
        == 0
    )
    scores = pd.read_csv(out / "task-sherlock_space-MNI152NLin6Asym_desc-bsc_scores.tsv", sep="\t")
    assert scores["hyperaligned"].mean() > scores["anatomical"].mean()
    meta = json.loads(
        (out / "task-sherlock_space-MNI152NLin6Asym_desc-bsc_scores.json").read_text()
    )
    params = meta["AlignmentParameters"]
    assert meta["AlignmentMethod"] == method
    if method == "ridge":
        assert params["alphas"] == [100.0, 1000.0, 10000.0] and params["cv_blocks"] == 3
        assert set(meta["ChosenPenalties"]) <= {100.0, 1000.0, 10000.0}
    else:
        # defaults recorded, not left implicit
        assert params == {
            "method": "probabilistic",
            "n_components": 10,
            "n_iter": 3,
            "random_state": 0,
        }
        assert meta["ModelDimensions"] == 10 and meta["RandomSeed"] == 0
    xfm = (
        out / "sub-02/func/sub-02_task-sherlock_from-MNI152NLin6Asym_to-sherlockHA_mode-image_"
        f"desc-{method}_xfm.h5"
    )
    transform, _ = load_transform(xfm)
    assert transform.kind == method
    isc = json.loads(
        (
            out / "task-sherlock_space-MNI152NLin6Asym_stat-r_desc-iscaligned_statmap.json"
        ).read_text()
    )
    assert isc["MedianISCAligned"] > isc["MedianISCAnatomical"]
    assert isc["AlignmentParameters"] == params and isc["TrainingRuns"] == [1]
    citation = (out / "logs" / "CITATION_group.md").read_text()
    assert cited in citation and "Procrustes hyperalignment [" not in citation
    errors, _ = bids_validate(out)
    assert errors == []


# ------------------------------------------------------------ methods and models


def _handmade_model(bids, out, subjects=("01",), task="objects", n_samples=None, voxels=None):
    """A model of the synthetic data written as the app writes one (without fitting it)."""
    from mvpa_flows.core.alignment.maps import ProcrustesMap
    from mvpa_flows.core.alignment.model import AlignmentModel

    func = bids / "derivatives/fmriprep/sub-01/func"
    masks = sorted(bids.glob("derivatives/fmriprep/sub-*/func/*_desc-brain_mask.nii.gz"))
    roi = np.logical_and.reduce([np.asarray(nb.load(m).dataobj) > 0 for m in masks])
    n_vox = int(roi.sum()) if voxels is None else voxels
    if n_samples is None:
        n_samples = sum(
            nb.load(func / f"sub-01_task-objects_run-{r}_desc-preproc_bold.nii.gz").shape[3]
            for r in (1, 2)
        )
    maps = [ProcrustesMap(1.0, np.zeros(n_vox), np.zeros(n_vox), dense=np.eye(n_vox))]
    model = AlignmentModel(
        "procrustes",
        np.random.default_rng(0).standard_normal((n_samples, n_vox)),
        maps * len(subjects),
        subjects=list(subjects),
        metadata={
            "task": task,
            "space": "native (no space- entity)",
            "train_runs": [1, 2],
            "test_runs": [3],
            "model_label": "objectsHA",
        },
    )
    folder = out / "tpl-objectsHA"
    folder.mkdir(parents=True)
    model.save(folder / "tpl-objectsHA_task-objects_desc-common_model.h5")
    img = nb.load(masks[0])
    nb.Nifti1Image(roi.astype(np.uint8), img.affine).to_filename(
        folder / "tpl-objectsHA_task-objects_desc-roi_mask.nii.gz"
    )
    return folder


MODEL_BAD = {
    "no folder": ({}, ["--ha-model", "{out}/nowhere"], 64, "--ha-model .*nowhere: no such folder"),
    "other task": (
        {"task": "movie"},
        ["--participant-label", "02"],
        16,
        "is a model of task 'movie', not of task 'objects'",
    ),
    "other samples": (
        {"n_samples": 50},
        ["--participant-label", "02"],
        16,
        r"was fitted on 50 training samples .* selected subjects have \d+ volumes",
    ),
    "other voxels": (
        {"voxels": 7},
        ["--participant-label", "02"],
        16,
        r"maps \[7\] voxels per subject, but its ROI gives \d+ voxels",
    ),
    "subject in the model": (
        {},
        ["--participant-label", "01"],
        64,
        "--participant-label 01: already in the model",
    ),
    "no new subject": ({"subjects": ("01", "02")}, [], 16, "No subject outside the model"),
    "other method": (
        {},
        ["--participant-label", "02", "--ha-method", "srm"],
        64,
        "--ha-method srm: the model .* is a procrustes model",
    ),
}


@pytest.mark.parametrize("case", sorted(MODEL_BAD))
def test_ha_model_refusals(case, synthetic_bids, tmp_path, capsys):
    """A model that cannot hold the subjects is refused before any data are cleaned."""
    import re

    kwargs, args, code, message = MODEL_BAD[case]
    out = tmp_path / "out"
    folder = _handmade_model(synthetic_bids, out, **kwargs)
    args = [a.replace("{out}", str(out)) for a in args]
    if "--ha-model" not in args:
        args += ["--ha-model", str(folder)]
    assert _group(synthetic_bids, out, "--analyses", "hyperalignment", *args) == code
    assert re.search(message, capsys.readouterr().err.replace("\n", " "))
    assert not list(out.glob("sub-*")) and not list(out.glob("*_scores.tsv"))
    assert not (tmp_path / "work" / "mvpa_flows_group_wf").exists()


METHOD_BAD = {
    "srm components": (
        ["--ha-method", "srm", "--ha-n-components", "5000"],
        16,
        r"Option --ha-n-components=5000 exceeds the \d+ (voxels|training samples)",
    ),
    "ridge blocks": (
        ["--ha-method", "ridge", "--ha-cv-blocks", "500"],
        16,
        "at least 3 contiguous training blocks .* cv_blocks=500|--ha-cv-blocks=500",
    ),
    "ridge two blocks": (["--ha-method", "ridge", "--ha-cv-blocks", "2"], 64, "ha_cv_blocks"),
    "negative penalty": (["--ha-method", "ridge", "--ha-alphas", "-1"], 64, "ha_alphas"),
    "unknown method": (["--ha-method", "cca"], 64, "invalid choice: 'cca'"),
    "searchlight srm": (
        ["--ha-method", "srm", "--ha-searchlight-radius", "9"],
        64,
        "--ha-method srm with --ha-searchlight-radius 9",
    ),
    "sparse without radius": (["--ha-sparse-radius", "6"], 64, "--ha-searchlight-radius MM"),
    "infinite radius": (["--ha-searchlight-radius", "inf"], 64, "finite number > 0"),
}


@pytest.mark.parametrize("case", sorted(METHOD_BAD))
def test_alignment_method_refusals(case, synthetic_bids, tmp_path, capsys):
    import re

    args, code, message = METHOD_BAD[case]
    out = tmp_path / "out"
    assert _group(synthetic_bids, out, "--analyses", "hyperalignment", *args) == code
    assert re.search(message, capsys.readouterr().err.replace("\n", " "))
    assert not (tmp_path / "work" / "mvpa_flows_group_wf").exists()


@pytest.mark.shared_data
def test_sherlock_searchlight_hyperalignment(sherlock_dir, tmp_path):
    """Searchlight hyperalignment end to end: three subjects, 9 mm spheres (CI time)."""
    out = tmp_path / "out"
    base = "--analyses hyperalignment --confounds none --ha-train-runs 1 --ha-test-runs 2"
    assert (
        run_app(
            sherlock_dir,
            out,
            "group",
            f"{base} --participant-label 01 02 03 --ha-searchlight-radius 9",
        )
        == 0
    )
    scores = pd.read_csv(out / "task-sherlock_space-MNI152NLin6Asym_desc-bsc_scores.tsv", sep="\t")
    # with all six subjects the app measured 0.198 against 0.143 anatomical (defaults:
    # whole-mask common space, mapped voxels z-scored; too slow for CI: 37 s)
    assert len(scores) == 3 and scores["hyperaligned"].between(0, 1).all()
    assert (scores["hyperaligned"] > scores["chance"]).all()
    meta = json.loads(
        (out / "task-sherlock_space-MNI152NLin6Asym_desc-bsc_scores.json").read_text()
    )
    assert meta["MeanAccuracy"]["hyperaligned"] == pytest.approx(scores["hyperaligned"].mean())
    assert meta["AlignmentMethod"] == "searchlight" and meta["SearchlightRadius"] == 9.0
    assert meta["AlignmentParameters"]["radius"] == 9.0
    assert meta["AlignmentParameters"]["method"] == "procrustes"
    xfm = (
        out / "sub-02/func/sub-02_task-sherlock_from-MNI152NLin6Asym_to-sherlockHA_mode-image_"
        "desc-searchlight_xfm.h5"
    )
    transform, _ = load_transform(xfm)
    assert transform.matrix.shape == (meta["NumberOfFeatures"],) * 2
    xfm_meta = json.loads(xfm.with_suffix("").with_suffix(".json").read_text())
    assert xfm_meta["SearchlightRadius"] == 9.0
    from mvpa_flows.core.alignment.model import load_model

    model = load_model(
        out / "tpl-sherlockHA/tpl-sherlockHA_task-sherlock_space-MNI152NLin6Asym_desc-common_"
        "model.h5"
    )
    assert model.method == "searchlight" and model.subjects == ["01", "02", "03"]
    citation = (out / "logs" / "CITATION_group.md").read_text()
    assert "searchlight hyperalignment [guntupalli2016]" in citation
    assert "spheres of 9 mm radius centred on every one (481 centres)" in citation
    errors, _ = bids_validate(out)
    assert errors == []
    # a new subject mapped into the searchlight model without refitting it
    assert (
        run_app(
            sherlock_dir,
            out,
            "group",
            f"--analyses hyperalignment --confounds none --participant-label 04 "
            f"--ha-model {out / 'tpl-sherlockHA'}",
            work=tmp_path / "work2",
        )
        == 0
    )
    mapped, _ = load_transform(
        out / "sub-04/func/sub-04_task-sherlock_from-MNI152NLin6Asym_to-sherlockHA_mode-image_"
        "desc-searchlight_xfm.h5"
    )
    assert mapped.matrix.shape == transform.matrix.shape
    mapped_scores = pd.read_csv(
        out / "task-sherlock_space-MNI152NLin6Asym_desc-bscmapped_scores.tsv",
        sep="\t",
        dtype={"subject": str},
    )
    assert mapped_scores["subject"].tolist() == ["04"]
    citation = (out / "logs" / "CITATION_group.md").read_text()
    assert "mapped into an existing alignment model (searchlight hyperalignment" in citation
    shutil.rmtree(tmp_path / "work", ignore_errors=True)
    shutil.rmtree(tmp_path / "work2", ignore_errors=True)

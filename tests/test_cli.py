"""The BIDS-App end to end: outputs, sidecars, exit codes and error messages."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from conftest import bids_validate
from sklearn.feature_selection import f_classif

from mvpa_flows.cli.run import main

DATA = Path(__file__).parent / "data"


def run(bids, out, *args, level="participant", work=None):
    work = work or out.parent / "work"
    return main([str(bids), str(out), level, "-w", str(work), "--nprocs", "1", *args])


def _files(root):
    return sorted(
        p.relative_to(root).as_posix()
        for p in Path(root).rglob("*")
        if p.is_file() and "logs" not in p.relative_to(root).parts
    )


def test_participant_ftest_on_synthetic_data(synthetic_bids, tmp_path):
    out = tmp_path / "out"
    assert (
        run(
            synthetic_bids,
            out,
            "--participant-label",
            "sub-01",
            "--conditions",
            "face",
            "house",
            "--hrf-delay",
            "4",
        )
        == 0
    )
    stem = "sub-01/func/sub-01_task-objects"
    expected = {
        f"{stem}_contrast-faceVsHouse_stat-{s}_desc-anova_statmap.{e}"
        for s in ("F", "p")
        for e in ("nii.gz", "json")
    }
    expected |= {f"{stem}_desc-analysis_mask.{e}" for e in ("nii.gz", "json")}
    expected |= {f"{stem}_boldref.{e}" for e in ("nii.gz", "json")}
    expected |= {f"{stem}_samples.{e}" for e in ("tsv", "json")}
    expected |= {"dataset_description.json", ".bidsignore", "README.md", "sub-01.html"}
    expected |= {
        f"sub-01/figures/sub-01_task-objects_contrast-faceVsHouse_stat-{s}_desc-anova_figure.{e}"
        for s in ("F", "p")
        for e in ("svg", "json")
    }
    assert set(_files(out)) == expected
    assert not list(out.rglob("*.tmp"))

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "mvpa_flows"
    assert set(description["DatasetLinks"]) == {"raw", "fmriprep"}
    assert "*_statmap.*" in (out / ".bidsignore").read_text().split()

    meta = json.loads(
        (out / f"{stem}_contrast-faceVsHouse_stat-F_desc-anova_statmap.json").read_text()
    )
    assert meta["Conditions"] == ["face", "house"] and meta["HRFDelay"] == 4.0
    assert meta["Confounds"] == sorted(
        ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    )
    assert meta["DegreesOfFreedom"][0] == 1 and meta["Detrend"] is True
    assert "bids:raw:sub-01/func/sub-01_task-objects_run-1_events.tsv" in meta["Sources"]
    assert any(s.startswith("bids:fmriprep:sub-01/func/") for s in meta["Sources"])

    # the map equals f_classif on samples cleaned the same way
    from mvpa_flows.core.data.dataset import load_samples

    fp = synthetic_bids / "derivatives" / "fmriprep" / "sub-01" / "func"
    runs = [f"sub-01_task-objects_run-{r}" for r in (1, 2, 3)]
    X, table, mask, _ = load_samples(
        [fp / f"{r}_desc-preproc_bold.nii.gz" for r in runs],
        [fp / f"{r}_desc-brain_mask.nii.gz" for r in runs],
        [synthetic_bids / "sub-01" / "func" / f"{r}_events.tsv" for r in runs],
        [fp / f"{r}_desc-confounds_timeseries.tsv" for r in runs],
        conditions=["face", "house"],
        hrf_delay=4.0,
    )
    F_ref, _ = f_classif(X, table["label"])
    F_img = nb.load(out / f"{stem}_contrast-faceVsHouse_stat-F_desc-anova_statmap.nii.gz")
    F = F_img.get_fdata()[np.asarray(mask.dataobj) > 0]
    np.testing.assert_allclose(F, F_ref, rtol=1e-5)
    samples = pd.read_csv(out / f"{stem}_samples.tsv", sep="\t")
    assert list(samples.columns) == ["run", "volume", "onset", "label"]
    assert len(samples) == X.shape[0]


def test_rerun_reuses_the_nipype_cache(synthetic_bids, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    args = ("--participant-label", "02", "--conditions", "face", "house")
    assert run(synthetic_bids, out, *args, work=work) == 0
    result = next(work.rglob("result_prepare_samples.pklz"))
    stamp = result.stat().st_mtime_ns
    assert run(synthetic_bids, out, *args, work=work) == 0
    assert result.stat().st_mtime_ns == stamp


def test_spec_file_and_flags(synthetic_bids, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "conditions": ["house", "chair"],
                "confounds": ["none"],
                "contrast_label": "houseChair",
            }
        )
    )
    out = tmp_path / "out"
    assert (
        run(synthetic_bids, out, "--participant_label", "01", "--spec", str(spec), "--no-detrend")
        == 0
    )
    meta = json.loads(next(out.rglob("*stat-F_desc-anova_statmap.json")).read_text())
    assert meta["Conditions"] == ["house", "chair"] and meta["Confounds"] == []
    assert (
        meta["Detrend"] is False
        and "contrast-houseChair" in next(out.rglob("*stat-F*.nii.gz")).name
    )


def _rewrite(path, transform):
    img = nb.load(path)
    data = transform(np.asarray(img.dataobj).copy())
    nb.Nifti1Image(data, img.affine, img.header).to_filename(path)


FMRIPREP_FUNC = (
    "derivatives/fmriprep/sub-02/func/sub-02_task-objects_run-{}_desc-preproc_bold.nii.gz"
)

BAD_INPUTS = {
    "unknown level": (lambda b: None, {"level": "subject"}, 17, "Unknown analysis level"),
    "missing derivatives": (
        lambda b: __import__("shutil").rmtree(b / "derivatives"),
        {},
        18,
        r"fMRIPrep derivatives folder .*derivatives/fmriprep does not exist.*-d fmriprep=PATH",
    ),
    "subject not found": (
        lambda b: None,
        {"args": ["--participant-label", "07"]},
        18,
        r"\['07'\] not found .*subjects there: \['01', '02'\]",
    ),
    "task not found": (
        lambda b: None,
        {"args": ["--task", "rest"]},
        18,
        r"--task rest .*tasks there: \['objects'\]",
    ),
    "no events": (
        lambda b: (b / "sub-01/func/sub-01_task-objects_run-2_events.tsv").unlink(),
        {},
        18,
        r"No _events.tsv .*sub-01_task-objects_run-2_desc-preproc_bold",
    ),
    "absent condition": (
        lambda b: None,
        {"args": ["--conditions", "face", "car"]},
        16,
        r"\['car'\] do not occur .*\['chair', 'face', 'house'\]",
    ),
    "one condition": (
        lambda b: None,
        {"args": ["--conditions", "face"]},
        16,
        r"at least two conditions",
    ),
    "single volume": (
        lambda b: pd.DataFrame(
            {"onset": [10.0, 40.0], "duration": [2.0, 16.0], "trial_type": ["face", "house"]}
        ).to_csv(b / "sub-01/func/sub-01_task-objects_run-3_events.tsv", sep="\t", index=False),
        {"args": ["--conditions", "face", "house"]},
        16,
        r"run-3_events.tsv, condition\(s\) \['face'\] cover a single volume",
    ),
    "mask grid": (
        lambda b: nb.Nifti1Image(np.ones((5, 5, 5), np.uint8), np.eye(4)).to_filename(
            b / "derivatives/fmriprep/sub-01/func/sub-01_task-objects_run-1_desc-brain_mask.nii.gz"
        ),
        {},
        16,
        r"run-1_desc-brain_mask.nii.gz .* is not on the grid of .*run-1_desc-preproc",
    ),
    "confound missing": (
        lambda b: None,
        {"args": ["--confounds", "csf"]},
        16,
        r"\['csf'\] are missing from sub-01_task-objects_run-1_desc-confounds",
    ),
    "output inside bids": (lambda b: None, {"out": "inside"}, 64, r"inside BIDS_DIR"),
    "filter unknown entity": (
        lambda b: (b.parent / "filter.json").write_text('{"bold": {"sesion": "1"}}'),
        {"args": ["--bids-filter-file", "{bids}/../filter.json"]},
        18,
        r"BIDS filter 'bold' uses unknown entity \['sesion'\]; entities of .*'session'",
    ),
    "filter unknown key": (
        lambda b: (b.parent / "filter.json").write_text('{"t1w": {"session": "1"}}'),
        {"args": ["--bids-filter-file", "{bids}/../filter.json"]},
        18,
        r"Unknown query key\(s\) \['t1w'\] .*\['anat', 'bold', 'confounds', 'events', 'mask'\]",
    ),
    "session not found": (
        lambda b: None,
        {"args": ["--session-label", "3"]},
        18,
        r"--session-label \['3'\] not found .*sessions there: none",
    ),
    "truncated bold": (
        lambda b: _truncate(
            b
            / "derivatives/fmriprep/sub-02/func/sub-02_task-objects_run-3_desc-preproc_bold.nii.gz"
        ),
        {},
        16,
        r"sub-02_task-objects_run-3_desc-preproc_bold.nii.gz cannot be read .*truncated",
    ),
    "nan voxels": (
        lambda b: _rewrite(b / FMRIPREP_FUNC.format(2), _poison),
        {},
        16,
        r"sub-02_task-objects_run-2_desc-preproc_bold.nii.gz holds NaN or infinite values in "
        r"1 voxel\(s\) inside the brain mask \(volume\(s\) \[10\]\)",
    ),
    "run left without samples": (
        lambda b: pd.DataFrame(
            {"onset": [500.0, 600.0], "duration": [10.0, 10.0], "trial_type": ["face", "house"]}
        ).to_csv(b / "sub-01/func/sub-01_task-objects_run-2_events.tsv", sep="\t", index=False),
        {"args": ["--conditions", "face", "house"]},
        16,
        r"No volume of \['sub-01_task-objects_run-2_events.tsv'\] falls inside an event .*"
        r"silently drop out of the cross-validation",
    ),
    "unwritable output": (
        lambda b: (b.parent / "a-file").write_text("x"),
        {"out": "under-a-file"},
        64,
        r"OUTPUT_DIR .*a-file/out cannot be written",
    ),
    "two series with one run label": (
        lambda b: _duplicate_run(b),
        {"args": ["--participant-label", "01"]},
        16,
        r"Runs must be unique \(the files carry no ses- entity\): \(session, run\) "
        r"\[\(None, 1\)\] label several BOLD series \['sub-01_task-objects_acq-b_run-1",
    ),
    "confounds and strategy": (
        lambda b: None,
        {"args": ["--confounds", "csf", "--confounds-strategy", "simple"]},
        64,
        r"--confounds csf and --confounds-strategy simple both choose the confounds",
    ),
    "bad spec value": (
        lambda b: None,
        {"args": ["--cv", "loso"]},
        64,
        r"argument --cv: expected 'loro' .* or 'kfold:N' with N >= 2 folds; got 'loso'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_a_clear_message_and_exit_code(case, synthetic_bids, tmp_path, capsys):
    prepare, opts, code, message = BAD_INPUTS[case]
    prepare(synthetic_bids)
    out = {
        "inside": synthetic_bids / "sub-01" / "out",
        "under-a-file": synthetic_bids.parent / "a-file" / "out",
    }.get(opts.get("out"), tmp_path / "out")
    args = [a.format(bids=synthetic_bids) for a in opts.get("args", [])]
    assert run(synthetic_bids, out, *args, level=opts.get("level", "participant")) == code
    assert pytest.importorskip("re").search(message, capsys.readouterr().err.replace("\n", " "))
    assert not [f for f in _files(out) if f.startswith("sub-")] if out.exists() else True


def _duplicate_run(bids):
    """A second acquisition of run 1 (acq-b) with its mask, confounds and events."""
    import shutil

    for folder, names in (
        (bids / "derivatives/fmriprep/sub-01/func",
         ("desc-preproc_bold.nii.gz", "desc-preproc_bold.json", "desc-brain_mask.nii.gz",
          "desc-confounds_timeseries.tsv")),
        (bids / "sub-01/func", ("events.tsv",)),
    ):  # fmt:skip
        for name in names:
            shutil.copy(
                folder / f"sub-01_task-objects_run-1_{name}",
                folder / f"sub-01_task-objects_acq-b_run-1_{name}",
            )


def _poison(data):
    data[5, 6, 3, 10] = np.nan
    return data


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_events_with_na_or_outside_the_run_are_counted(synthetic_bids, tmp_path, capsys):
    events = synthetic_bids / "sub-01/func/sub-01_task-objects_run-1_events.tsv"
    table = pd.read_csv(events, sep="\t")
    extra = pd.DataFrame(
        {"onset": ["n/a", 900.0, 2.0], "duration": [10.0, 10.0, "n/a"],
         "trial_type": ["face", "house", "face"]}
    )  # fmt:skip
    pd.concat([table, extra]).to_csv(events, sep="\t", index=False)
    out = tmp_path / "out"
    assert run(synthetic_bids, out, "--participant-label", "01", "--conditions", "face",
               "house") == 0  # fmt:skip
    err = capsys.readouterr().err.replace("\n", " ")
    assert (
        "mvpa-flows: warning: sub-01: sub-01_task-objects_run-1_events.tsv: 2 event(s) with "
        "n/a onset, duration or trial_type ignored; 1 event(s) of ['face', 'house'] outside "
        "the run" in err
    )
    meta = json.loads(next(out.rglob("*stat-F_desc-anova_statmap.json")).read_text())
    assert any("2 event(s) with n/a" in w for w in meta["Warnings"])


def test_inputs_are_never_written(synthetic_bids, tmp_path, capsys):
    from mvpa_flows.cli.config import build_config
    from mvpa_flows.cli.parser import build_parser

    fmriprep = synthetic_bids / "derivatives" / "fmriprep"
    before = (fmriprep / "dataset_description.json").read_bytes()
    assert run(synthetic_bids, fmriprep, "--participant-label", "01") == 64
    assert "is the input derivatives folder" in capsys.readouterr().err
    assert (fmriprep / "dataset_description.json").read_bytes() == before
    assert not (fmriprep / "README.md").exists()
    out = synthetic_bids / "derivatives" / "mvpa_flows"
    assert run(synthetic_bids, out, work=fmriprep / "work") == 64
    assert "-w/--work-dir" in capsys.readouterr().err and not (fmriprep / "work").exists()
    assert run(synthetic_bids, out, work=synthetic_bids / "sub-01" / "work") == 64
    assert "keep the work directory outside the dataset" in capsys.readouterr().err
    # without -w the work directory defaults to a folder outside every input dataset
    args = build_parser().parse_args([str(synthetic_bids), str(out), "participant"])
    work = build_config(args).work_dir.resolve()
    assert synthetic_bids.resolve() not in work.parents


def test_concurrent_runs_on_one_work_directory(synthetic_bids, tmp_path, capsys):
    from mvpa_flows.cli.run import WorkDirLock

    work = tmp_path / "work"
    work.mkdir()
    with WorkDirLock(work):
        assert run(synthetic_bids, tmp_path / "out", "--participant-label", "01", work=work) == 64
    err = capsys.readouterr().err
    assert "is in use by another mvpa-flows run" in err and "its own -w/--work-dir" in err
    assert run(synthetic_bids, tmp_path / "out", "--participant-label", "01", work=work) == 0


def test_usage_errors_exit_64(tmp_path):
    assert (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mvpa_flows",
                str(tmp_path),
                str(tmp_path / "o"),
                "participant",
                "--no-such-flag",
            ],
            capture_output=True,
        ).returncode
        == 64
    )
    version = subprocess.run(
        [sys.executable, "-m", "mvpa_flows", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("mvpa-flows ")


@pytest.mark.shared_data
def test_haxby_outputs_match_the_manifest(haxby_dir, tmp_path):
    out = tmp_path / "out"
    assert run(haxby_dir, out, "--conditions", "face", "house", "--analyses", "ftest") == 0
    manifest = (DATA / "haxby_participant_outputs.txt").read_text().split()
    assert _files(out) == sorted(manifest)
    errors, warnings = bids_validate(out)
    assert errors == [] and warnings == []
    p = nb.load(next(out.rglob("*stat-p_desc-anova_statmap.nii.gz"))).get_fdata()
    assert (p[p > 0] < 1e-10).sum() > 10


def test_use_plugin_file_runs_multiproc(synthetic_bids, tmp_path):
    from types import SimpleNamespace

    from mvpa_flows.cli.execution import plugin_settings

    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: MultiProc\nplugin_args:\n  n_procs: 2\n  memory_gb: 2\n")
    out = tmp_path / "out"
    code = main(
        [
            str(synthetic_bids),
            str(out),
            "participant",
            "--participant-label",
            "01",
            "-w",
            str(tmp_path / "work"),
            "--use-plugin",
            str(plugin),
        ]
    )
    assert code == 0 and len(list(out.rglob("*_statmap.nii.gz"))) == 2
    assert plugin_settings(SimpleNamespace(plugin={}, nprocs=4, mem_gb=8.0)) == {
        "plugin": "MultiProc",
        "plugin_args": {
            "n_procs": 4,
            "memory_gb": 8.0,
            "raise_insufficient": False,
        },
    }
    bad = tmp_path / "bad.json"
    bad.write_text('{"n_procs": 2}')
    assert main([str(synthetic_bids), str(out), "participant", "--use-plugin", str(bad)]) == 64


def test_memory_units():
    from mvpa_flows.cli.parser import _memory_gb

    assert _memory_gb("8G") == 8 and _memory_gb("16GB") == 16
    assert _memory_gb("4096M") == 4 and _memory_gb("2048") == 2


def test_demo_generates_data_and_runs(tmp_path, capsys):
    from mvpa_flows.cli.demo import main as demo

    assert (
        demo([str(tmp_path / "demo"), "--subjects", "1", "--runs", "2", "--analyses", "ftest"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "Synthetic dataset:" in printed and "report:" in printed
    assert "sessions ['1', '2']" in printed
    assert (
        "sub-01/func/sub-01_task-objects_space-MNI152NLin2009cAsym_res-2_contrast-faceVsHouse"
        "_stat-F_desc-anova_statmap.nii.gz" in printed
    )
    assert (tmp_path / "demo" / "mvpa_flows" / "sub-01.html").is_file()
    assert (
        tmp_path / "demo" / "bids" / "derivatives" / "fmriprep" / "dataset_description.json"
    ).is_file()

"""DataLad datasets: only the files a run needs are fetched; provenance with datalad run."""

import shutil
import subprocess
from pathlib import Path

import pytest

from mvpa_flows.cli.run import main
from mvpa_flows.datasets import make_synthetic_dataset

dl = pytest.importorskip("datalad.api", reason="datalad is a dependency of mvpa_flows")
if shutil.which("git-annex") is None:  # pragma: no cover - CI installs git-annex
    pytest.skip("git-annex is not installed (pip install git-annex)", allow_module_level=True)


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch):
    for var, value in (
        ("GIT_AUTHOR_NAME", "mvpa tests"),
        ("GIT_COMMITTER_NAME", "mvpa tests"),
        ("GIT_AUTHOR_EMAIL", "t@example.org"),
        ("GIT_COMMITTER_EMAIL", "t@example.org"),
    ):
        monkeypatch.setenv(var, value)


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """A DataLad dataset (text2git) holding a small synthetic BIDS dataset + fMRIPrep."""
    import os

    os.environ.setdefault("GIT_AUTHOR_NAME", "mvpa tests")
    os.environ.setdefault("GIT_COMMITTER_NAME", "mvpa tests")
    os.environ.setdefault("GIT_AUTHOR_EMAIL", "t@example.org")
    os.environ.setdefault("GIT_COMMITTER_EMAIL", "t@example.org")
    path = tmp_path_factory.mktemp("datalad") / "origin"
    ds = dl.create(path=str(path), cfg_proc="text2git", result_renderer="disabled")
    make_synthetic_dataset(path, n_subjects=2, n_runs=2, shape=(8, 9, 5), seed=5)
    ds.save(message="Add synthetic dataset", result_renderer="disabled")
    return path


def _clone(origin, dest):
    dl.clone(source=str(origin), path=str(dest), result_renderer="disabled")
    return dest


def _present_annexed(root):
    return sorted(
        p.relative_to(root).as_posix()
        for p in Path(root).rglob("*.nii.gz")
        if p.is_symlink() and p.exists() and ".git" not in p.parts
    )


def test_only_the_needed_files_are_fetched(origin, tmp_path):
    clone = _clone(origin, tmp_path / "clone")
    assert _present_annexed(clone) == []  # a fresh clone has no annexed content
    out = tmp_path / "out"
    code = main(
        [
            str(clone),
            str(out),
            "participant",
            "--participant-label",
            "02",
            "--conditions",
            "face",
            "house",
            "-w",
            str(tmp_path / "work"),
            "--nprocs",
            "1",
        ]
    )
    assert code == 0
    fmriprep = "derivatives/fmriprep/sub-02/func/sub-02_task-objects_run-"
    needed = {
        f"{fmriprep}{r}_desc-{d}.nii.gz" for r in (1, 2) for d in ("brain_mask", "preproc_bold")
    }
    present = set(_present_annexed(clone))
    assert needed <= present
    # identical files share one annex object: anything else present is a twin of a needed file
    keys = {Path(clone / f).resolve() for f in needed}
    assert all(Path(clone / f).resolve() in keys for f in present - needed)
    assert not any("preproc_bold" in f or f.startswith("sub-") for f in present - needed)
    assert len(list(out.glob("sub-02/func/*_statmap.nii.gz"))) == 2
    assert not (out / "sub-01").exists()


def test_no_datalad_get_names_the_missing_files(origin, tmp_path, capsys):
    clone = _clone(origin, tmp_path / "clone")
    code = main(
        [
            str(clone),
            str(tmp_path / "out"),
            "participant",
            "--participant-label",
            "01",
            "--no-datalad-get",
            "-w",
            str(tmp_path / "work"),
        ]
    )
    assert code == 16
    err = capsys.readouterr().err
    assert "have no content in their DataLad dataset" in err and "sub-01_task-objects" in err
    assert _present_annexed(clone) == []


def test_unavailable_content_names_files_and_remote(origin, tmp_path, capsys):
    clone = _clone(origin, tmp_path / "clone")
    gone = tmp_path / "moved-away"
    subprocess.run(["git", "-C", str(clone), "remote", "set-url", "origin", str(gone)], check=True)
    code = main(
        [
            str(clone),
            str(tmp_path / "out"),
            "participant",
            "--participant-label",
            "01",
            "-w",
            str(tmp_path / "work"),
            "--nprocs",
            "1",
        ]
    )
    assert code == 16
    err = capsys.readouterr().err.replace("\n", " ")
    assert "DataLad could not fetch" in err and "origin" in err and "sub-01_task-objects" in err


def test_datalad_run_records_the_command(origin, tmp_path):
    clone = _clone(origin, tmp_path / "clone")
    ds = dl.Dataset(str(clone))
    command = (
        "mvpa-flows . derivatives/mvpa_flows participant --participant-label 01 "
        f"--conditions face house --nprocs 1 -w {tmp_path / 'work'}"
    )
    ds.run(command, message="mvpa_flows participant level", result_renderer="disabled")
    log = subprocess.run(
        ["git", "-C", str(clone), "log", "-1", "--format=%B"], capture_output=True, text=True
    ).stdout
    assert "[DATALAD RUNCMD] mvpa_flows participant level" in log
    assert "mvpa-flows . derivatives/mvpa_flows participant" in log
    tracked = subprocess.run(
        ["git", "-C", str(clone), "ls-files", "derivatives/mvpa_flows"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert "derivatives/mvpa_flows/dataset_description.json" in tracked
    assert any(f.endswith("stat-F_desc-anova_statmap.nii.gz") for f in tracked)

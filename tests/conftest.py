"""Shared fixtures: seeded synthetic BIDS datasets and the real data in ../shared/data."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from slurm import slurm_cluster  # noqa: F401 - session fixture: a real single-node SLURM

from mvpa_flows.datasets import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_dataset(name):
    """Path of a real dataset in ../shared/data, or skip with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(
            f"real data {path} is absent (CI and developers have ../shared beside the checkout)"
        )
    return path


@pytest.fixture(scope="session")
def haxby_dir():
    return shared_dataset("haxby2001-slice")


@pytest.fixture(scope="session")
def sherlock_dir():
    return shared_dataset("sherlock-pmc")


@pytest.fixture(scope="session")
def _synthetic_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "bids"
    make_synthetic_dataset(root, n_subjects=2, n_runs=3, shape=(10, 12, 6), seed=3)
    return root


@pytest.fixture
def synthetic_bids(_synthetic_template, tmp_path):
    """A fresh, writable copy of a small synthetic dataset (2 subjects, 3 runs)."""
    root = tmp_path / "bids"
    shutil.copytree(_synthetic_template, root)
    return root


def run_app(bids, out, level, options="", work=None):
    """Run ``mvpa-flows BIDS OUT LEVEL`` in-process (one process) and return the exit code.

    ``options`` is the rest of the command line as one string.
    """
    import shlex

    from mvpa_flows.cli.run import main

    work = work or Path(out).parent / "work"
    return main(
        [str(bids), str(out), level, "-w", str(work), "--nprocs", "1", *shlex.split(options)]
    )


#: participant searchlight options shared by the group tests
SEARCHLIGHT_GNB = "--analyses searchlight --estimator gnb --conditions face house --hrf-delay 4"


def bids_validate(path):
    """Run ``bids-validator-deno PATH --datasetTypes derivative``; return (errors, warnings).

    Each issue is ``(code, subCode, location)``. The validator comes with the ``test``
    extra (``bids-validator-deno`` on PyPI); the test is skipped, with the reason, when
    it is not installed.
    """
    exe = shutil.which("bids-validator-deno")
    if exe is None:
        pytest.skip("bids-validator-deno is not installed (pip install -e '.[test]')")
    out = subprocess.run(
        [exe, str(path), "--datasetTypes", "derivative", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(out.stdout)
    issues = {"error": [], "warning": []}
    for issue in report["issues"]["issues"]:
        issues.setdefault(issue["severity"], []).append(
            (issue["code"], issue.get("subCode"), issue.get("location"))
        )
    return issues["error"], issues["warning"]


def file_hashes(root):
    """SHA-256 of every file under ``root`` (relative path -> digest)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }

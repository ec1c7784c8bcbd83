"""Reports, checked in a real headless browser (Debian chromium)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from conftest import SEARCHLIGHT_GNB, run_app

from mvpa_flows.cli.run import main

ARTIFACTS = Path(
    os.environ.get("MVPA_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts")
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing; .ci/run installs Debian's chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def _chromium(browser, url, tmp_path, *extra):
    args = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=5000",
        *extra,
        url,
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def check_page(browser, page, tmp_path, headings, name):
    """Load ``page``: it renders, every image resolves, headings exist; take a screenshot."""
    dom = _chromium(browser, page.as_uri(), tmp_path, "--dump-dom")
    assert "<h1>" in dom
    found = re.findall(r"<h2[^>]*>([^<]+)</h2>", dom)
    for heading in headings:
        assert heading in found, f"section {heading!r} missing from {found}"
    images = re.findall(r"<img [^>]*>", dom)
    assert images, "the report shows no figure"
    broken = [img[:120] for img in images if re.search(r'class="[^"]*\bbroken\b', img)]
    assert not broken, f"images that did not load: {broken}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    _chromium(browser, page.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1200,2400")
    assert shot.stat().st_size > 10_000
    return dom


def test_broken_images_are_detected(browser, tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<html><body><h1>t</h1><h2>S</h2><img src='missing.svg' "
        "onerror=\"this.classList.add('broken')\"></body></html>"
    )
    with pytest.raises(AssertionError, match="did not load"):
        check_page(browser, page, tmp_path, ["S"], "broken-check")


def test_subject_report_in_a_browser(browser, synthetic_bids, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                str(synthetic_bids),
                str(out),
                "participant",
                "-w",
                str(tmp_path / "work"),
                "--nprocs",
                "1",
                "--participant-label",
                "01",
                "--analyses",
                "ftest",
                "searchlight",
                "--estimator",
                "gnb",
                "--n-permutations",
                "5",
                "--conditions",
                "face",
                "house",
                "--hrf-delay",
                "4",
                "--random-seed",
                "0",
            ]
        )
        == 0
    )
    dom = check_page(
        browser,
        out / "sub-01.html",
        tmp_path,
        ["Summary", "Searchlight", "F-test", "Methods", "Errors"],
        "sub-01",
    )
    assert "No errors to report" in dom
    figures = sorted(p.name for p in (out / "sub-01" / "figures").iterdir())
    assert "sub-01_task-objects_contrast-faceVsHouse_stat-p_desc-anova_figure.svg" in figures
    assert (
        "sub-01_task-objects_contrast-faceVsHouse_stat-accuracy_desc-searchlight_figure.svg"
        in figures
    )
    assert {
        "sub-01_task-objects_desc-spheresizes_figure.svg",
        "sub-01_task-objects_desc-null_figure.svg",
        "sub-01_task-objects_desc-folds_figure.svg",
    } <= set(figures)
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "Kriegeskorte" in citation and "searchlight" in citation.lower()


def test_report_of_a_crashed_subject_shows_the_error(browser, synthetic_bids, tmp_path):
    bold = (
        synthetic_bids / "derivatives/fmriprep/sub-02/func/"
        "sub-02_task-objects_run-1_desc-preproc_bold.nii.gz"
    )
    img = nb.load(bold)
    data = np.asarray(img.dataobj).copy()
    data[5, 6, 3, 4] = np.nan
    nb.Nifti1Image(data, img.affine, img.header).to_filename(bold)
    out = tmp_path / "out"
    assert (
        main(
            [
                str(synthetic_bids),
                str(out),
                "participant",
                "-w",
                str(tmp_path / "work"),
                "--nprocs",
                "1",
                "--participant-label",
                "02",
            ]
        )
        == 1
    )
    page = out / "sub-02.html"
    dom = _chromium(browser, page.as_uri(), tmp_path, "--dump-dom")
    assert "prepare_samples" in dom and "holds NaN" in dom
    assert re.findall(r"<h2[^>]*>([^<]+)</h2>", dom)[-1] == "Errors"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _chromium(browser, page.as_uri(), tmp_path, f"--screenshot={ARTIFACTS / 'sub-02-crash.png'}")


def test_group_report_in_a_browser(browser, synthetic_bids, tmp_path):
    out = tmp_path / "out"
    assert run_app(synthetic_bids, out, "participant", SEARCHLIGHT_GNB) == 0
    assert (
        main(
            [
                str(synthetic_bids),
                str(out),
                "group",
                "-w",
                str(tmp_path / "work"),
                "--nprocs",
                "1",
                "--analyses",
                "hyperalignment",
                "searchlight",
                "--ha-train-runs",
                "1",
                "2",
                "--ha-test-runs",
                "3",
                "--segment-length",
                "8",
            ]
        )
        == 0
    )
    dom = check_page(
        browser,
        out / "group.html",
        tmp_path,
        ["Summary", "Hyperalignment", "Group searchlight", "Methods", "Errors"],
        "group",
    )
    assert "<th>hyperaligned</th>" in dom and "<td>01</td>" in dom
    assert (out / "figures" / "task-objects_desc-bsc_figure.svg").is_file()

"""Reports, checked in a real headless browser (Debian chromium), and what their words say."""

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SEARCHLIGHT_GNB, run_app

from mvpa_flows.cli.run import main

ARTIFACTS = Path(
    os.environ.get("MVPA_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts")
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Measures every inline figure as laid out: text outside the figure's box (a cut title
#: or label), charts without bars. Image panels are read from the rendered DOM after.
CHECKER = """
<script>
(() => {
  const out = {figures: 0, clipped: [], empty: [], error: null};
  try {
    for (const fig of document.querySelectorAll('figure')) {
      const name = fig.dataset.file || 'figure';
      const svg = fig.querySelector('svg');
      if (!svg) { out.empty.push(name + ': no drawing'); continue; }
      out.figures += 1;
      const box = svg.getBoundingClientRect();
      if (box.width < 50 || box.height < 50) out.empty.push(name + ': tiny');
      for (const t of svg.querySelectorAll('text')) {
        const r = t.getBoundingClientRect();
        if (!t.textContent.trim()) continue;
        if (r.left < box.left - 1 || r.right > box.right + 1 ||
            r.top < box.top - 1 || r.bottom > box.bottom + 1) {
          out.clipped.push(name + ': ' + t.textContent.trim());
        }
      }
      const images = svg.querySelectorAll('image');
      if (!images.length && svg.querySelectorAll('[id*="-patch_"]').length < 3) {
        out.empty.push(name + ': no bars');
      }
    }
  } catch (e) { out.error = String(e); }
  const pre = document.createElement('pre');
  pre.id = 'report-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


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
        "--virtual-time-budget=10000",
        *extra,
        url,
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def measure(browser, page, tmp_path):
    """Load ``page`` with the checker; return (DOM, the checker's findings)."""
    checked = tmp_path / f"checked-{page.name}"
    checked.write_text(page.read_text().replace("</body>", CHECKER + "</body>"))
    dom = _chromium(browser, checked.as_uri(), tmp_path, "--dump-dom")
    found = re.search(r'<pre id="report-check">(.*?)</pre>', dom, flags=re.S)
    assert found, "the checker did not finish"
    result = json.loads(html.unescape(found[1]))
    assert result["error"] is None, result["error"]
    result["empty"] += blank_panels(dom)
    return dom, result


def blank_panels(dom):
    """Figures of the DOM with a slice (a ``z=..`` label) that shows nothing.

    Every cut must have an image panel that is not of one colour (the colour bar, a thin
    image, does not count).
    """
    from PIL import Image

    blank = []
    for name, figure in re.findall(r'<figure data-file="([^"]+)">(.*?)</figure>', dom, re.S):
        cuts = len(re.findall(r">\s*[xyz]=-?\d+\s*<", figure))
        panels = 0
        for attrs in re.findall(r"<image([^>]*)>", figure):
            width = float(re.search(r'width="([\d.]+)"', attrs)[1])
            data = re.search(r"base64,([^\"']+)", attrs)[1]
            pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGBA"))
            panels += width >= 20 and not (pixels == pixels[0, 0]).all()
        if panels < cuts:
            blank.append(f"{name}: {cuts - panels} of {cuts} slices show nothing")
    return blank


def check_page(browser, page, tmp_path, headings, name):
    """Every section is there, no title is cut, no figure is empty; take a screenshot."""
    dom, found = measure(browser, page, tmp_path)
    sections = re.findall(r"<h2[^>]*>([^<]+)</h2>", dom)
    for heading in headings:
        assert heading in sections, f"section {heading!r} missing from {sections}"
    assert found["figures"] > 0, "the report shows no figure"
    assert not found["clipped"], f"text cut at the edge of its figure: {found['clipped']}"
    assert not found["empty"], f"empty figures or panels: {found['empty']}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    _chromium(browser, page.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1200,6000")
    assert shot.stat().st_size > 10_000
    return dom


def _png(colour):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (4, 4), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_checker_finds_cut_titles_and_empty_panels(browser, tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<html><body><h1>t</h1><h2>S</h2><figure data-file='f.svg'>"
        "<svg xmlns='http://www.w3.org/2000/svg' xmlns:xlink='http://www.w3.org/1999/xlink' "
        "width='200' height='100' viewBox='0 0 200 100'>"
        "<text x='120' y='20' font-size='14'>Searchlight accuracy (shown above</text>"
        "<text x='5' y='95' font-size='10'>z=5</text>"
        f"<image x='0' y='30' width='60' height='60' xlink:href='data:image/png;base64,"
        f"{_png((0, 0, 0, 255))}'/></svg></figure></body></html>"
    )
    _, found = measure(browser, page, tmp_path)
    assert found["clipped"] == ["f.svg: Searchlight accuracy (shown above"]
    assert found["empty"] == ["f.svg: 1 of 1 slices show nothing"]


def _participant(bids, out, *extra):
    options = "--analyses ftest searchlight --estimator gnb --conditions face house "
    options += "--hrf-delay 4 --random-seed 0 " + " ".join(extra)
    return run_app(bids, out, "participant", options)


def test_subject_report_in_a_browser(browser, synthetic_bids, tmp_path):
    out = tmp_path / "out"
    assert _participant(synthetic_bids, out, "--participant-label 01 --n-permutations 5") == 0
    dom = check_page(
        browser,
        out / "sub-01.html",
        tmp_path,
        ["Summary", "Searchlight", "F-test", "Methods", "Warnings", "Errors"],
        "sub-01",
    )
    assert "No errors to report" in dom
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    # human words, rounded numbers: no internal names, no raw JSON
    assert "GaussianNB" in text and "leave-one-run-out" in text
    assert "the gnb classifier" not in text and '"gnb"' not in text and "loro" not in text
    assert not re.search(r"\d\.\d{6,}", text), "unrounded numbers on the page"
    assert "seed's figure" not in text
    # five permutations cannot reach p < 0.05: the page says so
    assert "smallest attainable p-value is 0.167, above 0.05" in text
    figures = sorted(p.name for p in (out / "sub-01" / "figures").glob("*.svg"))
    stem = "sub-01_task-objects_contrast-faceVsHouse_"
    assert figures == sorted(
        stem + name
        for name in (
            "stat-p_desc-anova_figure.svg",
            "stat-F_desc-anova_figure.svg",
            "stat-accuracy_desc-searchlight_figure.svg",
            "stat-p_desc-searchlight_figure.svg",
            "desc-spheresizes_figure.svg",
            "desc-null_figure.svg",
            "desc-folds_figure.svg",
        )
    )
    facts = json.loads(
        (out / "sub-01/figures" / (stem + "stat-p_desc-searchlight_figure.json")).read_text()
    )
    assert facts["MinimumAttainableP"] == pytest.approx(1 / 6)
    assert facts["Sources"] and facts["CutCoords"]
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "Kriegeskorte" in citation and "GaussianNB" in citation


def test_report_of_a_crashed_subject_shows_the_error(
    browser, synthetic_bids, tmp_path, monkeypatch
):
    # inputs pass the up-front checks; the node then fails (the Linear plugin runs it here)
    import mvpa_flows.interfaces.samples as samples

    def fail(*args, **kwargs):
        raise RuntimeError("sub-02: the samples could not be loaded (simulated failure)")

    monkeypatch.setattr(samples, "load_samples", fail)
    out = tmp_path / "out"
    assert run_app(synthetic_bids, out, "participant", "--participant-label 02") == 1
    page = out / "sub-02.html"
    dom = _chromium(browser, page.as_uri(), tmp_path, "--dump-dom")
    assert "prepare_samples" in dom and "simulated failure" in dom
    assert re.findall(r"<h2[^>]*>([^<]+)</h2>", dom)[-1] == "Errors"
    assert "No F-test map was produced (see Errors)" in dom
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _chromium(browser, page.as_uri(), tmp_path, f"--screenshot={ARTIFACTS / 'sub-02-crash.png'}")


def test_group_report_in_a_browser(browser, synthetic_bids, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_app(synthetic_bids, out, "participant", SEARCHLIGHT_GNB) == 0
    group = "--analyses hyperalignment searchlight --ha-train-runs 1 2 --ha-test-runs 3 "
    group += "--segment-length 8 --allow-subject-space"
    assert run_app(synthetic_bids, out, "group", group) == 0
    err = capsys.readouterr().err  # library warnings go to the log, not the terminal
    assert "UnderdeterminedRotationWarning" not in err and re.search(r"warnings? recorded in", err)
    dom = check_page(
        browser,
        out / "group.html",
        tmp_path,
        ["Summary", "Hyperalignment", "Group searchlight", "Methods", "Warnings", "Errors"],
        "group",
    )
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    assert "<th>hyperaligned</th>" in dom and "<td>01</td>" in dom
    scores = pd.read_csv(out / "task-objects_desc-bsc_scores.tsv", sep="\t", keep_default_na=False)
    assert (scores["within_subject"] == "n/a").all()
    assert "<td>n/a</td>" in dom and "nan" not in text.lower().split()
    assert (
        "within-subject" not in text.split("Accuracy per subject")[0].split("Hyperalignment")[-1]
    )
    # two subjects: 4 sign flips, p >= 0.25; the page says why the FWE map has no p < 0.05
    assert "smallest attainable p-value is 0.25, above 0.05" in text
    assert "UnderdeterminedRotationWarning" in text.split("Warnings")[-1]
    assert (out / "figures" / "task-objects_desc-bsc_figure.svg").is_file()


def _only_global_signal(bids):
    """Confounds files with one global_signal column, like the Sherlock data's."""
    rng = np.random.default_rng(0)
    for path in (bids / "derivatives" / "fmriprep").rglob("*_desc-confounds_timeseries.tsv"):
        n = len(pd.read_csv(path, sep="\t"))
        pd.DataFrame({"global_signal": rng.normal(size=n)}).to_csv(path, sep="\t", index=False)


def test_group_methods_claim_only_the_confounds_regressed(synthetic_bids, tmp_path):
    """A confounds file without motion columns: nothing is regressed, and the text says so."""
    _only_global_signal(synthetic_bids)
    out = tmp_path / "out"
    group = "--analyses hyperalignment --ha-train-runs 1 2 --ha-test-runs 3 --segment-length 8"
    assert run_app(synthetic_bids, out, "group", group) == 0
    citation = (out / "logs" / "CITATION_group.md").read_text()
    assert "no confound regression" in citation and "motion" not in citation
    meta = json.loads((out / "task-objects_desc-bsc_scores.json").read_text())
    assert meta["Confounds"] == []


def test_demo_then_group_describes_what_the_subjects_ran(tmp_path, capfd):
    """The demo (GaussianNB, 6 mm, 4 s delay) then the group: words from the sidecars."""
    from mvpa_flows.cli.demo import main as demo

    assert demo([str(tmp_path / "demo")]) == 0
    printed = capfd.readouterr()
    assert not re.search(r"\w+Warning\b", printed.out + printed.err), "raw library warnings"
    out = tmp_path / "demo" / "mvpa_flows"
    participant_citation = (out / "logs" / "CITATION.md").read_bytes()
    code = main(
        [str(tmp_path / "demo" / "bids"), str(out), "group", "-w", str(tmp_path / "demo" / "work"),
         "--nprocs", "1", "--analyses", "searchlight"]
    )  # fmt:skip
    assert code == 0
    group = (out / "logs" / "CITATION_group.md").read_text()
    assert "GaussianNB" in group and "spheres of 6 mm radius" in group
    assert "delayed by 4 s" in group and "3 subjects" in group
    assert "svc" not in group.lower() and "5.6 mm" not in group and "0 s" not in group
    assert "smallest attainable p-value is 0.125" in group  # 3 subjects: 8 sign flips
    assert (out / "logs" / "CITATION.md").read_bytes() == participant_citation
    page = (out / "group.html").read_text()
    assert "GaussianNB" in page and "spheres of 6 mm radius" in page

"""HTML reports: one per subject (``sub-<label>.html``) and one for the group.

Reports are assembled from the derivatives on disk (and the crash files of the run),
so a subject whose run failed still gets a report that shows the error. Figures are
written as BIDS-named files under ``sub-<label>/figures/`` (``figures/`` for the
group) and embedded in the HTML, which therefore opens anywhere on its own.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from mvpa_flows.__about__ import __version__
from mvpa_flows.core import figures
from mvpa_flows.interfaces.bids import atomic_write_text, output_path

CITATIONS = {
    "nipype": "Gorgolewski K. et al. (2011). Nipype: a flexible, lightweight and extensible "
              "neuroimaging data processing framework in Python. Front. Neuroinform. 5:13. "
              "doi:10.3389/fninf.2011.00013",
    "nilearn": "Abraham A. et al. (2014). Machine learning for neuroimaging with "
               "scikit-learn. Front. Neuroinform. 8:14. doi:10.3389/fninf.2014.00014",
    "sklearn": "Pedregosa F. et al. (2011). Scikit-learn: Machine learning in Python. "
               "JMLR 12:2825-2830.",
    "pybids": "Yarkoni T. et al. (2019). PyBIDS: Python tools for BIDS datasets. JOSS 4(40):1294. "
              "doi:10.21105/joss.01294",
    "fmriprep": "Esteban O. et al. (2019). fMRIPrep: a robust preprocessing pipeline for "
                "functional MRI. Nat. Methods 16:111-116. doi:10.1038/s41592-018-0235-4",
    "searchlight": "Kriegeskorte N., Goebel R., Bandettini P. (2006). Information-based "
                   "functional brain mapping. PNAS 103(10):3863-3868. "
                   "doi:10.1073/pnas.0600244103",
    "haxby2001": "Haxby J.V. et al. (2001). Distributed and overlapping representations of "
                 "faces and objects in ventral temporal cortex. Science 293:2425-2430. "
                 "doi:10.1126/science.1063736",
    "haxby2011": "Haxby J.V. et al. (2011). A common, high-dimensional model of the "
                 "representational space in human ventral temporal cortex. Neuron "
                 "72(2):404-416. doi:10.1016/j.neuron.2011.08.026",
    "pymvpa": "Hanke M. et al. (2009). PyMVPA: a Python toolbox for multivariate pattern "
              "analysis of fMRI data. Neuroinformatics 7:37-53. doi:10.1007/s12021-008-9041-y",
    "nichols": "Nichols T.E., Holmes A.P. (2002). Nonparametric permutation tests for "
               "functional neuroimaging: a primer with examples. Hum. Brain Mapp. 15:1-25. "
               "doi:10.1002/hbm.1058",
}  # fmt:skip

_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;
color:#222}h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left}figure{margin:1em 0}figcaption{font-size:.9em;color:#555}img{max-width:100%}
.error{background:#fde8e8;border-left:4px solid #c00;padding:.5em 1em;white-space:pre-wrap;
font-family:monospace;font-size:.85em}.note{color:#666}img.broken{outline:3px solid red}
code{background:#f4f4f4;padding:0 3px}nav a{margin-right:1em}
"""


def parse_name(path):
    """Entities of a derivative file name (``key-value`` pairs, ``suffix``, ``extension``)."""
    name = Path(path).name
    stem, _, ext = name.partition(".")
    parts = stem.split("_")
    entities = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    entities.update(suffix=parts[-1], extension="." + ext)
    return entities


def _run_key(run):
    return (0, int(run), "") if str(run).isdigit() else (1, 0, str(run))


def _figure_html(path, caption, root):
    data = Path(path).read_bytes()
    mime = "image/svg+xml" if str(path).endswith(".svg") else "image/png"
    rel = Path(path).relative_to(root).as_posix()
    return (
        f'<figure><img src="data:{mime};base64,{base64.b64encode(data).decode()}" '
        f'alt="{html.escape(caption)}" onerror="this.classList.add(\'broken\')">'
        f'<figcaption>{html.escape(caption)} <a href="{html.escape(rel)}">({html.escape(rel)})'
        "</a></figcaption></figure>"
    )


def _table(rows, header=None):
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _sidecar(path):
    meta = Path(str(path).replace(".nii.gz", ".json").replace(".tsv", ".json"))
    return json.loads(meta.read_text()) if meta.is_file() else {}


def crash_reports(crash_dir, subject=None):
    """(node, error line, file) for the run's crash files, optionally for one subject."""
    found = []
    for path in sorted(Path(crash_dir).glob("crash-*.txt")) if Path(crash_dir).is_dir() else []:
        text = path.read_text(errors="replace")
        node = next(
            (
                line.split(":", 1)[1].strip()
                for line in text.splitlines()
                if line.startswith("Node:")
            ),
            path.name,
        )
        if subject is not None and f"single_subject_{subject}_wf" not in node:
            continue
        lines = [line for line in text.strip().splitlines() if line.strip()]
        error = next(
            (line for line in reversed(lines) if "Error" in line.split(":", 1)[0]),
            lines[-1] if lines else "",
        )
        found.append((node, error.strip(), path))
    return found


def methods_text(params, analyses, level="participant"):
    """A methods paragraph for the analyses that were run, with its references."""
    cites = ["fmriprep", "pybids", "nipype", "nilearn", "sklearn"]
    conf = params.get("confounds")
    conf_text = (
        "no confound regression"
        if conf == ["none"]
        else f"regression of the confounds {', '.join(conf)}"
        if conf
        else "regression of the six head-motion parameters estimated by fMRIPrep"
    )
    text = [
        f"Analyses were performed with mvpa_flows {__version__}, a Nipype-based [nipype] "
        "BIDS-App, on data preprocessed with fMRIPrep [fmriprep]; inputs were queried with "
        "PyBIDS [pybids]. "
        f"Each volume was labelled with the condition of the event covering its acquisition "
        f"time (delay {params.get('hrf_delay', 0)} s); runs served as cross-validation "
        f"groups. Within each run, the time series of the voxels inside the intersection of "
        f"the runs' brain masks were cleaned with nilearn [nilearn]: "
        f"{'linear detrending, ' if params.get('detrend', True) else ''}{conf_text}"
        f"{', and z-scoring of every voxel' if params.get('standardize') == 'zscore_run' else ''}."
    ]
    if "ftest" in analyses:
        text.append(
            "A univariate one-way ANOVA F-test across conditions was computed at every voxel "
            "(the statistic of scikit-learn's f_classif [sklearn])."
        )
    if "searchlight" in analyses:
        cites += ["searchlight", "haxby2001"]
        perm = params.get("n_permutations", 0)
        text.append(
            f"Searchlight decoding [searchlight] used spheres of {params.get('radius')} mm "
            f"radius (every mask voxel whose centre lies within the radius), the "
            f"{params.get('estimator')} classifier and {params.get('cv')} cross-validation, "
            f"scored by {params.get('scoring')}"
            + (
                f"; voxel-wise p-values came from {perm} permutations of the labels within runs"
                if perm
                else ""
            )
            + "."
        )
    if level == "group" and "hyperalignment" in analyses:
        cites += ["haxby2011", "pymvpa"]
        text.append(
            "Subjects were aligned into a common model space with Procrustes hyperalignment "
            "[haxby2011] (PyMVPA's three-level algorithm [pymvpa]) estimated on training runs "
            f"{params.get('ha_train_runs')}, and evaluated by leave-one-subject-out "
            f"between-subject classification ({params.get('bsc')}) on runs "
            f"{params.get('ha_test_runs')}."
        )
    if level == "group" and "searchlight" in analyses:
        cites += ["nichols"]
        text.append(
            "Participant searchlight maps were tested against chance with a one-sample t-test; "
            "family-wise error was controlled with sign-flip permutations of the maximum t "
            "[nichols]."
        )
    refs = "\n".join(f"- [{key}] {CITATIONS[key]}" for key in dict.fromkeys(cites))
    return " ".join(text), refs


def write_citation(output_dir, params, analyses, level):
    """Write ``logs/CITATION.md`` (methods paragraph and references)."""
    paragraph, refs = methods_text(params, analyses, level)
    text = f"# Methods\n\n{paragraph}\n\n## References\n\n{refs}\n"
    return atomic_write_text(text, Path(output_dir) / "logs" / "CITATION.md")


def _page(title, sections, toc):
    nav = " ".join(f'<a href="#{anchor}">{html.escape(name)}</a>' for anchor, name in toc)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>{''.join(sections)}"
        f"<p class='note'>Generated by mvpa_flows {__version__}.</p></body></html>\n"
    )


def _fig_path(output_dir, entities):
    return Path(output_dir) / output_path({**entities, "suffix": "figure", "extension": ".svg"})


def subject_report(output_dir, subject, summary, params, analyses, crash_dir):
    """Write ``OUTPUT_DIR/sub-<label>.html`` from the subject's derivatives.

    Parameters
    ----------
    output_dir : path
    subject : str
    summary : dict
        ``task``, ``space``, ``runs``, ``bold`` (files), ``command_line``.
    params : dict
        The run's analysis parameters.
    analyses : list of str
    crash_dir : path
        Folder of the run's crash files.
    """
    output_dir = Path(output_dir)
    func = output_dir / f"sub-{subject}" / "func"
    files = {f.name: f for f in func.glob("*")} if func.is_dir() else {}
    base = {"subject": subject, "task": summary.get("task"), "space": summary.get("space")}
    mean = next((f for n, f in files.items() if n.endswith("_desc-mean_bold.nii.gz")), None)
    samples = next((f for n, f in files.items() if n.endswith("_samples.tsv")), None)
    mask = next((f for n, f in files.items() if n.endswith("_desc-analysis_mask.nii.gz")), None)
    sections, toc = [], []

    # Summary ---------------------------------------------------------------
    info = _sidecar(samples) if samples else {}
    rows = [
        ("Subject", f"sub-{subject}"),
        ("Task", summary.get("task")),
        ("Space", summary.get("space") or "native (BOLD grid)"),
        ("Runs", ", ".join(map(str, summary.get("runs", [])))),
        (
            "Volumes per run",
            ", ".join(map(str, info.get("VolumesPerRun", summary.get("volumes", [])))) or "n/a",
        ),
        (
            "TR (s)",
            ", ".join(
                sorted(
                    {
                        str(t)
                        for t in info.get("RepetitionTime", summary.get("repetition_time", []))
                    }
                )
            )
            or "n/a",
        ),
        ("Mask size (voxels)", info.get("NumberOfVoxels", "n/a")),
        ("Conditions", ", ".join(info.get("Conditions", params.get("conditions") or []))),
        ("Confounds", ", ".join(info.get("Confounds", [])) or "none"),
        (
            "Cleaning",
            f"detrend={params.get('detrend')}, standardize={params.get('standardize')}"
            f", hrf_delay={params.get('hrf_delay')} s",
        ),
        ("Command", summary.get("command_line", "")),
        ("mvpa_flows version", __version__),
    ]
    body = _table(rows)
    counts = info.get("SampleCountsPerRun")
    if counts:
        conds = sorted({c for per in counts.values() for c in per})
        body += "<h3>Samples per run</h3>" + _table(
            [
                [run] + [per.get(c, 0) for c in conds]
                for run, per in sorted(counts.items(), key=lambda kv: _run_key(kv[0]))
            ],
            ["run", *conds],
        )
    sections.append(f'<h2 id="summary">Summary</h2>{body}')
    toc.append(("summary", "Summary"))

    # Searchlight -------------------------------------------------------------
    if "searchlight" in analyses:
        body = ""
        score = next(
            (
                f
                for n, f in files.items()
                if "_desc-searchlight_statmap.nii.gz" in n and "_stat-p_" not in n
            ),
            None,
        )
        if score is None:
            body = "<p class='note'>No searchlight map was produced (see Errors).</p>"
        else:
            meta = _sidecar(score)
            ents = parse_name(score)
            chance = float(meta.get("ChanceLevel", 0.5))
            fig = {**base, "contrast": ents.get("contrast"), "stat": ents.get("stat")}
            body += _figure_html(
                figures.plot_score_map(
                    score,
                    mean,
                    chance,
                    _fig_path(output_dir, {**fig, "desc": "searchlight"}),
                    title=f"Searchlight {ents.get('stat')}",
                ),
                f"{ents.get('stat')} map over the mean EPI (chance {chance:.2f}).",
                output_dir,
            )
            body += _figure_html(
                figures.plot_glass(
                    score,
                    chance,
                    _fig_path(output_dir, {**fig, "desc": "searchlightglass"}),
                    title=f"{ents.get('stat')} above chance",
                ),
                "Glass brain of the score map above chance.",
                output_dir,
            )
            hist = meta.get("SphereSizeHistogram")
            if hist:
                body += _figure_html(
                    figures.plot_histogram(
                        hist["Counts"],
                        hist["BinEdges"],
                        _fig_path(output_dir, {**base, "desc": "spheresizes"}),
                        "voxels per sphere",
                        f"Sphere sizes (radius {meta.get('Radius')} mm)",
                    ),
                    "Distribution of sphere sizes (spheres at the mask edge are smaller).",
                    output_dir,
                )
            folds = meta.get("FoldMeanScores")
            if folds:
                body += _figure_html(
                    figures.plot_bars(
                        [str(i + 1) for i in range(len(folds))],
                        folds,
                        _fig_path(output_dir, {**base, "desc": "folds"}),
                        f"mean {ents.get('stat')}",
                        "Per-fold score (mean over spheres)",
                        chance=chance,
                    ),
                    "Cross-validation folds.",
                    output_dir,
                )
            null = meta.get("NullDistribution")
            if null:
                body += _figure_html(
                    figures.plot_histogram(
                        null["Counts"],
                        null["BinEdges"],
                        _fig_path(output_dir, {**base, "desc": "null"}),
                        ents.get("stat"),
                        "Null distribution (labels permuted within runs)",
                        lines={
                            "chance": (chance, "crimson"),
                            "observed max": (meta.get("MaxScore"), "black"),
                        },
                    ),
                    "Permutation null distribution of sphere scores.",
                    output_dir,
                )
                p_map = score.with_name(score.name.replace(f"_stat-{ents['stat']}_", "_stat-p_"))
                if p_map.is_file():
                    body += _figure_html(
                        figures.plot_stat(
                            figures.neg_log10_p(p_map),
                            mean,
                            _fig_path(output_dir, {**fig, "stat": "p", "desc": "searchlight"}),
                            "Searchlight permutation -log10 p",
                        ),
                        "-log10 permutation p-values.",
                        output_dir,
                    )
            body += _table(
                [
                    (k, json.dumps(meta.get(k)))
                    for k in (
                        "Estimator",
                        "Engine",
                        "CrossValidation",
                        "NumberOfFolds",
                        "Radius",
                        "SphereSize",
                        "ChanceLevel",
                        "LabelCounts",
                        "NumberOfPermutations",
                        "RandomSeed",
                        "MeanScore",
                        "MaxScore",
                    )
                    if k in meta
                ]
            )
        sections.append(f'<h2 id="searchlight">Searchlight</h2>{body}')
        toc.append(("searchlight", "Searchlight"))

    # F-test ------------------------------------------------------------------
    if "ftest" in analyses:
        p_file = next(
            (f for n, f in files.items() if n.endswith("_stat-p_desc-anova_statmap.nii.gz")), None
        )
        f_file = next(
            (f for n, f in files.items() if n.endswith("_stat-F_desc-anova_statmap.nii.gz")), None
        )
        if p_file is None or f_file is None:
            body = "<p class='note'>No F-test map was produced (see Errors).</p>"
        else:
            ents = parse_name(f_file)
            fig = {**base, "contrast": ents.get("contrast"), "desc": "anova"}
            body = _figure_html(
                figures.plot_stat(
                    figures.neg_log10_p(p_file),
                    mean,
                    _fig_path(output_dir, {**fig, "stat": "p"}),
                    "F-test: -log10 p (clipped at 10)",
                    vmax=10,
                ),
                "The seed's figure: -log10 p of the F-test, clipped at 10.",
                output_dir,
            )
            body += _figure_html(
                figures.plot_stat(
                    f_file, mean, _fig_path(output_dir, {**fig, "stat": "F"}), "F statistic"
                ),
                "F statistic map.",
                output_dir,
            )
        sections.append(f'<h2 id="ftest">F-test</h2>{body}')
        toc.append(("ftest", "F-test"))

    # Methods -------------------------------------------------------------------
    paragraph, refs = methods_text(params, analyses)
    sections.append(
        f'<h2 id="methods">Methods</h2><p>{html.escape(paragraph)}</p><h3>References</h3>'
        + "<ul>"
        + "".join(f"<li>{html.escape(r[2:])}</li>" for r in refs.splitlines())
        + "</ul>"
    )
    toc.append(("methods", "Methods"))

    # Errors --------------------------------------------------------------------
    crashes = crash_reports(crash_dir, subject)
    if crashes:
        body = "".join(
            f"<p>Node <code>{html.escape(node)}</code> failed:</p><div class='error'>"
            f"{html.escape(err)}</div><p class='note'>{html.escape(str(path))}</p>"
            for node, err, path in crashes
        )
    else:
        body = "<p>No errors to report.</p>"
    sections.append(f'<h2 id="errors">Errors</h2>{body}')
    toc.append(("errors", "Errors"))
    if mask is None and not crashes:
        sections.insert(1, "<p class='note'>No outputs were found for this subject.</p>")
    out = output_dir / f"sub-{subject}.html"
    atomic_write_text(_page(f"mvpa_flows report: sub-{subject}", sections, toc), out)
    return str(out)


def group_report(output_dir, summary, params, analyses, crash_dir):
    """Write ``OUTPUT_DIR/group.html``: between-subject classification and group maps."""
    output_dir = Path(output_dir)
    sections, toc = [], []
    task, space = summary.get("task"), summary.get("space")
    rows = [
        ("Task", task),
        ("Space", space or "native"),
        ("Command", summary.get("command_line", "")),
        ("mvpa_flows version", __version__),
    ]
    sections.append(f'<h2 id="summary">Summary</h2>{_table(rows)}')
    toc.append(("summary", "Summary"))
    if "hyperalignment" in analyses:
        table = output_dir / output_path(
            {"task": task, "space": space, "desc": "bsc", "suffix": "scores"}
        )
        if table.is_file():
            scores = pd.read_csv(table, sep="\t", dtype={"subject": str})
            columns = [
                k
                for k in ("anatomical", "hyperaligned", "within_subject")
                if k in scores and scores[k].notna().any()
            ]
            series = {k.replace("_", "-"): scores[k].tolist() for k in columns}
            body = _figure_html(
                figures.plot_grouped_bars(
                    [f"sub-{s}" for s in scores["subject"]],
                    series,
                    _fig_path(output_dir, {"task": task, "space": space, "desc": "bsc"}),
                    "accuracy",
                    "Between-subject classification (leave one subject out)",
                    chance=float(scores["chance"].iloc[0]),
                ),
                "Anatomical vs hyperaligned vs within-subject accuracy; chance dashed.",
                output_dir,
            )
            body += _table(scores.round(4).astype(str).values.tolist(), list(scores.columns))
            means = {k: float(scores[k].mean()) for k in columns}
            body += _table([(k, f"{v:.3f}") for k, v in means.items()], ["mean", "accuracy"])
        else:
            body = "<p class='note'>No between-subject classification table (see Errors).</p>"
        sections.append(f'<h2 id="hyperalignment">Hyperalignment</h2>{body}')
        toc.append(("hyperalignment", "Hyperalignment"))
    if "searchlight" in analyses:
        body = ""
        for t_map in sorted(output_dir.glob("task-*_stat-t_desc-searchlightgroup_statmap.nii.gz")):
            ents = parse_name(t_map)
            fig = {
                "task": ents.get("task"),
                "space": ents.get("space"),
                "contrast": ents.get("contrast"),
                "desc": "searchlightgroup",
            }
            body += _figure_html(
                figures.plot_glass(
                    t_map,
                    0.0,
                    _fig_path(output_dir, {**fig, "stat": "t"}),
                    "Group t against chance",
                    cmap="cold_hot",
                ),
                "One-sample t map.",
                output_dir,
            )
            p_map = t_map.with_name(t_map.name.replace("_stat-t_", "_stat-p_"))
            if p_map.is_file():
                body += _figure_html(
                    figures.plot_glass(
                        figures.neg_log10_p(p_map),
                        1.3,
                        _fig_path(output_dir, {**fig, "stat": "p"}),
                        "Group FWE -log10 p (threshold p < 0.05)",
                    ),
                    "FWE-corrected -log10 p.",
                    output_dir,
                )
        sections.append(
            f'<h2 id="searchlight">Group searchlight</h2>'
            f"{body or '<p class=note>No group searchlight maps.</p>'}"
        )
        toc.append(("searchlight", "Group searchlight"))
    paragraph, refs = methods_text(params, analyses, level="group")
    sections.append(
        f'<h2 id="methods">Methods</h2><p>{html.escape(paragraph)}</p><ul>'
        + "".join(f"<li>{html.escape(r[2:])}</li>" for r in refs.splitlines())
        + "</ul>"
    )
    toc.append(("methods", "Methods"))
    crashes = [c for c in crash_reports(crash_dir) if "group" in c[0]]
    body = (
        "".join(
            f"<p>Node <code>{html.escape(n)}</code> failed:</p><div class='error'>"
            f"{html.escape(e)}</div>"
            for n, e, _ in crashes
        )
        or "<p>No errors to report.</p>"
    )
    sections.append(f'<h2 id="errors">Errors</h2>{body}')
    toc.append(("errors", "Errors"))
    out = output_dir / "group.html"
    atomic_write_text(_page("mvpa_flows group report", sections, toc), out)
    return str(out)

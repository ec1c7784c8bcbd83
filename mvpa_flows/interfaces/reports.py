"""Report figures as Nipype nodes, and the HTML reports built from the derivatives.

The figure interfaces run inside the workflows (one node per figure, stored by a
``ds_report_*`` sink as a BIDS-named ``figures/`` file whose sidecar holds the facts
its caption states). After the run, :func:`write_subject_report` and
:func:`write_group_report` index the output folder by its BIDS names and assemble the
pages from ``mvpa_flows/reports/data/reports-spec.yml``; methods text and citations come
from the sidecars of the files they describe.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mvpa_flows.__about__ import __version__
from mvpa_flows.core.io import atomic_write_text
from mvpa_flows.interfaces.bids import parse_entities
from mvpa_flows.reports import assembler, figures, reportlets
from mvpa_flows.reports.methods import MethodsText, citation_markdown, methods

__all__ = [
    "MethodsText",
    "PValueMapFigure",
    "ScoreMapFigure",
    "SearchlightChart",
    "StatMapFigure",
    "BSCFigure",
    "ISCFigure",
    "MeanImage",
    "crash_reports",
    "index_outputs",
    "write_citation",
    "write_group_report",
    "write_subject_report",
]


def _merged(dicts):
    out = {}
    for item in dicts or []:
        out.update(item)
    return out


def _on_glass_brain(source_file):
    space = parse_entities(source_file).get("space") if source_file else None
    return figures.shows_on_glass_brain(space)


def _out(runtime, name):
    return os.path.join(runtime.cwd, name)


class _FigureOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the figure (SVG)")
    facts = traits.Dict(desc="what the caption states (voxels shown, smallest p, ...)")


class _ScoreMapFigureInputSpec(BaseInterfaceInputSpec):
    score_map = File(exists=True, mandatory=True, desc="searchlight score map")
    bg_file = File(exists=True, mandatory=True, desc="background: the subject's mean EPI")
    metadata = traits.List(traits.Dict, desc="metadata of the map (ChanceLevel, Scoring)")
    source_file = traits.Str(desc="an input of the map (its space- entity picks the display)")


class _ScoreMapFigureOutputSpec(_FigureOutputSpec):
    pass


class ScoreMapFigure(SimpleInterface):
    """Draw the searchlight score map over the mean EPI, shown above chance.

    Calls :func:`mvpa_flows.reports.reportlets.score_map`.
    """

    input_spec = _ScoreMapFigureInputSpec
    output_spec = _ScoreMapFigureOutputSpec

    def _run_interface(self, runtime):
        self._results["out_file"] = _out(runtime, "score_map.svg")
        self._results["facts"] = reportlets.score_map(
            self.inputs.score_map,
            self.inputs.bg_file,
            _merged(self.inputs.metadata),
            self._results["out_file"],
            glass_brain=_on_glass_brain(self.inputs.source_file),
        )
        return runtime


class _PValueMapFigureInputSpec(BaseInterfaceInputSpec):
    p_map = File(exists=True, mandatory=True, desc="p-value map")
    bg_file = File(exists=True, mandatory=True, desc="background: a mean EPI")
    title = traits.Str(mandatory=True, desc="figure title")
    metadata = traits.List(traits.Dict, desc="test metadata (NumberOfPermutations, ...)")
    source_file = traits.Str(desc="an input of the map (its space- entity picks the display)")


class _PValueMapFigureOutputSpec(_FigureOutputSpec):
    pass


class PValueMapFigure(SimpleInterface):
    """Draw -log10 p over a mean EPI and count the voxels below 0.05.

    Calls :func:`mvpa_flows.reports.reportlets.p_map`.
    """

    input_spec = _PValueMapFigureInputSpec
    output_spec = _PValueMapFigureOutputSpec

    def _run_interface(self, runtime):
        self._results["out_file"] = _out(runtime, "p_map.svg")
        self._results["facts"] = reportlets.p_map(
            self.inputs.p_map,
            self.inputs.bg_file,
            _merged(self.inputs.metadata),
            self._results["out_file"],
            self.inputs.title,
            glass_brain=_on_glass_brain(self.inputs.source_file),
        )
        return runtime


class _StatMapFigureInputSpec(BaseInterfaceInputSpec):
    stat_map = File(exists=True, mandatory=True, desc="statistic map (F, t)")
    bg_file = File(exists=True, mandatory=True, desc="background: a mean EPI")
    title = traits.Str(mandatory=True, desc="figure title")
    signed = traits.Bool(False, usedefault=True, desc="negative values too (t maps)")
    source_file = traits.Str(desc="an input of the map (its space- entity picks the display)")


class _StatMapFigureOutputSpec(_FigureOutputSpec):
    pass


class StatMapFigure(SimpleInterface):
    """Draw a statistic map over a mean EPI.

    Calls :func:`mvpa_flows.reports.reportlets.stat_map`.
    """

    input_spec = _StatMapFigureInputSpec
    output_spec = _StatMapFigureOutputSpec

    def _run_interface(self, runtime):
        self._results["out_file"] = _out(runtime, "stat_map.svg")
        self._results["facts"] = reportlets.stat_map(
            self.inputs.stat_map,
            self.inputs.bg_file,
            self._results["out_file"],
            self.inputs.title,
            signed=self.inputs.signed,
            glass_brain=_on_glass_brain(self.inputs.source_file),
        )
        return runtime


_CHARTS = {
    "spheresizes": reportlets.sphere_sizes,
    "folds": reportlets.folds,
    "null": reportlets.null_distribution,
}


class _SearchlightChartInputSpec(BaseInterfaceInputSpec):
    metadata = traits.List(traits.Dict, mandatory=True, desc="searchlight metadata")
    kind = traits.Enum(*_CHARTS, mandatory=True, desc="which chart")


class _SearchlightChartOutputSpec(_FigureOutputSpec):
    pass


class SearchlightChart(SimpleInterface):
    """Draw a chart of the searchlight metadata: sphere sizes, folds or the null.

    Calls the function of :mod:`mvpa_flows.reports.reportlets` named by ``kind``.
    """

    input_spec = _SearchlightChartInputSpec
    output_spec = _SearchlightChartOutputSpec

    def _run_interface(self, runtime):
        self._results["out_file"] = _out(runtime, f"{self.inputs.kind}.svg")
        self._results["facts"] = _CHARTS[self.inputs.kind](
            _merged(self.inputs.metadata), self._results["out_file"]
        )
        return runtime


class _DesignFigureInputSpec(BaseInterfaceInputSpec):
    design_file = traits.Either(
        File(exists=True), traits.List(File(exists=True)), mandatory=True,
        desc="a run's trial-wise design matrix (.tsv; of a list, the first run's)",
    )  # fmt:skip
    trials_file = traits.Either(
        File(exists=True), traits.List(File(exists=True)), mandatory=True,
        desc="the trials of that run (.tsv; of a list, the first run's)",
    )  # fmt:skip
    source_file = traits.Str(mandatory=True, desc="the run's BOLD series (names the figure)")
    kind = traits.Enum("design", "collinearity", mandatory=True, desc="which figure")


class _DesignFigureOutputSpec(_FigureOutputSpec):
    pass


class DesignFigure(SimpleInterface):
    """Draw one run's trial-wise design: the matrix, or its neighbouring-trial correlations.

    Calls :func:`mvpa_flows.reports.reportlets.design_matrix` or
    :func:`mvpa_flows.reports.reportlets.neighbour_correlations`.
    """

    input_spec = _DesignFigureInputSpec
    output_spec = _DesignFigureOutputSpec

    def _run_interface(self, runtime):
        design, trials = (
            f[0] if isinstance(f, list) else f
            for f in (self.inputs.design_file, self.inputs.trials_file)
        )
        name = reportlets.run_name(self.inputs.source_file)
        out = self._results["out_file"] = _out(runtime, f"{self.inputs.kind}.svg")
        if self.inputs.kind == "design":
            self._results["facts"] = reportlets.design_matrix(design, out, name)
        else:
            self._results["facts"] = reportlets.neighbour_correlations(design, trials, out, name)
        return runtime


class _BSCFigureInputSpec(BaseInterfaceInputSpec):
    scores_file = File(exists=True, mandatory=True, desc="between-subject classification table")


class _BSCFigureOutputSpec(_FigureOutputSpec):
    pass


class BSCFigure(SimpleInterface):
    """Draw between-subject classification accuracy per left-out subject.

    Calls :func:`mvpa_flows.reports.reportlets.bsc_scores`.
    """

    input_spec = _BSCFigureInputSpec
    output_spec = _BSCFigureOutputSpec

    def _run_interface(self, runtime):
        self._results["out_file"] = _out(runtime, "bsc.svg")
        self._results["facts"] = reportlets.bsc_scores(
            self.inputs.scores_file, self._results["out_file"]
        )
        return runtime


class _ISCFigureInputSpec(BaseInterfaceInputSpec):
    isc_anatomical = File(exists=True, mandatory=True, desc="group ISC map before alignment")
    isc_aligned = File(exists=True, desc="group ISC map after alignment (when voxel-wise)")


class _ISCFigureOutputSpec(_FigureOutputSpec):
    pass


class ISCFigure(SimpleInterface):
    """Draw the voxel-wise ISC before and after alignment as two distributions.

    Calls :func:`mvpa_flows.reports.reportlets.isc_distributions`.
    """

    input_spec = _ISCFigureInputSpec
    output_spec = _ISCFigureOutputSpec

    def _run_interface(self, runtime):
        self._results["out_file"] = _out(runtime, "isc.svg")
        aligned = self.inputs.isc_aligned if self.inputs.isc_aligned else None
        self._results["facts"] = reportlets.isc_distributions(
            self.inputs.isc_anatomical, aligned, self._results["out_file"]
        )
        return runtime


class _MeanImageInputSpec(BaseInterfaceInputSpec):
    in_files = traits.List(File(exists=True), mandatory=True, desc="3D images on one grid")


class _MeanImageOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="their voxel-wise mean")


class MeanImage(SimpleInterface):
    """Average 3D images (the subjects' mean EPIs: the group figures' background).

    Calls :func:`mvpa_flows.reports.figures.mean_image`.
    """

    input_spec = _MeanImageInputSpec
    output_spec = _MeanImageOutputSpec

    def _run_interface(self, runtime):
        self._results["out_file"] = _out(runtime, "mean_image.nii.gz")
        figures.mean_image(self.inputs.in_files).to_filename(self._results["out_file"])
        return runtime


# ------------------------------------------------------------------- finding outputs


def _read_json(path):
    import json

    return json.loads(Path(path).read_text()) if Path(path).is_file() else {}


def index_outputs(output_dir, subjects=None):
    """Every derivative in ``output_dir`` with its BIDS entities and sidecar.

    Files are recognised by the project's naming (``bids_specs/mvpa_flows.json``);
    ``subjects`` keeps those subjects' files and the group's (no ``sub-`` entity).

    Returns
    -------
    list of dict
        ``path``, ``entities`` and ``metadata`` (the JSON sidecar, ``{}`` if none).
    """
    root = Path(output_dir)
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in ("logs",) or path.suffix in (".json", ".html"):
            continue
        entities = parse_entities(path)
        if "suffix" not in entities or (
            subjects is not None and entities.get("subject") not in (None, *subjects)
        ):
            continue
        sidecar = path.with_name(path.name[: -len(entities.get("extension", ""))] + ".json")
        found.append({"path": path, "entities": entities, "metadata": _read_json(sidecar)})
    return found


def crash_reports(crash_dir, subject=None):
    """(node, error line, file) for the run's crash files, optionally for one subject."""
    found = []
    for path in sorted(Path(crash_dir).glob("crash-*.txt")) if Path(crash_dir).is_dir() else []:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
        node = next(
            (x.split(":", 1)[1].strip() for x in lines if x.startswith("Node:")), path.name
        )
        if subject is not None and f"single_subject_{subject}_wf" not in node:
            continue
        error = next(
            (x for x in reversed(lines) if "Error" in x.split(":", 1)[0]),
            lines[-1] if lines else "",
        )
        found.append((node, error.strip(), path))
    return found


_RECORD = re.compile(r"^\d\d:\d\d:\d\d \| WARNING \| (?P<where>[^|]*) \| ", flags=re.M)


def recorded_warnings(log_file, subject=None):
    """(where, message, count) of the warnings in a run's log, optionally one subject's."""
    text = (
        Path(log_file).read_text(errors="replace") if log_file and Path(log_file).is_file() else ""
    )
    starts = list(_RECORD.finditer(text))
    counts = Counter()
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
        body = re.split(r"^\d\d:\d\d:\d\d \| ", text[match.end() : end], flags=re.M)[0]
        where = match["where"].strip()
        # node warnings name the subject's workflow; input warnings start with sub-<label>
        mine = f"single_subject_{subject}_wf" in where or re.match(
            rf"sub-{re.escape(str(subject))}[: ]", body.strip()
        )
        if subject is None or mine:
            counts[(where, body.strip())] += 1
    return [(where, body, n) for (where, body), n in counts.items()]


# ------------------------------------------------------------------------ the pages


def _summary(files, extra):
    ents = next((f["entities"] for f in files if f["entities"].get("task")), {})
    rows = [
        ("Task", ents.get("task", "n/a")),
        ("Session", ents.get("session")),
        ("Space", ents.get("space") or "native (the BOLD grid)"),
        *extra,
        ("mvpa_flows version", __version__),
    ]
    return assembler.table_html([r for r in rows if r[1] is not None])


def _samples_per_run(files):
    info = next((f["metadata"] for f in files if f["entities"].get("suffix") == "samples"), {})
    counts = info.get("SampleCountsPerRun")
    if not counts:
        return ""
    conditions = sorted({c for per in counts.values() for c in per})
    order = sorted(counts, key=lambda r: (0, int(r), "") if str(r).isdigit() else (1, 0, str(r)))
    rows = [[run] + [counts[run].get(c, 0) for c in conditions] for run in order]
    return "<h4>Samples per run</h4>" + assembler.table_html(rows, ["run", *conditions])


#: Entities that tell one participant analysis from another in the same folder.
_UNIT_ENTITIES = ("session", "task", "space", "cohort", "res", "den")


def write_subject_report(output_dir, subject, texts, analyses, crash_dir, log_file=None,
                         command_line="", entities=None):  # fmt:skip
    """Write ``OUTPUT_DIR/sub-<label>[_ses-<label>].html`` from the subject's derivatives.

    Parameters
    ----------
    output_dir : path
    subject : str
        Label without ``sub-``.
    texts : list of MethodsText
        Methods texts of the workflows that ran (their ``__desc__``).
    analyses : list of str
        Analyses asked for.
    crash_dir : path
        Folder of the run's crash files (a failed node's error is shown).
    log_file : path or None
        The run's log (its warnings are shown).
    command_line : str
        The command that ran.
    entities : dict or None
        The analysis the page describes (``session``, ``task``, ``space``, ``res``, ...):
        only the subject's files with these entities; a ``session`` names the page
        ``sub-<label>_ses-<label>.html``.
    """
    files = index_outputs(output_dir, subjects=[subject])
    files = [f for f in files if f["entities"].get("subject") == subject]
    unit = {k: v for k, v in (entities or {}).items() if k in _UNIT_ENTITIES}
    if unit:
        files = [
            f
            for f in files
            if all(
                f["entities"].get(k) == (None if v is None else str(v)) for k, v in unit.items()
            )
        ]
    name = f"sub-{subject}" + (f"_ses-{unit['session']}" if unit.get("session") else "")
    paragraphs, cites = methods(texts, files)
    blocks = {
        "summary": _summary(files, [("Subject", f"sub-{subject}"), ("Command", command_line)]),
        "samples_per_run": _samples_per_run(files),
        "methods": assembler.methods_html(paragraphs, cites),
        "warnings": assembler.warnings_html(recorded_warnings(log_file, subject)),
        "errors": assembler.errors_html(crash_reports(crash_dir, subject)),
    }
    page = assembler.build_report(
        "participant", files, blocks, analyses, output_dir,
        {"subject": subject, "version": __version__},
    )  # fmt:skip
    return atomic_write_text(page, Path(output_dir) / f"{name}.html")


def write_group_report(output_dir, texts, analyses, files, crash_dir, log_file=None,
                       command_line=""):  # fmt:skip
    """Write ``OUTPUT_DIR/group.html``; ``files`` are the derivatives it may describe."""
    paragraphs, cites = methods(texts, files)
    subjects = sorted({f["entities"]["subject"] for f in files if f["entities"].get("subject")})
    crashes = [c for c in crash_reports(crash_dir) if "group" in c[0]]
    blocks = {
        "summary": _summary(
            files,
            [
                ("Subjects", ", ".join(f"sub-{s}" for s in subjects) or "n/a"),
                ("Command", command_line),
            ],
        ),  # fmt:skip
        "methods": assembler.methods_html(paragraphs, cites),
        "warnings": assembler.warnings_html(recorded_warnings(log_file)),
        "errors": assembler.errors_html(crashes),
    }
    page = assembler.build_report(
        "group", files, blocks, analyses, output_dir, {"version": __version__}
    )
    return atomic_write_text(page, Path(output_dir) / "group.html")


def write_citation(path, texts, files, title="Methods"):
    """Write a ``CITATION.md``: the methods paragraphs of ``texts`` over ``files``."""
    paragraphs, cites = methods(texts, files)
    return atomic_write_text(citation_markdown(paragraphs, cites, title), path)

"""Assemble a self-contained HTML report from the report spec and the derivatives.

The page is data: ``data/reports-spec.yml`` lists the sections and what each shows
(figures and tables selected by BIDS entities, parameter tables, blocks written by the
caller). Figures are inlined as SVG, so the page opens anywhere on its own and keeps
its text as text.
"""

from __future__ import annotations

import html
import re
from functools import cache
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from mvpa_flows.reports.methods import (
    CITATIONS,
    matches,
    number,
    parameter_rows,
    render,
    sidecars_by_subject,
)

_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;
color:#222}h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top}figure{margin:1.2em 0}figure svg{max-width:100%;
height:auto;display:block}figcaption{font-size:.9em;color:#444;max-width:900px}
h4{margin:.2em 0}.error{background:#fde8e8;border-left:4px solid #c00;padding:.5em 1em;
white-space:pre-wrap;font-family:monospace;font-size:.85em}.note{color:#666}
.warning{background:#fff8e1;border-left:4px solid #e0a800;padding:.3em 1em;
font-family:monospace;font-size:.85em;white-space:pre-wrap}
code{background:#f4f4f4;padding:0 3px}nav a{margin-right:1em}
"""


@cache
def _spec_text():
    return resources.files("mvpa_flows.reports").joinpath("data/reports-spec.yml").read_text()


def load_spec(level):
    """The report spec of ``level`` (``participant`` or ``group``)."""
    spec = yaml.safe_load(_spec_text())
    if level not in spec:
        raise ValueError(f"No report spec for level {level!r}; levels: {sorted(spec)}.")
    return spec[level]


# ------------------------------------------------------------------------ HTML pieces


def note(text):
    """A grey note paragraph."""
    return f"<p class='note'>{html.escape(text)}</p>"


def table_html(rows, header=None):
    """An HTML table of ``rows`` (escaped)."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return "".join(out) + "</table>"


def methods_html(paragraphs, cites):
    """Methods paragraphs and their reference list."""
    if not paragraphs:
        return note("No analysis output was found to describe.")
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    refs = "".join(f"<li>[{html.escape(k)}] {html.escape(CITATIONS[k])}</li>" for k in cites)
    return body + f"<h3>References</h3><ul>{refs}</ul>"


def errors_html(crashes):
    """Failed nodes and their errors, from ``(node, message, crash file)`` triples."""
    if not crashes:
        return "<p>No errors to report.</p>"
    return "".join(
        f"<p>Node <code>{html.escape(node)}</code> failed:</p><div class='error'>"
        f"{html.escape(message)}</div><p class='note'>{html.escape(str(path))}</p>"
        for node, message, path in crashes
    )


def warnings_html(warnings):
    """Library warnings recorded during the run, from ``(where, message, count)``."""
    if not warnings:
        return "<p>No warnings were recorded.</p>"
    return "".join(
        f"<div class='warning'>{html.escape(message)}</div><p class='note'>"
        f"{html.escape(where)}{f' ({count} times)' if count > 1 else ''}</p>"
        for where, message, count in warnings
    )


_SVG_ID = re.compile(r'(id="|url\(#|href="#)([^")]+)')


def inline_svg(path, prefix):
    """The SVG of ``path`` for inlining: no XML prolog, ids made unique with ``prefix``."""
    text = Path(path).read_text(encoding="utf-8")
    text = text[text.index("<svg") :]
    return _SVG_ID.sub(lambda m: f"{m[1]}{prefix}-{m[2]}", text)


def _caption(template, metadata):
    return render(template, {"": metadata})[0] if template else ""


def figure_html(item, reportlet, root, prefix):
    """One figure: subtitle, the inline SVG, its caption and a link to the file."""
    rel = Path(item["path"]).relative_to(root).as_posix()
    subtitle = _caption(reportlet.get("subtitle"), item["metadata"])
    caption = _caption(reportlet.get("caption"), item["metadata"])
    return (
        f"<figure data-file='{html.escape(rel)}'>"
        + (f"<h4>{html.escape(subtitle)}</h4>" if subtitle else "")
        + inline_svg(item["path"], prefix)
        + f"<figcaption>{html.escape(caption)} <a href='{html.escape(rel)}'>"
        f"({html.escape(rel)})</a></figcaption></figure>"
    )


def _cell(value):
    if value in ("", "n/a") or value is None:
        return "n/a"
    if re.fullmatch(r"-?\d*\.\d+(e-?\d+)?", value):
        return number(float(value))
    return value


def tsv_html(item, reportlet):
    """A TSV derivative as a table; its n/a cells stay n/a and numbers are rounded."""
    frame = pd.read_csv(item["path"], sep="\t", dtype=str, keep_default_na=False)
    rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    subtitle = reportlet.get("subtitle")
    return (f"<h4>{html.escape(subtitle)}</h4>" if subtitle else "") + table_html(
        rows, list(frame.columns)
    )


# --------------------------------------------------------------------------- assembly


def reportlet_html(reportlet, files, blocks, root, counter):
    """HTML of one reportlet of the spec (empty when it has nothing to show)."""
    if "custom" in reportlet:
        return blocks.get(reportlet["custom"], "")
    if "sidecar" in reportlet:
        rows = parameter_rows(sidecars_by_subject(files, reportlet["sidecar"]), reportlet["rows"])
        return table_html(rows) if rows else ""
    parts = []
    for item in sorted(files, key=lambda f: str(f["path"])):
        if not matches(item["entities"], reportlet["bids"]):
            continue
        if str(item["path"]).endswith(".svg"):
            counter.append(item)
            parts.append(figure_html(item, reportlet, root, f"f{len(counter)}"))
        elif str(item["path"]).endswith(".tsv"):
            parts.append(tsv_html(item, reportlet))
    return "".join(parts)


def build_report(level, files, blocks, analyses, root, context):
    """The report page of ``level`` as HTML.

    Parameters
    ----------
    level : {"participant", "group"}
        Which report of the spec.
    files : list of dict
        Derivatives to choose from: ``path``, ``entities``, ``metadata`` (sidecar).
    blocks : dict
        HTML of the spec's ``custom`` reportlets (summary, methods, warnings, errors).
    analyses : list of str
        Analyses asked for (sections of other analyses are left out).
    root : path
        Output folder (figure links are relative to it).
    context : dict
        Values for the title (``subject``).
    """
    spec = load_spec(level)
    sections, counter = [], []
    for section in spec["sections"]:
        if section.get("analysis") and section["analysis"] not in analyses:
            continue
        body = "".join(
            reportlet_html(r, files, blocks, root, counter) for r in section["reportlets"]
        )
        if not body and section.get("optional"):
            continue
        if not body:
            body = note(section.get("missing", "Nothing to show."))
        anchor = re.sub(r"[^a-z0-9]+", "-", section["name"].lower()).strip("-")
        sections.append((anchor, section["name"], body))
    return page(spec["title"].format(**context), sections, context.get("version", ""))


def page(title, sections, version):
    """The whole HTML page: title, navigation and sections."""
    nav = " ".join(f'<a href="#{a}">{html.escape(n)}</a>' for a, n, _ in sections)
    body = "".join(f'<h2 id="{a}">{html.escape(n)}</h2>{b}' for a, n, b in sections)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}"
        f"<p class='note'>Generated by mvpa_flows {html.escape(version)}.</p></body></html>\n"
    )

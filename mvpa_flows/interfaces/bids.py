"""BIDS input collection (pybids, declarative queries) and the derivatives sink.

Every file name, input or output, is read with pybids and one configuration: pybids'
``bids`` and ``derivatives`` entities plus the project's (``bids_specs/mvpa_flows.json``:
``cohort``, ``template``, ``contrast``, ``stat``). Outputs are named from the path
patterns of the same file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from bids.layout import BIDSLayout, Query, parse_file_entities
from bids.layout.writing import build_path
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mvpa_flows import bids_specs
from mvpa_flows.__about__ import __url__, __version__
from mvpa_flows.core.errors import InputValidationError, NoInputFilesError
from mvpa_flows.core.io import atomic_copy, atomic_path, atomic_write_text

BIDS_VERSION = "1.10.0"
#: Entities of an input that still describe an output made from it (``session`` only
#: when the output comes from one session).
OUTPUT_ENTITIES = ("subject", "session", "task", "space", "cohort", "res", "den")
#: Spaces that belong to one subject: a voxel there is not the same place in another
#: subject's brain (``None`` is the native BOLD space, without a ``space-`` entity).
SUBJECT_SPACES = frozenset(
    (None, "T1w", "T2w", "anat", "fsnative", "boldref", "orig", "run", "session", "func",
     "sbref", "scanner", "individual", "native")
)  # fmt:skip
#: TemplateFlow's archive: the SpatialReference of outputs in a template space.
_TEMPLATEFLOW = "https://templateflow.s3.amazonaws.com"


def _io_spec():
    return bids_specs.load("io_spec.json")


def pybids_config():
    """pybids configurations naming every input and output: bids, derivatives, mvpa_flows."""
    spec = bids_specs.load("mvpa_flows.json")
    project = {
        "name": spec["name"],
        "entities": spec["entities"],
        "default_path_patterns": spec["default_path_patterns"],
    }
    return ["bids", "derivatives", project]


def parse_entities(path) -> dict:
    """Entities of a BIDS file name (inputs and mvpa_flows outputs alike).

    >>> parse_entities("sub-01_ses-1_task-a_space-MNI152NLin2009cAsym_res-2_boldref.nii.gz")
    ... # doctest: +SKIP
    {'subject': '01', 'session': '1', 'task': 'a', 'space': 'MNI152NLin2009cAsym',
     'res': '2', 'suffix': 'boldref', 'extension': '.nii.gz'}
    """
    entities = parse_file_entities(str(path), config=pybids_config())
    return {k: (int(v) if k == "run" else str(v)) for k, v in entities.items()}


def _ignore_patterns():
    return [re.compile(p) for p in _io_spec()["ignore"]]


def _layout(root, what, validate=False, index_metadata=True, **kwargs):
    """A BIDSLayout whose pybids errors become messages naming the folder and the fix."""
    from bids.exceptions import BIDSConflictingValuesError, BIDSValidationError
    from bids.layout import BIDSLayoutIndexer

    indexer = BIDSLayoutIndexer(
        validate=validate, ignore=_ignore_patterns(), index_metadata=index_metadata
    )
    try:
        return BIDSLayout(str(root), validate=validate, indexer=indexer, **kwargs)
    except BIDSConflictingValuesError as err:
        raise InputValidationError(
            f"pybids cannot index {what} {root}: {err} Rename the file or fix the sidecar "
            "key (a JSON key named like an entity must agree with the file name)."
        ) from None
    except BIDSValidationError as err:
        raise InputValidationError(
            f"{what} {root} is not a BIDS dataset: {err} Add its dataset_description.json, "
            "or point to the right folder."
        ) from None


def load_layouts(bids_dir, fmriprep_dir, database_dir=None, validate=True, reset_database=True):
    """Open the raw dataset and the fMRIPrep folder as two separate layouts.

    Surfaces, CIFTI files, transforms, figures and reports are not indexed (the
    patterns are in ``bids_specs/io_spec.json``). The pybids database lives in
    ``database_dir`` (normally inside the work directory, rebuilt on every run unless
    ``reset_database=False``), never inside the input datasets.
    """
    db = {}
    if database_dir is not None:
        Path(database_dir).mkdir(parents=True, exist_ok=True)
        db = {"reset_database": reset_database}
    raw = _layout(
        bids_dir,
        "BIDS_DIR",
        validate=validate,
        derivatives=False,
        database_path=str(Path(database_dir) / "raw") if database_dir else None,
        **db,
    )
    fmriprep = _layout(
        fmriprep_dir,
        "the fMRIPrep derivatives",
        validate=False,
        config=pybids_config(),
        database_path=str(Path(database_dir) / "fmriprep") if database_dir else None,
        **db,
    )
    return raw, fmriprep


def known_entities(layout) -> set:
    """Names of every entity ``layout`` can filter on."""
    return set().union(*(set(config.entities) for config in layout.config.values()))


def check_filters(filters, raw_layout, fmriprep_layout):
    """Refuse ``--bids-filter-file`` keys that are not queries and unknown entities.

    Raises
    ------
    NoInputFilesError
        Naming the key or entity, what is accepted and the fix (exit code 18).
    """
    queries = _io_spec()["queries"]
    if not isinstance(filters, dict):
        raise NoInputFilesError(
            f"The BIDS filters must be a JSON object keyed by query ({sorted(queries)}); got "
            f"{type(filters).__name__}."
        )
    unknown = sorted(set(filters) - set(queries))
    if unknown:
        raise NoInputFilesError(
            f"Unknown query key(s) {unknown} in the BIDS filters; the keys are the queries of "
            f'bids_specs/io_spec.json: {sorted(queries)} (e.g. {{"bold": {{"session": '
            '"1"}}). Fix the filter file.'
        )
    for name, query in filters.items():
        if not isinstance(query, dict):
            raise NoInputFilesError(
                f"BIDS filter {name!r} must map entities to values; got {query!r}."
            )
        layout = raw_layout if queries[name]["dataset"] == "raw" else fmriprep_layout
        entities = known_entities(layout)
        bad = sorted(set(query) - entities)
        if bad:
            raise NoInputFilesError(
                f"BIDS filter {name!r} uses unknown entit{'ies' if len(bad) > 1 else 'y'} "
                f"{bad}; entities of {layout.root}: {sorted(entities)}. Fix the filter file "
                "(entity names are pybids' long names, e.g. 'session', 'acquisition', 'desc')."
            )


def _pybids_value(value):
    if value is None:
        return Query.NONE
    if isinstance(value, list):
        return [Query.NONE if v is None else v for v in value]
    return value


def _query(spec_name, filters, subject, extra=None):
    spec = _io_spec()["queries"][spec_name]
    query = dict(spec["filters"])
    query.update((filters or {}).get(spec_name, {}))
    query["subject"] = subject
    query.update(extra or {})
    return spec, {k: _pybids_value(v) for k, v in query.items()}


# ----------------------------------------------------------------------------- spaces


def parse_space(text):
    """Parse fMRIPrep's space spelling ``NAME[:res-N][:cohort-N][:den-N]`` into entities.

    Returns
    -------
    dict
        ``space``, ``res``, ``cohort``, ``den`` (``None`` when not given).

    Raises
    ------
    ValueError
        When the text does not follow the spelling.
    """
    result = dict.fromkeys(("space", "cohort", "res", "den"))
    if text is None:
        return result
    if isinstance(text, dict):
        return {**result, **{k: v for k, v in text.items() if k in result}}
    name, *modifiers = str(text).split(":")
    if not re.fullmatch(r"[a-zA-Z0-9]+", name):
        raise ValueError(
            f"space {text!r}: the space name must be letters and digits (a TemplateFlow "
            "identifier such as MNI152NLin2009cAsym, or T1w)."
        )
    result["space"] = name
    for modifier in modifiers:
        match = re.fullmatch(r"(res|cohort|den)-([a-zA-Z0-9]+)", modifier)
        if not match:
            raise ValueError(
                f"space {text!r}: modifier {modifier!r} is not res-<label>, cohort-<label> or "
                "den-<label> (fMRIPrep's spelling, e.g. MNI152NLin2009cAsym:res-2)."
            )
        result[match.group(1)] = match.group(2)
    return result


def space_label(entities):
    """fMRIPrep's spelling of a space: ``MNI152NLin2009cAsym:res-2`` (``native``)."""
    if not entities or entities.get("space") is None:
        return "native (no space- entity)"
    mods = [f"{k}-{entities[k]}" for k in ("cohort", "res", "den") if entities.get(k)]
    return ":".join([entities["space"], *mods])


def available_spaces(fmriprep_layout, subjects, task=None, filters=None, sessions=None):
    """Spaces of the preprocessed BOLD series, as entity dicts (space, cohort, res, den)."""
    found = {}
    for subject in subjects:
        extra = {"task": task} if task else {}
        if sessions:
            extra["session"] = list(sessions)
        _, query = _query("bold", filters, subject, extra)
        for bold in fmriprep_layout.get(**query):
            ents = {k: _str(bold.entities.get(k)) for k in _io_spec()["spaced_entities"]}
            found[tuple(ents.items())] = ents
    return list(found.values())


def _str(value):
    return None if value is None else str(value)


def resolve_space(fmriprep_layout, subjects, task=None, space=None, filters=None, sessions=None):
    """Pick the analysis space: the requested one, the only one present, or native.

    Parameters
    ----------
    space : str, dict or None
        fMRIPrep's spelling (``MNI152NLin2009cAsym:res-2``) or the parsed entities.

    Returns
    -------
    dict
        ``space``, ``cohort``, ``res``, ``den`` of the chosen series (``None`` entries are
        absent entities; ``space=None`` is the native space).
    """
    present = available_spaces(fmriprep_layout, subjects, task, filters, sessions)
    if not present:
        raise NoInputFilesError(
            f"No desc-preproc_bold series found in {fmriprep_layout.root} for subject(s) "
            f"{list(subjects)}" + (f" and task {task!r}" if task else "") + "; check "
            "-d fmriprep=PATH, --participant-label, --task, --session-label and "
            "--bids-filter-file."
        )
    names = sorted(space_label(p) for p in present)
    if space is not None:
        wanted = parse_space(space)
        matching = [
            p
            for p in present
            if p["space"] == wanted["space"]
            and all(wanted[k] is None or p[k] == wanted[k] for k in ("cohort", "res", "den"))
        ]
        if not matching:
            raise NoInputFilesError(
                f"--space {space_label(wanted)} matches no preprocessed BOLD series; spaces "
                f"present: {names}."
            )
        if len(matching) > 1:
            options = sorted(space_label(p) for p in matching)
            differ = [k for k in ("res", "cohort", "den") if len({p[k] for p in matching}) > 1]
            raise InputValidationError(
                f"--space {space_label(wanted)} is present at several "
                f"{' and '.join('resolutions' if k == 'res' else k + 's' for k in differ)}: "
                f"{options}; choose one, e.g. --space {options[0]}."
            )
        return matching[0]
    if len(present) == 1:
        return present[0]
    native = [p for p in present if p["space"] is None]
    if len(native) == 1:
        return native[0]
    raise InputValidationError(
        f"Several output spaces are present ({names}); choose one with --space (fMRIPrep's "
        f"spelling, e.g. --space {names[0].split(' ')[0]})."
    )


def spatial_reference(space_entities, anat_file=None, bold_file=None, dataset_links=None):
    """``SpatialReference`` of outputs in ``space_entities``.

    The native BOLD space is referenced by the BOLD series whose grid the outputs share,
    a subject space (``T1w``) by fMRIPrep's preprocessed T1w (else the BOLD series), both
    as BIDS URIs; a template by its TemplateFlow image.
    """
    space = (space_entities or {}).get("space")
    if space is None:
        return bids_uri(bold_file, dataset_links) if bold_file else None
    if space in SUBJECT_SPACES:
        reference = anat_file or bold_file
        return bids_uri(reference, dataset_links) if reference else None
    parts = [f"tpl-{space}"]
    if space_entities.get("cohort"):
        parts.append(f"cohort-{space_entities['cohort']}")
    res = space_entities.get("res")
    if res is None or not str(res).isdigit():
        return f"{_TEMPLATEFLOW}/tpl-{space}/"
    parts += [f"res-{int(res):02d}", "T1w.nii.gz"]
    return f"{_TEMPLATEFLOW}/tpl-{space}/{'_'.join(parts)}"


def space_metadata(space_entities, voxel_size=None, anat_file=None, bold_file=None,
                   dataset_links=None):  # fmt:skip
    """Sidecar fields an output in ``space_entities`` needs: SpatialReference, Resolution."""
    meta = {}
    reference = spatial_reference(space_entities, anat_file, bold_file, dataset_links)
    if reference:
        meta["SpatialReference"] = reference
    res = (space_entities or {}).get("res")
    if res is not None:
        size = f" ({' x '.join(f'{v:g}' for v in voxel_size)} mm voxels)" if voxel_size else ""
        meta["Resolution"] = {
            str(res): f"Resolution {res} of {space_entities.get('space')} as resampled by "
            f"fMRIPrep{size}."
        }
    den = (space_entities or {}).get("den")
    if den is not None:
        meta["Density"] = {str(den): f"Density {den} of {space_entities.get('space')}."}
    return meta


# ------------------------------------------------------------------------------ inputs


def collect_inputs(
    layout: BIDSLayout,
    fmriprep_layout: BIDSLayout,
    subject: str,
    task: str | None = None,
    space: str | dict | None = None,
    filters: dict | None = None,
    sessions: list | None = None,
) -> dict:
    """Find one subject's runs: preprocessed BOLD, mask, confounds and raw events.

    Parameters
    ----------
    layout : raw dataset layout (events live there)
    fmriprep_layout : fMRIPrep derivatives layout
    subject : label without ``sub-``
    task : task entity
    space : fMRIPrep's spelling or entities (see :func:`resolve_space`); ``None``
        selects series without a space entity
    filters : per-query pybids filters (``--bids-filter-file``), keyed like io_spec
    sessions : session labels to keep (``None``: every session)

    Returns
    -------
    dict
        ``runs`` (run labels), ``sessions`` (session label or None per run), ``bold``,
        ``mask``, ``confounds`` (path or None per run), ``events``, ``bold_metadata``
        (sidecar dicts), ``task``, ``space`` (entities), ``anat`` (the preprocessed T1w or
        None); lists are sorted by session and run and aligned.
    """
    spec = _io_spec()
    space_ents = parse_space(space)
    spaced = {k: _pybids_value(space_ents.get(k)) for k in spec["spaced_entities"]}
    extra = dict(spaced)
    if task:
        extra["task"] = task
    if sessions:
        extra["session"] = list(sessions)
    _, bold_query = _query("bold", filters, subject, extra)
    bolds = fmriprep_layout.get(**bold_query)
    if not bolds:
        raise NoInputFilesError(
            f"No desc-preproc_bold series for sub-{subject}"
            + (f", task {task}" if task else "")
            + f", space {space_label(space_ents)}"
            + (f", session(s) {list(sessions)}" if sessions else "")
            + f" in {fmriprep_layout.root}. Subjects there: "
            f"{fmriprep_layout.get_subjects()}; tasks: {fmriprep_layout.get_tasks()}; "
            f"sessions: {fmriprep_layout.get_sessions() or 'none'}."
        )
    tasks = sorted({b.entities.get("task") for b in bolds})
    if len(tasks) > 1:
        raise InputValidationError(
            f"sub-{subject} has BOLD series of several tasks {tasks}; choose one with --task."
        )
    keys = ("runs", "sessions", "bold", "mask", "confounds", "events", "bold_metadata")
    result = {key: [] for key in keys}
    result.update(task=tasks[0], space=space_ents)
    counters = {}
    for bold in sorted(
        bolds,
        key=lambda b: (str(b.entities.get("session") or ""), int(b.entities.get("run") or 0),
                       b.path),
    ):  # fmt:skip
        run_entities = spec["run_entities"]
        match = {k: bold.entities[k] for k in run_entities if k in bold.entities}
        unmatched = {k: Query.NONE for k in run_entities if k not in bold.entities}
        run_name = Path(bold.path).name
        found = {}
        for name in ("mask", "confounds", "events"):
            query_spec, query = _query(name, filters, subject, {**match, **unmatched})
            if query_spec["spaced"]:
                query.update(spaced)
            source = layout if query_spec["dataset"] == "raw" else fmriprep_layout
            files = source.get(**query)
            if not files and name == "events":
                files = _inherited_events(source, filters, subject, match)
            if len(files) > 1:
                raise InputValidationError(
                    f"Several {name} files match {run_name}: {[f.path for f in files]}; "
                    "narrow them with --bids-filter-file."
                )
            if not files and name == "events":
                raise NoInputFilesError(
                    f"No _events.tsv in {layout.root} for {run_name}; events belong to the "
                    "raw dataset (BIDS_DIR), e.g. sub-<label>/[ses-<label>/]func/sub-<label>"
                    "[_ses-<label>]_task-<task>_run-<index>_events.tsv."
                )
            if not files and name == "mask":
                raise NoInputFilesError(
                    f"No desc-brain_mask found in {fmriprep_layout.root} for {run_name} (the "
                    "mask of the same space and resolution)."
                )
            found[name] = files[0].path if files else None
        metadata = fmriprep_layout.get_metadata(bold.path)
        if "RepetitionTime" not in metadata:
            img_zooms = _zooms(bold.path)
            if len(img_zooms) < 4 or not img_zooms[3]:
                raise InputValidationError(
                    f"No RepetitionTime for {run_name}: add it to the BOLD JSON sidecar."
                )
            metadata["RepetitionTime"] = float(img_zooms[3])
            metadata["RepetitionTimeSource"] = "NIfTI header (pixdim[4])"
        session = _str(bold.entities.get("session"))
        counters[session] = counters.get(session, 0) + 1
        run = bold.entities.get("run")
        result["runs"].append(int(run) if run is not None else counters[session])
        result["sessions"].append(session)
        result["bold"].append(bold.path)
        result["mask"].append(found["mask"])
        result["confounds"].append(found["confounds"])
        result["events"].append(found["events"])
        result["bold_metadata"].append(metadata)
    result["anat"] = _anat_reference(fmriprep_layout, subject, filters, result["sessions"])
    return result


#: Entities an events file may leave out and still apply to a BOLD series (BIDS
#: inheritance: one events file for every echo, acquisition, reconstruction, ...).
_EVENTS_OPTIONAL = ("acquisition", "ceagent", "reconstruction", "direction", "echo", "part")


def _inherited_events(layout, filters, subject, match):
    """Events files that apply to a series by inheritance: equal on every entity they have."""
    required = {k: match.get(k, Query.NONE) for k in ("session", "task", "run")}
    _, query = _query("events", filters, subject, required)
    return [
        f
        for f in layout.get(**query)
        if all(
            f.entities.get(k) is None or str(f.entities.get(k)) == str(match.get(k))
            for k in _EVENTS_OPTIONAL
        )
    ]


def _anat_reference(fmriprep_layout, subject, filters, sessions):
    """fMRIPrep's preprocessed T1w of ``subject`` (the session's own when there is one)."""
    _, query = _query("anat", filters, subject)
    files = sorted(fmriprep_layout.get(**query), key=lambda f: f.path)
    wanted = {str(s) for s in sessions if s is not None}
    if len(wanted) == 1:
        own = [f for f in files if str(f.entities.get("session")) in wanted]
        if own:
            return own[0].path
    unsessioned = [f for f in files if f.entities.get("session") is None]
    candidates = unsessioned or files
    return candidates[0].path if candidates else None


def _zooms(path):
    import nibabel as nb

    return nb.load(path).header.get_zooms()


# --------------------------------------------------------------------------- outputs


def bids_uri(path, dataset_links):
    """Return ``bids:<name>:<relative path>`` for ``path`` inside a linked dataset.

    The most specific (deepest) dataset root wins, so a file inside
    ``raw/derivatives/fmriprep`` is cited from ``fmriprep``.
    """
    path = Path(path).absolute()
    best = None
    for name, root in (dataset_links or {}).items():
        root = Path(root).absolute()
        if path == root or root in path.parents:
            if best is None or len(root.parts) > len(best[1].parts):
                best = (name, root)
    if best is None:
        return str(path)
    return f"bids:{best[0]}:{path.relative_to(best[1]).as_posix()}"


def output_path(entities: dict) -> str:
    """Relative output path of a derivative from its entities (patterns in bids_specs)."""
    spec = bids_specs.load("mvpa_flows.json")
    entities = {k: v for k, v in entities.items() if v is not None}
    path = build_path(entities, spec["default_path_patterns"], strict=True)
    if path is None:
        raise ValueError(
            f"No mvpa_flows path pattern accepts the entities {entities}; add one to "
            "bids_specs/mvpa_flows.json."
        )
    return path


def output_layout(output_dir):
    """The mvpa_flows derivatives in ``output_dir`` as a pybids layout (in memory)."""
    if not (Path(output_dir) / "dataset_description.json").is_file():
        raise NoInputFilesError(
            f"{output_dir} holds no dataset_description.json: it is not an mvpa_flows "
            "output folder; run the participant level into it first."
        )
    return _layout(
        output_dir, "OUTPUT_DIR", validate=False, config=pybids_config(),
        index_metadata=False,
    )  # fmt:skip


def write_json(data, dst):
    """Write JSON deterministically (sorted keys, 2-space indent) and atomically."""
    return atomic_write_text(
        json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n", dst
    )


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Cannot write {type(value).__name__} to JSON")


_README = """# {name}

Derivatives written by [mvpa_flows]({url}) {version}: multivariate pattern analysis
(searchlight decoding, F-tests, hyperalignment) of fMRIPrep outputs.

- Inputs: the datasets in `DatasetLinks` of `dataset_description.json` (`raw`: events;
  `fmriprep`: preprocessed BOLD series, brain masks, confounds). Sidecars cite them as
  `bids:<dataset>:<path>` URIs in `Sources`.
- `sub-<label>/[ses-<label>/]func/`: per-subject maps (`*_statmap.nii.gz`, with
  `contrast-` and `stat-` entities), the analysis mask (`desc-analysis_mask`), the
  reference image (`*_boldref.nii.gz`, mean of the first run), the sample table
  (`*_samples.tsv`) and hyperalignment transforms (`*_xfm.h5`).
- Files at the top level: group maps and tables; `tpl-<model>/`: the hyperalignment
  common model and its ROI.
- `sub-<label>.html` and `figures/`: reports; `logs/CITATION.md`: the methods text.

Every file has a JSON sidecar holding its description, its sources and every parameter
that produced it. `.bidsignore` lists the suffixes the BIDS specification does not
have yet (statistical maps, transforms, tables).
"""


def write_dataset_description(output_dir, dataset_links, source_urls=None, authors=None):
    """Write ``dataset_description.json``, ``README.md`` and ``.bidsignore``.

    Everything is deterministic (no timestamps), so per-subject jobs merge cleanly.
    ``GeneratedBy[0].Container`` is filled from ``MVPA_FLOWS_CONTAINER`` (set by the
    project's Docker image); ``authors`` (e.g. the raw dataset's) become ``Authors``.
    """
    generated = {"Name": "mvpa_flows", "Version": __version__, "CodeURL": __url__}
    container = os.environ.get("MVPA_FLOWS_CONTAINER")
    if container:
        generated["Container"] = {"Type": "docker", "Tag": container}
    description = {
        "Name": "mvpa_flows derivatives",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [
            {"URL": url} for url in (source_urls or [f"bids:{n}:" for n in dataset_links])
        ],
        "DatasetLinks": {
            name: Path(root).absolute().as_uri() for name, root in dataset_links.items()
        },
    }
    if authors:
        description["Authors"] = list(authors)
    out = Path(output_dir)
    write_json(description, out / "dataset_description.json")
    atomic_write_text(
        _README.format(name=description["Name"], url=__url__, version=__version__),
        out / "README.md",
    )
    ignore = bids_specs.load("mvpa_flows.json")["bidsignore"]
    atomic_write_text("\n".join(ignore) + "\n", out / ".bidsignore")
    return description


def shared_entities(files, keep=OUTPUT_ENTITIES) -> dict:
    """Entities (among ``keep``) that every BOLD series in ``files`` shares.

    Files that are not BOLD series (events, masks, confounds) are skipped when any BOLD
    series is present, so an output pooled over sessions carries no ``session``.
    """
    parsed = [parse_entities(f) for f in files if f]
    bolds = [e for e in parsed if e.get("suffix") == "bold"] or parsed[:1]
    shared = {}
    for key in keep:
        values = {e.get(key) for e in bolds}
        if len(values) == 1 and None not in values:
            shared[key] = str(values.pop())
    return shared


def _copy_nifti_with_units(src, dst):
    """Copy a NIfTI image, setting spatial (mm) and temporal (s) units when unset."""
    import nibabel as nb

    img = nb.load(src)
    header = img.header
    space_unit, time_unit = header.get_xyzt_units()
    four_d = len(img.shape) > 3
    if space_unit != "unknown" and (time_unit != "unknown" or not four_d):
        return atomic_copy(src, dst)
    img = nb.Nifti1Image(img.dataobj, img.affine, header.copy())
    img.header.set_xyzt_units(
        space_unit if space_unit != "unknown" else "mm",
        (time_unit if time_unit != "unknown" else "sec") if four_d else None,
    )
    with atomic_path(dst) as tmp:
        img.to_filename(tmp)
    return str(dst)


class _DerivativesDataSinkInputSpec(BaseInterfaceInputSpec):
    base_directory = traits.Directory(mandatory=True, desc="derivatives root (OUTPUT_DIR)")
    in_file = File(exists=True, mandatory=True, desc="file to store")
    source_files = traits.List(
        traits.Str, mandatory=True, desc="input files it was made from (cited as BIDS URIs)"
    )
    dataset_links = traits.Dict(
        traits.Str, traits.Str, desc="dataset name -> root, for BIDS URIs (raw, fmriprep)"
    )
    base_entities = traits.Dict(
        desc="entities of the output shared with its inputs (subject, session, task, space, "
        "cohort, res, den); default: those every BOLD source shares"
    )
    entities = traits.Dict(mandatory=True, desc="output entities (desc, stat, suffix, ...)")
    contrast = traits.Str(desc="value of the contrast- entity, known only at run time")
    metadata = traits.Dict(desc="sidecar content: Description and every parameter")
    extra_metadata = traits.List(
        traits.Dict, desc="more sidecar content computed upstream (merged in order, last wins)"
    )


class _DerivativesDataSinkOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="stored derivative")
    out_meta = File(exists=True, desc="its JSON sidecar")


class DerivativesDataSink(SimpleInterface):
    """Store a file under its BIDS-Derivatives name with a JSON sidecar, atomically.

    The path comes from ``bids_specs/mvpa_flows.json``; the sidecar carries
    ``Sources`` as BIDS URIs plus the metadata given. NIfTI outputs get their spatial
    and temporal units set when the producer left them unset.
    """

    input_spec = _DerivativesDataSinkInputSpec
    output_spec = _DerivativesDataSinkOutputSpec
    # A sink writes outside the work directory: its cached result cannot tell whether the
    # output still exists, so it runs on every execution (a rerun restores deleted outputs).
    _always_run = True

    def _run_interface(self, runtime):
        if self.inputs.base_entities:
            entities = dict(self.inputs.base_entities)
        else:
            entities = shared_entities(self.inputs.source_files)
        entities.update(self.inputs.entities)
        if self.inputs.contrast:
            entities["contrast"] = self.inputs.contrast
        entities = {k: v for k, v in entities.items() if v is not None}
        name = Path(self.inputs.in_file).name
        if "extension" not in entities:
            entities["extension"] = (
                "".join(Path(name).suffixes[-2:])
                if name.endswith(".nii.gz")
                else Path(name).suffix
            )
        rel = output_path(entities)
        out_file = Path(self.inputs.base_directory) / rel
        sidecar = dict(self.inputs.metadata or {})
        for extra in self.inputs.extra_metadata or []:
            sidecar.update(extra)
        sidecar["Sources"] = [
            bids_uri(src, self.inputs.dataset_links) for src in self.inputs.source_files
        ]
        sidecar.setdefault("GeneratedBy", {"Name": "mvpa_flows", "Version": __version__})
        meta_file = output_path({**entities, "extension": ".json"})
        if name.endswith((".nii", ".nii.gz")):
            self._results["out_file"] = _copy_nifti_with_units(self.inputs.in_file, out_file)
        else:
            self._results["out_file"] = atomic_copy(self.inputs.in_file, out_file)
        self._results["out_meta"] = write_json(
            sidecar, Path(self.inputs.base_directory) / meta_file
        )
        return runtime


def source_entities(path, keep=OUTPUT_ENTITIES):
    """Entities of ``path`` worth carrying to an output name."""
    ents = parse_entities(path)
    return {k: str(ents[k]) for k in keep if ents.get(k) is not None}

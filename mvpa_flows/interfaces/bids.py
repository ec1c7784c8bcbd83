"""BIDS input collection (pybids, declarative queries) and the derivatives sink."""

from __future__ import annotations

import json
import os
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
from mvpa_flows.core.io import atomic_copy, atomic_write_text

#: Entities that pair an fMRIPrep BOLD series with its events, confounds and mask.
RUN_ENTITIES = ("session", "task", "acquisition", "ceagent", "direction", "run", "echo")
BIDS_VERSION = "1.10.0"


def load_layouts(bids_dir, fmriprep_dir, database_dir=None, validate=True):
    """Open the raw dataset and the fMRIPrep folder as two separate layouts.

    The pybids database lives in ``database_dir`` (normally inside the work
    directory), never inside the input datasets.
    """
    kwargs = {}
    if database_dir is not None:
        Path(database_dir).mkdir(parents=True, exist_ok=True)
    raw = BIDSLayout(
        str(bids_dir),
        validate=validate,
        derivatives=False,
        database_path=str(Path(database_dir) / "raw") if database_dir else None,
        **kwargs,
    )
    fmriprep = BIDSLayout(
        str(fmriprep_dir),
        validate=False,
        config=["bids", "derivatives"],
        database_path=str(Path(database_dir) / "fmriprep") if database_dir else None,
    )
    return raw, fmriprep


def _query(spec_name, filters, subject, extra=None):
    spec = bids_specs.load("io_spec.json")["queries"][spec_name]
    query = dict(spec["filters"])
    query.update((filters or {}).get(spec_name, {}))
    query["subject"] = subject
    query.update(extra or {})
    return spec, query


def available_spaces(fmriprep_layout, subjects, task=None, filters=None):
    """Spaces of the preprocessed BOLD series (``None`` stands for native space)."""
    spaces = set()
    for subject in subjects:
        _, query = _query("bold", filters, subject, {"task": task} if task else None)
        for bold in fmriprep_layout.get(**query):
            spaces.add(bold.entities.get("space"))
    return spaces


def resolve_space(fmriprep_layout, subjects, task=None, space=None, filters=None):
    """Pick the analysis space: the requested one, the only one present, or native."""
    spaces = available_spaces(fmriprep_layout, subjects, task, filters)
    if not spaces:
        raise NoInputFilesError(
            f"No desc-preproc_bold series found in {fmriprep_layout.root} for subject(s) "
            f"{list(subjects)}" + (f" and task {task!r}" if task else "") + "; check "
            "-d fmriprep=PATH, --participant-label, --task and --bids-filter-file."
        )
    names = sorted("native (no space- entity)" if s is None else s for s in spaces)
    if space is not None:
        if space not in spaces:
            raise NoInputFilesError(
                f"--space {space} matches no preprocessed BOLD series; spaces present: {names}."
            )
        return space
    if len(spaces) == 1:
        return next(iter(spaces))
    if None in spaces:
        return None
    raise InputValidationError(
        f"Several output spaces are present ({names}); choose one with --space."
    )


def collect_inputs(
    layout: BIDSLayout,
    fmriprep_layout: BIDSLayout,
    subject: str,
    task: str | None = None,
    space: str | None = None,
    filters: dict | None = None,
) -> dict:
    """Find one subject's runs: preprocessed BOLD, mask, confounds and raw events.

    Parameters
    ----------
    layout : raw dataset layout (events live there)
    fmriprep_layout : fMRIPrep derivatives layout
    subject : label without ``sub-``
    task, space : entity values (``space=None`` selects series without a space entity)
    filters : per-query pybids filters (``--bids-filter-file``), keyed like io_spec

    Returns
    -------
    dict
        ``runs``, ``bold``, ``mask``, ``confounds`` (path or None per run),
        ``events``, ``bold_metadata`` (sidecar dicts), ``task``, ``space``; lists are
        sorted by run and aligned.
    """
    space_query = {"space": space if space is not None else Query.NONE}
    if task:
        space_query["task"] = task
    _, bold_query = _query("bold", filters, subject, space_query)
    bolds = fmriprep_layout.get(**bold_query)
    if not bolds:
        raise NoInputFilesError(
            f"No desc-preproc_bold series for sub-{subject}"
            + (f", task {task}" if task else "")
            + (f", space {space}" if space else ", native space")
            + f" in {fmriprep_layout.root}. Subjects there: "
            f"{fmriprep_layout.get_subjects()}; tasks: {fmriprep_layout.get_tasks()}."
        )
    tasks = sorted({b.entities.get("task") for b in bolds})
    if len(tasks) > 1:
        raise InputValidationError(
            f"sub-{subject} has BOLD series of several tasks {tasks}; choose one with --task."
        )
    result = {key: [] for key in ("runs", "bold", "mask", "confounds", "events", "bold_metadata")}
    result.update(task=tasks[0], space=space)
    for bold in sorted(
        bolds, key=lambda b: (str(b.entities.get("session")), b.entities.get("run") or 0)
    ):
        match = {k: bold.entities[k] for k in RUN_ENTITIES if k in bold.entities}
        unmatched = {k: Query.NONE for k in RUN_ENTITIES if k not in bold.entities}
        run_name = Path(bold.path).name
        found = {}
        for name in ("mask", "confounds", "events"):
            spec, query = _query(name, filters, subject, {**match, **unmatched})
            if spec["spaced"]:
                query.update(space_query)
            source = layout if spec["dataset"] == "raw" else fmriprep_layout
            files = source.get(**query)
            if len(files) > 1:
                raise InputValidationError(
                    f"Several {name} files match {run_name}: {[f.path for f in files]}; "
                    "narrow them with --bids-filter-file."
                )
            if not files and name == "events":
                raise NoInputFilesError(
                    f"No _events.tsv in {layout.root} for {run_name}; events belong to the "
                    "raw dataset (BIDS_DIR), e.g. sub-<label>/func/sub-<label>_task-<task>"
                    "_run-<index>_events.tsv."
                )
            if not files and name == "mask":
                raise NoInputFilesError(
                    f"No desc-brain_mask found in {fmriprep_layout.root} for {run_name}."
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
        result["runs"].append(bold.entities.get("run", len(result["runs"]) + 1))
        result["bold"].append(bold.path)
        result["mask"].append(found["mask"])
        result["confounds"].append(found["confounds"])
        result["events"].append(found["events"])
        result["bold_metadata"].append(metadata)
    return result


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
    path = build_path(entities, spec["default_path_patterns"], strict=True)
    if path is None:
        raise ValueError(
            f"No mvpa_flows path pattern accepts the entities {entities}; add one to "
            "bids_specs/mvpa_flows.json."
        )
    return path


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


def write_dataset_description(output_dir, dataset_links, source_urls=None):
    """Write ``dataset_description.json`` and ``.bidsignore`` (deterministic, no timestamps).

    ``GeneratedBy[0].Container`` is filled from ``MVPA_FLOWS_CONTAINER`` (set by the
    project's Docker image).
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
    out = Path(output_dir)
    write_json(description, out / "dataset_description.json")
    ignore = bids_specs.load("mvpa_flows.json")["bidsignore"]
    atomic_write_text("\n".join(ignore) + "\n", out / ".bidsignore")
    return description


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
        desc="entities shared by the output and its first source (subject, task, space)"
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
    ``Sources`` as BIDS URIs plus the metadata given.
    """

    input_spec = _DerivativesDataSinkInputSpec
    output_spec = _DerivativesDataSinkOutputSpec

    def _run_interface(self, runtime):
        entities = dict(self.inputs.base_entities or source_entities(self.inputs.source_files[0]))
        entities.update(self.inputs.entities)
        if self.inputs.contrast:
            entities["contrast"] = self.inputs.contrast
        entities = {k: v for k, v in entities.items() if v is not None}
        if "extension" not in entities:
            name = Path(self.inputs.in_file).name
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
        self._results["out_file"] = atomic_copy(self.inputs.in_file, out_file)
        self._results["out_meta"] = write_json(
            sidecar, Path(self.inputs.base_directory) / meta_file
        )
        return runtime


def source_entities(path, keep=("subject", "session", "task", "space")):
    """Entities of ``path`` worth carrying to an output name."""
    ents = parse_file_entities(str(path))
    return {k: str(ents[k]) for k in keep if ents.get(k) is not None}

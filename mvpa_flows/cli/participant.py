"""The participant level: collect inputs, validate them, build and run the graph."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import nibabel as nb
import numpy as np

from mvpa_flows.core.data.beta_samples import check_beta_inputs, collinearity_notes
from mvpa_flows.core.data.betas import BETA_METHODS
from mvpa_flows.core.data.cleaning import check_run_data
from mvpa_flows.core.data.dataset import check_inputs
from mvpa_flows.core.data.samples import run_keys
from mvpa_flows.core.errors import InputValidationError, NoInputFilesError
from mvpa_flows.interfaces.bids import (
    check_filters,
    collect_inputs,
    load_layouts,
    resolve_space,
    space_label,
    space_metadata,
    write_dataset_description,
)
from mvpa_flows.interfaces.datalad import dataset_root, fetch, sidecars_of

logger = logging.getLogger("mvpa_flows")

#: ``--samples`` values whose samples are trial-wise betas.
BETA_SAMPLES = BETA_METHODS

#: Lists of :func:`collect_inputs` that hold one entry per run.
RUN_LISTS = ("runs", "sessions", "bold", "mask", "confounds", "events", "bold_metadata")


def select_subjects(fmriprep_layout, raw_layout, requested):
    """Subjects to analyse: the requested ones (all must exist) or every subject."""
    present = sorted(set(fmriprep_layout.get_subjects()))
    if not present:
        raise NoInputFilesError(
            f"No subject folders in the fMRIPrep derivatives {fmriprep_layout.root}."
        )
    if not requested:
        return present
    missing = [s for s in requested if s not in present]
    if missing:
        raise NoInputFilesError(
            f"--participant-label {missing} not found in {fmriprep_layout.root}; subjects "
            f"there: {present}."
        )
    return list(dict.fromkeys(requested))


def select_sessions(fmriprep_layout, subjects, requested):
    """Sessions to analyse: the requested ones (each must exist) or None (all)."""
    if not requested:
        return None
    present = sorted(set(fmriprep_layout.get_sessions(subject=subjects, suffix="bold")))
    missing = [s for s in requested if s not in present]
    if missing:
        raise NoInputFilesError(
            f"--session-label {missing} not found for subject(s) {subjects} in "
            f"{fmriprep_layout.root}; sessions there: {present or 'none (no ses- entity)'}."
        )
    return list(dict.fromkeys(requested))


def select_task(fmriprep_layout, subjects, task):
    """The task: the requested one (must exist) or the only one present."""
    tasks = sorted(set(fmriprep_layout.get_tasks(subject=subjects, suffix="bold")))
    if task is not None:
        if task not in tasks:
            raise NoInputFilesError(
                f"--task {task} has no preprocessed BOLD for subject(s) {subjects}; tasks "
                f"there: {tasks}."
            )
        return task
    if len(tasks) == 1:
        return tasks[0]
    if not tasks:
        raise NoInputFilesError(f"No task BOLD series found for subject(s) {subjects}.")
    raise InputValidationError(f"Several tasks are present ({tasks}); choose one with --task.")


def _requested_subjects(config):
    if config.participant_label:
        return config.participant_label
    return sorted(p.name[4:] for p in config.fmriprep_dir.glob("sub-*") if p.is_dir())


def open_layouts(config):
    """The raw and fMRIPrep layouts of a run, with the BIDS filters checked against them.

    The pybids database is rebuilt in the work directory on every run (so it never
    describes files that changed since), unless ``--bids-database-dir`` names one to
    reuse.
    """
    reuse = config.bids_database_dir is not None
    raw, fmriprep = load_layouts(
        config.bids_dir,
        config.fmriprep_dir,
        database_dir=config.bids_database_dir or config.work_dir / "bids_db",
        validate=not config.skip_bids_validation,
        reset_database=not reuse,
    )
    check_filters(config.bids_filters, raw, fmriprep)
    return raw, fmriprep


def collect_files(config):
    """Find every selected subject's runs; return ``{subject: collect_inputs(...)}``.

    Sets ``config.task``, ``config.space`` (fMRIPrep's spelling) and
    ``config.space_entities``. In DataLad datasets the selected subjects' JSON sidecars
    are fetched before pybids reads metadata, and the BOLD series, masks, confounds and
    events after the queries have picked them; nothing else is fetched.
    """
    datalad_inputs = any(dataset_root(p) for p in (config.bids_dir, config.fmriprep_dir))
    if datalad_inputs:
        fetch(
            sidecars_of(_requested_subjects(config), config.bids_dir, config.fmriprep_dir),
            jobs=config.nprocs,
            enabled=config.datalad_get,
        )
    raw, fmriprep = open_layouts(config)
    subjects = select_subjects(fmriprep, raw, config.participant_label)
    sessions = select_sessions(fmriprep, subjects, config.session_label)
    config.task = select_task(fmriprep, subjects, config.task)
    config.space_entities = resolve_space(
        fmriprep, subjects, config.task, config.space, config.bids_filters, sessions
    )
    config.space = space_label(config.space_entities) if config.space_entities["space"] else None
    found = {}
    for subject in subjects:
        data = collect_inputs(
            raw,
            fmriprep,
            subject,
            task=config.task,
            space=config.space_entities,
            filters=config.bids_filters,
            sessions=sessions,
        )
        if datalad_inputs:
            needed = [f for key in ("bold", "mask", "confounds", "events") for f in data[key]]
            fetch(needed, jobs=config.nprocs, enabled=config.datalad_get)
        found[subject] = data
    return found


def analysis_units(config, subject, data):
    """Split one subject's runs into analysis units: one per session with
    ``--per-session``, else one (sessions pooled).

    Each unit is ``data`` restricted to its runs plus ``label`` (the session or None),
    ``entities`` (of the output names: ``ses-`` only for a unit of one session analysed
    on its own, i.e. with ``--per-session`` or a single ``--session-label``) and
    ``sidecar`` (SpatialReference, Resolution, SkullStripped).
    """
    sessions = data["sessions"]
    labels = list(dict.fromkeys(sessions))
    single = config.per_session or len(config.session_label or []) == 1
    groups = [[s] for s in labels] if config.per_session else [labels]
    units = []
    for group in groups:
        index = [i for i, s in enumerate(sessions) if s in group]
        unit = {key: [data[key][i] for i in index] for key in RUN_LISTS}
        own = group[0] if single and len(group) == 1 and group[0] is not None else None
        unit["label"] = own if config.per_session else None
        unit["entities"] = {
            "subject": subject,
            "session": own,
            "task": config.task,
            **config.space_entities,
        }
        zooms = nb.load(unit["bold"][0]).header.get_zooms()[:3]
        unit["sidecar"] = space_metadata(
            config.space_entities,
            voxel_size=[float(z) for z in zooms],
            anat_file=data.get("anat"),
            bold_file=unit["bold"][0],
            dataset_links=config.dataset_links,
        )
        unit["sidecar"]["SkullStripped"] = bool(
            unit["bold_metadata"][0].get("SkullStripped", False)
        )
        units.append(unit)
    return units


def _describe(subject, unit):
    return f"sub-{subject}" + (f" ses-{unit['label']}" if unit.get("label") else "")


def note_input_warning(text):
    """An input problem that does not stop the run: on the terminal, in the run's log
    (and so in the report's warnings)."""
    print(f"mvpa-flows: warning: {text}", file=sys.stderr)
    logging.getLogger("py.warnings").warning(text)


def design_options(config):
    """The trial-wise GLM options of a run (``--samples lss|lsa``), as core names them."""
    return {
        "method": config.samples,
        "hrf_model": config.hrf_model,
        "drift_model": config.drift_model,
        "high_pass": config.high_pass,
        "drift_order": config.drift_order,
        "slice_time_ref": config.slice_time_ref,
    }


def check_betas(config, unit):
    """The up-front check of one analysis unit for trial-wise beta samples.

    Events (inside the run, durations >= 0), trial counts of the compared conditions,
    confound columns, the TR of every run, the rank of every run's design(s) and LSA's
    trials against volumes are checked without reading the BOLD data; then each series
    is read once inside the mask (truncated files, non-finite voxels). Fast designs
    (neighbouring trials' regressors correlated above 0.7) are warned about.
    """
    checked = check_beta_inputs(
        unit["bold"],
        unit["mask"],
        unit["events"],
        unit["confounds"],
        run_keys(unit["runs"], unit["sessions"]),
        # a GLM's timing rests on the TR: a header's pixdim[4] (often 1 or 0) is not
        # trusted, so the sidecar must state it
        [
            None if m.get("RepetitionTimeSource") else m.get("RepetitionTime")
            for m in unit["bold_metadata"]
        ],  # fmt:skip
        conditions=config.conditions,
        confounds=config.confounds,
        min_trials_per_run=config.min_trials_per_run,
        **design_options(config),
    )
    for note in collinearity_notes(checked["metadata"], [Path(f).name for f in unit["events"]]):
        warnings.warn(note, UserWarning, stacklevel=2)
    mask = np.asanyarray(checked["mask_img"].dataobj) > 0
    for img, name in zip(checked["bold_imgs"], checked["bold_names"], strict=True):
        check_run_data(img, mask, name)
    return checked


def collect(config):
    """Collect and validate every subject's inputs; fill ``config.subject_data``.

    Every BOLD series is read once here (truncated files and non-finite voxels fail
    now, naming the file); events and confounds problems are logged as warnings.
    """
    conditions = config.conditions
    for subject, data in collect_files(config).items():
        units = analysis_units(config, subject, data)
        for unit in units:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if config.samples in BETA_SAMPLES:
                    checked = check_betas(config, unit)
                else:
                    checked = check_inputs(
                        unit["bold"],
                        unit["mask"],
                        unit["events"],
                        unit["confounds"],
                        unit["runs"],
                        [m["RepetitionTime"] for m in unit["bold_metadata"]],
                        conditions=config.conditions,
                        confounds=config.confounds,
                        hrf_delay=config.hrf_delay,
                        sessions=unit["sessions"],
                        confounds_strategy=config.confounds_strategy,
                        confounds_strategy_options=config.confounds_strategy_options,
                        check_data=True,
                    )
            for warning in caught:
                if issubclass(warning.category, UserWarning):
                    note_input_warning(f"{_describe(subject, unit)}: {warning.message}")
            if conditions is None:
                conditions = checked["conditions"]
            elif conditions != checked["conditions"] and config.conditions is None:
                raise InputValidationError(
                    f"{_describe(subject, unit)} has the conditions {checked['conditions']} "
                    f"but earlier subjects have {conditions}; choose them with --conditions."
                )
            unit["n_samples"] = len(checked["table"])
            unit["confound_names"] = checked["confound_names"]
        config.subject_data[subject] = units
    config.conditions = list(conditions)
    return config


def run_participant(config):
    """Run the participant level; return the exit code."""
    from mvpa_flows.cli.execution import run_workflow
    from mvpa_flows.workflows.base import init_mvpa_flows_wf
    from mvpa_flows.workflows.reports import methods_of

    collect(config)
    logger.info(
        "Participant level: %d subject(s) %s, task %s, space %s, sessions %s, conditions %s, "
        "analyses %s",
        len(config.subject_data),
        list(config.subject_data),
        config.task,
        config.space or "native",
        "per session" if config.per_session else (config.session_label or "pooled"),
        config.conditions,
        config.analyses,
    )
    write_dataset_description(
        config.output_dir, config.dataset_links, authors=raw_authors(config.bids_dir)
    )
    workflow = init_mvpa_flows_wf(config)
    crash_dir = config.output_dir / "logs" / "crash"
    code = run_workflow(workflow, config, crash_dir)
    write_reports(config, crash_dir, methods_of(workflow))
    if code == 0:
        print(
            f"mvpa-flows: participant level finished; outputs in {config.output_dir}",
            file=sys.stderr,
        )
    return code


def raw_authors(bids_dir):
    """``Authors`` of the raw dataset (the people whose data the derivatives come from)."""
    import json

    try:
        description = json.loads((bids_dir / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return None
    authors = description.get("Authors")
    return [str(a) for a in authors] if isinstance(authors, list) and authors else None


def write_reports(config, crash_dir, texts):
    """One HTML report per subject (per session with ``--per-session``) and
    ``logs/CITATION.md``; never changes the exit code.

    ``texts`` are the methods texts the workflow carries; they are filled from the
    sidecars of the subjects' outputs.
    """
    from mvpa_flows.interfaces.reports import (
        index_outputs,
        write_citation,
        write_subject_report,
    )

    subjects = list(config.subject_data)
    for subject, units in config.subject_data.items():
        for unit in units:
            try:
                path = write_subject_report(
                    config.output_dir,
                    subject,
                    texts,
                    config.analyses,
                    crash_dir,
                    log_file=config.log_file,
                    command_line=config.command_line,
                    entities=unit["entities"],
                )
                logger.info("Report: %s", path)
            except Exception as err:  # noqa: BLE001 - a failed report must not hide results
                logger.warning("Could not write the report of sub-%s: %s", subject, err)
    files = index_outputs(config.output_dir, subjects=subjects)
    files = [f for f in files if f["entities"].get("subject") in subjects]
    write_citation(config.output_dir / "logs" / "CITATION.md", texts, files)

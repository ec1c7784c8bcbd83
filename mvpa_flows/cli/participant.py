"""The participant level: collect inputs, validate them, build and run the graph."""

from __future__ import annotations

import logging
import sys

from mvpa_flows.core.data.dataset import check_inputs
from mvpa_flows.core.errors import InputValidationError, NoInputFilesError
from mvpa_flows.interfaces.bids import (
    collect_inputs,
    load_layouts,
    resolve_space,
    write_dataset_description,
)
from mvpa_flows.interfaces.datalad import dataset_root, fetch, sidecars_of

logger = logging.getLogger("mvpa_flows")


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


def collect_files(config):
    """Find every selected subject's runs; return ``{subject: collect_inputs(...)}``.

    Sets ``config.task`` and ``config.space``. In DataLad datasets the selected subjects'
    JSON sidecars are fetched before pybids reads metadata, and the BOLD series, masks,
    confounds and events after the queries have picked them; nothing else is fetched.
    """
    datalad_inputs = any(dataset_root(p) for p in (config.bids_dir, config.fmriprep_dir))
    if datalad_inputs:
        fetch(
            sidecars_of(_requested_subjects(config), config.bids_dir, config.fmriprep_dir),
            jobs=config.nprocs,
            enabled=config.datalad_get,
        )
    database = config.bids_database_dir or config.work_dir / "bids_db"
    raw, fmriprep = load_layouts(
        config.bids_dir,
        config.fmriprep_dir,
        database_dir=database,
        validate=not config.skip_bids_validation,
    )
    subjects = select_subjects(fmriprep, raw, config.participant_label)
    config.task = select_task(fmriprep, subjects, config.task)
    config.space = resolve_space(
        fmriprep, subjects, config.task, config.space, config.bids_filters
    )
    found = {}
    for subject in subjects:
        data = collect_inputs(
            raw,
            fmriprep,
            subject,
            task=config.task,
            space=config.space,
            filters=config.bids_filters,
        )
        if datalad_inputs:
            needed = [f for key in ("bold", "mask", "confounds", "events") for f in data[key]]
            fetch(needed, jobs=config.nprocs, enabled=config.datalad_get)
        found[subject] = data
    return found


def collect(config):
    """Collect and validate every subject's inputs; fill ``config.subject_data``."""
    conditions = config.conditions
    for subject, data in collect_files(config).items():
        checked = check_inputs(
            data["bold"],
            data["mask"],
            data["events"],
            data["confounds"],
            data["runs"],
            [m["RepetitionTime"] for m in data["bold_metadata"]],
            conditions=config.conditions,
            confounds=config.confounds,
            hrf_delay=config.hrf_delay,
        )
        if conditions is None:
            conditions = checked["conditions"]
        elif conditions != checked["conditions"] and config.conditions is None:
            raise InputValidationError(
                f"sub-{subject} has the conditions {checked['conditions']} but earlier "
                f"subjects have {conditions}; choose them with --conditions."
            )
        data["n_samples"] = len(checked["table"])
        config.subject_data[subject] = data
    config.conditions = list(conditions)
    return config


def run_participant(config):
    """Run the participant level; return the exit code."""
    from mvpa_flows.cli.execution import run_workflow
    from mvpa_flows.workflows.base import init_mvpa_flows_wf
    from mvpa_flows.workflows.reports import methods_of

    collect(config)
    logger.info(
        "Participant level: %d subject(s) %s, task %s, space %s, conditions %s, analyses %s",
        len(config.subject_data),
        list(config.subject_data),
        config.task,
        config.space or "native",
        config.conditions,
        config.analyses,
    )
    config.output_dir.mkdir(parents=True, exist_ok=True)
    write_dataset_description(config.output_dir, config.dataset_links)
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


def write_reports(config, crash_dir, texts):
    """One HTML report per subject and ``logs/CITATION.md``; never changes the exit code.

    ``texts`` are the methods texts the workflow carries; they are filled from the
    sidecars of the subjects' outputs.
    """
    from mvpa_flows.interfaces.reports import (
        index_outputs,
        write_citation,
        write_subject_report,
    )

    subjects = list(config.subject_data)
    for subject in subjects:
        try:
            path = write_subject_report(
                config.output_dir,
                subject,
                texts,
                config.analyses,
                crash_dir,
                log_file=config.log_file,
                command_line=config.command_line,
            )
            logger.info("Report: %s", path)
        except Exception as err:  # noqa: BLE001 - a failed report must not hide results
            logger.warning("Could not write the report of sub-%s: %s", subject, err)
    files = index_outputs(config.output_dir, subjects=subjects)
    files = [f for f in files if f["entities"].get("subject") in subjects]
    write_citation(config.output_dir / "logs" / "CITATION.md", texts, files)

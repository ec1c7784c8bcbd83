"""The group level: hyperalignment across subjects and searchlight group statistics."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import nibabel as nb
import numpy as np

from mvpa_flows.cli.parser import UsageError
from mvpa_flows.core.errors import InputValidationError, NoInputFilesError
from mvpa_flows.interfaces.bids import (
    atomic_copy,
    bids_uri,
    output_path,
    write_dataset_description,
    write_json,
)

logger = logging.getLogger("mvpa_flows")


def run_group(config):
    """Run the group analyses chosen in ``config.analyses``; return the exit code."""
    config.output_dir.mkdir(parents=True, exist_ok=True)
    write_dataset_description(config.output_dir, config.dataset_links)
    code, described = 0, {"texts": [], "subjects": set()}
    try:
        if "hyperalignment" in config.analyses:
            code = run_hyperalignment(config, described)
        if code == 0 and "searchlight" in config.analyses:
            code = run_group_searchlight(config, described)
    finally:
        _write_group_report(config, described)
    if code == 0:
        print(f"mvpa-flows: group level finished; outputs in {config.output_dir}", file=sys.stderr)
    return code


def _write_group_report(config, described):
    """``group.html`` and ``logs/CITATION_group.md`` from the sidecars of what ran.

    ``described`` holds the methods texts of the workflows that ran and the subjects
    whose participant outputs they used (their sidecars describe how those were made).
    """
    from mvpa_flows.interfaces.reports import index_outputs, write_citation, write_group_report

    subjects = sorted(described["subjects"])
    files = [
        f
        for f in index_outputs(config.output_dir, subjects=subjects)
        if f["entities"].get("subject") in (None, *subjects)
    ]
    try:
        path = write_group_report(
            config.output_dir,
            described["texts"],
            config.analyses,
            files,
            config.output_dir / "logs" / "crash",
            log_file=config.log_file,
            command_line=config.command_line,
        )
        logger.info("Report: %s", path)
    except Exception as err:  # noqa: BLE001 - a failed report must not hide results
        logger.warning("Could not write the group report: %s", err)
    citation = config.output_dir / "logs" / "CITATION_group.md"
    write_citation(citation, described["texts"], files, title="Methods (group level)")


# ----------------------------------------------------------------------- hyperalignment


def _check_common_grid(files):
    reference_subject, reference = None, None
    for subject, data in files.items():
        for path in data["bold"] + data["mask"]:
            img = nb.load(path)
            if reference is None:
                reference_subject, reference = subject, img
                continue
            if img.shape[:3] != reference.shape[:3] or not np.allclose(
                img.affine, reference.affine, atol=1e-3
            ):
                raise InputValidationError(
                    f"sub-{subject} ({Path(path).name}, grid {img.shape[:3]}) is not on the "
                    f"grid of sub-{reference_subject} ({reference.shape[:3]}); hyperalignment "
                    "needs every subject in one space: choose it with --space (e.g. an MNI "
                    "space from fMRIPrep's --output-spaces)."
                )
    return reference


def _split_runs(config, files):
    train, test = config.ha_train_runs, config.ha_test_runs
    runs = {s: [int(r) for r in d["runs"]] for s, d in files.items()}
    if train is None or test is None:
        common = sorted(set.intersection(*(set(r) for r in runs.values())))
        if len(common) < 2:
            raise UsageError(
                f"Hyperalignment needs separate training and test runs; the subjects share "
                f"the runs {common}. Give --ha-train-runs and --ha-test-runs."
            )
        train = train or [r for r in common if r not in (test or common[-1:])]
        test = test or [r for r in common if r not in train]
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise UsageError(
            f"Runs {overlap} are in both --ha-train-runs {list(train)} and --ha-test-runs "
            f"{list(test)}: estimating the alignment on the test data is circular. Use "
            "disjoint runs."
        )
    for subject, present in runs.items():
        missing = [r for r in list(train) + list(test) if r not in present]
        if missing:
            which = "training" if set(missing) & set(train) else "test"
            raise InputValidationError(
                f"sub-{subject} lacks {which} run(s) {missing} (it has runs {present}); "
                "drop the subject with --participant-label or change the run options."
            )
    return list(train), list(test)


def _check_training_samples(files, train):
    counts = {}
    for subject, data in files.items():
        runs = [int(r) for r in data["runs"]]
        counts[subject] = sum(nb.load(data["bold"][runs.index(r)]).shape[3] for r in train)
    if len(set(counts.values())) != 1:
        raise InputValidationError(
            f"The training runs {train} have different numbers of volumes across subjects "
            f"({counts}); hyperalignment needs the same samples (time points) for everyone. "
            "Crop the runs to a common length."
        )


def _roi(config, files, reference, model):
    """The ROI file, how sidecars cite it, and the default ROI written as an output."""
    if config.roi_mask:
        path = Path(config.roi_mask)
        if not path.is_file():
            raise InputValidationError(f"--roi-mask {path}: no such file.")
        from mvpa_flows.core.data.cleaning import check_same_grid

        check_same_grid(
            nb.load(path), reference, f"--roi-mask {path.name}", "the subjects' BOLD grid"
        )
        return str(path), bids_uri(path, config.dataset_links)
    masks = [np.asarray(nb.load(m).dataobj) > 0 for d in files.values() for m in d["mask"]]
    roi = np.logical_and.reduce(masks)
    if not roi.any():
        raise InputValidationError("The subjects' brain masks share no voxel; give --roi-mask.")
    work = config.work_dir / "group_inputs"
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / "roi_mask.nii.gz"
    nb.Nifti1Image(roi.astype(np.uint8), reference.affine).to_filename(tmp)
    rel = output_path(
        {
            "template": model,
            "task": config.task,
            "space": config.space,
            "desc": "roi",
            "suffix": "mask",
            "extension": ".nii.gz",
        }
    )
    atomic_copy(tmp, config.output_dir / rel)
    sources = [bids_uri(m, config.dataset_links) for d in files.values() for m in d["mask"]]
    write_json(
        {
            "Description": "Hyperalignment ROI: the intersection of the subjects' brain masks.",
            "Sources": sources,
            "SpatialReference": config.space or "native",
        },
        config.output_dir / rel.replace(".nii.gz", ".json"),
    )
    return str(tmp), f"bids::{rel}"


def run_hyperalignment(config, described):
    """Hyperalign every selected subject and evaluate it; return the exit code."""
    from mvpa_flows.cli.execution import run_workflow
    from mvpa_flows.cli.participant import collect_files
    from mvpa_flows.workflows.group import init_group_hyperalignment_wf

    files = collect_files(config)
    if len(files) < 2:
        raise InputValidationError(
            f"Hyperalignment needs at least two subjects; found {list(files)}. Add subjects "
            "or drop --participant-label."
        )
    reference = _check_common_grid(files)
    train, test = _split_runs(config, files)
    _check_training_samples(files, train)
    trs = {float(m["RepetitionTime"]) for d in files.values() for m in d["bold_metadata"]}
    if len(trs) != 1:
        raise InputValidationError(f"The subjects' runs have different TRs {sorted(trs)}.")
    model = f"{config.task}HA"
    roi_file, roi_uri = _roi(config, files, reference, model)
    subjects = list(files)
    logger.info(
        "Group hyperalignment: subjects %s, train runs %s, test runs %s, ROI %s",
        subjects,
        train,
        test,
        roi_uri,
    )
    workflow = init_group_hyperalignment_wf(
        subjects=subjects,
        output_dir=str(config.output_dir),
        task=config.task,
        space=config.space,
        train_runs=train,
        test_runs=test,
        repetition_time=trs.pop(),
        mode=config.bsc,
        segment_length=config.segment_length,
        conditions=config.conditions,
        confounds=config.confounds,
        detrend=config.detrend,
        standardize=config.standardize,
        hrf_delay=config.hrf_delay,
        model_label=model,
        dataset_links={**config.dataset_links, "": str(config.output_dir)},
    )
    inputs = workflow.get_node("inputnode").inputs
    inputs.bold_file = [files[s]["bold"] for s in subjects]
    inputs.confounds_file = [files[s]["confounds"] for s in subjects]
    inputs.events_file = [files[s]["events"] for s in subjects]
    inputs.runs = [[int(r) for r in files[s]["runs"]] for s in subjects]
    inputs.repetition_time = [
        [float(m["RepetitionTime"]) for m in files[s]["bold_metadata"]] for s in subjects
    ]
    inputs.roi_mask = roi_file
    inputs.roi_mask_uri = roi_uri
    from mvpa_flows.workflows.reports import methods_of

    described["texts"] += methods_of(workflow)
    described["subjects"].update(subjects)
    top = _top_workflow(config, workflow)
    return run_workflow(top, config, config.output_dir / "logs" / "crash")


def _top_workflow(config, *workflows):
    from nipype.pipeline.engine import Workflow

    top = Workflow(name="mvpa_flows_group_wf")
    top.base_dir = str(config.work_dir)
    top.add_nodes(list(workflows))
    return top


# ------------------------------------------------------------------ group searchlight

_MAP = re.compile(
    r"sub-(?P<subject>[a-zA-Z0-9]+)_task-(?P<task>[a-zA-Z0-9]+)(_run-\d+)?"
    r"(_space-(?P<space>[a-zA-Z0-9]+))?_contrast-(?P<contrast>[a-zA-Z0-9]+)"
    r"_stat-(?P<stat>[a-zA-Z0-9]+)_desc-searchlight_statmap\.nii\.gz$"
)


def find_searchlight_maps(output_dir, subjects=None, task=None, space=None, contrast=None):
    """Participant searchlight score maps in ``output_dir`` (one per subject)."""
    found = []
    for path in sorted(Path(output_dir).glob("sub-*/func/*_desc-searchlight_statmap.nii.gz")):
        match = _MAP.match(path.name)
        if not match or match["stat"] == "p":
            continue
        ents = match.groupdict()
        if (
            (subjects and ents["subject"] not in subjects)
            or (task and ents["task"] != task)
            or (contrast and ents["contrast"] != contrast)
        ):
            continue
        if space is not None and ents["space"] != space:
            continue
        found.append((path, ents))
    if not found:
        raise NoInputFilesError(
            f"No participant searchlight maps (*_desc-searchlight_statmap.nii.gz) in "
            f"{output_dir}; run the participant level with --analyses searchlight first."
        )
    for key, label in (
        ("task", "--task"),
        ("space", "--space"),
        ("contrast", "--contrast-label"),
        ("stat", "--scoring"),
    ):
        values = sorted({str(e[key]) for _, e in found})
        if len(values) > 1:
            raise InputValidationError(
                f"The participant searchlight maps differ in {key} ({values}); choose one with "
                f"{label}."
            )
    return found


def run_group_searchlight(config, described):
    """Group statistics of the participant searchlight maps; return the exit code."""
    from mvpa_flows.cli.execution import run_workflow
    from mvpa_flows.workflows.group import init_group_searchlight_wf
    from mvpa_flows.workflows.reports import methods_of

    found = find_searchlight_maps(
        config.output_dir,
        config.participant_label,
        config.task,
        config.space,
        config.contrast_label,
    )
    if len(found) < 2:
        raise InputValidationError(
            f"Group statistics need at least two subjects' searchlight maps; found "
            f"{[str(p.name) for p, _ in found]}."
        )
    maps = [str(p) for p, _ in found]
    masks, means = [], []
    chance = set()
    for path, ents in found:
        meta = json.loads(Path(str(path).replace(".nii.gz", ".json")).read_text())
        chance.add(float(meta["ChanceLevel"]))
        subject = {"subject": ents["subject"], "task": ents["task"], "space": ents["space"]}
        mask = output_path({**subject, "desc": "analysis", "suffix": "mask"})
        if not (config.output_dir / mask).is_file():
            raise NoInputFilesError(f"{mask} is missing from {config.output_dir}.")
        masks.append(str(config.output_dir / mask))
        means.append(
            str(config.output_dir / output_path({**subject, "desc": "mean", "suffix": "bold"}))
        )
    if len(chance) != 1:
        raise InputValidationError(f"The maps have different chance levels {sorted(chance)}.")
    ents = found[0][1]
    config.task, config.space = ents["task"], ents["space"]
    workflow = init_group_searchlight_wf(
        output_dir=str(config.output_dir),
        task=ents["task"],
        space=ents["space"],
        contrast=ents["contrast"],
        stat=ents["stat"],
        chance=chance.pop(),
        random_seed=config.random_seed,
        dataset_links={**config.dataset_links, "": str(config.output_dir)},
    )
    workflow.inputs.inputnode.score_maps = maps
    workflow.inputs.inputnode.mask_files = masks
    workflow.inputs.inputnode.mean_bold = [m for m in means if Path(m).is_file()] or masks
    # the group's own text first, then how the participant maps were made, then the test
    own = methods_of(workflow)
    described["texts"] += own[:1] + _participant_methods(config) + own[1:]
    described["subjects"].update(e["subject"] for _, e in found)
    logger.info("Group searchlight statistics over %d subjects", len(maps))
    return run_workflow(
        _top_workflow(config, workflow), config, config.output_dir / "logs" / "crash"
    )


def _participant_methods(config):
    """Methods texts of the participant searchlight that made the maps."""
    from mvpa_flows.workflows.participant import init_mvpa_wf
    from mvpa_flows.workflows.reports import methods_of

    return methods_of(init_mvpa_wf(output_dir=str(config.output_dir), analyses=["searchlight"]))

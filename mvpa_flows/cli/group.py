"""The group level: hyperalignment across subjects and searchlight group statistics."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
from bids.layout import Query

from mvpa_flows.cli.parser import UsageError, cli_message
from mvpa_flows.core.alignment.evaluate import alignment_estimator, check_alignment
from mvpa_flows.core.alignment.model import load_model
from mvpa_flows.core.alignment.runs import (
    RunSelectionError,
    check_repetition_time,
    check_segments,
    check_training_samples,
    split_runs,
)
from mvpa_flows.core.errors import InputValidationError, NoInputFilesError
from mvpa_flows.interfaces.bids import (
    SUBJECT_SPACES,
    atomic_copy,
    bids_uri,
    output_layout,
    output_path,
    space_label,
    space_metadata,
    write_dataset_description,
    write_json,
)

logger = logging.getLogger("mvpa_flows")


def run_group(config):
    """Run the group analyses chosen in ``config.analyses``; return the exit code."""
    from mvpa_flows.cli.participant import raw_authors

    write_dataset_description(
        config.output_dir, config.dataset_links, authors=raw_authors(config.bids_dir)
    )
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


def run_labels(data):
    """Run labels of one subject's series: RUN, or SESSION:RUN when they have sessions."""
    if all(s is None for s in data.get("sessions", [None] * len(data["runs"]))):
        return [int(r) for r in data["runs"]]
    return [f"{s}:{int(r)}" for s, r in zip(data["sessions"], data["runs"], strict=True)]


def _normalise_runs(tokens, labels, flag):
    """Map ``--ha-*-runs`` tokens onto the subjects' run labels."""
    if tokens is None:
        return None
    sessioned = any(isinstance(label, str) for subject in labels.values() for label in subject)
    out = []
    for token in tokens:
        if isinstance(token, str) and not sessioned:
            raise UsageError(
                f"{flag} {token}: the runs have no session (no ses- entity); name them by "
                "run number alone."
            )
        if isinstance(token, int) and sessioned:
            matches = sorted(
                {
                    label
                    for subject in labels.values()
                    for label in subject
                    if str(label).endswith(f":{token}")
                }  # fmt:skip
            )
            if len(matches) != 1:
                example = matches[0] if matches else "1:1"
                raise UsageError(
                    f"{flag} {token}: the runs are numbered within sessions (matching run "
                    f"labels: {matches}); name them SESSION:RUN (e.g. {flag} {example}), or "
                    "choose one session with --session-label."
                )
            token = matches[0]
        out.append(token)
    return out


#: Core parameter names in run-check messages -> the flags that set them.
_RUN_FLAGS = {
    "train_runs": "--ha-train-runs",
    "test_runs": "--ha-test-runs",
    "segment_length": "--segment-length",
    "n_components": "--ha-n-components",
    "cv_blocks": "--ha-cv-blocks",
    "alphas": "--ha-alphas",
}


def _flags(text):
    """A core message with its parameter names spelled as this app's flags."""
    text = cli_message(text, "group")
    for name, flag in _RUN_FLAGS.items():
        text = re.sub(rf"(?<![\w-])'?{name}'?(?![\w])", flag, text)
    return text


def _core_checked(function, *args, **kwargs):
    """Call a core check; its errors come back with flags (usage errors exit 64)."""
    try:
        return function(*args, **kwargs)
    except RunSelectionError as err:
        raise UsageError(_flags(err)) from None
    except InputValidationError as err:
        raise InputValidationError(_flags(err)) from None


def _split_runs(config, files, defaults=(None, None)):
    """Training and test runs (``defaults``: a loaded model's runs, when no flag is given)."""
    runs = {s: run_labels(d) for s, d in files.items()}
    train = _normalise_runs(config.ha_train_runs, runs, "--ha-train-runs") or defaults[0]
    test = _normalise_runs(config.ha_test_runs, runs, "--ha-test-runs") or defaults[1]
    return _core_checked(split_runs, runs, train, test)


def _volumes(files, runs):
    """{subject: {run label: number of volumes}} from the image headers."""
    out = {}
    for subject, data in files.items():
        labels = run_labels(data)
        out[subject] = {r: nb.load(data["bold"][labels.index(r)]).shape[3] for r in runs}
    return out


def _check_timing(config, files, train, test):
    """Training samples, TR and test segments, checked before any data are read."""
    volumes = _volumes(files, train + test)
    n_train = _core_checked(check_training_samples, volumes, train)
    trs = {s: [float(m["RepetitionTime"]) for m in d["bold_metadata"]] for s, d in files.items()}
    tr = _core_checked(check_repetition_time, trs)
    if config.bsc == "segments":
        tests = {s: sum(v[r] for r in test) for s, v in volumes.items()}
        if len(set(tests.values())) != 1:
            raise InputValidationError(
                f"The test runs {test} have different numbers of volumes across subjects "
                f"({tests}); movie segment classification needs the same time points for "
                "everyone. Crop the runs to a common length or use --bsc conditions."
            )
        _core_checked(check_segments, tr, config.segment_length, next(iter(tests.values())))
    return n_train, tr


#: Options that apply to some alignment methods only: option -> the methods.
METHOD_OPTIONS = {
    "ha_alphas": ("ridge",),
    "ha_cv_blocks": ("ridge",),
    "ha_n_components": ("srm",),
    "ha_srm_method": ("srm",),
    "ha_n_iter": ("srm",),
}
#: Options of searchlight hyperalignment (they need --ha-searchlight-radius).
SEARCHLIGHT_OPTIONS = ("ha_sparse_radius", "ha_common_space", "ha_zscore_output")


def _flag(key):
    return "--" + key.replace("_", "-")


def _check_method_options(config):
    """Refuse options that the chosen method (or a loaded model) would ignore (exit 64)."""
    given = set(config.options_given)
    if config.ha_model:
        ignored = sorted(given & ({*METHOD_OPTIONS, *SEARCHLIGHT_OPTIONS} - {"ha_sparse_radius"}))
        if ignored:
            raise UsageError(
                f"{', '.join(map(_flag, ignored))} with --ha-model: new subjects are mapped "
                "with the model's own method and parameters, so these options would be "
                "ignored. Drop them, or fit a new model without --ha-model."
            )
    wrong = sorted(
        k for k in given & set(METHOD_OPTIONS) if config.ha_method not in METHOD_OPTIONS[k]
    )
    if wrong:
        raise UsageError(
            f"{', '.join(_flag(k) for k in wrong)} appl"
            f"{'ies' if len(wrong) == 1 else 'y'} to --ha-method "
            f"{' or '.join(sorted({m for k in wrong for m in METHOD_OPTIONS[k]}))} only; "
            f"with --ha-method {config.ha_method} "
            f"{'it' if len(wrong) == 1 else 'they'} would be ignored. Drop "
            f"{'it' if len(wrong) == 1 else 'them'}, or choose that --ha-method."
        )
    if config.ha_searchlight_radius is None:
        loose = [
            k
            for k in SEARCHLIGHT_OPTIONS
            if k in given or (k == "ha_sparse_radius" and config.ha_sparse_radius is not None)
        ]
        if loose:
            raise UsageError(
                f"{', '.join(map(_flag, loose))} set(s) searchlight hyperalignment; give "
                "the sphere radius with --ha-searchlight-radius MM too, or drop "
                f"{', '.join(map(_flag, loose))}."
            )


def _alignment(config):
    """The estimator of ``--ha-method`` and its parameters (defaults from the schema)."""
    _check_method_options(config)
    params = {
        "procrustes": {},
        "ridge": {"alphas": config.ha_alphas, "cv_blocks": config.ha_cv_blocks},
        "srm": {
            "n_components": config.ha_n_components,
            "srm_method": config.ha_srm_method,
            "n_iter": config.ha_n_iter,
            "random_state": 0 if config.random_seed is None else config.random_seed,
        },
    }[config.ha_method]
    if config.ha_searchlight_radius is None:
        return params, _core_checked(alignment_estimator, config.ha_method, **params)
    if config.ha_method == "srm":
        raise UsageError(
            f"--ha-method srm with --ha-searchlight-radius {config.ha_searchlight_radius:g}: "
            "searchlight hyperalignment fits local Procrustes or ridge maps, and a shared "
            "response model has no searchlight form. Use --ha-method procrustes or ridge, "
            "or drop --ha-searchlight-radius."
        )
    if config.ha_model:
        raise UsageError(
            "--ha-searchlight-radius with --ha-model: new subjects are mapped with the "
            "model's own method and radius. Drop --ha-searchlight-radius, or fit a new model "
            "without --ha-model."
        )
    params["searchlight_radius"] = config.ha_searchlight_radius
    params["sparse_radius"] = config.ha_sparse_radius
    params["common_space"] = config.ha_common_space
    params["zscore_output"] = bool(config.ha_zscore_output)
    # the estimator needs the mask: built once the ROI is known (_searchlight_checked)
    return params, None


def searchlight_common_space(requested, n_train, n_voxels):
    """The common space of searchlight hyperalignment for ``--ha-common-space``.

    ``auto`` takes the whole-mask common space when the training samples determine a
    hyperalignment of the whole mask (at least as many samples as mask voxels), and
    PyMVPA's searchlight common space otherwise: with fewer samples than voxels (every
    whole-brain mask) a whole-mask rotation is fitted to noise in the directions the
    data do not span, while each sphere's is still determined.
    """
    if requested != "auto":
        return requested
    return "mask" if n_train >= n_voxels else "searchlight"


def _searchlight_checked(config, params, roi, reference, n_train):
    """The searchlight estimator on the ROI, checked against the data's shape."""
    requested = params["common_space"]
    params["common_space"] = searchlight_common_space(requested, n_train, int(roi.sum()))
    if requested == "auto":
        logger.info(
            "Searchlight hyperalignment: common space '%s' (%d training samples, %d mask "
            "voxels; --ha-common-space auto)",
            params["common_space"],
            n_train,
            int(roi.sum()),
        )
    mask = nb.Nifti1Image(roi.astype(np.uint8), reference.affine)
    estimator = _core_checked(alignment_estimator, config.ha_method, **params, mask_img=mask)
    return _core_checked(
        check_alignment, estimator, n_train, int(roi.sum()), n_chunks=config.searchlight_chunks
    )


def _check_data(files, runs):
    """Read every run hyperalignment uses once: truncated files and NaN fail now."""
    from mvpa_flows.core.data.cleaning import check_run_data

    for data in files.values():
        labels = run_labels(data)
        for label in runs:
            i = labels.index(label)
            mask = np.asarray(nb.load(data["mask"][i]).dataobj) > 0
            check_run_data(nb.load(data["bold"][i]), mask, Path(data["bold"][i]).name)


def _roi_array(config, files, reference):
    """The ROI (a boolean array on the subjects' grid) and the file it comes from."""
    if config.roi_mask:
        path = Path(config.roi_mask)
        if not path.is_file():
            raise InputValidationError(f"--roi-mask {path}: no such file.")
        from mvpa_flows.core.data.cleaning import check_same_grid

        img = nb.load(path)
        check_same_grid(img, reference, f"--roi-mask {path.name}", "the subjects' BOLD grid")
        return np.asarray(img.dataobj) > 0, path
    masks = [np.asarray(nb.load(m).dataobj) > 0 for d in files.values() for m in d["mask"]]
    roi = np.logical_and.reduce(masks)
    if not roi.any():
        raise InputValidationError("The subjects' brain masks share no voxel; give --roi-mask.")
    return roi, None


def _write_roi(config, files, roi, reference, model, entities, sidecar):
    """The default ROI written as an output; returns (file, how sidecars cite it)."""
    work = config.work_dir / "group_inputs"
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / "roi_mask.nii.gz"
    img = nb.Nifti1Image(roi.astype(np.uint8), reference.affine)
    img.header.set_xyzt_units("mm")
    img.to_filename(tmp)
    rel = output_path(
        {"template": model, **entities, "desc": "roi", "suffix": "mask", "extension": ".nii.gz"}
    )
    atomic_copy(tmp, config.output_dir / rel)
    sources = [bids_uri(m, config.dataset_links) for d in files.values() for m in d["mask"]]
    write_json(
        {
            "Description": "Hyperalignment ROI: the intersection of the subjects' brain masks.",
            "Type": "ROI",
            "Sources": sources,
            **sidecar,
        },
        config.output_dir / rel.replace(".nii.gz", ".json"),
    )
    return str(tmp), f"bids::{rel}"


def _session_entity(config, files):
    """``ses-`` of group outputs: the session, when every run comes from one."""
    sessions = {s for d in files.values() for s in d.get("sessions", [])}
    return sessions.pop() if len(sessions) == 1 and None not in sessions else None


# ---------------------------------------------------------------- an existing model


def find_model(folder):
    """The alignment model file in a ``tpl-<model>`` folder and the model's label."""
    from mvpa_flows.interfaces.bids import parse_entities

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(
            f"--ha-model {folder}: no such folder; give the tpl-<model> folder written by an "
            "earlier 'group --analyses hyperalignment' run."
        )
    found = sorted(folder.glob("tpl-*_desc-common_model.h5"))
    if len(found) != 1:
        raise InputValidationError(
            f"--ha-model {folder}: expected one alignment model (tpl-*_desc-common_model.h5), "
            f"found {[p.name for p in found] or 'none'}; give the tpl-<model> folder of one "
            "earlier group hyperalignment (one task, space and session)."
        )
    return found[0], parse_entities(found[0])["template"]


def _model_subjects(config, model):
    """Subjects to load: the model's (for their test runs) and the new ones."""
    if config.participant_label:
        inside = [s for s in config.participant_label if s in model.subjects]
        if inside:
            raise UsageError(
                f"--participant-label {' '.join(inside)}: already in the model (its subjects "
                f"are {model.subjects}); --ha-model maps subjects that were not part of the "
                "fit. Select other subjects, or fit a new model without --ha-model."
            )
        config.participant_label = list(model.subjects) + list(config.participant_label)
    return config


def _check_model(config, path, model, n_train, roi, reference):
    """Refuse a model that cannot hold the selected subjects, before any data are read."""
    load_model(path, task=config.task, space=space_label(config.space_entities))
    if model.n_samples != n_train:
        raise InputValidationError(
            f"--ha-model {path.name} was fitted on {model.n_samples} training samples "
            f"(runs {model.metadata.get('train_runs')}), but the selected subjects have "
            f"{n_train} volumes in the training runs; a new subject needs the model's "
            "training stimulus, the same runs and length. Choose them with --ha-train-runs."
        )
    voxels = set(model.n_features_per_subject)
    if voxels != {int(roi.sum())}:
        raise InputValidationError(
            f"--ha-model {path.name} maps {sorted(voxels)} voxels per subject, but its ROI "
            f"gives {int(roi.sum())} voxels on the selected subjects' grid; the new subjects "
            "must be in the model's space and ROI."
        )
    if model.roi is not None and (
        model.roi.shape != reference.shape[:3] or not np.array_equal(model.roi > 0, roi)
    ):
        raise InputValidationError(
            f"The ROI stored in --ha-model {path.name} (grid {model.roi.shape}) differs from "
            f"the model folder's ROI mask on the subjects' grid {reference.shape[:3]}."
        )


def _model_roi(config, path, label, reference):
    """The ROI mask written beside a model, and how sidecars cite it."""
    from mvpa_flows.interfaces.bids import parse_entities

    ents = parse_entities(path)
    masks = [
        m
        for m in path.parent.glob(f"tpl-{label}*_desc-roi_mask.nii.gz")
        if all(parse_entities(m).get(k) == ents.get(k) for k in ("task", "space", "session"))
    ]
    if len(masks) != 1:
        raise InputValidationError(
            f"--ha-model {path.parent}: expected the model's ROI mask "
            f"(tpl-{label}_..._desc-roi_mask.nii.gz) beside {path.name}; found "
            f"{[m.name for m in masks] or 'none'}."
        )
    img = nb.load(masks[0])
    from mvpa_flows.core.data.cleaning import check_same_grid

    check_same_grid(img, reference, masks[0].name, "the subjects' BOLD grid")
    uri = bids_uri(masks[0], {**config.dataset_links, "": str(config.output_dir)})
    return np.asarray(img.dataobj) > 0, str(masks[0]), uri


def run_hyperalignment(config, described):
    """Align every selected subject and evaluate it (or map new subjects into an existing
    model with ``--ha-model``); return the exit code."""
    from mvpa_flows.cli.execution import run_workflow
    from mvpa_flows.cli.participant import collect_files
    from mvpa_flows.workflows.group import init_group_hyperalignment_wf
    from mvpa_flows.workflows.reports import methods_of

    params, estimator = _alignment(config)
    model_path = loaded = None
    if config.ha_model:
        model_path, model = find_model(config.ha_model)
        loaded = load_model(model_path)
        if config.ha_method != "procrustes" and config.ha_method != loaded.method:
            raise UsageError(
                f"--ha-method {config.ha_method}: the model in --ha-model {model_path.name} "
                f"is a {loaded.method} model, and new subjects are mapped with the model's "
                "own method. Drop --ha-method, or fit a new model without --ha-model."
            )
        _model_subjects(config, loaded)
    files = collect_files(config)
    if loaded is not None:
        missing = [s for s in loaded.subjects if s not in files]
        if missing:
            raise InputValidationError(
                f"--ha-model {model_path.name}: the model's subjects {missing} are not in "
                f"{config.bids_dir}; their test runs are needed to evaluate the new subjects. "
                "Run on the dataset the model was fitted on."
            )
        new = [s for s in files if s not in loaded.subjects]
        if not new:
            raise InputValidationError(
                f"No subject outside the model (its subjects: {loaded.subjects}) to map "
                "with --ha-model; add subjects with --participant-label."
            )
        files = {s: files[s] for s in list(loaded.subjects) + new}
    elif len(files) < 2:
        raise InputValidationError(
            f"Hyperalignment needs at least two subjects; found {list(files)}. Add subjects "
            "or drop --participant-label."
        )
    reference = _check_common_grid(files)
    defaults = (
        (loaded.metadata.get("train_runs"), loaded.metadata.get("test_runs"))
        if loaded is not None
        else (None, None)
    )
    train, test = _split_runs(config, files, defaults)
    n_train, tr = _check_timing(config, files, train, test)
    session = _session_entity(config, files)
    entities = {"session": session, "task": config.task, **config.space_entities}
    first = next(iter(files.values()))
    sidecar = space_metadata(
        config.space_entities,
        voxel_size=[float(z) for z in reference.header.get_zooms()[:3]],
        anat_file=first.get("anat") if len(files) == 1 else None,
        bold_file=first["bold"][0],
        dataset_links=config.dataset_links,
    )
    if loaded is not None:
        model = loaded.metadata.get("model_label") or model
        roi, roi_file, roi_uri = _model_roi(config, model_path, model, reference)
        _check_model(config, model_path, loaded, n_train, roi, reference)
    else:
        model = f"{config.task}HA"
        roi, roi_source = _roi_array(config, files, reference)
        if estimator is None:
            _searchlight_checked(config, params, roi, reference, n_train)
        else:
            _core_checked(check_alignment, estimator, n_train, int(roi.sum()))
    _check_data(files, train + test)
    if loaded is None:
        if roi_source is None:
            roi_file, roi_uri = _write_roi(config, files, roi, reference, model, entities, sidecar)
        else:
            roi_file, roi_uri = str(roi_source), bids_uri(roi_source, config.dataset_links)
        if "searchlight_radius" in params:
            params["mask_img"] = roi_file  # a path: the parameters stay JSON-able
    subjects = list(files)
    logger.info(
        "Group %s: subjects %s%s, train runs %s, test runs %s, ROI %s (%d voxels)",
        loaded.method
        if loaded is not None
        else (
            f"searchlight {config.ha_method} ({config.ha_searchlight_radius:g} mm"
            f"{f', {config.searchlight_chunks} chunks' if config.searchlight_chunks > 1 else ''})"
            if "searchlight_radius" in params
            else config.ha_method
        ),
        subjects,
        f" (new: {new}; model {model_path})" if loaded is not None else "",
        train,
        test,
        roi_uri,
        int(roi.sum()),
    )
    workflow = init_group_hyperalignment_wf(
        subjects=subjects,
        output_dir=str(config.output_dir),
        task=config.task,
        space=config.space_entities,
        train_runs=train,
        test_runs=test,
        repetition_time=tr,
        mode=config.bsc,
        segment_length=config.segment_length,
        conditions=config.conditions,
        confounds=config.confounds,
        detrend=config.detrend,
        standardize=config.standardize,
        hrf_delay=config.hrf_delay,
        method=loaded.method if loaded is not None else config.ha_method,
        alignment_params=params,
        n_chunks=config.searchlight_chunks if "searchlight_radius" in params else 1,
        model_file=str(model_path) if loaded is not None else None,
        new_subjects=new if loaded is not None else None,
        model_label=model,
        dataset_links={**config.dataset_links, "": str(config.output_dir)},
        confounds_strategy=config.confounds_strategy,
        confounds_strategy_options=config.confounds_strategy_options,
        session=session,
        sidecar=sidecar,
    )
    inputs = workflow.get_node("inputnode").inputs
    inputs.bold_file = [files[s]["bold"] for s in subjects]
    inputs.confounds_file = [files[s]["confounds"] for s in subjects]
    inputs.events_file = [files[s]["events"] for s in subjects]
    inputs.runs = [run_labels(files[s]) for s in subjects]
    inputs.repetition_time = [
        [float(m["RepetitionTime"]) for m in files[s]["bold_metadata"]] for s in subjects
    ]
    inputs.roi_mask = roi_file
    inputs.roi_mask_uri = roi_uri
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

#: Entities that must agree between the participant maps of one group test, and the
#: option that chooses among them.
_MAP_CHOICES = (
    ("task", "--task"),
    ("space", "--space"),
    ("cohort", "--space"),
    ("res", "--space"),
    ("den", "--space"),
    ("contrast", "--contrast-label"),
    ("stat", "--scoring"),
)


def _value(query_value):
    return Query.NONE if query_value is None else query_value


def find_searchlight_maps(
    output_dir,
    subjects=None,
    task=None,
    space=None,
    contrast=None,
    sessions=None,
):
    """Participant searchlight score maps in ``output_dir``, grouped by session.

    Maps are found with pybids (with and without ``ses-``); ``space`` is fMRIPrep's
    spelling or entities. Returns ``{session or None: [(path, entities), ...]}``, one
    entry per subject in each group.
    """
    from mvpa_flows.interfaces.bids import parse_space

    layout = output_layout(output_dir)
    query = {"desc": "searchlight", "suffix": "statmap", "extension": ".nii.gz"}
    if subjects:
        query["subject"] = list(subjects)
    if task:
        query["task"] = task
    if contrast:
        query["contrast"] = contrast
    if sessions:
        query["session"] = list(sessions)
    if space is not None:
        wanted = parse_space(space)
        query.update({k: v for k, v in wanted.items() if v is not None})
    found = []
    for bids_file in layout.get(**query):
        ents = {k: (str(v) if v is not None else None) for k, v in bids_file.entities.items()}
        if ents.get("stat") == "p" or ents.get("subject") is None:
            continue
        found.append((Path(bids_file.path), ents))
    if not found:
        raise NoInputFilesError(
            f"No participant searchlight maps (*_desc-searchlight_statmap.nii.gz) in "
            f"{output_dir} for the options given; run the participant level with --analyses "
            "searchlight first."
        )
    for key, label in _MAP_CHOICES:
        values = sorted({str(e.get(key)) for _, e in found})
        if len(values) > 1:
            shown = sorted({space_label(e) for _, e in found}) if label == "--space" else values
            raise InputValidationError(
                f"The participant searchlight maps differ in {key} ({shown}); choose one with "
                f"{label}."
            )
    groups = {}
    for path, ents in sorted(found, key=lambda f: str(f[0])):
        groups.setdefault(ents.get("session"), []).append((path, ents))
    for session, maps in groups.items():
        subjects_seen = [e["subject"] for _, e in maps]
        repeated = sorted({s for s in subjects_seen if subjects_seen.count(s) > 1})
        if repeated:
            raise InputValidationError(
                f"Several searchlight maps of sub-{repeated} "
                f"{'in session ' + session if session else 'pooled over sessions'}: "
                f"{[p.name for p, e in maps if e['subject'] in repeated]}; narrow them with "
                "--participant-label or remove the stale outputs."
            )
    return groups


def check_group_space(space_entities, allow_subject_space=False):
    """Refuse group statistics of maps in subject spaces unless allowed."""
    space = space_entities.get("space")
    if space in SUBJECT_SPACES and not allow_subject_space:
        raise InputValidationError(
            f"The participant searchlight maps are in {space_label(space_entities)}, a space "
            "of each subject's own anatomy: the same voxel is not the same brain location "
            "in two subjects, so a group map there means nothing. Run the participant level "
            "in a template space (e.g. --space MNI152NLin2009cAsym:res-2), or pass "
            "--allow-subject-space if the subjects really share one grid."
        )


def _participant_methods(config):
    """Methods texts of the participant searchlight that made the maps."""
    from mvpa_flows.workflows.participant import init_mvpa_wf
    from mvpa_flows.workflows.reports import methods_of

    return methods_of(init_mvpa_wf(output_dir=str(config.output_dir), analyses=["searchlight"]))


def _unit_query(ents):
    keys = ("subject", "session", "task", "space", "cohort", "res", "den")
    return {k: _value(ents.get(k)) for k in keys}


def _reference_image(layout, ents):
    """The reference image (mean EPI, ``_boldref``) beside a participant map, if any."""
    found = layout.get(suffix="boldref", extension=".nii.gz", **_unit_query(ents))
    return [found[0].path] if len(found) == 1 else []


def _analysis_mask(layout, ents, map_name):
    query = {
        k: _value(ents.get(k))
        for k in ("subject", "session", "task", "space", "cohort", "res", "den")  # fmt:skip
    }
    found = layout.get(desc="analysis", suffix="mask", extension=".nii.gz", **query)
    if len(found) != 1:
        raise NoInputFilesError(
            f"The analysis mask of {map_name} is "
            f"{'missing' if not found else 'ambiguous'} in {layout.root} "
            f"({[Path(f.path).name for f in found]}); re-run the participant level."
        )
    return found[0].path


def run_group_searchlight(config, described):
    """Group statistics of the participant searchlight maps; return the exit code."""
    from mvpa_flows.cli.execution import run_workflow
    from mvpa_flows.workflows.group import init_group_searchlight_wf
    from mvpa_flows.workflows.reports import methods_of

    groups = find_searchlight_maps(
        config.output_dir,
        config.participant_label,
        config.task,
        config.space,
        config.contrast_label,
        config.session_label,
    )
    layout = output_layout(config.output_dir)
    workflows = []
    for session, found in groups.items():
        where = f" of session {session}" if session else ""
        if len(found) < 2:
            raise InputValidationError(
                f"Group statistics need at least two subjects' searchlight maps{where}; "
                f"found {[str(p.name) for p, _ in found]}."
            )
        ents = found[0][1]
        space_ents = {k: ents.get(k) for k in ("space", "cohort", "res", "den")}
        check_group_space(space_ents, config.allow_subject_space)
        maps, masks, means, chance, sources = [], [], [], set(), []
        for path, map_ents in found:
            meta = json.loads(Path(str(path).replace(".nii.gz", ".json")).read_text())
            chance.add(float(meta["ChanceLevel"]))
            maps.append(str(path))
            masks.append(_analysis_mask(layout, map_ents, path.name))
            means += _reference_image(layout, map_ents)
            sources.append(meta.get("SpatialReference"))
        if len(chance) != 1:
            raise InputValidationError(
                f"The maps{where} have different chance levels {sorted(chance)}."
            )
        config.task = ents["task"]
        config.space = space_label(space_ents) if space_ents["space"] else None
        sidecar = space_metadata(
            space_ents,
            voxel_size=[float(z) for z in nb.load(maps[0]).header.get_zooms()[:3]],
        )
        if space_ents["space"] in SUBJECT_SPACES and sources[0]:
            sidecar["SpatialReference"] = sources[0]
        workflow = init_group_searchlight_wf(
            output_dir=str(config.output_dir),
            task=ents["task"],
            space=space_ents,
            contrast=ents["contrast"],
            stat=ents["stat"],
            chance=chance.pop(),
            random_seed=config.random_seed,
            dataset_links={**config.dataset_links, "": str(config.output_dir)},
            entities={"session": session},
            sidecar=sidecar,
            name=f"group_searchlight{'_ses_' + session if session else ''}_wf",
        )
        workflow.inputs.inputnode.score_maps = maps
        workflow.inputs.inputnode.mask_files = masks
        workflow.inputs.inputnode.mean_bold = means if len(means) == len(maps) else masks
        # the group's own text first, then how the participant maps were made, then the test
        own = methods_of(workflow)
        described["texts"] += [
            t for t in own[:1] + _participant_methods(config) + own[1:]
            if t not in described["texts"]
        ]  # fmt:skip
        described["subjects"].update(e["subject"] for _, e in found)
        workflows.append(workflow)
        logger.info("Group searchlight statistics%s over %d subjects", where, len(maps))
    return run_workflow(
        _top_workflow(config, *workflows), config, config.output_dir / "logs" / "crash"
    )

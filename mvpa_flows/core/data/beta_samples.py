"""Trial-wise betas as MVPA samples: a subject's runs checked, estimated and stacked.

The per-run estimates (LSS, LSA) come from :mod:`mvpa_flows.core.data.betas`; here they
become labelled samples grouped by run (optionally z-scored within each run), with the
pre-flight check the command line runs before any heavy work, the warning about too-fast
designs and the methods sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from mvpa_flows.core._validation import check_option
from mvpa_flows.core.data.betas import (
    MIN_TRIALS_PER_RUN,
    NEIGHBOUR_CORRELATION_WARNING,
    STANDARDIZE_CHOICES,
    _betaseries_metadata,
    _masked_voxels,
    _RunPlan,
    check_design_options,
    check_trial_counts,
    repetition_time,
)
from mvpa_flows.core.data.cleaning import analysis_mask
from mvpa_flows.core.data.confounds import run_confound_columns
from mvpa_flows.core.data.samples import read_events
from mvpa_flows.core.errors import InputValidationError

__all__ = [
    "beta_samples",
    "check_beta_inputs",
    "collinearity_notes",
    "design_info",
    "load_beta_samples",
    "load_betaseries_samples",
    "methods_text",
]


# ----------------------------------------------------------------------------- samples


def _standardize(betas, name):
    from nilearn.signal import standardize_signal

    if betas.shape[0] < 2:
        raise InputValidationError(
            f"{name} has a single trial, which cannot be z-scored within the run; pass "
            "standardize='none' or drop the run."
        )
    return standardize_signal(betas, standardize="zscore_sample")


def beta_samples(
    betas,
    trials,
    runs=None,
    conditions=None,
    standardize="zscore_run",
    min_trials_per_run=MIN_TRIALS_PER_RUN,
    names=None,
):
    """Stack runs' trial-wise betas into labelled samples.

    Parameters
    ----------
    betas : list of ndarray (n_trials, n_voxels)
        One per run, rows in the order of its trials.
    trials : list of DataFrame
        The runs' events (trial_type and onset per row).
    runs : list, optional
        Run labels (the cross-validation groups); default 1..n.
    conditions : list of str, optional
        trial_type values kept as samples; default every trial_type.
    standardize : {"zscore_run", "none"}
        z-score each voxel over all of a run's trials (before the compared conditions
        are selected).
    min_trials_per_run : int
        Trials of each compared condition every run must hold.
    names : list of str, optional
        Run names for messages (e.g. the events files).

    Returns
    -------
    X : ndarray (n_samples, n_voxels)
    table : DataFrame
        ``run``, ``volume`` (the trial's index in its run's betaseries), ``onset``,
        ``duration``, ``label`` (trial_type).
    info : dict
        Conditions and counts (the keys of the volume samples' info).
    """
    check_option(standardize, "standardize", STANDARDIZE_CHOICES)
    runs = list(runs) if runs is not None else list(range(1, len(betas) + 1))
    names = list(names) if names is not None else [f"run {r}" for r in runs]
    if not (len(betas) == len(trials) == len(runs) == len(names)) or not betas:
        raise InputValidationError(
            f"Got {len(betas)} beta arrays, {len(trials)} trial tables and {len(runs)} run "
            "labels; give one of each per run (at least one run)."
        )
    if len(set(runs)) != len(runs):
        raise InputValidationError(f"Run labels must be unique per series, got {runs}.")
    conditions = _compared_conditions(trials, conditions)
    for table, name in zip(trials, names, strict=True):
        check_trial_counts(table["trial_type"], conditions, min_trials_per_run, name)
    blocks = []
    for values, table, name in zip(betas, trials, names, strict=True):
        if values.shape[0] != len(table):
            raise InputValidationError(
                f"{name} has {values.shape[0]} betas for {len(table)} trials; give the "
                "trial table the betaseries was made from."
            )
        if standardize == "zscore_run":
            values = _standardize(np.asarray(values, dtype=np.float64), name)
        blocks.append(values[_kept(table, conditions)])
    X = np.concatenate(blocks, axis=0)
    table = _sample_table(trials, runs, conditions)
    counts = table.groupby(["run", "label"]).size().unstack(fill_value=0)
    info = {
        "Conditions": conditions,
        "SampleCounts": {str(c): int(counts[c].sum()) for c in counts.columns},
        "SampleCountsPerRun": {
            str(run): {str(c): int(v) for c, v in row.items()} for run, row in counts.iterrows()
        },
        "Runs": [int(r) if isinstance(r, (int, np.integer)) else str(r) for r in runs],
        "TrialsPerRun": [int(len(t)) for t in trials],
        "Standardize": standardize,
        "MinTrialsPerRun": int(min_trials_per_run),
        "NumberOfSamples": int(X.shape[0]),
        "NumberOfVoxels": int(X.shape[1]),
    }
    return X, table, info


def _kept(trials, conditions):
    return np.flatnonzero(trials["trial_type"].astype(str).isin(conditions).to_numpy())


def _sample_table(trials, runs, conditions):
    """run, volume (the trial's index in its run), onset, duration, label."""
    tables = []
    for table, run in zip(trials, runs, strict=True):
        keep = _kept(table, conditions)
        tables.append(
            pd.DataFrame(
                {
                    "run": run,
                    "volume": keep,
                    "onset": table["onset"].to_numpy(dtype=float)[keep],
                    "duration": table["duration"].to_numpy(dtype=float)[keep],
                    "label": table["trial_type"].astype(str).to_numpy()[keep],
                }
            )
        )
    return pd.concat(tables, ignore_index=True)


def _compared_conditions(trials, conditions):
    present = sorted({str(t) for table in trials for t in table["trial_type"]})
    if conditions is None:
        conditions = present
    conditions = list(dict.fromkeys(str(c) for c in conditions))
    if len(conditions) < 2:
        raise InputValidationError(
            f"conditions needs at least two conditions to compare, got {conditions}; name "
            "two or more trial_type values."
        )
    absent = [c for c in conditions if c not in present]
    if absent:
        raise InputValidationError(
            f"Condition(s) {absent} do not occur in any events file; the trial_type "
            f"values present are {present}. Fix conditions."
        )
    return conditions


def load_betaseries_samples(
    betaseries_files,
    trials_files,
    mask_files,
    runs=None,
    conditions=None,
    standardize="zscore_run",
    min_trials_per_run=MIN_TRIALS_PER_RUN,
    metadata=None,
):
    """Samples from betaseries files already written (one 4D image and .tsv per run).

    The analysis mask is the intersection of the runs' masks. ``metadata`` (the runs'
    betaseries sidecar content, e.g. from :func:`run_betaseries`) adds the design to
    the returned info.

    Returns
    -------
    X, table, mask_img, info : as :func:`load_beta_samples`
    """
    if not (len(betaseries_files) == len(trials_files) == len(mask_files)):
        raise InputValidationError(
            f"Got {len(betaseries_files)} betaseries, {len(trials_files)} trial tables and "
            f"{len(mask_files)} masks; give one of each per run."
        )
    imgs = [nb.load(f) for f in betaseries_files]
    names = [Path(f).name for f in betaseries_files]
    mask_img = analysis_mask(
        [nb.load(f) for f in mask_files], imgs, [Path(f).name for f in mask_files], names
    )
    trials = [read_events(f) for f in trials_files]
    for img, table, name in zip(imgs, trials, names, strict=True):
        if img.shape[3] != len(table):
            raise InputValidationError(
                f"{name} has {img.shape[3]} volumes but its trial table has {len(table)} "
                "rows; pair each betaseries with its own .tsv."
            )
    conditions = _compared_conditions(trials, conditions)
    for table, name in zip(trials, trials_files, strict=True):
        check_trial_counts(table["trial_type"], conditions, min_trials_per_run, Path(name).name)
    mask = np.asanyarray(mask_img.dataobj) > 0
    betas = [_masked_voxels(img, mask, name).T for img, name in zip(imgs, names, strict=True)]
    X, table, info = beta_samples(
        betas, trials, runs, conditions, standardize, min_trials_per_run, names
    )
    if metadata:
        info.update(design_info(list(metadata)))
    info["VoxelSize"] = [float(z) for z in imgs[0].header.get_zooms()[:3]]
    return X, table, mask_img, info


def check_beta_inputs(
    bold_files: Sequence[str],
    mask_files: Sequence[str],
    events_files: Sequence[str],
    confounds_files: Sequence[str | None] | None = None,
    runs: Sequence | None = None,
    repetition_times: Sequence[float | None] | None = None,
    conditions: Sequence[str] | None = None,
    confounds: Sequence[str] | None = None,
    min_trials_per_run: int = MIN_TRIALS_PER_RUN,
    **design,
):
    """Validate one subject's runs for beta samples without reading the BOLD data.

    The counterpart of :func:`mvpa_flows.core.data.dataset.check_inputs`: grids
    (headers and masks), TRs, events, compared conditions and their trial counts,
    confound columns, and the rank of every run's design(s).

    Returns
    -------
    dict
        ``runs``, ``bold_imgs`` (lazy images), ``bold_names``, ``mask_img``, ``trs``,
        ``table`` (the samples to come: run, volume, onset, duration, label),
        ``conditions``, ``confound_names``, ``metadata`` (the runs' betaseries sidecar
        content) and ``plans`` (what :func:`load_beta_samples` solves with).
    """
    opts = check_design_options(**design)
    n_runs = len(bold_files)
    if not (len(mask_files) == len(events_files) == n_runs) or n_runs == 0:
        raise InputValidationError(
            f"Got {n_runs} BOLD series, {len(mask_files)} masks and {len(events_files)} "
            "events files; give one of each per run (at least one run)."
        )
    runs = list(runs) if runs else list(range(1, n_runs + 1))
    if len(set(runs)) != n_runs:
        raise InputValidationError(f"Run labels must be unique per series, got {runs}.")
    confounds_files = list(confounds_files) if confounds_files else [None] * n_runs
    repetition_times = list(repetition_times) if repetition_times else [None] * n_runs
    bold_names = [Path(f).name for f in bold_files]
    bold_imgs = [nb.load(f) for f in bold_files]
    mask_img = analysis_mask(
        [nb.load(f) for f in mask_files], bold_imgs, [Path(f).name for f in mask_files], bold_names
    )
    trs = [repetition_time(f, t) for f, t in zip(bold_files, repetition_times, strict=True)]
    trials = [read_events(f) for f in events_files]
    event_names = [Path(f).name for f in events_files]
    conditions = _compared_conditions(trials, conditions)
    for table, name in zip(trials, event_names, strict=True):
        check_trial_counts(table["trial_type"], conditions, min_trials_per_run, name)
    plans = []
    for img, name, events, tr, conf, ev_name in zip(
        bold_imgs, bold_names, trials, trs, confounds_files, event_names, strict=True
    ):
        values, names = run_confound_columns(conf, confounds, img.shape[3], name)
        plans.append(_RunPlan(events, img.shape[3], tr, values, names, opts, ev_name))
    return {
        "runs": runs,
        "bold_imgs": bold_imgs,
        "bold_names": bold_names,
        "mask_img": mask_img,
        "trs": trs,
        "table": _sample_table([plan.events for plan in plans], runs, conditions),
        "conditions": conditions,
        "confound_names": sorted({c for plan in plans for c in plan.confound_names}),
        "metadata": [_betaseries_metadata(plan, conditions) for plan in plans],
        "plans": plans,
    }


def collinearity_notes(metadata, names, threshold=NEIGHBOUR_CORRELATION_WARNING):
    """Warnings for runs whose neighbouring trials' regressors correlate above ``threshold``.

    Parameters
    ----------
    metadata : list of dict
        The runs' betaseries metadata (``NeighbourCorrelationMax``), e.g. the
        ``metadata`` of :func:`check_beta_inputs`.
    names : list of str
        Run names for the messages (e.g. the events files).

    Returns
    -------
    list of str
        One message per run above ``threshold`` (empty when none is).
    """
    notes = []
    for meta, name in zip(metadata, names, strict=True):
        value = meta.get("NeighbourCorrelationMax")
        if value is not None and value > threshold:
            notes.append(
                f"{name}: the regressors of neighbouring trials correlate up to {value:.2f} "
                f"(median {meta.get('NeighbourCorrelationMedian', float('nan')):.2f}); above "
                f"{threshold:g} trial-wise betas are unstable ({meta.get('Method', 'LSS')} "
                "estimates of close trials share variance). Longer or jittered inter-trial "
                "intervals make better designs; LSS suffers less than LSA."
            )
    return notes


def load_beta_samples(
    bold_files: Sequence[str],
    mask_files: Sequence[str],
    events_files: Sequence[str],
    confounds_files: Sequence[str | None] | None = None,
    runs: Sequence | None = None,
    repetition_times: Sequence[float | None] | None = None,
    conditions: Sequence[str] | None = None,
    confounds: Sequence[str] | None = None,
    standardize: str = "zscore_run",
    min_trials_per_run: int = MIN_TRIALS_PER_RUN,
    **design,
):
    """Read one subject's runs and return trial-wise beta samples.

    The counterpart of :func:`mvpa_flows.core.data.dataset.load_samples` for
    event-related designs: confounds enter each GLM as regressors and drift is modelled
    in the design (no separate cleaning). Every run is checked first
    (:func:`check_beta_inputs`), before any BOLD data are read.

    Parameters
    ----------
    bold_files, mask_files, events_files : one per run, aligned
    confounds_files : one per run (None where absent), or None
    runs : run labels (cross-validation groups); default 1..n
    repetition_times : per run (None entries too); default the BOLD sidecars'
        RepetitionTime
    conditions : trial_type values kept as samples; default every trial_type
    confounds : confound columns (None: motion when present; ``["none"]``: none)
    standardize : "zscore_run" (each voxel over each run's trials) or "none"
    min_trials_per_run : trials of each compared condition every run must hold
    **design : see :func:`trial_betas`

    Returns
    -------
    X : ndarray (n_samples, n_voxels)
    table : DataFrame with run, volume (trial index in the run), onset, duration, label
    mask_img : the analysis mask (intersection of the runs' masks)
    info : dict describing what was used (for sidecars and reports)
    """
    check_option(standardize, "standardize", STANDARDIZE_CHOICES)
    checked = check_beta_inputs(
        bold_files, mask_files, events_files, confounds_files, runs, repetition_times,
        conditions, confounds, min_trials_per_run, **design,
    )  # fmt:skip
    mask = np.asanyarray(checked["mask_img"].dataobj) > 0
    plans = checked["plans"]
    betas = [
        plan.betas_of_voxels(_masked_voxels(img, mask, name))
        for plan, img, name in zip(plans, checked["bold_imgs"], checked["bold_names"], strict=True)
    ]
    X, table, info = beta_samples(
        betas,
        [plan.events for plan in plans],
        checked["runs"],
        checked["conditions"],
        standardize,
        min_trials_per_run,
        [Path(f).name for f in events_files],
    )
    info.update(design_info(checked["metadata"]))
    info["VoxelSize"] = [float(z) for z in checked["bold_imgs"][0].header.get_zooms()[:3]]
    return X, table, checked["mask_img"], info


_DESIGN_KEYS = (
    "Method",
    "HRFModel",
    "DriftModel",
    "HighPass",
    "DriftOrder",
    "SliceTimeRef",
    "NoiseModel",
    "SignalScaling",
    "MinOnset",
    "Oversampling",
    "DesignSoftware",
)


def design_info(metadata):
    """Samples' info entries from the runs' betaseries metadata (one dict per run):
    ``Samples`` (the method), ``Design`` (the options), ``VolumesPerRun``,
    ``RepetitionTime``, ``Confounds`` (union over runs) and ``TrialsPerRun``."""
    first = metadata[0]
    return {
        "Samples": first["Method"].lower(),
        "Design": {k: first[k] for k in _DESIGN_KEYS if k in first},
        "VolumesPerRun": [int(m["NumberOfVolumes"]) for m in metadata],
        "RepetitionTime": [float(m["RepetitionTime"]) for m in metadata],
        "Confounds": sorted({c for m in metadata for c in m.get("Confounds", [])}),
        "TrialsPerRun": [int(m["NumberOfTrials"]) for m in metadata],
    }


def methods_text(info):
    """One methods sentence describing beta samples, from their info (see
    :func:`design_info`); citation keys in brackets (``[mumford2012]``, ``[nilearn]``)."""
    design = info.get("Design", {})
    confounds = info.get("Confounds") or []
    if design.get("Method") == "LSA":
        model = (
            "one general linear model (GLM) per run with one regressor per trial "
            "(least-squares-all)"
        )
    else:
        model = (
            "one general linear model (GLM) per trial holding that trial's regressor and "
            "one regressor per condition for the run's other trials (least-squares-separate "
            "[mumford2012])"
        )
    drift = design.get("DriftModel", "cosine")
    drift_text = {
        "cosine": f"a cosine drift basis (high-pass {design.get('HighPass')} Hz)",
        "polynomial": f"a polynomial drift of order {design.get('DriftOrder')}",
    }.get(drift, "a constant (no drift model)")
    confound_text = (
        f"the confounds {', '.join(confounds)} as regressors" if confounds else "no confounds"
    )
    text = (
        f"Samples were trial-wise response estimates (betas): for each run, {model}, built "
        f"with nilearn's make_first_level_design_matrix [nilearn] ({design.get('HRFModel')} "
        f"HRF, {drift_text}, {confound_text}) and fitted by ordinary least squares to the "
        "unscaled BOLD series of every voxel. Confounds entered the GLM as regressors and "
        "drift was modelled in the design; no separate cleaning step was applied."
    )
    if info.get("Standardize") == "zscore_run":
        text += " Each voxel's betas were z-scored over the trials of each run."
    return text

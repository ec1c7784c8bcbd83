"""From one subject's files to the labelled, cleaned sample matrix."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from mvpa_flows.core.data.cleaning import (
    analysis_mask,
    check_run_data,
    check_same_grid,
    clean_run,
    masked_run_data,
    prepare_samples,
)
from mvpa_flows.core.data.confounds import (
    check_strategy,
    is_pattern,
    run_confound_columns,
    strategy_confounds,
)
from mvpa_flows.core.data.samples import build_sample_table, read_events, run_keys
from mvpa_flows.core.errors import InputValidationError


def _repetition_time(img, given, name):
    if given:
        return float(given)
    zooms = img.header.get_zooms()
    if len(zooms) > 3 and zooms[3] > 0:
        return float(zooms[3])
    raise InputValidationError(
        f"No repetition time for {name}: pass it (RepetitionTime in the BOLD sidecar) or "
        "fix the NIfTI header's fourth zoom."
    )


def _load_image(path, what):
    try:
        return nb.load(path)
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for bad files
        raise InputValidationError(
            f"{what} {Path(path).name} cannot be opened as an image ({type(err).__name__}: "
            f"{err}); the file is truncated, corrupt or not NIfTI. Copy it again from its "
            "source."
        ) from None


def run_confounds(
    bold_file,
    confounds_file,
    n_volumes,
    confounds=None,
    confounds_strategy=None,
    confounds_strategy_options=None,
):
    """One run's confounds: explicit columns and patterns, or a nilearn strategy.

    Returns
    -------
    values : ndarray (n_volumes, k) or None
    names : list of str
        The columns regressed in this run.
    sample_mask : ndarray of int or None
        Volumes kept (a strategy may censor some).
    """
    name = Path(bold_file).name
    if confounds_strategy is not None:
        if confounds_file is None:
            raise InputValidationError(
                f"The {confounds_strategy!r} confounds strategy needs fMRIPrep's "
                f"desc-confounds_timeseries.tsv for {name}; none was found. Add the "
                "confounds, or drop the strategy."
            )
        return strategy_confounds(
            bold_file, confounds_strategy, confounds_strategy_options, n_volumes
        )
    values, names = run_confound_columns(confounds_file, confounds, n_volumes, name)
    return values, names, None


def check_inputs(
    bold_files: Sequence[str],
    mask_files: Sequence[str],
    events_files: Sequence[str],
    confounds_files: Sequence[str | None] | None = None,
    runs: Sequence | None = None,
    repetition_times: Sequence[float] | None = None,
    conditions: Sequence[str] | None = None,
    confounds: Sequence[str] | None = None,
    hrf_delay: float = 0.0,
    sessions: Sequence | None = None,
    confounds_strategy: str | None = None,
    confounds_strategy_options: dict | None = None,
    check_data: bool = False,
):
    """Validate one subject's inputs before any heavy work.

    Checks grids (headers and masks), events, conditions and confounds, so a run fails
    fast with a clear message. With ``check_data`` every BOLD series is also read once
    inside the analysis mask: a truncated file or non-finite voxels are reported here,
    naming the file, rather than halfway through the analysis.

    Parameters
    ----------
    sessions : session label of each run (None: no sessions); runs are keyed by
        (session, run) and the cross-validation groups are session x run
    confounds_strategy, confounds_strategy_options : a nilearn denoising strategy
        (see :func:`mvpa_flows.core.data.confounds.strategy_confounds`), instead of
        ``confounds``

    Returns
    -------
    dict
        ``runs``, ``sessions``, ``groups`` (CV group per run), ``bold_imgs`` (lazy
        images), ``mask_img``, ``trs``, ``table``, ``conditions``, ``confounds`` (arrays
        per run), ``confound_names`` (union), ``confounds_per_run`` (names per group),
        ``sample_masks`` and ``notes`` (the warnings raised about events and confounds).
    """
    n_runs = len(bold_files)
    if not (len(mask_files) == len(events_files) == n_runs) or n_runs == 0:
        raise InputValidationError(
            f"Got {n_runs} BOLD series, {len(mask_files)} masks and {len(events_files)} "
            "events files; give one of each per run (at least one run)."
        )
    if confounds_strategy is not None:
        if confounds and [c for c in confounds if c != "none"]:
            raise InputValidationError(
                f"Give either confounds ({list(confounds)}) or confounds_strategy "
                f"({confounds_strategy!r}), not both."
            )
        check_strategy(confounds_strategy, confounds_strategy_options)
    runs = list(runs) if runs else list(range(1, n_runs + 1))
    sessions = list(sessions) if sessions is not None else [None] * n_runs
    bold_names = [Path(f).name for f in bold_files]
    keys = list(zip(sessions, runs, strict=True))
    if len(set(keys)) != n_runs:
        repeated = sorted({k for k in keys if keys.count(k) > 1}, key=str)
        files = [b for b, k in zip(bold_names, keys, strict=True) if k in repeated]
        where = (
            "per session"
            if any(s is not None for s in sessions)
            else "(the files carry no ses- entity)"
        )
        raise InputValidationError(
            f"Runs must be unique {where}: (session, run) {repeated} label several BOLD "
            f"series {files}. Give each series its own run- entity, or select one "
            "acquisition with --bids-filter-file."
        )
    groups = run_keys(runs, sessions)
    confounds_files = list(confounds_files) if confounds_files else [None] * n_runs
    repetition_times = list(repetition_times) if repetition_times else [None] * n_runs
    bold_imgs = [_load_image(f, "BOLD series") for f in bold_files]
    mask_imgs = [_load_image(f, "Brain mask") for f in mask_files]
    try:
        mask_img = analysis_mask(
            mask_imgs, bold_imgs, [Path(f).name for f in mask_files], bold_names
        )
    except InputValidationError as err:
        if len({s for s in sessions if s is not None}) > 1 and "not on the grid" in str(err):
            raise InputValidationError(
                f"{err} The runs come from sessions {sorted({s for s in sessions if s})}: "
                "pool them in a common space (--space T1w or a template), or analyse each "
                "session on its own (--per-session)."
            ) from None
        raise
    trs = [
        _repetition_time(img, tr, name)
        for img, tr, name in zip(bold_imgs, repetition_times, bold_names, strict=True)
    ]
    confound_arrays, used, per_run, sample_masks = [], [], {}, []
    for bold, path, img, group in zip(bold_files, confounds_files, bold_imgs, groups,
                                      strict=True):  # fmt:skip
        values, names, kept = run_confounds(
            bold, path, img.shape[3], confounds, confounds_strategy, confounds_strategy_options
        )
        confound_arrays.append(values)
        sample_masks.append(kept)
        per_run[str(group)] = names
        used += names
    notes = []
    patterns = [c for c in (confounds or []) if is_pattern(c)]
    unmatched = [p for p in patterns if not any(_fnmatch_any(p, n) for n in per_run.values())]
    if unmatched:
        notes.append(
            f"Confound pattern(s) {unmatched} match no column in any run: nothing regressed "
            "for them."
        )
    if confounds is None and confounds_strategy is None and not used:
        notes.append(
            "No confounds regressed: the six motion parameters (trans_x ... rot_z) are not "
            "in every run's confounds table (or there is none)."
        )
    events = [read_events(f) for f in events_files]
    if conditions is None:
        conditions = sorted({t for ev in events for t in ev["trial_type"].unique()})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = build_sample_table(
            events,
            [img.shape[3] for img in bold_imgs],
            trs,
            runs,
            conditions,
            hrf_delay=hrf_delay,
            events_files=[Path(f).name for f in events_files],
            sessions=sessions,
            sample_masks=sample_masks,
        )
    notes += [str(w.message) for w in caught]
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    if check_data:
        mask = np.asanyarray(mask_img.dataobj) > 0
        for img, name in zip(bold_imgs, bold_names, strict=True):
            check_run_data(img, mask, name)
    return {
        "runs": runs,
        "sessions": sessions,
        "groups": groups,
        "bold_imgs": bold_imgs,
        "bold_names": bold_names,
        "mask_img": mask_img,
        "trs": trs,
        "table": table,
        "conditions": list(conditions),
        "confounds": confound_arrays,
        "confound_names": sorted(set(used)),
        "confounds_per_run": per_run,
        "sample_masks": sample_masks,
        "notes": notes,
    }


def _fnmatch_any(pattern, names):
    import fnmatch

    return any(fnmatch.fnmatchcase(n, pattern) for n in names)


def load_samples(
    bold_files: Sequence[str],
    mask_files: Sequence[str],
    events_files: Sequence[str],
    confounds_files: Sequence[str | None] | None = None,
    runs: Sequence | None = None,
    repetition_times: Sequence[float] | None = None,
    conditions: Sequence[str] | None = None,
    confounds: Sequence[str] | None = None,
    detrend: bool = True,
    standardize: str = "zscore_run",
    hrf_delay: float = 0.0,
    sessions: Sequence | None = None,
    confounds_strategy: str | None = None,
    confounds_strategy_options: dict | None = None,
):
    """Read one subject's runs and return cleaned, labelled samples.

    Parameters
    ----------
    bold_files, mask_files, events_files : one per run, aligned
    confounds_files : one per run (``None`` where absent), or ``None``
    runs : run labels; default 1..n
    repetition_times : per run; default from the NIfTI header
    conditions : trial_type values to keep; default every trial_type in the events
    confounds : confound columns or shell-style patterns (``None``: motion when present;
        ``["none"]``: none)
    detrend, standardize, hrf_delay : see :func:`mvpa_flows.core.data.cleaning.clean_run`
        and :func:`mvpa_flows.core.data.samples.label_volumes`
    sessions : session label per run; the cross-validation groups are then session x run
    confounds_strategy, confounds_strategy_options : a nilearn denoising strategy instead
        of ``confounds``; volumes it censors are left out of the samples

    Returns
    -------
    X : ndarray (n_samples, n_voxels)
    table : DataFrame with [session,] run, volume, onset, label
    mask_img : the analysis mask (intersection of the runs' masks)
    info : dict describing what was used (for sidecars and reports)
    """
    checked = check_inputs(
        bold_files,
        mask_files,
        events_files,
        confounds_files,
        runs,
        repetition_times,
        conditions,
        confounds,
        hrf_delay,
        sessions=sessions,
        confounds_strategy=confounds_strategy,
        confounds_strategy_options=confounds_strategy_options,
    )
    table, runs, bold_imgs = checked["table"], checked["runs"], checked["bold_imgs"]
    X = prepare_samples(
        bold_imgs,
        checked["mask_img"],
        table,
        runs,
        confounds=checked["confounds"],
        detrend=detrend,
        standardize=standardize,
        t_r=checked["trs"],
        bold_names=checked["bold_names"],
        sample_masks=checked["sample_masks"],
        groups=checked["groups"],
    )
    return X, table, checked["mask_img"], samples_info(checked, X, detrend, standardize,
                                                       hrf_delay, confounds_strategy,
                                                       confounds_strategy_options)  # fmt:skip


def samples_info(checked, X, detrend, standardize, hrf_delay, confounds_strategy=None,
                 confounds_strategy_options=None):  # fmt:skip
    """What was used to make the samples, for sidecars and reports."""
    from mvpa_flows.core.data.samples import sample_groups

    table, bold_imgs = checked["table"], checked["bold_imgs"]
    groups = [str(g) for g in sample_groups(table)]
    counts = (
        pd.DataFrame({"group": groups, "label": table["label"].to_numpy()})
        .groupby(["group", "label"], sort=False)
        .size()
        .unstack(fill_value=0)
    )
    order = [str(g) for g in checked["groups"] if str(g) in counts.index]
    info = {
        "Conditions": checked["conditions"],
        "SampleCounts": {str(c): int(counts[c].sum()) for c in counts.columns},
        "SampleCountsPerRun": {
            run: {str(c): int(v) for c, v in counts.loc[run].items()} for run in order
        },
        "Runs": [_jsonable_run(r) for r in checked["runs"]],
        "VolumesPerRun": [int(img.shape[3]) for img in bold_imgs],
        "RepetitionTime": checked["trs"],
        "Confounds": checked["confound_names"],
        "ConfoundsPerRun": checked["confounds_per_run"],
        "Detrend": bool(detrend),
        "Standardize": standardize,
        "HRFDelay": float(hrf_delay),
        "NumberOfSamples": int(X.shape[0]),
        "NumberOfVoxels": int(X.shape[1]),
        "VoxelSize": [float(z) for z in bold_imgs[0].header.get_zooms()[:3]],
    }
    if any(s is not None for s in checked["sessions"]):
        info["Sessions"] = [s for s in checked["sessions"]]
        info["CrossValidationGroups"] = "session x run"
    if confounds_strategy is not None:
        info["ConfoundsStrategy"] = {
            "Name": confounds_strategy,
            "Options": dict(confounds_strategy_options or {}),
            "Implementation": "nilearn.interfaces.fmriprep.load_confounds_strategy",
        }
    censored = {
        str(g): int(img.shape[3] - len(kept))
        for g, img, kept in zip(
            checked["groups"], bold_imgs, checked["sample_masks"], strict=True
        )  # fmt:skip
        if kept is not None
    }
    if censored:
        info["CensoredVolumesPerRun"] = censored
    if checked.get("notes"):
        info["Warnings"] = list(checked["notes"])
    return info


def _jsonable_run(run):
    return int(run) if isinstance(run, (int, np.integer)) else str(run)


def mean_epi(bold_file):
    """Mean over time of a BOLD series (the background of the report's figures)."""
    from nilearn.image import mean_img

    return mean_img(bold_file, copy_header=True)


def load_timeseries(
    bold_files: Sequence[str],
    mask_file: str,
    confounds_files: Sequence[str | None] | None = None,
    repetition_times: Sequence[float] | None = None,
    confounds: Sequence[str] | None = None,
    detrend: bool = True,
    standardize: str = "zscore_run",
    confounds_strategy: str | None = None,
    confounds_strategy_options: dict | None = None,
    return_confounds: bool = False,
):
    """Cleaned time series of whole runs inside ``mask_file`` (e.g. a movie ROI).

    Each run is cleaned like the participant level (confounds, detrending, z-scoring
    within the run) and every volume is kept, so a confounds strategy that censors
    volumes is refused (the subjects' time points would no longer correspond).

    Returns
    -------
    list of ndarray
        One (n_volumes, n_voxels) array per run, in the order of ``bold_files``.
    list of list of str
        With ``return_confounds``: the confound columns regressed in each run.
    """
    mask_img = nb.load(mask_file)
    mask = np.asarray(mask_img.dataobj) > 0
    confounds_files = list(confounds_files) if confounds_files else [None] * len(bold_files)
    repetition_times = list(repetition_times) if repetition_times else [None] * len(bold_files)
    series, regressed = [], []
    for path, conf_path, tr in zip(bold_files, confounds_files, repetition_times, strict=True):
        img = _load_image(path, "BOLD series")
        name = Path(path).name
        check_same_grid(img, mask_img, name, f"the mask {Path(mask_file).name}")
        values, names, kept = run_confounds(
            path, conf_path, img.shape[3], confounds, confounds_strategy,
            confounds_strategy_options,
        )  # fmt:skip
        if kept is not None:
            raise InputValidationError(
                f"The {confounds_strategy!r} confounds strategy censors "
                f"{img.shape[3] - len(kept)} volume(s) of {name}; hyperalignment needs every "
                "time point of every subject. Regress the columns instead of censoring: "
                "explicit confounds (e.g. the motion parameters, 'a_comp_cor_*', "
                "'non_steady_state_outlier*')."
            )
        data = masked_run_data(img, mask, name)
        series.append(
            clean_run(
                data,
                values,
                detrend=detrend,
                standardize=standardize,
                t_r=_repetition_time(img, tr, name),
            )
        )
        regressed.append(names)
    return (series, regressed) if return_confounds else series

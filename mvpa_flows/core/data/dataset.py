"""From one subject's files to the labelled, cleaned sample matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from mvpa_flows.core.data.cleaning import (
    analysis_mask,
    check_same_grid,
    clean_run,
    masked_run_data,
    prepare_samples,
    select_confounds,
)
from mvpa_flows.core.data.samples import build_sample_table, read_events
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
):
    """Validate one subject's inputs without reading the BOLD data.

    Checks grids (headers and masks only), events, conditions and confound columns, so
    a run fails fast with a clear message before any heavy work.

    Returns
    -------
    dict
        ``runs``, ``bold_imgs`` (lazy images), ``mask_img``, ``trs``, ``table``,
        ``conditions``, ``confounds`` (arrays per run) and ``confound_names``.
    """
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
    mask_imgs = [nb.load(f) for f in mask_files]
    mask_img = analysis_mask(mask_imgs, bold_imgs, [Path(f).name for f in mask_files], bold_names)
    trs = [
        _repetition_time(img, tr, name)
        for img, tr, name in zip(bold_imgs, repetition_times, bold_names, strict=True)
    ]
    events = [read_events(f) for f in events_files]
    if conditions is None:
        conditions = sorted({t for ev in events for t in ev["trial_type"].unique()})
    table = build_sample_table(
        events,
        [img.shape[3] for img in bold_imgs],
        trs,
        runs,
        conditions,
        hrf_delay=hrf_delay,
        events_files=[Path(f).name for f in events_files],
    )
    confound_arrays, used = [], set()
    for path, img, name in zip(confounds_files, bold_imgs, bold_names, strict=True):
        frame = pd.read_csv(path, sep="\t", na_values=["n/a"]) if path else None
        values, names = select_confounds(
            frame, confounds, source=Path(path).name if path else name
        )
        if values is not None and values.shape[0] != img.shape[3]:
            raise InputValidationError(
                f"{Path(path).name} has {values.shape[0]} rows but {name} has "
                f"{img.shape[3]} volumes; use the confounds file of the same run."
            )
        confound_arrays.append(values)
        used.update(names)
    return {
        "runs": runs,
        "bold_imgs": bold_imgs,
        "bold_names": bold_names,
        "mask_img": mask_img,
        "trs": trs,
        "table": table,
        "conditions": list(conditions),
        "confounds": confound_arrays,
        "confound_names": sorted(used),
    }


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
):
    """Read one subject's runs and return cleaned, labelled samples.

    Parameters
    ----------
    bold_files, mask_files, events_files : one per run, aligned
    confounds_files : one per run (``None`` where absent), or ``None``
    runs : run labels (cross-validation groups); default 1..n
    repetition_times : per run; default from the NIfTI header
    conditions : trial_type values to keep; default every trial_type in the events
    confounds : confound columns (``None``: motion when present; ``["none"]``: none)
    detrend, standardize, hrf_delay : see :func:`mvpa_flows.core.data.cleaning.clean_run`
        and :func:`mvpa_flows.core.data.samples.label_volumes`

    Returns
    -------
    X : ndarray (n_samples, n_voxels)
    table : DataFrame with run, volume, onset, label
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
    )
    counts = table.groupby(["run", "label"]).size().unstack(fill_value=0)
    info = {
        "Conditions": checked["conditions"],
        "SampleCounts": {str(c): int(counts[c].sum()) for c in counts.columns},
        "SampleCountsPerRun": {
            str(run): {str(c): int(v) for c, v in row.items()} for run, row in counts.iterrows()
        },
        "Runs": [int(r) if isinstance(r, (int, np.integer)) else str(r) for r in runs],
        "VolumesPerRun": [int(img.shape[3]) for img in bold_imgs],
        "RepetitionTime": checked["trs"],
        "Confounds": checked["confound_names"],
        "Detrend": bool(detrend),
        "Standardize": standardize,
        "HRFDelay": float(hrf_delay),
        "NumberOfSamples": int(X.shape[0]),
        "NumberOfVoxels": int(X.shape[1]),
        "VoxelSize": [float(z) for z in bold_imgs[0].header.get_zooms()[:3]],
    }
    return X, table, checked["mask_img"], info


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
):
    """Cleaned time series of whole runs inside ``mask_file`` (e.g. a movie ROI).

    Each run is cleaned like the participant level (confounds, detrending, z-scoring
    within the run) and every volume is kept.

    Returns
    -------
    list of ndarray
        One (n_volumes, n_voxels) array per run, in the order of ``bold_files``.
    """
    mask_img = nb.load(mask_file)
    mask = np.asarray(mask_img.dataobj) > 0
    confounds_files = list(confounds_files) if confounds_files else [None] * len(bold_files)
    repetition_times = list(repetition_times) if repetition_times else [None] * len(bold_files)
    series = []
    for path, conf_path, tr in zip(bold_files, confounds_files, repetition_times, strict=True):
        img = nb.load(path)
        name = Path(path).name
        check_same_grid(img, mask_img, name, f"the mask {Path(mask_file).name}")
        frame = pd.read_csv(conf_path, sep="\t", na_values=["n/a"]) if conf_path else None
        values, _ = select_confounds(frame, confounds, source=Path(conf_path or name).name)
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
    return series

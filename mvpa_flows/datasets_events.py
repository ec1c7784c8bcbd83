"""Synthetic rapid event-related data: overlapping trial responses, two or more conditions.

Trials of a few seconds follow each other every 3-5 s (jittered), so their hemodynamic
responses overlap and no volume belongs to a single trial. Each condition has its own
voxel pattern; each trial's response is that pattern plus trial-to-trial variability,
on top of a baseline, slow drift, motion-related signal and AR(1) noise. The responses
are built with nilearn's design-matrix code (SPM's HRF, while analyses default to
Glover's, so the generating and fitted models differ slightly). Everything is seeded.

:func:`make_event_related_data` returns arrays; :func:`make_event_related_dataset`
writes a BIDS dataset with fMRIPrep-style derivatives like
:func:`mvpa_flows.datasets.make_synthetic_dataset`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def rapid_events(rng, n_volumes, tr, conditions, isi=(3.0, 5.0), duration=1.0, lead=4.0):
    """Events every ``isi`` seconds (uniform jitter), conditions in random order.

    Trials start after ``lead`` seconds and stop 16 s before the end of the run so that
    every response is sampled.
    """
    onsets, t = [], float(lead)
    end = (n_volumes - 1) * tr - 16.0
    while t < end:
        onsets.append(round(t, 3))
        t += rng.uniform(*isi)
    n = len(onsets)
    labels = np.resize(np.asarray(conditions, dtype=object), n)
    rng.shuffle(labels)
    return pd.DataFrame({"onset": onsets, "duration": float(duration), "trial_type": labels})


def _responses(events, n_volumes, tr, hrf_model="spm"):
    """(n_volumes, n_trials) responses of each trial, from nilearn's design code."""
    from nilearn.glm.first_level import make_first_level_design_matrix

    names = [f"trial{i:05d}" for i in range(len(events))]
    trial_events = events.assign(trial_type=names)[["onset", "duration", "trial_type"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        design = make_first_level_design_matrix(
            np.arange(n_volumes) * tr, trial_events, hrf_model=hrf_model, drift_model=None
        )
    return design[names].to_numpy()


def simulate_run(
    rng,
    patterns,
    conditions,
    n_volumes=200,
    tr=2.0,
    isi=(3.0, 5.0),
    duration=1.0,
    trial_noise=0.5,
    noise=1.0,
    ar=0.3,
    drift=1.0,
    motion_maps=None,
):
    """One run of rapid event-related data in signal-change units (no baseline).

    Parameters
    ----------
    rng : numpy.random.Generator
    patterns : ndarray (n_conditions, n_voxels)
        Response amplitude of each condition at each voxel.
    conditions : list of str
        trial_type of each row of ``patterns``.
    trial_noise : float
        SD of each trial's deviation from its condition's pattern, per voxel.
    noise, ar : float
        SD and AR(1) coefficient of the measurement noise.
    drift : float
        Amplitude of a random linear-plus-cosine drift per voxel.
    motion_maps : ndarray (6, n_voxels), optional
        Voxel loadings of six random-walk motion parameters (returned as confounds).

    Returns
    -------
    data : ndarray (n_volumes, n_voxels)
    events : DataFrame (onset, duration, trial_type)
    motion : ndarray (n_volumes, 6) or None
    """
    n_voxels = patterns.shape[1]
    events = rapid_events(rng, n_volumes, tr, conditions, isi, duration)
    codes = np.array([list(conditions).index(t) for t in events["trial_type"]])
    amplitudes = patterns[codes] + trial_noise * rng.standard_normal((len(events), n_voxels))
    data = _responses(events, n_volumes, tr) @ amplitudes
    innovations = rng.standard_normal((n_volumes, n_voxels)) * noise * np.sqrt(1 - ar**2)
    series = np.empty_like(innovations)
    series[0] = innovations[0] / np.sqrt(1 - ar**2)
    for t in range(1, n_volumes):
        series[t] = ar * series[t - 1] + innovations[t]
    time = np.linspace(-1, 1, n_volumes)[:, None]
    slow = np.cos(np.pi * (time + 1) / 2)
    data += series + drift * (
        time * rng.standard_normal(n_voxels) + slow * rng.standard_normal(n_voxels)
    )
    motion = None
    if motion_maps is not None:
        motion = np.cumsum(rng.standard_normal((n_volumes, len(MOTION))) * 0.05, axis=0)
        data += motion @ motion_maps
    return data, events, motion


def make_event_related_data(
    n_runs=4,
    n_volumes=200,
    tr=2.0,
    n_voxels=50,
    conditions=("a", "b"),
    signal=1.0,
    trial_noise=0.5,
    noise=1.0,
    isi=(3.0, 5.0),
    duration=1.0,
    seed=0,
):
    """Rapid event-related runs as arrays (signal-change units around 0).

    Each condition's pattern is random with SD ``signal`` at every voxel, so the
    conditions differ in their multivoxel pattern, not in their mean.

    Returns
    -------
    dict
        ``data`` (list of (n_volumes, n_voxels) arrays), ``events`` (list of
        DataFrames), ``patterns`` (n_conditions, n_voxels), ``tr``, ``conditions``.
    """
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((len(conditions), n_voxels)) * signal
    patterns -= patterns.mean(axis=0)  # no univariate difference between conditions
    data, events = [], []
    for _ in range(n_runs):
        run, ev, _ = simulate_run(
            rng, patterns, list(conditions), n_volumes, tr, isi, duration, trial_noise, noise
        )
        data.append(run)
        events.append(ev)
    return {
        "data": data,
        "events": events,
        "patterns": patterns,
        "tr": tr,
        "conditions": list(conditions),
    }


def _write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def make_event_related_dataset(
    root,
    n_subjects=1,
    n_runs=3,
    conditions=("face", "house"),
    shape=(8, 9, 5),
    voxel_size=(3.0, 3.0, 3.0),
    tr=2.0,
    n_volumes=150,
    signal=1.5,
    trial_noise=0.5,
    isi=(3.0, 5.0),
    duration=1.0,
    task="rapid",
    seed=0,
):
    """Write a rapid event-related BIDS dataset with fMRIPrep-style derivatives.

    A box-shaped brain fills the grid; a patch in its middle carries the conditions'
    patterns. Derivatives hold ``desc-preproc_bold`` (baseline 1000, responses in
    percent signal change), its JSON sidecar (RepetitionTime), ``desc-brain_mask`` and
    ``desc-confounds_timeseries`` (the six motion parameters driving part of the
    signal). Run labels are ``run-1``, ``run-2``...

    Returns
    -------
    dict
        ``bids_dir``, ``fmriprep_dir``, ``subjects``, ``task``, ``conditions``, ``tr``
        and ``patch`` (boolean array of the voxels carrying patterns).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    fmriprep = root / "derivatives" / "fmriprep"
    affine = np.diag([*voxel_size, 1.0])
    affine[:3, 3] = -np.array(shape) * np.array(voxel_size) / 2
    brain = np.ones(shape, dtype=bool)
    patch = np.zeros(shape, dtype=bool)
    lo = [s // 4 for s in shape]
    patch[tuple(slice(a, s - a) for a, s in zip(lo, shape, strict=True))] = True
    _write_json(root / "dataset_description.json", {
        "Name": "mvpa_flows synthetic rapid event-related dataset",
        "BIDSVersion": "1.9.0", "DatasetType": "raw", "License": "CC0",
        "Authors": ["mvpa_flows"],
    })  # fmt:skip
    _write_json(root / f"task-{task}_bold.json", {"TaskName": task, "RepetitionTime": tr})
    _write_json(fmriprep / "dataset_description.json", {
        "Name": "Synthetic fMRIPrep-style derivatives", "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "mvpa_flows.datasets_events.make_event_related_dataset"}],
    })  # fmt:skip
    subjects = [f"{i + 1:02d}" for i in range(n_subjects)]
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects]}).to_csv(
        root / "participants.tsv", sep="\t", index=False
    )
    n_vox = int(brain.sum())
    in_patch = patch[brain]
    for subject in subjects:
        patterns = np.zeros((len(conditions), n_vox))
        local = rng.standard_normal((len(conditions), int(in_patch.sum()))) * signal
        patterns[:, in_patch] = local - local.mean(axis=0)
        motion_maps = rng.standard_normal((len(MOTION), n_vox)) * 0.5
        baseline = 1000 + 100 * rng.random(n_vox)
        func, dfunc = root / f"sub-{subject}" / "func", fmriprep / f"sub-{subject}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        dfunc.mkdir(parents=True, exist_ok=True)
        for run in range(1, n_runs + 1):
            series, events, motion = simulate_run(
                rng, patterns, list(conditions), n_volumes, tr, isi, duration, trial_noise,
                motion_maps=motion_maps,
            )  # fmt:skip
            stem = f"sub-{subject}_task-{task}_run-{run}"
            data = np.zeros((*shape, n_volumes), dtype=np.float32)
            data[brain] = (baseline[:, None] * (1 + 0.01 * series.T)).astype(np.float32)
            img = nb.Nifti1Image(data, affine)
            img.header.set_xyzt_units("mm", "sec")
            img.header["pixdim"][4] = tr
            raw = nb.Nifti1Image(np.round(data).astype(np.int16), affine, img.header)
            raw.set_data_dtype(np.int16)
            raw.to_filename(func / f"{stem}_bold.nii.gz")
            img.to_filename(dfunc / f"{stem}_desc-preproc_bold.nii.gz")
            _write_json(
                dfunc / f"{stem}_desc-preproc_bold.json",
                {"RepetitionTime": tr, "SkullStripped": False, "TaskName": task},
            )
            nb.Nifti1Image(brain.astype(np.uint8), affine).to_filename(
                dfunc / f"{stem}_desc-brain_mask.nii.gz"
            )
            confounds = pd.DataFrame(motion, columns=list(MOTION))
            confounds["framewise_displacement"] = np.r_[
                np.nan, np.abs(np.diff(motion, axis=0)).sum(axis=1)
            ]
            confounds.to_csv(
                dfunc / f"{stem}_desc-confounds_timeseries.tsv", sep="\t", index=False,
                na_rep="n/a",
            )  # fmt:skip
            events.to_csv(func / f"{stem}_events.tsv", sep="\t", index=False)
    return {
        "bids_dir": root,
        "fmriprep_dir": fmriprep,
        "subjects": subjects,
        "task": task,
        "conditions": list(conditions),
        "tr": tr,
        "patch": patch,
    }

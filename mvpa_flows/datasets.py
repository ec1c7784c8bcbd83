"""Synthetic BIDS datasets with fMRIPrep-style derivatives, for the demo and tests.

:func:`make_synthetic_dataset` writes a raw BIDS dataset (events, raw BOLD) with a
``derivatives/fmriprep`` folder (``desc-preproc_bold``, ``desc-brain_mask``,
``desc-confounds_timeseries``) in which a block design drives a condition-selective
patch (a multivariate face/house pattern) and a univariate patch, on top of
realistic nuisance: a spatially varying baseline, slow drift, motion-related signal
that the six motion confounds explain, and AR(1) noise. Everything is seeded.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

DEFAULT_CONDITIONS = ("face", "house", "chair")
MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def _hrf(tr, length=24.0):
    from nilearn.glm.first_level import glover_hrf

    return glover_hrf(tr, oversampling=1, time_length=length)


def _block_events(rng, conditions, n_blocks, block_volumes, rest_volumes, tr, lead=4):
    order = np.concatenate([rng.permutation(conditions) for _ in range(n_blocks)])
    rows, volume = [], lead
    for condition in order:
        rows.append((volume * tr, block_volumes * tr, str(condition)))
        volume += block_volumes + rest_volumes
    n_volumes = volume + lead
    events = pd.DataFrame(rows, columns=["onset", "duration", "trial_type"])
    return events, n_volumes


def _write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def make_synthetic_dataset(
    root,
    n_subjects=3,
    n_runs=4,
    conditions=DEFAULT_CONDITIONS,
    shape=(18, 20, 10),
    voxel_size=(3.0, 3.0, 3.5),
    tr=2.0,
    n_blocks=2,
    block_volumes=8,
    rest_volumes=5,
    signal=1.2,
    task="objects",
    space=None,
    seed=0,
):
    """Write a synthetic BIDS dataset with fMRIPrep-style derivatives under ``root``.

    Parameters
    ----------
    root : path
        Dataset folder (created).
    n_subjects, n_runs : int
        Subjects ``sub-01``... and runs ``run-1``... per subject.
    conditions : sequence of str
        Block conditions; each appears ``n_blocks`` times per run in random order.
    shape, voxel_size : tuple
        Grid (voxels) and voxel size (mm); the brain is an ellipsoid inside it.
    tr : float
        Repetition time (s).
    block_volumes, rest_volumes : int
        Volumes per block and per rest period between blocks.
    signal : float
        Amplitude of the condition-selective patterns relative to the noise (1.0).
    task, space : str
        Task label; space label of the derivatives (None: native, no space entity).
    seed : int
        Seed of everything random.

    Returns
    -------
    dict
        ``bids_dir``, ``fmriprep_dir``, ``subjects``, ``task``, ``conditions`` and the
        planted ``patterns_center`` (voxel index of the multivariate patch centre).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    fmriprep = root / "derivatives" / "fmriprep"
    affine = np.diag([*voxel_size, 1.0])
    affine[:3, 3] = -np.array(shape) * np.array(voxel_size) / 2
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    ellipsoid = sum(((grid[i] - centre[i]) / (shape[i] / 2 - 0.6)) ** 2 for i in range(3))
    brain = ellipsoid <= 1.0
    patch_centre = np.round(centre + np.array(shape) * [0.22, -0.18, 0.0]).astype(int)
    uni_centre = np.round(centre + np.array(shape) * [-0.22, 0.2, 0.0]).astype(int)

    def sphere(c, r):
        return brain & (sum((grid[i] - c[i]) ** 2 for i in range(3)) <= r**2)

    patch, uni_patch = sphere(patch_centre, 2.5), sphere(uni_centre, 2.0)
    hrf = _hrf(tr)
    n_vox = int(brain.sum())
    _write_json(root / "dataset_description.json", {
        "Name": "mvpa_flows synthetic block-design dataset",
        "BIDSVersion": "1.9.0", "DatasetType": "raw", "License": "CC0",
        "Authors": ["mvpa_flows"],
    })  # fmt:skip
    _write_json(root / f"task-{task}_bold.json", {"TaskName": task, "RepetitionTime": tr})
    _write_json(fmriprep / "dataset_description.json", {
        "Name": "Synthetic fMRIPrep-style derivatives", "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "mvpa_flows.datasets.make_synthetic_dataset"}],
    })  # fmt:skip
    subjects = [f"{i + 1:02d}" for i in range(n_subjects)]
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects]}).to_csv(
        root / "participants.tsv", sep="\t", index=False
    )
    space_ent = f"_space-{space}" if space else ""
    for subject in subjects:
        # subject-specific multivariate patterns inside the patch, one per condition
        patterns = rng.standard_normal((len(conditions), int(patch.sum()))) * signal
        univariate = np.linspace(0.0, signal, len(conditions))
        baseline = 800 + 200 * rng.random(shape)
        motion_maps = rng.standard_normal((len(MOTION), n_vox)) * 0.8
        func, dfunc = root / f"sub-{subject}" / "func", fmriprep / f"sub-{subject}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        dfunc.mkdir(parents=True, exist_ok=True)
        for run in range(1, n_runs + 1):
            events, n_vol = _block_events(
                rng, list(conditions), n_blocks, block_volumes, rest_volumes, tr
            )
            stem = f"sub-{subject}_task-{task}_run-{run}"
            design = np.zeros((n_vol, len(conditions)))
            for onset, duration, trial in events.itertuples(index=False):
                start = int(round(onset / tr))
                design[start : start + int(round(duration / tr)), conditions.index(trial)] = 1
            design = np.stack(
                [np.convolve(design[:, k], hrf)[:n_vol] for k in range(len(conditions))], 1
            )
            noise = rng.standard_normal((n_vol, n_vox))
            for t in range(1, n_vol):  # AR(1), phi = 0.3
                noise[t] += 0.3 * noise[t - 1]
            motion = np.cumsum(rng.standard_normal((n_vol, len(MOTION))) * 0.05, axis=0)
            drift = np.linspace(-1, 1, n_vol)[:, None] * rng.standard_normal(n_vox)[None] * 2
            series = noise + drift + motion @ motion_maps
            brain_idx = np.flatnonzero(brain.ravel())
            in_patch = np.isin(brain_idx, np.flatnonzero(patch.ravel()))
            series[:, in_patch] += design @ patterns
            in_uni = np.isin(brain_idx, np.flatnonzero(uni_patch.ravel()))
            series[:, in_uni] += (design @ univariate)[:, None]
            data = np.zeros((*shape, n_vol), dtype=np.float32)
            data[brain] = (baseline[brain][:, None] * (1 + 0.01 * series.T)).astype(np.float32)
            img = nb.Nifti1Image(data, affine)
            img.header.set_xyzt_units("mm", "sec")
            img.header["pixdim"][4] = tr
            raw = nb.Nifti1Image(np.round(data).astype(np.int16), affine, img.header)
            raw.set_data_dtype(np.int16)
            raw.to_filename(func / f"{stem}_bold.nii.gz")
            img.to_filename(dfunc / f"{stem}{space_ent}_desc-preproc_bold.nii.gz")
            _write_json(
                dfunc / f"{stem}{space_ent}_desc-preproc_bold.json",
                {"RepetitionTime": tr, "SkullStripped": False, "TaskName": task},
            )
            nb.Nifti1Image(brain.astype(np.uint8), affine).to_filename(
                dfunc / f"{stem}{space_ent}_desc-brain_mask.nii.gz"
            )
            confounds = pd.DataFrame(motion, columns=list(MOTION))
            confounds["global_signal"] = data[brain].mean(axis=0)
            confounds["framewise_displacement"] = np.r_[
                np.nan, np.abs(np.diff(motion, axis=0)).sum(axis=1)
            ]
            confounds.to_csv(
                dfunc / f"{stem}_desc-confounds_timeseries.tsv",
                sep="\t",
                index=False,
                na_rep="n/a",
            )
            events.to_csv(func / f"{stem}_events.tsv", sep="\t", index=False)
    return {
        "bids_dir": root,
        "fmriprep_dir": fmriprep,
        "subjects": subjects,
        "task": task,
        "conditions": list(conditions),
        "patterns_center": tuple(int(v) for v in patch_centre),
        "univariate_center": tuple(int(v) for v in uni_centre),
    }

"""Synthetic BIDS datasets with fMRIPrep-style derivatives, for the demo and tests.

:func:`make_synthetic_dataset` writes a raw BIDS dataset (events, raw BOLD) with a
``derivatives/fmriprep`` folder (``desc-preproc_bold``, ``desc-brain_mask``,
``desc-confounds_timeseries``) in which a block design drives a condition-selective
patch (a multivariate face/house pattern) and a univariate patch, on top of
realistic nuisance: a spatially varying baseline, slow drift, motion-related signal
that the six motion confounds explain, and AR(1) noise.

:func:`make_fmriprep_dataset` writes a fixture named exactly like fMRIPrep's outputs
(sessions, spaces, confounds). :func:`make_event_related_data` (arrays) and
:func:`make_event_related_dataset` (a BIDS dataset like :func:`make_synthetic_dataset`)
simulate rapid event-related designs, whose overlapping trial responses call for
trial-wise betas. Everything is seeded.
"""

from __future__ import annotations

import json
import warnings
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


def _write_skeleton(root, fmriprep, kind, generator, task, tr, n_subjects):
    """Dataset descriptions, the task sidecar and participants.tsv; returns the labels."""
    _write_json(root / "dataset_description.json", {
        "Name": f"mvpa_flows synthetic {kind} dataset",
        "BIDSVersion": "1.9.0", "DatasetType": "raw", "License": "CC0",
        "Authors": ["mvpa_flows"],
    })  # fmt:skip
    _write_json(root / f"task-{task}_bold.json", {"TaskName": task, "RepetitionTime": tr})
    _write_json(fmriprep / "dataset_description.json", {
        "Name": "Synthetic fMRIPrep-style derivatives", "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": f"mvpa_flows.datasets.{generator}"}],
    })  # fmt:skip
    subjects = [f"{i + 1:02d}" for i in range(n_subjects)]
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects]}).to_csv(
        root / "participants.tsv", sep="\t", index=False
    )
    return subjects


def _write_bold_run(func, dfunc, derivative_stem, raw_stem, data, brain, affine, tr, task):
    """One run's raw BOLD (int16) and its fMRIPrep-style preprocessed BOLD, sidecar and mask."""
    img = nb.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = tr
    raw = nb.Nifti1Image(np.round(data).astype(np.int16), affine, img.header)
    raw.set_data_dtype(np.int16)
    raw.to_filename(func / f"{raw_stem}_bold.nii.gz")
    img.to_filename(dfunc / f"{derivative_stem}_desc-preproc_bold.nii.gz")
    _write_json(
        dfunc / f"{derivative_stem}_desc-preproc_bold.json",
        {"RepetitionTime": tr, "SkullStripped": False, "TaskName": task},
    )
    nb.Nifti1Image(brain.astype(np.uint8), affine).to_filename(
        dfunc / f"{derivative_stem}_desc-brain_mask.nii.gz"
    )


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
    subjects = _write_skeleton(
        root, fmriprep, "block-design", "make_synthetic_dataset", task, tr, n_subjects
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
            _write_bold_run(func, dfunc, f"{stem}{space_ent}", stem, data, brain, affine, tr, task)
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


# ----------------------------------------------------------------- fMRIPrep 24/25 layout

#: fMRIPrep's own .bidsignore (fmriprep.utils.bids.write_bidsignore, 24.x-25.x).
FMRIPREP_BIDSIGNORE = (
    "*.html",
    "logs/",
    "figures/",
    "*_xfm.*",
    "*.surf.gii",
    "*_boldref.nii.gz",
    "*_bold.func.gii",
    "*_mixing.tsv",
    "*_timeseries.tsv",
)
#: Grids of the fixture's spaces: shape and voxel size (mm). Small on purpose.
_GRIDS = {
    "boldref": ((9, 11, 7), (3.5, 3.5, 4.0)),
    "T1w": ((11, 13, 8), (3.0, 3.0, 3.0)),
    "MNI152NLin2009cAsym:res-2": ((13, 16, 11), (2.0, 2.0, 2.0)),
    "MNI152NLin2009cAsym:res-1": ((26, 32, 22), (1.0, 1.0, 1.0)),
    "MNI152NLin6Asym:res-2": ((13, 16, 11), (2.0, 2.0, 2.0)),
}


class _Grid:
    """A small brain on a voxel grid: ellipsoid mask and the two planted patches."""

    def __init__(self, shape, voxel_size, origin_shift=0.0):
        self.shape = tuple(shape)
        self.affine = np.diag([*voxel_size, 1.0])
        self.affine[:3, 3] = -np.array(shape) * np.array(voxel_size) / 2 + origin_shift
        grid = np.indices(shape).astype(float)
        centre = (np.array(shape) - 1) / 2
        ellipsoid = sum(((grid[i] - centre[i]) / (shape[i] / 2 - 0.6)) ** 2 for i in range(3))
        self.brain = ellipsoid <= 1.0
        self.patch_centre = np.round(centre + np.array(shape) * [0.22, -0.18, 0.0]).astype(int)
        uni_centre = np.round(centre + np.array(shape) * [-0.22, 0.2, 0.0]).astype(int)
        radius = max(1.5, 2.5 * 3.0 / float(np.mean(voxel_size)) ** 0.5 / 1.7)

        def sphere(c, r):
            return self.brain & (sum((grid[i] - c[i]) ** 2 for i in range(3)) <= r**2)

        self.patch = sphere(self.patch_centre, radius)
        self.uni_patch = sphere(uni_centre, radius * 0.8)
        self.index = np.flatnonzero(self.brain.ravel())
        self.in_patch = np.isin(self.index, np.flatnonzero(self.patch.ravel()))
        self.in_uni = np.isin(self.index, np.flatnonzero(self.uni_patch.ravel()))

    def image(self, data, tr=None, dtype=np.float32):
        img = nb.Nifti1Image(np.asarray(data, dtype=dtype), self.affine)
        img.header.set_xyzt_units("mm", "sec" if tr else None)
        if tr:
            img.header["pixdim"][4] = tr
        img.set_data_dtype(dtype)
        return img


def _fmriprep_confounds(rng, motion, series, tr, n_acompcor, outlier_volume, dummy):
    """A confounds table with fMRIPrep's column set (n/a first rows) and its metadata."""
    n_vol = motion.shape[0]
    table = {}

    def expand(name, values):
        deriv = np.r_[np.nan, np.diff(values)]
        table[name] = values
        table[f"{name}_derivative1"] = deriv
        table[f"{name}_power2"] = values**2
        table[f"{name}_derivative1_power2"] = deriv**2

    brain_mean = series.mean(axis=1)
    for name, values in (
        ("global_signal", brain_mean),
        ("csf", brain_mean * 0.4 + rng.standard_normal(n_vol)),
        ("white_matter", brain_mean * 0.6 + rng.standard_normal(n_vol)),
    ):
        expand(name, values)
    table["csf_wm"] = table["csf"] + table["white_matter"]
    table["tcompcor"] = rng.standard_normal(n_vol)
    fd = np.r_[np.nan, np.abs(np.diff(motion[:, :3], axis=0)).sum(1)]
    fd[1:] += np.abs(np.diff(motion[:, 3:], axis=0)).sum(1) * 50.0
    dvars = np.r_[np.nan, np.abs(np.diff(brain_mean)) + 5.0]
    table["std_dvars"] = np.r_[np.nan, dvars[1:] / np.nanmean(dvars)]
    table["dvars"] = dvars
    table["framewise_displacement"] = fd
    table["rmsd"] = np.r_[np.nan, fd[1:] * 0.8]
    meta = {}
    comp_sets = (("t_comp_cor", 3, "tCompCor", None), ("c_comp_cor", 3, "aCompCor", "CSF"),
                 ("w_comp_cor", 3, "aCompCor", "WM"),
                 ("a_comp_cor", n_acompcor, "aCompCor", "combined"))  # fmt:skip
    for prefix, count, method, mask in comp_sets:
        variance = np.sort(rng.random(count + 1))[::-1] / (count + 1)
        for i in range(count + 1):
            name = f"{prefix}_{i:02d}" if i < count else f"dropped_{prefix[0]}{i}"
            entry = {
                "Method": method,
                "Retained": i < count,
                "SingularValue": float(30.0 - i),
                "VarianceExplained": float(variance[i]),
                "CumulativeVarianceExplained": float(variance[: i + 1].sum()),
            }
            if mask:
                entry["Mask"] = mask
            meta[name] = entry
            if i < count:
                table[name] = rng.standard_normal(n_vol) / np.sqrt(n_vol)
    n_cos = max(1, int(np.floor(2 * n_vol * tr / 128.0)))
    for i in range(n_cos):
        table[f"cosine{i:02d}"] = np.sqrt(2.0 / n_vol) * np.cos(
            np.pi * (np.arange(n_vol) + 0.5) * (i + 1) / n_vol
        )
    if dummy:
        table["non_steady_state_outlier00"] = (np.arange(n_vol) == 0).astype(float)
    for i in range(3):
        table[f"edge_comp_{i:02d}"] = rng.standard_normal(n_vol) / np.sqrt(n_vol)
    if outlier_volume is not None:
        table["motion_outlier00"] = (np.arange(n_vol) == outlier_volume).astype(float)
    for k, name in enumerate(MOTION):
        expand(name, motion[:, k])
    return pd.DataFrame(table), meta


def _gifti(n_vertices, n_vol, rng):
    arrays = [
        nb.gifti.GiftiDataArray(
            rng.standard_normal(n_vertices).astype(np.float32), intent="NIFTI_INTENT_TIME_SERIES"
        )
        for _ in range(n_vol)
    ]
    return nb.gifti.GiftiImage(darrays=arrays)


def _cifti(n_vertices, n_vol, tr, rng):
    from nibabel import cifti2

    models = cifti2.BrainModelAxis.from_surface(
        np.arange(n_vertices), n_vertices, "CortexLeft"
    ) + cifti2.BrainModelAxis.from_surface(np.arange(n_vertices), n_vertices, "CortexRight")
    series = cifti2.SeriesAxis(start=0.0, step=tr, size=n_vol, unit="second")
    data = rng.standard_normal((n_vol, len(models))).astype(np.float32)
    return cifti2.Cifti2Image(data, header=(series, models))


def make_fmriprep_dataset(
    root,
    n_subjects=2,
    sessions=("1", "2"),
    n_runs=2,
    spaces=("T1w", "MNI152NLin2009cAsym:res-2"),
    conditions=DEFAULT_CONDITIONS,
    tr=2.0,
    n_blocks=2,
    block_volumes=6,
    rest_volumes=4,
    signal=1.5,
    task="objects",
    surfaces=True,
    native_bold=False,
    legacy_cifti_sidecar=False,
    seed=0,
):
    """Write a raw BIDS dataset with fMRIPrep 24/25 derivatives named as fMRIPrep names them.

    The layout follows fMRIPrep's documented outputs (``docs/outputs.rst`` and its CI
    output lists, 23.2-25.2): per run, the native (boldref-space) minimal outputs
    (``desc-hmc_boldref``, ``desc-coreg_boldref``, ``desc-brain_mask``, the
    ``from-orig_to-boldref`` and ``from-boldref_to-T1w`` transforms), then for each of
    ``spaces`` ``space-<s>[_res-<r>]_boldref``, ``_desc-brain_mask`` and
    ``_desc-preproc_bold`` (+ JSON), the full confounds table (+ JSON) whose derivative
    columns start with ``n/a``, and with ``surfaces`` dummy ``hemi-[LR]_space-fsnative``
    GIFTI series and an ``space-fsLR_den-91k`` CIFTI series. The anatomical outputs
    (``desc-preproc_T1w``, ``desc-brain_mask``, ``dseg``, ``label-*_probseg``, the
    T1w <-> template transforms) sit in ``sub-<l>/anat/``, reports in ``sub-<l>.html``
    and ``sub-<l>/figures/``, with fMRIPrep's own ``.bidsignore``. The raw dataset holds
    the events and small raw BOLD series (``ses-<s>/func``) and a T1w (first session).

    The signal follows :func:`make_synthetic_dataset` on each space's grid (a block
    design, a condition-selective patch at the same place for every subject, motion
    explained by the confounds); grids are tiny and runs short so tests stay fast.

    Parameters
    ----------
    root : path
        Dataset folder (created).
    n_subjects, n_runs : int
        Subjects ``sub-01``..., runs ``run-1``... per session.
    sessions : sequence of str or None
        Session labels (``None`` or empty: no session level).
    spaces : sequence of str
        fMRIPrep's ``--output-spaces`` spelling, e.g. ``"T1w"``,
        ``"MNI152NLin2009cAsym:res-2"`` (also ``:res-1``, ``MNI152NLin6Asym:res-2``).
    conditions, tr, n_blocks, block_volumes, rest_volumes, signal, task
        Design and signal, as in :func:`make_synthetic_dataset`.
    surfaces : bool
        Write the GIFTI and CIFTI series (and their sidecars).
    native_bold : bool
        Also write the native-space ``desc-preproc_bold`` (fMRIPrep's ``func`` space).
    legacy_cifti_sidecar : bool
        Write the CIFTI sidecar of fMRIPrep < 21 (``"space": "HCP grayordinates"``).
    seed : int
        Seed of everything random.

    Returns
    -------
    dict
        ``bids_dir``, ``fmriprep_dir``, ``subjects``, ``sessions``, ``task``,
        ``conditions``, ``spaces`` and ``patterns_center`` (voxel index of the
        multivariate patch centre, per space).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    fmriprep = root / "derivatives" / "fmriprep"
    sessions = list(sessions or [None])
    spaces = list(spaces)
    unknown = [s for s in spaces if s not in _GRIDS]
    if unknown:
        raise ValueError(f"Parameter 'spaces' holds {unknown}; choose from {sorted(_GRIDS)}.")
    grids = {s: _Grid(*_GRIDS[s]) for s in spaces}
    native = _Grid(*_GRIDS["boldref"])
    if native_bold:
        grids["boldref"] = native
    subjects = [f"{i + 1:02d}" for i in range(n_subjects)]
    _write_fixture_descriptions(root, fmriprep, subjects, task, tr)
    design = {
        "conditions": list(conditions),
        "tr": tr,
        "hrf": _hrf(tr),
        "n_blocks": n_blocks,
        "block_volumes": block_volumes,
        "rest_volumes": rest_volumes,
        "task": task,
    }
    t1w_grid = _Grid((22, 26, 16), (1.5, 1.5, 1.5))
    for subject in subjects:
        t1w = _write_fixture_anat(fmriprep, subject, t1w_grid, spaces, rng)
        # subject-specific multivariate patterns, one per condition, in every space
        signals = {
            name: {
                "patterns": rng.standard_normal((len(conditions), int(g.in_patch.sum()))) * signal,
                "univariate": np.linspace(0.0, signal, len(conditions)),
                "baseline": 800 + 200 * rng.random(g.shape),
                "motion_maps": rng.standard_normal((len(MOTION), g.index.size)) * 0.8,
            }
            for name, g in grids.items()
        }
        for s_index, session in enumerate(sessions):
            sub_ses = Path(f"sub-{subject}") / (f"ses-{session}" if session else "")
            (root / sub_ses / "func").mkdir(parents=True, exist_ok=True)
            (fmriprep / sub_ses / "func").mkdir(parents=True, exist_ok=True)
            if s_index == 0:
                (root / sub_ses / "anat").mkdir(parents=True, exist_ok=True)
                t1w_grid.image(np.round(t1w), dtype=np.int16).to_filename(
                    root / sub_ses / "anat" / f"sub-{subject}{_ses(session)}_T1w.nii.gz"
                )
            for run in range(1, n_runs + 1):
                stem = f"sub-{subject}{_ses(session)}_task-{task}_run-{run}"
                run_info = _write_fixture_run(
                    root, fmriprep, sub_ses, stem, run, native, grids, signals, design, rng
                )
                table, meta = _fmriprep_confounds(
                    rng,
                    run_info["motion"],
                    run_info["series"],
                    tr,
                    3 + (run + s_index) % 3,
                    run_info["outlier"],
                    run_info["dummy"],
                )
                dfunc = fmriprep / sub_ses / "func"
                table.to_csv(
                    dfunc / f"{stem}_desc-confounds_timeseries.tsv",
                    sep="\t",
                    index=False,
                    na_rep="n/a",
                )
                _write_json(dfunc / f"{stem}_desc-confounds_timeseries.json", meta)
                if surfaces:
                    _write_fixture_surfaces(
                        dfunc, stem, run_info["n_volumes"], tr, task, legacy_cifti_sidecar, rng
                    )
    return {
        "bids_dir": root,
        "fmriprep_dir": fmriprep,
        "subjects": subjects,
        "sessions": [s for s in sessions if s],
        "task": task,
        "conditions": list(conditions),
        "spaces": spaces,
        "patterns_center": {
            name: tuple(int(v) for v in g.patch_centre) for name, g in grids.items()
        },
    }


def _ses(session):
    return f"_ses-{session}" if session else ""


def _write_fixture_descriptions(root, fmriprep, subjects, task, tr):
    _write_json(root / "dataset_description.json", {
        "Name": "mvpa_flows realistic fMRIPrep fixture", "BIDSVersion": "1.9.0",
        "DatasetType": "raw", "License": "CC0", "Authors": ["Ada Lovelace", "Alan Turing"],
    })  # fmt:skip
    (root / "README").write_text(
        "Synthetic block-design dataset written by mvpa_flows.datasets.make_fmriprep_dataset.\n"
    )
    _write_json(root / f"task-{task}_bold.json", {"TaskName": task, "RepetitionTime": tr})
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects]}).to_csv(
        root / "participants.tsv", sep="\t", index=False
    )
    url = "https://github.com/nipreps/fmriprep/archive/24.1.1.tar.gz"
    _write_json(fmriprep / "dataset_description.json", {
        "Name": "fMRIPrep - fMRI PREProcessing workflow", "BIDSVersion": "1.4.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.1", "CodeURL": url}],
        "HowToAcknowledge": "Please cite our paper (https://doi.org/10.1038/s41592-018-0235-4).",
        "DatasetLinks": {"raw": "../..",
                         "templateflow": "https://github.com/templateflow/templateflow"},
    })  # fmt:skip
    (fmriprep / ".bidsignore").write_text("\n".join(FMRIPREP_BIDSIGNORE) + "\n")
    (fmriprep / "logs").mkdir(parents=True, exist_ok=True)
    (fmriprep / "logs" / "CITATION.md").write_text("Preprocessing was performed with fMRIPrep.\n")


def _write_fixture_anat(fmriprep, subject, grid, spaces, rng):
    """fMRIPrep's anatomical outputs of one subject (sessions merged, no ses- entity)."""
    anat = fmriprep / f"sub-{subject}" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    t1w = grid.brain * (600 + 100 * rng.random(grid.shape))
    for name, data, dtype in (
        ("desc-preproc_T1w", t1w, np.float32),
        ("desc-brain_mask", grid.brain, np.uint8),
        ("dseg", grid.brain * rng.integers(1, 4, grid.shape), np.uint8),
        ("label-GM_probseg", grid.brain * rng.random(grid.shape), np.float32),
        ("label-WM_probseg", grid.brain * rng.random(grid.shape), np.float32),
        ("label-CSF_probseg", grid.brain * rng.random(grid.shape), np.float32),
    ):
        grid.image(data, dtype=dtype).to_filename(anat / f"sub-{subject}_{name}.nii.gz")
    _write_json(anat / f"sub-{subject}_desc-preproc_T1w.json", {"SkullStripped": False})
    _write_json(anat / f"sub-{subject}_desc-brain_mask.json", {"Type": "Brain"})
    for template in sorted({s.split(":")[0] for s in spaces if not s.startswith("T1w")}):
        for a, b in (("T1w", template), (template, "T1w")):
            (anat / f"sub-{subject}_from-{a}_to-{b}_mode-image_xfm.h5").write_bytes(
                b"\x89HDF\r\n\x1a\n dummy composite transform\n"
            )
    (fmriprep / f"sub-{subject}.html").write_text("<html><body>fMRIPrep report</body></html>\n")
    figures = fmriprep / f"sub-{subject}" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    (figures / f"sub-{subject}_desc-summary_T1w.html").write_text("<div>summary</div>\n")
    (figures / f"sub-{subject}_dseg.svg").write_text("<svg/>\n")
    return t1w


_ITK_AFFINE = (
    "#Insight Transform File V1.0\n#Transform 0\n"
    "Transform: MatrixOffsetTransformBase_double_3_3\n"
    "Parameters: 1 0 0 0 1 0 0 0 1 0 0 0\nFixedParameters: 0 0 0\n"
)


def _write_fixture_run(root, fmriprep, sub_ses, stem, run, native, grids, signals, design, rng):
    """Events, raw BOLD and fMRIPrep's outputs of one run (confounds excepted)."""
    conditions, tr, task = design["conditions"], design["tr"], design["task"]
    func, dfunc = root / sub_ses / "func", fmriprep / sub_ses / "func"
    events, n_vol = _block_events(
        rng, conditions, design["n_blocks"], design["block_volumes"], design["rest_volumes"], tr
    )
    regressors = np.zeros((n_vol, len(conditions)))
    for onset, duration, trial in events.itertuples(index=False):
        start = int(round(onset / tr))
        regressors[start : start + int(round(duration / tr)), conditions.index(trial)] = 1
    regressors = np.stack(
        [np.convolve(regressors[:, k], design["hrf"])[:n_vol] for k in range(len(conditions))], 1
    )
    # head motion: a random walk in mm (translations) and radians (rotations), small
    # enough that framewise displacement stays near 0.1 mm, plus one jump of 0.8 mm in
    # every second run (a motion outlier for fMRIPrep's 0.5 mm threshold)
    walk = np.cumsum(rng.standard_normal((n_vol, len(MOTION))) * 0.05, axis=0)
    outlier = int(rng.integers(n_vol // 3, 2 * n_vol // 3)) if run % 2 == 0 else None
    if outlier is not None:
        walk[outlier:, 0] += 2.0
    motion = walk * np.array([0.4, 0.4, 0.4, 0.008, 0.008, 0.008])
    dummy = run == 1  # a non-steady-state first volume
    events.to_csv(func / f"{stem}_events.tsv", sep="\t", index=False)
    raw = native.brain[..., None] * (700 + rng.random((*native.shape, n_vol)))
    native.image(np.round(raw), tr=tr, dtype=np.int16).to_filename(func / f"{stem}_bold.nii.gz")
    _write_json(func / f"{stem}_bold.json", {"RepetitionTime": tr, "TaskName": task})
    raw_uri = f"bids:raw:{(sub_ses / 'func' / stem).as_posix()}_bold.nii.gz"
    coreg = f"{stem}_from-boldref_to-T1w_mode-image_desc-coreg_xfm"
    sources = [raw_uri, f"bids::{(sub_ses / 'func').as_posix()}/{coreg}.txt"]
    # native (boldref) space: fMRIPrep's minimal outputs
    ref = native.brain * (700 + 50 * rng.random(native.shape))
    for desc in ("hmc", "coreg"):
        native.image(ref).to_filename(dfunc / f"{stem}_desc-{desc}_boldref.nii.gz")
        _write_json(dfunc / f"{stem}_desc-{desc}_boldref.json", {"Sources": [raw_uri]})
    native.image(native.brain, dtype=np.uint8).to_filename(
        dfunc / f"{stem}_desc-brain_mask.nii.gz"
    )
    _write_json(dfunc / f"{stem}_desc-brain_mask.json", {"Type": "Brain", "Sources": [raw_uri]})
    for name in (f"{stem}_from-orig_to-boldref_mode-image_desc-hmc_xfm", coreg):
        (dfunc / f"{name}.txt").write_text(_ITK_AFFINE)
        _write_json(dfunc / f"{name}.json", {"Sources": [raw_uri]})
    first = None
    for name, g in grids.items():
        sig = signals[name]
        noise = rng.standard_normal((n_vol, g.index.size))
        for t in range(1, n_vol):  # AR(1), phi = 0.3
            noise[t] += 0.3 * noise[t - 1]
        drift = np.linspace(-1, 1, n_vol)[:, None] * rng.standard_normal(g.index.size)
        series = noise + 2 * drift + walk @ sig["motion_maps"]
        series[:, g.in_patch] += regressors @ sig["patterns"]
        series[:, g.in_uni] += (regressors @ sig["univariate"])[:, None]
        if dummy:
            series[0] += 5.0
        data = np.zeros((*g.shape, n_vol), dtype=np.float32)
        data[g.brain] = sig["baseline"][g.brain][:, None] * (1 + 0.01 * series.T)
        first = data[g.brain].T if first is None else first
        out = f"{stem}{_space_entities(name)}"
        if name != "boldref":
            g.image(data.mean(axis=3)).to_filename(dfunc / f"{out}_boldref.nii.gz")
            _write_json(dfunc / f"{out}_boldref.json", {"Sources": sources})
            g.image(g.brain, dtype=np.uint8).to_filename(dfunc / f"{out}_desc-brain_mask.nii.gz")
            _write_json(
                dfunc / f"{out}_desc-brain_mask.json", {"Type": "Brain", "Sources": sources}
            )
        g.image(data, tr=tr).to_filename(dfunc / f"{out}_desc-preproc_bold.nii.gz")
        _write_json(dfunc / f"{out}_desc-preproc_bold.json", {
            "RepetitionTime": tr, "SkullStripped": False, "SliceTimingCorrected": False,
            "TaskName": task, "Sources": sources,
        })  # fmt:skip
    return {"motion": motion, "series": first, "outlier": outlier, "dummy": dummy,
            "n_volumes": n_vol}  # fmt:skip


def _write_fixture_surfaces(dfunc, stem, n_vol, tr, task, legacy_cifti_sidecar, rng):
    """Dummy fsnative GIFTI and fsLR CIFTI series with fMRIPrep's names and sidecars."""
    timing = {"RepetitionTime": tr, "TaskName": task}
    for hemi in ("L", "R"):
        name = f"{stem}_hemi-{hemi}_space-fsnative_bold"
        _gifti(12, n_vol, rng).to_filename(dfunc / f"{name}.func.gii")
        _write_json(dfunc / f"{name}.json", timing)
    name = f"{stem}_space-fsLR_den-91k_bold"
    _cifti(6, n_vol, tr, rng).to_filename(dfunc / f"{name}.dtseries.nii")
    templateflow = "https://templateflow.s3.amazonaws.com"
    if legacy_cifti_sidecar:  # fMRIPrep < 21
        meta = {"space": "HCP grayordinates", "surface": "fsLR", "surface_density": "32k",
                "volume": "MNI152NLin6Asym"}  # fmt:skip
    else:
        surface = f"{templateflow}/tpl-fsLR/tpl-fsLR_den-32k_hemi-%s_midthickness.surf.gii"
        meta = {
            "Density": "91,282 grayordinates corresponding to all of the grey matter sampled "
            "at a 2mm average vertex spacing on the surface and as 2mm voxels subcortically",
            "SpatialReference": {
                "VolumeReference": f"{templateflow}/tpl-MNI152NLin6Asym/"
                "tpl-MNI152NLin6Asym_res-02_T1w.nii.gz",
                "CIFTI_STRUCTURE_LEFT_CORTEX": surface % "L",
                "CIFTI_STRUCTURE_RIGHT_CORTEX": surface % "R",
            },
        }
    _write_json(dfunc / f"{name}.json", {**timing, **meta})


def _space_entities(space):
    """``_space-<s>[_res-<r>]`` of fMRIPrep's spelling ``NAME[:res-N]`` (empty for boldref)."""
    if space == "boldref":
        return ""
    name, *mods = space.split(":")
    return f"_space-{name}" + "".join(f"_{m}" for m in mods)


# ------------------------------------------------------------ rapid event-related data
#
# Trials of a few seconds follow each other every 3-5 s (jittered), so their hemodynamic
# responses overlap and no volume belongs to a single trial. Each condition has its own
# voxel pattern; each trial's response is that pattern plus trial-to-trial variability,
# on top of a baseline, slow drift, motion-related signal and AR(1) noise. The responses
# are built with nilearn's design-matrix code (SPM's HRF, while analyses default to
# Glover's, so the generating and fitted models differ slightly).


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
    subjects = _write_skeleton(
        root, fmriprep, "rapid event-related", "make_event_related_dataset", task, tr, n_subjects
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
            _write_bold_run(func, dfunc, stem, stem, data, brain, affine, tr, task)
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

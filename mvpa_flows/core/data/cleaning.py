"""Masking and per-run cleaning: confound regression, detrending, standardisation."""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nb
import numpy as np
import pandas as pd
from nilearn import signal

from mvpa_flows.core.errors import InputValidationError

MOTION_CONFOUNDS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
STANDARDIZE_CHOICES = ("zscore_run", "none")


def check_same_grid(img, reference, name, reference_name, atol=1e-3):
    """Raise when ``img`` and ``reference`` do not share shape and affine."""
    if img.shape[:3] != reference.shape[:3] or not np.allclose(
        img.affine, reference.affine, atol=atol
    ):
        raise InputValidationError(
            f"{name} (shape {img.shape[:3]}) is not on the grid of {reference_name} "
            f"(shape {reference.shape[:3]}); affines\n{np.round(img.affine, 4)}\nand\n"
            f"{np.round(reference.affine, 4)}. Use a mask resampled to the BOLD grid "
            "(fMRIPrep's desc-brain_mask of the same space) or resample it with "
            "nilearn.image.resample_to_img(..., interpolation='nearest')."
        )


def analysis_mask(mask_imgs, bold_imgs, mask_names=None, bold_names=None):
    """Intersect the runs' brain masks after checking every grid.

    Parameters
    ----------
    mask_imgs, bold_imgs : sequences of nibabel images, one per run
    mask_names, bold_names : file names used in error messages

    Returns
    -------
    nibabel.Nifti1Image
        uint8 mask, 1 where every run's mask is non-zero.
    """
    mask_names = mask_names or [f"mask of run {i + 1}" for i in range(len(mask_imgs))]
    bold_names = bold_names or [f"BOLD of run {i + 1}" for i in range(len(bold_imgs))]
    reference = bold_imgs[0]
    combined = None
    for mask, bold, mname, bname in zip(mask_imgs, bold_imgs, mask_names, bold_names, strict=True):
        if len(bold.shape) != 4:
            raise InputValidationError(
                f"{bname} has shape {bold.shape}; a BOLD series must be 4D (x, y, z, time)."
            )
        check_same_grid(mask, bold, mname, bname)
        check_same_grid(bold, reference, bname, bold_names[0])
        data = np.asanyarray(mask.dataobj) > 0
        combined = data if combined is None else combined & data
    if not combined.any():
        raise InputValidationError(
            f"The brain masks {mask_names} share no voxel; check they come from the same "
            "subject and space."
        )
    return nb.Nifti1Image(combined.astype(np.uint8), reference.affine)


def select_confounds(table: pd.DataFrame, names, source="confounds file"):
    """Pick confound columns from an fMRIPrep confounds table.

    ``names=None`` selects the six motion parameters when all are present (nothing
    otherwise); ``["none"]`` or ``[]`` selects nothing. Leading NaNs (fMRIPrep's
    derivative columns start with n/a) are set to 0.

    Returns
    -------
    (ndarray (n_volumes, n_confounds) or None, list of column names)
    """
    if names is None:
        names = (
            list(MOTION_CONFOUNDS)
            if table is not None and set(MOTION_CONFOUNDS) <= set(table.columns)
            else []
        )
    names = [n for n in names if n != "none"]
    if not names:
        return None, []
    if table is None:
        raise InputValidationError(
            f"Confounds {names} were asked for but no desc-confounds_timeseries.tsv was "
            f"found for {source}; pass --confounds none or add the fMRIPrep confounds."
        )
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise InputValidationError(
            f"Confound column(s) {missing} are missing from {source}; available columns: "
            f"{list(table.columns)}. Fix --confounds (or pass --confounds none)."
        )
    values = table[names].to_numpy(dtype=float, copy=True)
    nan_rows = np.isnan(values).any(axis=1)
    if nan_rows.any():
        first_valid = np.argmin(nan_rows)
        if nan_rows[first_valid:].any():
            bad = [n for n in names if table[n].iloc[first_valid:].isna().any()]
            raise InputValidationError(
                f"Confound column(s) {bad} in {source} hold n/a values beyond the first "
                "rows; choose other columns or fill them."
            )
        values[:first_valid] = 0.0
    return values, names


def clean_run(data, confounds=None, detrend=True, standardize="zscore_run", t_r=None):
    """Clean one run's (n_volumes, n_voxels) time series with :func:`nilearn.signal.clean`.

    Detrending (linear) and confound regression are done jointly, as nilearn does;
    ``standardize='zscore_run'`` then z-scores each voxel over the run's volumes
    (``zscore_sample``: unit variance with ddof=1); constant voxels stay at 0.
    """
    if standardize not in STANDARDIZE_CHOICES:
        raise InputValidationError(
            f"standardize must be one of {STANDARDIZE_CHOICES}, got {standardize!r}."
        )
    return signal.clean(
        np.asarray(data, dtype=np.float64),
        detrend=bool(detrend),
        standardize="zscore_sample" if standardize == "zscore_run" else None,
        confounds=confounds,
        standardize_confounds=True,
        t_r=t_r,
        ensure_finite=False,
    )


def masked_run_data(bold_img, mask, name="BOLD series"):
    """Return the (n_volumes, n_voxels) float64 data of ``bold_img`` inside ``mask``.

    Raises when the masked data hold NaN or infinite values.
    """
    data = np.asanyarray(bold_img.dataobj)
    values = data[np.asarray(mask, dtype=bool)].T.astype(np.float64)
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values).all(axis=0)).size
        raise InputValidationError(
            f"{name} holds NaN or infinite values in {bad} voxel(s) inside the brain mask; "
            "re-run preprocessing or exclude those voxels from the mask."
        )
    return values


def prepare_samples(
    bold_imgs: Sequence,
    mask_img,
    sample_table: pd.DataFrame,
    runs: Sequence,
    confounds: Sequence | None = None,
    detrend: bool = True,
    standardize: str = "zscore_run",
    t_r: Sequence[float] | None = None,
    bold_names: Sequence[str] | None = None,
):
    """Clean each run inside ``mask_img`` and keep the labelled volumes.

    Parameters
    ----------
    bold_imgs : 4D images, one per run, in the order of ``runs``
    mask_img : 3D analysis mask on the BOLD grid
    sample_table : DataFrame with ``run`` and ``volume`` columns (see
        :func:`mvpa_flows.core.data.samples.build_sample_table`)
    confounds : per run, an (n_volumes, k) array or None

    Returns
    -------
    X : ndarray, shape (n_samples, n_voxels), rows in ``sample_table`` order
    """
    mask = np.asanyarray(mask_img.dataobj) > 0
    confounds = confounds if confounds is not None else [None] * len(bold_imgs)
    t_r = t_r if t_r is not None else [None] * len(bold_imgs)
    bold_names = bold_names or [f"BOLD of run {r}" for r in runs]
    blocks = []
    for img, run, conf, tr, name in zip(bold_imgs, runs, confounds, t_r, bold_names, strict=True):
        data = masked_run_data(img, mask, name)
        if conf is not None and conf.shape[0] != data.shape[0]:
            raise InputValidationError(
                f"The confounds of {name} have {conf.shape[0]} rows but the series has "
                f"{data.shape[0]} volumes; use the confounds file of the same run."
            )
        cleaned = clean_run(data, conf, detrend=detrend, standardize=standardize, t_r=tr)
        volumes = sample_table.loc[sample_table["run"] == run, "volume"].to_numpy()
        if volumes.size and volumes.max() >= data.shape[0]:
            raise InputValidationError(
                f"Events of {name} label volume {volumes.max()} but the series has "
                f"{data.shape[0]} volumes."
            )
        blocks.append(cleaned[volumes])
    return np.concatenate(blocks, axis=0)

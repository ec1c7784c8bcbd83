"""Masking and per-run cleaning: confound regression, detrending, standardisation."""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nb
import numpy as np
import pandas as pd
from nilearn import signal

from mvpa_flows.core.errors import InputValidationError

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


def clean_run(
    data, confounds=None, detrend=True, standardize="zscore_run", t_r=None, sample_mask=None
):
    """Clean one run's (n_volumes, n_voxels) time series with :func:`nilearn.signal.clean`.

    Detrending (linear) and confound regression are done jointly, as nilearn does;
    ``standardize='zscore_run'`` then z-scores each voxel over the run's volumes
    (``zscore_sample``: unit variance with ddof=1); constant voxels stay at 0.
    ``sample_mask`` (indices of the volumes kept) censors the others before cleaning,
    as nilearn does: the result has one row per kept volume.
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
        sample_mask=sample_mask,
    )


def read_image_data(img, name="BOLD series"):
    """The data array of ``img``, or an error naming the file when it cannot be read.

    A truncated or corrupt file (``EOFError``, ``zlib.error``, short reads) is reported
    as :class:`InputValidationError` instead of a traceback.
    """
    import zlib

    try:
        return np.asanyarray(img.dataobj)
    except (EOFError, OSError, ValueError, zlib.error) as err:
        raise InputValidationError(
            f"{name} cannot be read ({type(err).__name__}: {err}); the file is truncated or "
            "corrupt. Copy it again from its source (or re-run fMRIPrep for that run)."
        ) from None


def _check_finite(values, name):
    """Raise when the (n_voxels, n_volumes) ``values`` hold NaN or infinite values."""
    if values.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(values)
    if bad.any():
        voxels = np.flatnonzero(bad.any(axis=1)).size
        volumes = np.flatnonzero(bad.any(axis=0))
        raise InputValidationError(
            f"{name} holds NaN or infinite values in {voxels} voxel(s) inside the brain mask "
            f"(volume(s) {volumes[:5].tolist()}{' ...' if volumes.size > 5 else ''}); "
            "re-run preprocessing, or exclude those voxels from the mask (--bids-filter-file "
            "can drop the run)."
        )


def masked_run_data(bold_img, mask, name="BOLD series"):
    """Return the (n_volumes, n_voxels) float64 data of ``bold_img`` inside ``mask``.

    Raises when the file cannot be read, or when the masked data hold NaN or infinite
    values.
    """
    values = read_image_data(bold_img, name)[np.asarray(mask, dtype=bool)]
    _check_finite(values, name)
    return values.T.astype(np.float64)


def check_run_data(bold_img, mask, name="BOLD series"):
    """Read one run inside ``mask`` and check it, without keeping the data.

    The up-front check of :func:`mvpa_flows.core.data.dataset.check_inputs` with
    ``check_data=True``: a truncated file or non-finite voxels fail before any analysis.
    Memory: the run in its file's data type, once.
    """
    _check_finite(read_image_data(bold_img, name)[np.asarray(mask, dtype=bool)], name)


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
    sample_masks: Sequence | None = None,
    groups: Sequence | None = None,
):
    """Clean each run inside ``mask_img`` and keep the labelled volumes.

    Parameters
    ----------
    bold_imgs : 4D images, one per run, in the order of ``runs``
    mask_img : 3D analysis mask on the BOLD grid
    sample_table : DataFrame with ``volume`` and the run key columns (see
        :func:`mvpa_flows.core.data.samples.build_sample_table`)
    runs : run labels, one per image
    confounds : per run, an (n_volumes, k) array or None
    sample_masks : per run, the indices of the volumes kept (None: all); censored
        volumes are left out of the cleaning and must not be in ``sample_table``
    groups : per run, its cross-validation group (default: ``runs``); matched against
        :func:`mvpa_flows.core.data.samples.sample_groups` of the table

    Returns
    -------
    X : ndarray, shape (n_samples, n_voxels), rows in ``sample_table`` order
    """
    from mvpa_flows.core.data.samples import sample_groups

    mask = np.asanyarray(mask_img.dataobj) > 0
    n_runs = len(bold_imgs)
    confounds = confounds if confounds is not None else [None] * n_runs
    t_r = t_r if t_r is not None else [None] * n_runs
    sample_masks = sample_masks if sample_masks is not None else [None] * n_runs
    groups = list(groups) if groups is not None else list(runs)
    bold_names = bold_names or [f"BOLD of run {r}" for r in runs]
    table_groups = np.asarray([str(g) for g in sample_groups(sample_table)])
    blocks, order = [], []
    for img, group, conf, tr, kept, name in zip(
        bold_imgs, groups, confounds, t_r, sample_masks, bold_names, strict=True
    ):
        data = masked_run_data(img, mask, name)
        if conf is not None and conf.shape[0] != data.shape[0]:
            raise InputValidationError(
                f"The confounds of {name} have {conf.shape[0]} rows but the series has "
                f"{data.shape[0]} volumes; use the confounds file of the same run."
            )
        cleaned = clean_run(
            data, conf, detrend=detrend, standardize=standardize, t_r=tr, sample_mask=kept
        )
        where = np.flatnonzero(table_groups == str(group))
        volumes = sample_table["volume"].to_numpy()[where]
        if volumes.size and volumes.max() >= data.shape[0]:
            raise InputValidationError(
                f"Events of {name} label volume {volumes.max()} but the series has "
                f"{data.shape[0]} volumes."
            )
        if kept is not None:
            kept = np.asarray(kept)
            position = np.searchsorted(kept, volumes)
            if volumes.size and not np.array_equal(kept[np.minimum(position, kept.size - 1)],
                                                   volumes):  # fmt:skip
                raise InputValidationError(
                    f"The sample table of {name} holds censored volumes; drop them first."
                )
            volumes = position
        blocks.append(cleaned[volumes])
        order.append(where)
    X = np.concatenate(blocks, axis=0)
    rows = np.concatenate(order)
    out = np.empty_like(X)
    out[rows] = X
    return out

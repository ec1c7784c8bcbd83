"""Confounds from fMRIPrep's tables: explicit columns, shell-style patterns, nilearn strategies.

A run's confounds come either from column names and patterns (``'a_comp_cor_*'``,
``'motion_outlier*'``: the matching columns differ from run to run) or from one of
nilearn's denoising strategies (:func:`nilearn.interfaces.fmriprep.load_confounds_strategy`),
which may also censor volumes (scrubbing, non-steady-state volumes). Either way the
result says exactly which columns were regressed, so sidecars and reports can too.
"""

from __future__ import annotations

import fnmatch
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mvpa_flows.core.errors import InputValidationError

MOTION_CONFOUNDS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
STRATEGIES = ("simple", "scrubbing", "compcor", "ica_aroma")
_PATTERN_CHARS = set("*?[")


def is_pattern(name) -> bool:
    """True when ``name`` is a shell-style pattern rather than a column name."""
    return bool(_PATTERN_CHARS & set(str(name)))


def read_confounds(path) -> pd.DataFrame:
    """Read an fMRIPrep ``desc-confounds_timeseries.tsv`` (``n/a`` is missing)."""
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"])
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputValidationError(
            f"Cannot read the confounds table {path}: {err}. It must be fMRIPrep's "
            "tab-separated desc-confounds_timeseries.tsv."
        ) from None


def match_columns(columns, names):
    """Columns of a table selected by ``names`` (column names or shell-style patterns).

    Returns
    -------
    (list of str, list of str)
        The selected columns (in the order of ``names``, then of the table) and the
        literal names that are missing.
    """
    columns = list(columns)
    selected, missing = [], []
    for name in names:
        if is_pattern(name):
            selected += [c for c in columns if fnmatch.fnmatchcase(c, name)]
        elif name in columns:
            selected.append(name)
        else:
            missing.append(name)
    return list(dict.fromkeys(selected)), missing


def select_confounds(table: pd.DataFrame, names, source="confounds file"):
    """Pick confound columns from an fMRIPrep confounds table.

    ``names=None`` selects the six motion parameters when all are present (nothing
    otherwise); ``["none"]`` or ``[]`` selects nothing. Names may be shell-style patterns
    (``'a_comp_cor_*'``), which select whatever columns of this table match (possibly
    none). Leading NaNs (fMRIPrep's derivative columns start with n/a) are set to 0.

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
    selected, missing = match_columns(table.columns, names)
    if missing:
        raise InputValidationError(
            f"Confound column(s) {missing} are missing from {source}; available columns: "
            f"{list(table.columns)}. Fix --confounds (patterns such as 'a_comp_cor_*' are "
            "accepted), or pass --confounds none."
        )
    if not selected:
        return None, []
    values = table[selected].to_numpy(dtype=float, copy=True)
    nan_rows = np.isnan(values).any(axis=1)
    if nan_rows.any():
        first_valid = np.argmin(nan_rows)
        if nan_rows[first_valid:].any():
            bad = [n for n in selected if table[n].iloc[first_valid:].isna().any()]
            raise InputValidationError(
                f"Confound column(s) {bad} in {source} hold n/a values beyond the first "
                "rows; choose other columns or fill them."
            )
        values[:first_valid] = 0.0
    return values, selected


def run_confound_columns(confounds_file, names, n_volumes, source):
    """One run's confound columns (names or patterns) from its fMRIPrep table.

    Returns ``(values, names)`` as :func:`select_confounds` does (``values`` is None
    without a file or without columns). The table must have one row per volume of the
    run named ``source``.
    """
    frame = read_confounds(confounds_file) if confounds_file else None
    values, names = select_confounds(
        frame, names, source=Path(confounds_file).name if confounds_file else source
    )
    if values is not None and values.shape[0] != n_volumes:
        raise InputValidationError(
            f"{Path(confounds_file).name} has {values.shape[0]} rows but {source} has "
            f"{n_volumes} volumes; use the confounds file of the same run."
        )
    return values, names


def strategy_parameters(strategy) -> list:
    """Options accepted by a nilearn denoising strategy (besides the strategy name)."""
    from nilearn.interfaces.fmriprep.load_confounds_strategy import preset_strategies

    if strategy not in preset_strategies:
        raise ValueError(
            f"Parameter 'confounds_strategy' must be one of {sorted(preset_strategies)}; "
            f"got {strategy!r}."
        )
    return [k for k in preset_strategies[strategy] if k not in ("strategy", "ica_aroma")]


def check_strategy(strategy, options=None):
    """Validate a strategy and its options before any file is read."""
    accepted = strategy_parameters(strategy)
    unknown = sorted(set(options or {}) - set(accepted))
    if unknown:
        raise ValueError(
            f"Parameter 'confounds_strategy_options' has option(s) {unknown} that the "
            f"{strategy!r} strategy does not take; it accepts {accepted}."
        )


def strategy_confounds(bold_file, strategy, options=None, n_volumes=None):
    """Confounds of one run from a nilearn denoising strategy.

    Calls :func:`nilearn.interfaces.fmriprep.load_confounds_strategy`, which finds
    fMRIPrep's confounds table beside ``bold_file``.

    Returns
    -------
    values : ndarray (n_volumes, n_confounds) or None
    names : list of str
        The columns regressed.
    sample_mask : ndarray of int or None
        Volumes kept (``None``: all); the others are censored (scrubbing,
        non-steady-state volumes).
    """
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    check_strategy(strategy, options)
    name = Path(bold_file).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame, sample_mask = load_confounds_strategy(
                str(bold_file), denoise_strategy=strategy, **dict(options or {})
            )
    except (ValueError, FileNotFoundError, KeyError) as err:
        hint = (
            " fMRIPrep 24 and later no longer run ICA-AROMA: use fMRIPrep < 24 outputs "
            "(desc-smoothAROMAnonaggr_bold) or another strategy."
            if strategy == "ica_aroma"
            else ""
        )
        raise InputValidationError(
            f"The {strategy!r} confounds strategy (nilearn load_confounds_strategy) failed "
            f"on {name}: {err}.{hint} Check that fMRIPrep's desc-confounds_timeseries.tsv "
            "(and .json) sit beside it, or choose columns with --confounds."
        ) from None
    if frame is None or frame.shape[1] == 0:
        return None, [], _mask_or_none(sample_mask, n_volumes)
    values = frame.to_numpy(dtype=float)
    if not np.isfinite(values).all():
        bad = [c for c in frame.columns if not np.isfinite(frame[c].to_numpy(float)).all()]
        raise InputValidationError(
            f"The {strategy!r} strategy gave non-finite confounds {bad} for {name}."
        )
    return values, [str(c) for c in frame.columns], _mask_or_none(sample_mask, n_volumes)


def _mask_or_none(sample_mask, n_volumes):
    if sample_mask is None:
        return None
    sample_mask = np.asarray(sample_mask, dtype=int)
    if n_volumes is not None and sample_mask.size == n_volumes:
        return None
    return sample_mask

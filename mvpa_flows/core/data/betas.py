"""Trial-wise betas (LSS and LSA): one GLM estimate per event, as MVPA samples.

Least-squares-all (LSA) fits one GLM per run with one regressor per trial.
Least-squares-separate (LSS; Mumford et al. 2012, NeuroImage 59:2636) fits one GLM per
trial: that trial's regressor, the run's other trials grouped by ``trial_type`` (one
regressor per condition), the confounds and the drift. The designs are nilearn's
(:func:`nilearn.glm.first_level.make_first_level_design_matrix`, with the settings of
:class:`nilearn.glm.first_level.FirstLevelModel`), so the betas equal a
``FirstLevelModel(noise_model="ols", signal_scaling=False)`` fitted per trial.

LSS is exact yet fast: every trial's GLM shares the nuisance part (confounds and drift),
which is projected out once; what remains per trial is a problem of a few columns
(the trial, one column per condition) whose least-squares solution is a fixed linear
filter of the data. The filters of all trials are computed together from small batched
SVDs, and the betas of every voxel come from one matrix product ``filters @ data``.

Stacking runs' betas into labelled samples, and the up-front check of a subject's runs,
live in :mod:`mvpa_flows.core.data.beta_samples`.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import NamedTuple

import nibabel as nb
import numpy as np
import pandas as pd

from mvpa_flows.core._validation import check_integer, check_number, check_option
from mvpa_flows.core.data.cleaning import check_same_grid
from mvpa_flows.core.data.confounds import run_confound_columns
from mvpa_flows.core.data.samples import read_events
from mvpa_flows.core.errors import InputValidationError

__all__ = [
    "BETA_METHODS",
    "Betaseries",
    "DESIGN_DEFAULTS",
    "HRF_MODELS",
    "check_design_options",
    "check_trial_counts",
    "check_trial_events",
    "design_matrix",
    "neighbour_correlation",
    "repetition_time",
    "run_betaseries",
    "trial_betas",
    "trial_betas_img",
]

BETA_METHODS = ("lss", "lsa")
#: nilearn's HRF models with one response per trial (FIR and None are excluded)
HRF_MODELS = (
    "glover",
    "spm",
    "glover + derivative",
    "spm + derivative",
    "glover + derivative + dispersion",
    "spm + derivative + dispersion",
)
DRIFT_MODELS = ("cosine", "polynomial", None)
NOISE_MODELS = ("ols",)
STANDARDIZE_CHOICES = ("zscore_run", "none")
#: Defaults of the design: those of nilearn's FirstLevelModel (with noise_model="ols").
DESIGN_DEFAULTS = {
    "method": "lss",
    "hrf_model": "glover",
    "drift_model": "cosine",
    "high_pass": 0.01,
    "drift_order": 1,
    "slice_time_ref": 0.0,
    "noise_model": "ols",
}
#: FirstLevelModel's fixed design settings (make_first_level_design_matrix's defaults)
MIN_ONSET = -24.0
OVERSAMPLING = 50
#: Trials per compared condition and run below which samples are refused.
MIN_TRIALS_PER_RUN = 2
#: Neighbouring trials' regressors correlated above this make a design too fast for
#: stable trial-wise estimates (a warning, not an error).
NEIGHBOUR_CORRELATION_WARNING = 0.7
#: A design whose column-normalised singular values fall below this is rank deficient.
RANK_TOLERANCE = 1e-6
MUMFORD_2012 = (
    "Mumford JA, Turner BO, Ashby FG, Poldrack RA (2012). Deconvolving BOLD activation "
    "in event-related designs for multivoxel pattern classification analyses. "
    "NeuroImage 59(3):2636-2643. doi:10.1016/j.neuroimage.2011.08.076"
)
_COLUMNS_SHOWN = 8


# ----------------------------------------------------------------------------- checks


def check_design_options(
    method=DESIGN_DEFAULTS["method"],
    hrf_model=DESIGN_DEFAULTS["hrf_model"],
    drift_model=DESIGN_DEFAULTS["drift_model"],
    high_pass=DESIGN_DEFAULTS["high_pass"],
    drift_order=DESIGN_DEFAULTS["drift_order"],
    slice_time_ref=DESIGN_DEFAULTS["slice_time_ref"],
    noise_model=DESIGN_DEFAULTS["noise_model"],
):
    """Validate the design options and return them as a dict (``drift_model`` ``"none"``
    becomes ``None``)."""
    check_option(method, "method", BETA_METHODS, "LSS: one GLM per trial; LSA: one GLM per run.")
    if hrf_model in ("fir", None):
        raise ValueError(
            f"Parameter 'hrf_model' must be one of {list(HRF_MODELS)}; got {hrf_model!r}. "
            "Trial-wise betas need one response shape per trial (FIR and no convolution "
            "give none)."
        )
    check_option(hrf_model, "hrf_model", HRF_MODELS)
    if isinstance(drift_model, str) and drift_model.lower() == "none":
        drift_model = None
    check_option(drift_model, "drift_model", DRIFT_MODELS)
    high_pass = check_number(high_pass, "high_pass", low=0, low_open=True, unit="Hz")
    drift_order = check_integer(drift_order, "drift_order", low=1)
    slice_time_ref = check_number(
        slice_time_ref,
        "slice_time_ref",
        low=0,
        high=1,
        unit="fraction of the TR",
        fix="fMRIPrep's slice-timing-corrected series use StartTime / RepetitionTime.",
    )
    check_option(noise_model, "noise_model", NOISE_MODELS, "Only ordinary least squares.")
    return {
        "method": method,
        "hrf_model": hrf_model,
        "drift_model": drift_model,
        "high_pass": high_pass,
        "drift_order": drift_order,
        "slice_time_ref": slice_time_ref,
        "noise_model": noise_model,
    }


def frame_times(n_volumes, tr, slice_time_ref=0.0):
    """Acquisition times of the volumes, as :class:`FirstLevelModel` computes them."""
    return np.linspace(slice_time_ref * tr, (n_volumes - 1 + slice_time_ref) * tr, n_volumes)


def check_trial_events(events, n_volumes, tr, slice_time_ref=0.0, name="events"):
    """Check a run's events before any design is built.

    Onsets and durations must be finite numbers, durations >= 0, and every event must
    start inside the window nilearn models: not earlier than 24 s before the first
    volume (``min_onset``) and before the last volume.

    Returns
    -------
    DataFrame
        ``events`` with a fresh 0-based index (the trial index), onset and duration as
        float and trial_type as str.
    """
    missing = [c for c in ("onset", "duration", "trial_type") if c not in events.columns]
    if missing:
        raise InputValidationError(
            f"{name} lacks the column(s) {missing}; trial-wise betas need onset, duration "
            "and trial_type for every event."
        )
    events = events.reset_index(drop=True).copy()
    if events.empty:
        raise InputValidationError(f"{name} holds no event; trial-wise betas need trials.")
    for column in ("onset", "duration"):
        values = pd.to_numeric(events[column], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise InputValidationError(
                f"{name}: {column} of event(s) {bad[:5].tolist()} (0-based rows) is not a "
                f"finite number ({events[column].iloc[bad[:5]].tolist()}); fix the file."
            )
        events[column] = values
    events["trial_type"] = events["trial_type"].astype(str)
    negative = np.flatnonzero(events["duration"].to_numpy() < 0)
    if negative.size:
        raise InputValidationError(
            f"{name}: event(s) {negative[:5].tolist()} (0-based rows) last less than 0 s "
            f"(durations {events['duration'].iloc[negative[:5]].tolist()}); durations must "
            "be >= 0 s (0 models a brief impulse)."
        )
    times = frame_times(n_volumes, tr, slice_time_ref)
    onsets = events["onset"].to_numpy()
    outside = np.flatnonzero((onsets < times[0] + MIN_ONSET) | (onsets >= times[-1]))
    if outside.size:
        raise InputValidationError(
            f"{name}: event(s) {outside[:5].tolist()} (0-based rows, onsets "
            f"{onsets[outside[:5]].tolist()} s) fall outside the run, whose {n_volumes} "
            f"volumes are acquired from {times[0]:g} s to {times[-1]:g} s (TR {tr:g} s); "
            f"an event must start after {times[0] + MIN_ONSET:g} s and before the last "
            "volume. Use the events file of this run (onsets in seconds from the first "
            "volume) and check the TR."
        )
    return events


def check_trial_counts(
    trial_types, conditions, min_trials_per_run=MIN_TRIALS_PER_RUN, name="the run"
):
    """Refuse a run with fewer than ``min_trials_per_run`` trials of a compared condition."""
    min_trials_per_run = check_integer(min_trials_per_run, "min_trials_per_run", low=1)
    counts = pd.Series(list(trial_types), dtype=object).value_counts()
    few = {
        str(c): int(counts.get(c, 0)) for c in conditions if counts.get(c, 0) < min_trials_per_run
    }
    if few:
        raise InputValidationError(
            f"{name} has fewer than {min_trials_per_run} trials of compared condition(s) "
            f"{few} (trials per condition: {_counts(counts)}). Each run needs "
            f"{min_trials_per_run} or more trials of every compared condition; drop the "
            "run or the condition, or set `min_trials_per_run` to 1 for block designs with "
            "one block per condition and run."
        )


def _counts(counts):
    return {str(k): int(v) for k, v in counts.items()}


def repetition_time(bold_file, tr=None):
    """The repetition time of ``bold_file``: ``tr`` when given, else the sidecar's.

    The sidecar is the JSON file of the same stem (fMRIPrep writes ``RepetitionTime``
    there). The NIfTI header is not trusted (its fourth zoom is often 1 or 0).
    """
    if tr is not None:
        return check_number(tr, "tr", low=0, low_open=True, unit="s")
    path = Path(bold_file)
    stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    sidecar = path.with_name(stem + ".json")
    metadata = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    value = metadata.get("RepetitionTime")
    if value is None:
        where = (
            f"{sidecar.name} has no RepetitionTime"
            if sidecar.is_file()
            else (f"its sidecar {sidecar.name} does not exist")
        )
        raise InputValidationError(
            f"No repetition time for {path.name}: {where}. Add RepetitionTime (seconds) "
            "to the BOLD sidecar or pass tr."
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputValidationError(
            f"RepetitionTime of {sidecar.name} must be a number of seconds > 0; got "
            f"{value!r}. Fix the sidecar or pass tr."
        )
    return float(value)


# ----------------------------------------------------------------------------- designs


def _trial_labels(events):
    width = len(str(max(len(events) - 1, 0)))
    return [f"{t}_{i:0{width}d}" for i, t in enumerate(events["trial_type"])]


def _internal_names(n_trials):
    width = len(str(n_trials))
    return [f"trial{i:0{width}d}" for i in range(n_trials)]


class _Kernel:
    """One of nilearn's HRF kernel functions, evaluated once per (TR, oversampling).

    Passed to ``make_first_level_design_matrix`` as ``hrf_model``, it hands nilearn the
    very kernel the model's name selects, without recomputing it for every trial_type
    (one per trial here): the regressors are the same, bit for bit.
    """

    def __init__(self, function, name):
        self.function, self.__name__, self._cache = function, name, {}

    def __call__(self, t_r, oversampling=OVERSAMPLING):
        key = (float(t_r), int(oversampling))
        if key not in self._cache:
            self._cache[key] = self.function(t_r, oversampling)
        return self._cache[key]


#: column suffixes of nilearn's named models, per kernel
_KERNEL_SUFFIXES = {"hrf": "", "derivative": "_derivative", "dispersion": "_dispersion"}


def _hrf_kernels(hrf_model):
    """nilearn's kernels of ``hrf_model`` (main response first), as cached callables
    named ``hrf``, ``derivative``, ``dispersion``."""
    from nilearn.glm.first_level import hemodynamic_models as hm

    family = "spm" if hrf_model.startswith("spm") else "glover"
    kernels = [_Kernel(getattr(hm, f"{family}_hrf"), "hrf")]
    if "derivative" in hrf_model:
        kernels.append(_Kernel(getattr(hm, f"{family}_time_derivative"), "derivative"))
    if "dispersion" in hrf_model:
        kernels.append(_Kernel(getattr(hm, f"{family}_dispersion_derivative"), "dispersion"))
    return kernels


def _nilearn_design(times, events, hrf_model, opts, add_regs=None, add_reg_names=None):
    from nilearn.glm.first_level import make_first_level_design_matrix

    with warnings.catch_warnings():
        # zero-duration events are impulses by design; duplicates cannot occur (one
        # trial_type per trial)
        warnings.filterwarnings("ignore", message=".*null duration.*")
        # LSS designs may hold more trials than volumes: the one-column-per-trial matrix
        # is then singular and nilearn nudges its singular values at the 1e-15 level
        warnings.filterwarnings("ignore", message=".*singular at working precision.*")
        return make_first_level_design_matrix(
            times,
            events,
            hrf_model=hrf_model,
            drift_model=opts["drift_model"],
            high_pass=opts["high_pass"],
            drift_order=opts["drift_order"],
            add_regs=add_regs,
            add_reg_names=add_reg_names,
            min_onset=MIN_ONSET,
            oversampling=OVERSAMPLING,
        )


class _RunDesign:
    """The regressors of one run, from nilearn's design matrix with one trial_type per
    trial (the LSA design).

    ``own[:, j, :]`` are trial j's columns as nilearn builds them (main response, then
    derivatives orthogonalised to it); ``raw[:, j, :]`` the same responses before
    orthogonalisation (what sums of trials span); ``nuisance`` the confounds and drift.
    """

    def __init__(self, events, n_volumes, tr, confounds, confound_names, opts):
        self.events = events
        self.opts = opts
        self.times = frame_times(n_volumes, tr, opts["slice_time_ref"])
        self.labels = _trial_labels(events)
        internal = _internal_names(len(events))
        trial_events = pd.DataFrame(
            {"onset": events["onset"], "duration": events["duration"], "trial_type": internal}
        )
        kernels = _hrf_kernels(opts["hrf_model"])
        # a list of kernels is orthogonalised per trial like nilearn's named models
        model = kernels if len(kernels) > 1 else kernels[0]
        matrix = _nilearn_design(self.times, trial_events, model, opts, confounds, confound_names)
        own_names = [[f"{name}_{kernel.__name__}" for kernel in kernels] for name in internal]
        self.own = np.stack([matrix[cols].to_numpy() for cols in own_names], axis=1)  # (n, m, k)
        trial_columns = {c for cols in own_names for c in cols}
        self.nuisance_names = [c for c in matrix.columns if c not in trial_columns]
        self.nuisance = matrix[self.nuisance_names].to_numpy()
        if len(kernels) == 1:
            self.raw = self.own
        else:
            raw = [self.own[:, :, 0]]
            for kernel in kernels[1:]:
                no_drift = {**opts, "drift_model": None}
                part = _nilearn_design(self.times, trial_events, kernel, no_drift)
                raw.append(part[[f"{n}_{kernel.__name__}" for n in internal]].to_numpy())
            self.raw = np.stack(raw, axis=2)
        rename = {
            f"{n}_{kernel.__name__}": f"{label}{_KERNEL_SUFFIXES[kernel.__name__]}"
            for n, label in zip(internal, self.labels, strict=True)
            for kernel in kernels
        }
        self.matrix = matrix.rename(columns=rename)
        self.matrix = self.matrix[
            [rename[c] for cols in own_names for c in cols] + self.nuisance_names
        ]

    def describe_trial(self, j):
        row = self.events.iloc[j]
        return f"trial {j} ({row['trial_type']}, onset {row['onset']:g} s)"


def design_matrix(
    events,
    n_volumes,
    tr,
    confounds=None,
    confound_names=None,
    *,
    hrf_model=DESIGN_DEFAULTS["hrf_model"],
    drift_model=DESIGN_DEFAULTS["drift_model"],
    high_pass=DESIGN_DEFAULTS["high_pass"],
    drift_order=DESIGN_DEFAULTS["drift_order"],
    slice_time_ref=DESIGN_DEFAULTS["slice_time_ref"],
):
    """The design matrix of a run with one regressor per trial (the LSA design).

    Columns: one per trial (``<trial_type>_<index>``, in the order of the events; with
    derivative HRFs each trial adds ``_derivative``/``_dispersion`` columns), then the
    confounds, then nilearn's drift columns (``drift_<k>``, ``constant``). Rows are the
    volumes' acquisition times. Plot it with
    :func:`nilearn.plotting.plot_design_matrix`.
    """
    opts = check_design_options(
        "lsa", hrf_model, drift_model, high_pass, drift_order, slice_time_ref, "ols"
    )
    tr = check_number(tr, "tr", low=0, low_open=True, unit="s")
    events = check_trial_events(events, n_volumes, tr, opts["slice_time_ref"])
    confounds, confound_names = _check_confound_array(confounds, confound_names, n_volumes)
    return _RunDesign(events, n_volumes, tr, confounds, confound_names, opts).matrix


def neighbour_correlation(design, events):
    """Correlation between the regressors of neighbouring trials.

    Trials are taken in onset order; each row pairs a trial with the next one. High
    values (say above 0.7) mean the design is too fast for trial-wise estimates to be
    stable (LSA suffers first).

    Parameters
    ----------
    design : DataFrame
        Output of :func:`design_matrix` for ``events``.
    events : DataFrame
        The run's events (onset, duration, trial_type).

    Returns
    -------
    DataFrame
        ``trial``, ``trial_type``, ``onset``, ``next_trial``, ``correlation``
        (Pearson), one row per pair of consecutive trials.
    """
    events = events.reset_index(drop=True)
    labels = _trial_labels(events)
    missing = [c for c in labels if c not in design.columns]
    if missing:
        raise InputValidationError(
            f"The design lacks the trial columns {missing[:5]}; pass the design_matrix "
            "built from the same events."
        )
    order = np.argsort(events["onset"].to_numpy(), kind="stable")
    regressors = design[labels].to_numpy()[:, order]
    if order.size < 2:
        values = np.empty(0)
    else:
        centred = regressors - regressors.mean(axis=0)
        norms = np.linalg.norm(centred, axis=0)
        norms[norms == 0] = np.inf
        values = np.einsum("ij,ij->j", centred[:, :-1], centred[:, 1:]) / (norms[:-1] * norms[1:])
    return pd.DataFrame(
        {
            "trial": order[:-1],
            "trial_type": events["trial_type"].to_numpy()[order[:-1]],
            "onset": events["onset"].to_numpy()[order[:-1]],
            "next_trial": order[1:],
            "correlation": values,
        }
    )


def _check_confound_array(confounds, names, n_volumes, source="confounds"):
    if confounds is None:
        return None, None
    if isinstance(confounds, pd.DataFrame):
        names = [str(c) for c in confounds.columns]
        confounds = confounds.to_numpy(dtype=float)
    confounds = np.asarray(confounds, dtype=float)
    if confounds.ndim == 1:
        confounds = confounds[:, None]
    if confounds.ndim != 2 or confounds.shape[0] != n_volumes:
        raise InputValidationError(
            f"{source} has shape {confounds.shape} but the run has {n_volumes} volumes; "
            "give one row per volume (the confounds file of the same run)."
        )
    if confounds.shape[1] == 0:
        return None, None
    names = (
        list(names) if names is not None else [f"confound_{i}" for i in range(confounds.shape[1])]
    )
    if len(names) != confounds.shape[1]:
        raise InputValidationError(
            f"{len(names)} confound names for {confounds.shape[1]} confound columns."
        )
    if not np.isfinite(confounds).all():
        bad = [
            n for n, ok in zip(names, np.isfinite(confounds).all(axis=0), strict=True) if not ok
        ]
        raise InputValidationError(
            f"Confound column(s) {bad} of {source} hold NaN or infinite values; fill them "
            "or choose other columns."
        )
    reserved = [n for n in names if re.fullmatch(r"constant|drift_\d+|trial\d+", n)]
    if reserved or len(set(names)) != len(names):
        raise InputValidationError(
            f"Confound names must be unique and differ from the design's own columns "
            f"('constant', 'drift_<k>', 'trial<k>'); got {names}. Rename the columns."
        )
    return confounds, names


# ----------------------------------------------------------------------------- solving


def _collision_message(columns, names, what):
    """Name the columns that a near-null combination of the design involves."""
    norms = np.linalg.norm(columns, axis=0)
    zero = [n for n, v in zip(names, norms, strict=True) if v == 0]
    if zero:
        return (
            f"{what} is rank deficient: regressor(s) {zero[:_COLUMNS_SHOWN]} are zero "
            "(no response reaches a volume)."
        )
    _, s, vt = np.linalg.svd(columns / norms, full_matrices=False)
    weights = np.abs(vt[-1])
    involved = np.argsort(-weights)
    involved = [names[i] for i in involved if weights[i] > 0.05 * weights.max()]
    return (
        f"{what} is rank deficient (smallest singular value of the column-normalised "
        f"design {s[-1]:.1e}): the regressors {involved[:_COLUMNS_SHOWN]}"
        f"{' and more' if len(involved) > _COLUMNS_SHOWN else ''} are collinear"
    )


_FIX = (
    "Remove duplicated events or confound columns that repeat the drift model (e.g. a "
    "constant or a linear trend), or use fewer confounds."
)


class _Nuisance:
    """Orthogonal projection onto the complement of the confounds and drift."""

    def __init__(self, design, name):
        nuisance = design.nuisance
        norms = np.linalg.norm(nuisance, axis=0)
        unit = nuisance / np.where(norms > 0, norms, 1.0)
        s = np.linalg.svd(unit, compute_uv=False)
        if (norms == 0).any() or s[-1] < RANK_TOLERANCE:
            raise InputValidationError(
                _collision_message(nuisance, design.nuisance_names, f"The design of {name}")
                + f". {_FIX}"
            )
        self.basis, _ = np.linalg.qr(nuisance)

    def project(self, columns):
        flat = columns.reshape(columns.shape[0], -1)
        return (flat - self.basis @ (self.basis.T @ flat)).reshape(columns.shape)


def _first_rows_of_pinv(X, scale):
    """Row 0 of the pseudo-inverse of each ``X[b] / scale[b]``, divided by ``scale[b, 0]``.

    Returns the rows (b, n) and the singular values (b, p) of the scaled designs.
    """
    u, s, vt = np.linalg.svd(X / scale[:, None, :], full_matrices=False)
    rows = np.einsum("br,bnr->bn", vt[:, :, 0] / s, u)
    return rows / scale[:, :1], s


def _lsa_filters(design, nuisance, name):
    n, m, k = design.own.shape
    if m * k + design.nuisance.shape[1] > n:
        raise InputValidationError(
            f"The LSA design of {name} has {m * k} trial regressors and "
            f"{design.nuisance.shape[1]} confound and drift regressors for {n} volumes; "
            "LSA needs fewer regressors than volumes. Use method='lss' (one GLM per "
            "trial) or fewer confounds."
        )
    columns = nuisance.project(design.own).reshape(n, m * k)
    scale = np.linalg.norm(design.own, axis=0).reshape(m * k)
    safe = np.where(scale > 0, scale, 1.0)
    u, s, vt = np.linalg.svd(columns / safe, full_matrices=False)
    if (scale == 0).any() or s[-1] < RANK_TOLERANCE:
        full = np.concatenate([design.own.reshape(n, m * k), design.nuisance], axis=1)
        raise InputValidationError(
            _collision_message(full, list(design.matrix.columns), f"The LSA design of {name}")
            + f". {_FIX}"
        )
    pinv = (vt.T / s) @ u.T / safe[:, None]
    return pinv.reshape(m, k, n)[:, 0, :]


def _lss_filters(design, nuisance, name):
    """Row of each trial's LSS pseudo-inverse that gives that trial's beta."""
    n, m, k = design.own.shape
    own_p = nuisance.project(design.own)
    raw_p = own_p if design.raw is design.own else nuisance.project(design.raw)
    types = design.events["trial_type"].to_numpy()
    conditions, codes = np.unique(types, return_inverse=True)
    sums_p = np.stack([raw_p[:, codes == c].sum(axis=1) for c in range(conditions.size)], 1)
    sums = np.stack([design.raw[:, codes == c].sum(axis=1) for c in range(conditions.size)], 1)
    filters = np.empty((m, n))
    for c in range(conditions.size):
        trials = np.flatnonzero(codes == c)
        others = [d for d in range(conditions.size) if d != c]
        parts_p = [own_p[:, trials]] + [
            np.broadcast_to(sums_p[:, d][:, None], (n, trials.size, k)) for d in others
        ]
        parts = [design.own[:, trials]] + [
            np.broadcast_to(sums[:, d][:, None], (n, trials.size, k)) for d in others
        ]
        if trials.size > 1:
            parts_p.append(sums_p[:, c][:, None] - raw_p[:, trials])
            parts.append(sums[:, c][:, None] - design.raw[:, trials])
        X = np.concatenate(parts_p, axis=2).transpose(1, 0, 2)  # (trials, n, p)
        scale = np.linalg.norm(np.concatenate(parts, axis=2), axis=0)  # (trials, p)
        safe = np.where(scale > 0, scale, 1.0)
        rows, s = _first_rows_of_pinv(X, safe)
        bad = np.flatnonzero((scale == 0).any(axis=1) | (s[:, -1] < RANK_TOLERANCE))
        if bad.size:
            j = int(trials[bad[0]])
            full = np.concatenate(
                [np.concatenate(parts, axis=2)[:, bad[0]], design.nuisance], axis=1
            )
            suffixes = ["", " derivative", " dispersion"][:k]
            names = [f"{design.describe_trial(j)}{s_}" for s_ in suffixes]
            for d in others:
                names += [f"all {conditions[d]} trials{s_}" for s_ in suffixes]
            if trials.size > 1:
                names += [f"other {conditions[c]} trials{s_}" for s_ in suffixes]
            raise InputValidationError(
                _collision_message(
                    full, names + design.nuisance_names, f"The LSS design of {name}"
                )
                + f" ({bad.size} trial(s) affected). {_FIX}"
            )
        filters[trials] = rows
    return filters


def _trial_filters(design, method, name):
    """(n_trials, n_volumes) filters: ``filters @ data`` are the trials' betas."""
    nuisance = _Nuisance(design, name)
    if method == "lsa":
        return _lsa_filters(design, nuisance, name)
    return _lss_filters(design, nuisance, name)


class _RunPlan:
    """A validated run: its design and trial filters, computed before the data are read."""

    def __init__(self, events, n_volumes, tr, confounds, confound_names, opts, name):
        tr = check_number(tr, "tr", low=0, low_open=True, unit="s")
        if n_volumes < 2:
            raise InputValidationError(f"{name} has {n_volumes} volume(s); a GLM needs more.")
        if opts["method"] == "lsa" and len(events) > n_volumes:
            raise InputValidationError(
                f"LSA of {name} needs fewer trials than volumes; the run has {len(events)} "
                f"events for {n_volumes} volumes. Use method='lss'."
            )
        self.events = check_trial_events(events, n_volumes, tr, opts["slice_time_ref"], name)
        confounds, confound_names = _check_confound_array(
            confounds, confound_names, n_volumes, f"The confounds of {name}"
        )
        self.tr, self.n_volumes, self.opts = tr, n_volumes, opts
        self.confound_names = list(confound_names or [])
        self.design = _RunDesign(self.events, n_volumes, tr, confounds, confound_names, opts)
        self.filters = _trial_filters(self.design, opts["method"], name)

    def betas(self, data, chunk=2048):
        """Betas (n_trials, n_voxels) of the (n_volumes, n_voxels) ``data``, in float64."""
        out = np.empty((self.filters.shape[0], data.shape[1]))
        for start in range(0, data.shape[1], chunk):
            block = np.asarray(data[:, start : start + chunk], dtype=np.float64)
            out[:, start : start + chunk] = self.filters @ block
        return out

    def betas_of_voxels(self, values, chunk=2048):
        """Betas (n_trials, n_voxels) of voxel-major ``values`` (n_voxels, n_volumes), the
        layout of masked image data; converted to float64 a block of voxels at a time."""
        out = np.empty((self.filters.shape[0], values.shape[0]))
        for start in range(0, values.shape[0], chunk):
            block = np.asarray(values[start : start + chunk], dtype=np.float64)
            out[:, start : start + chunk] = self.filters @ block.T
        return out


def _masked_voxels(img, mask, name):
    """(n_voxels, n_volumes) data of a 4D image inside ``mask``, in the file's float type
    (no transposed copy); NaN or infinite values are refused."""
    values = np.asanyarray(img.dataobj)[mask]
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        raise InputValidationError(
            f"{name} holds NaN or infinite values in {int((~finite).sum())} voxel(s) inside "
            "the mask; re-run preprocessing or exclude those voxels from the mask."
        )
    return values


def trial_betas(
    data,
    events,
    tr,
    confounds=None,
    confound_names=None,
    *,
    method=DESIGN_DEFAULTS["method"],
    hrf_model=DESIGN_DEFAULTS["hrf_model"],
    drift_model=DESIGN_DEFAULTS["drift_model"],
    high_pass=DESIGN_DEFAULTS["high_pass"],
    drift_order=DESIGN_DEFAULTS["drift_order"],
    slice_time_ref=DESIGN_DEFAULTS["slice_time_ref"],
    noise_model=DESIGN_DEFAULTS["noise_model"],
):
    """Trial-wise betas of one run (LSS or LSA), on arrays.

    Parameters
    ----------
    data : array-like, shape (n_volumes, n_voxels)
        The run's BOLD time series (e.g. masked), not scaled: the betas are in its units.
    events : DataFrame
        onset and duration (seconds from the first volume) and trial_type; every row is
        a trial.
    tr : float
        Repetition time in seconds.
    confounds : array-like (n_volumes, n_confounds) or DataFrame, optional
        Regressors of no interest added to every GLM.
    confound_names : list of str, optional
        Their names (taken from the columns of a DataFrame).
    method : {"lss", "lsa"}
        LSS: one GLM per trial with that trial's regressor and the other trials grouped
        by trial_type (Mumford et al. 2012); LSA: one GLM with one regressor per trial.
    hrf_model : str
        nilearn's name: "glover", "spm", with " + derivative" or " + derivative +
        dispersion"; the beta is the coefficient of the main response.
    drift_model : {"cosine", "polynomial", None}
        nilearn's drift model (a constant is always included).
    high_pass : float
        Cut-off frequency (Hz) of the cosine drift.
    drift_order : int
        Order of the polynomial drift.
    slice_time_ref : float
        Position of the reference slice in the TR (0 to 1), as in nilearn.
    noise_model : {"ols"}
        Ordinary least squares.

    Returns
    -------
    ndarray, shape (n_events, n_voxels)
        One row per event, in the order of ``events``; float64.

    Notes
    -----
    The betas equal those of ``FirstLevelModel(t_r=tr, hrf_model=..., drift_model=...,
    high_pass=..., noise_model="ols", signal_scaling=False)``: LSS fitted once per
    trial on events in which that trial has its own trial_type, LSA fitted once on
    events with one trial_type per trial.
    """
    opts = check_design_options(
        method, hrf_model, drift_model, high_pass, drift_order, slice_time_ref, noise_model
    )
    data = np.asarray(data)
    if data.ndim != 2:
        raise InputValidationError(
            f"data must be a 2D (n_volumes, n_voxels) array; got shape {data.shape}."
        )
    if not np.isfinite(data).all():
        raise InputValidationError(
            "data hold NaN or infinite values; clean the series or drop those voxels."
        )
    plan = _RunPlan(events, data.shape[0], tr, confounds, confound_names, opts, "the run")
    return plan.betas(data)


def trial_betas_img(bold_img, mask_img, events, tr, confounds=None, confound_names=None, **design):
    """Trial-wise betas of one run as a 4D image (one volume per event, float32).

    ``bold_img`` (4D) and ``mask_img`` (3D, same grid) are images or paths; the other
    parameters are those of :func:`trial_betas`. Voxels outside the mask are 0.
    """
    opts = check_design_options(**design)
    bold_img, mask_img = (
        nb.load(bold_img) if isinstance(bold_img, (str, Path)) else bold_img,
        (nb.load(mask_img) if isinstance(mask_img, (str, Path)) else mask_img),
    )
    if len(bold_img.shape) != 4:
        raise InputValidationError(f"The BOLD image must be 4D; got shape {bold_img.shape}.")
    check_same_grid(mask_img, bold_img, "the mask", "the BOLD series")
    mask = np.asanyarray(mask_img.dataobj) > 0
    plan = _RunPlan(events, bold_img.shape[3], tr, confounds, confound_names, opts, "the run")
    betas = plan.betas_of_voxels(_masked_voxels(bold_img, mask, "the BOLD series"))
    return _betas_to_img(betas, mask, bold_img)


def _betas_to_img(betas, mask, reference):
    data = np.zeros((*mask.shape, betas.shape[0]), dtype=np.float32)
    data[mask] = betas.T.astype(np.float32)
    img = nb.Nifti1Image(data, reference.affine)
    img.header.set_xyzt_units(*reference.header.get_xyzt_units())
    img.header["pixdim"][1:4] = reference.header["pixdim"][1:4]
    img.header["pixdim"][4] = 1.0
    return img


# ----------------------------------------------------------------------------- files


def _betaseries_metadata(plan, conditions=None):
    """Sidecar content of a run's betaseries: every design option and what was used."""
    opts = plan.opts
    correlation = neighbour_correlation(plan.design.matrix, plan.events)["correlation"]
    method = opts["method"].upper()
    meta = {
        "Description": (
            f"Trial-wise GLM estimates ({method}): one volume per event of the events "
            "file, in its order; the estimates themselves, not standardised."
        ),
        "Method": method,
        "MethodDescription": (
            "One GLM per trial: the trial's regressor, the run's other trials grouped by "
            "trial_type, the confounds and the drift (least-squares-separate)."
            if method == "LSS"
            else "One GLM per run with one regressor per trial (least-squares-all)."
        ),
        "HRFModel": opts["hrf_model"],
        "DriftModel": opts["drift_model"] or "none",
        "HighPass": opts["high_pass"] if opts["drift_model"] == "cosine" else None,
        "DriftOrder": opts["drift_order"] if opts["drift_model"] == "polynomial" else None,
        "SliceTimeRef": opts["slice_time_ref"],
        "NoiseModel": opts["noise_model"],
        "SignalScaling": False,
        "MinOnset": MIN_ONSET,
        "Oversampling": OVERSAMPLING,
        "RepetitionTime": plan.tr,
        "NumberOfVolumes": int(plan.n_volumes),
        "NumberOfTrials": int(len(plan.events)),
        "TrialTypes": sorted(plan.events["trial_type"].unique().tolist()),
        "Confounds": plan.confound_names,
        "NeighbourCorrelationMax": float(correlation.max()) if len(correlation) else None,
        "NeighbourCorrelationMedian": float(correlation.median()) if len(correlation) else None,
        "DesignSoftware": f"nilearn {_nilearn_version()} make_first_level_design_matrix",
    }
    if method == "LSS":
        meta["References"] = [MUMFORD_2012]
    if conditions is not None:
        meta["Conditions"] = list(conditions)
    return {k: v for k, v in meta.items() if v is not None}


def _nilearn_version():
    import nilearn

    return nilearn.__version__


class Betaseries(NamedTuple):
    """One run's trial-wise betas and what describes them."""

    img: nb.Nifti1Image
    """4D, one volume per event (events order), float32, 0 outside the mask."""
    trials: pd.DataFrame
    """The events modelled, one row per volume of ``img`` (every column of the file)."""
    metadata: dict
    """Sidecar content: every design option, the confounds used, trial counts."""
    design: pd.DataFrame
    """The run's design matrix with one column per trial (:func:`design_matrix`)."""


def run_betaseries(
    bold_file,
    mask_file,
    events_file,
    *,
    tr=None,
    confounds_file=None,
    confounds=None,
    conditions=None,
    min_trials_per_run=MIN_TRIALS_PER_RUN,
    **design,
):
    """Trial-wise betas of one run from its files.

    Everything is checked (grid, TR, events, trial counts, confounds, design rank)
    before the BOLD data are read.

    Parameters
    ----------
    bold_file, mask_file : path
        Preprocessed BOLD series (fMRIPrep ``desc-preproc_bold``) and its brain mask.
    events_file : path
        The run's BIDS ``_events.tsv``.
    tr : float, optional
        Repetition time (s); default: ``RepetitionTime`` of the BOLD's JSON sidecar.
    confounds_file : path, optional
        fMRIPrep ``desc-confounds_timeseries.tsv``.
    confounds : list of str or None
        Columns of ``confounds_file`` added to the GLM (None: the six motion
        parameters when present; ``["none"]``: none).
    conditions : list of str, optional
        Compared conditions: the run must hold ``min_trials_per_run`` trials of each.
    **design
        ``method``, ``hrf_model``, ``drift_model``, ``high_pass``, ``drift_order``,
        ``slice_time_ref``, ``noise_model`` (see :func:`trial_betas`).

    Returns
    -------
    Betaseries
        ``img`` (4D, one volume per event in events order, float32, 0 outside the
        mask), ``trials`` (the events modelled, every column of the file), ``metadata``
        (sidecar content) and ``design`` (the design matrix, one column per trial).
    """
    opts = check_design_options(**design)
    bold_img, mask_img = nb.load(bold_file), nb.load(mask_file)
    bold_name = Path(bold_file).name
    if len(bold_img.shape) != 4:
        raise InputValidationError(
            f"{bold_name} has shape {bold_img.shape}; a BOLD series must be 4D."
        )
    check_same_grid(mask_img, bold_img, Path(mask_file).name, bold_name)
    tr = repetition_time(bold_file, tr)
    events, events_name = read_events(events_file), Path(events_file).name
    if conditions is not None:
        check_trial_counts(events["trial_type"], conditions, min_trials_per_run, events_name)
    values, names = run_confound_columns(confounds_file, confounds, bold_img.shape[3], bold_name)
    plan = _RunPlan(events, bold_img.shape[3], tr, values, names, opts, events_name)
    mask = np.asanyarray(mask_img.dataobj) > 0
    betas = plan.betas_of_voxels(_masked_voxels(bold_img, mask, bold_name))
    return Betaseries(
        _betas_to_img(betas, mask, bold_img),
        plan.events,
        _betaseries_metadata(plan, conditions),
        plan.design.matrix,
    )

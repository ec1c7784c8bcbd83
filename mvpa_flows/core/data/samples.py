"""Events to labelled samples: one label per volume, the run as cross-validation group."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mvpa_flows.core.errors import InputValidationError

SAMPLE_COLUMNS = ("run", "volume", "onset", "label")
#: The sample table's leading column when runs come from several sessions.
SESSION_COLUMN = "session"


def run_keys(runs: Sequence, sessions: Sequence | None = None) -> list:
    """Cross-validation group of each run: the run, or session x run with sessions.

    ``run_keys([1, 2, 1], ["1", "1", "2"]) -> ["ses-1_run-1", "ses-1_run-2",
    "ses-2_run-1"]``; without sessions the run labels are returned unchanged.
    """
    runs = list(runs)
    if sessions is None or all(s is None for s in sessions):
        return runs
    return [
        f"ses-{s}_run-{r}" if s is not None else f"run-{r}"
        for s, r in zip(sessions, runs, strict=True)
    ]


def sample_groups(table: pd.DataFrame) -> np.ndarray:
    """Cross-validation group of every sample of a sample table (see :func:`run_keys`)."""
    sessions = table[SESSION_COLUMN].tolist() if SESSION_COLUMN in table.columns else None
    return np.asarray(run_keys(table["run"].tolist(), sessions))


def contrast_label(conditions: Sequence[str]) -> str:
    """Return the BIDS ``contrast-`` label for ``conditions``.

    Each condition is turned into camelCase alphanumerics and the pieces are joined
    by ``Vs``: ``["face", "house"] -> "faceVsHouse"``,
    ``["scrambled_pix", "face"] -> "scrambledPixVsFace"``.
    """
    parts = []
    for i, condition in enumerate(conditions):
        words = [w for w in re.split(r"[^a-zA-Z0-9]+", str(condition)) if w]
        if not words:
            raise InputValidationError(
                f"Condition {condition!r} has no letters or digits, so no BIDS contrast "
                "label can be made from it; pass --contrast-label."
            )
        word = words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])
        parts.append(word if i == 0 else word[:1].upper() + word[1:])
    return "Vs".join(parts)


def read_events(path) -> pd.DataFrame:
    """Read a BIDS ``_events.tsv`` and check it has onset, duration and trial_type.

    Rows with ``n/a`` (or empty) onset, duration or trial_type cannot be placed in time
    and are dropped; their number is kept in ``events.attrs["n_dropped"]`` so callers
    can say so.
    """
    try:
        events = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputValidationError(
            f"Cannot read the events file {path}: {err}. A BIDS events file is tab-separated "
            "with onset, duration and trial_type columns."
        ) from None
    missing = [c for c in ("onset", "duration", "trial_type") if c not in events.columns]
    if missing:
        raise InputValidationError(
            f"Events file {path} lacks the column(s) {missing}; a BIDS events file needs "
            "onset, duration and trial_type (tab-separated)."
        )
    for column in ("onset", "duration"):
        events[column] = pd.to_numeric(events[column], errors="coerce")
    events["trial_type"] = events["trial_type"].replace("", np.nan)
    n_rows = len(events)
    events = events.dropna(subset=["onset", "duration", "trial_type"]).copy()
    events["trial_type"] = events["trial_type"].astype(str)
    events.attrs["n_dropped"] = n_rows - len(events)
    return events


def events_outside_run(events, n_volumes, tr, conditions, hrf_delay=0.0):
    """Numbers of events of ``conditions`` that start after the run or end past it.

    Returns
    -------
    (int, int)
        Events starting at or after the end of the run (they label no volume) and events
        running past the end (their last part labels no volume).
    """
    end = n_volumes * float(tr)
    chosen = events[events["trial_type"].isin(list(conditions))]
    start = chosen["onset"].to_numpy(float) + hrf_delay
    stop = start + chosen["duration"].to_numpy(float)
    after = int(((start >= end) | (stop <= 0)).sum())
    past = int(((start < end) & (stop > end)).sum())
    return after, past


def label_volumes(
    events: pd.DataFrame,
    n_volumes: int,
    tr: float,
    conditions: Sequence[str],
    hrf_delay: float = 0.0,
) -> np.ndarray:
    """Label each volume of a run with the condition whose event covers it.

    A volume acquired at ``t = index * tr`` belongs to an event when
    ``onset + hrf_delay <= t < onset + duration + hrf_delay``. Volumes covered by no
    event of ``conditions`` get the empty string; volumes covered by events of two
    different conditions are ambiguous and also left unlabelled.

    Returns
    -------
    labels : ndarray of object, shape (n_volumes,)
    """
    times = np.arange(n_volumes) * float(tr)
    labels = np.full(n_volumes, "", dtype=object)
    conflict = np.zeros(n_volumes, dtype=bool)
    wanted = set(conditions)
    for onset, duration, trial_type in events[["onset", "duration", "trial_type"]].itertuples(
        index=False
    ):
        if trial_type not in wanted:
            continue
        start = float(onset) + hrf_delay
        inside = (times >= start) & (times < start + float(duration))
        conflict |= inside & (labels != "") & (labels != trial_type)
        labels[inside] = trial_type
    labels[conflict] = ""
    return labels


def build_sample_table(
    events_per_run: Sequence[pd.DataFrame],
    n_volumes_per_run: Sequence[int],
    tr_per_run: Sequence[float],
    runs: Sequence,
    conditions: Sequence[str],
    hrf_delay: float = 0.0,
    events_files: Sequence[str] | None = None,
    sessions: Sequence | None = None,
    sample_masks: Sequence | None = None,
) -> pd.DataFrame:
    """Build the sample table ([session,] run, volume, onset, label) and validate it.

    Parameters
    ----------
    sessions : session label per run (None: no session column)
    sample_masks : per run, the indices of the volumes kept (None: all); labelled volumes
        that are censored are left out of the table

    Warns
    -----
    UserWarning
        Per run, with counts: events with ``n/a`` fields, events outside the run, and
        labelled volumes censored by ``sample_masks``.

    Raises
    ------
    InputValidationError
        When a condition never occurs, fewer than two conditions are asked for, a run is
        left with no sample, or a run holds a condition in a single volume (which cannot
        be cleaned or cross-validated sensibly).
    """
    conditions = list(dict.fromkeys(conditions))
    if len(conditions) < 2:
        raise InputValidationError(
            f"--conditions needs at least two conditions to compare, got {conditions}; "
            "name two or more trial_type values, e.g. --conditions face house."
        )
    n_runs = len(runs)
    names = list(events_files) if events_files is not None else [f"run {r}" for r in runs]
    with_sessions = sessions is not None and any(s is not None for s in sessions)
    sessions = list(sessions) if sessions is not None else [None] * n_runs
    sample_masks = list(sample_masks) if sample_masks is not None else [None] * n_runs
    present = set()
    for events in events_per_run:
        present.update(events["trial_type"].unique())
    absent = [c for c in conditions if c not in present]
    if absent:
        raise InputValidationError(
            f"Condition(s) {absent} do not occur in any events file; the trial_type "
            f"values present are {sorted(present)}. Fix --conditions."
        )
    tables, notes, empty = [], [], []
    for events, n_vol, tr, run, session, kept, name in zip(
        events_per_run, n_volumes_per_run, tr_per_run, runs, sessions, sample_masks, names,
        strict=True,
    ):  # fmt:skip
        labels = label_volumes(events, n_vol, tr, conditions, hrf_delay)
        keep = np.flatnonzero(labels != "")
        problems = []
        dropped = int(events.attrs.get("n_dropped", 0))
        if dropped:
            problems.append(f"{dropped} event(s) with n/a onset, duration or trial_type ignored")
        after, past = events_outside_run(events, n_vol, tr, conditions, hrf_delay)
        if after:
            problems.append(
                f"{after} event(s) of {conditions} outside the run ({n_vol} volumes x {tr:g} s "
                f"= {n_vol * tr:g} s, onsets shifted by {hrf_delay:g} s) label no volume"
            )
        if past:
            problems.append(f"{past} event(s) run past the end of the run (cut short)")
        if kept is not None:
            censored = np.setdiff1d(keep, np.asarray(kept))
            if censored.size:
                problems.append(f"{censored.size} labelled volume(s) censored by the confounds")
            keep = np.intersect1d(keep, np.asarray(kept))
        if problems:
            notes.append(f"{name}: " + "; ".join(problems) + ".")
        if keep.size == 0:
            empty.append(name)
            continue
        counts = pd.Series(labels[keep]).value_counts()
        single = sorted(c for c, n in counts.items() if n == 1)
        if single:
            raise InputValidationError(
                f"In {name}, condition(s) {single} cover a single volume (TR {tr} s). "
                "Each condition needs at least two volumes per run; check the event "
                "durations and --hrf-delay, or drop the condition."
            )
        columns = {"run": run, "volume": keep, "onset": keep * float(tr),
                   "label": labels[keep].astype(str)}  # fmt:skip
        if with_sessions:
            columns = {SESSION_COLUMN: session, **columns}
        tables.append(pd.DataFrame(columns))
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    if empty and len(empty) < n_runs:
        raise InputValidationError(
            f"No volume of {empty} falls inside an event of {conditions} (see the warnings "
            "above); such a run would silently drop out of the cross-validation. Fix its "
            "events (onsets in seconds from the first volume, n/a values) or leave the run "
            "out with --bids-filter-file."
        )
    if not tables:
        raise InputValidationError(
            f"No volume falls inside an event of {conditions}; check the events' onsets "
            "and durations against the BOLD series length and --hrf-delay."
        )
    return pd.concat(tables, ignore_index=True)

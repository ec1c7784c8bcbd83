"""Events to labelled samples: one label per volume, the run as cross-validation group."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mvpa_flows.core.errors import InputValidationError

SAMPLE_COLUMNS = ("run", "volume", "onset", "label")


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
    """Read a BIDS ``_events.tsv`` and check it has onset, duration and trial_type."""
    events = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    missing = [c for c in ("onset", "duration", "trial_type") if c not in events.columns]
    if missing:
        raise InputValidationError(
            f"Events file {path} lacks the column(s) {missing}; a BIDS events file needs "
            "onset, duration and trial_type (tab-separated)."
        )
    events = events.dropna(subset=["onset", "duration", "trial_type"])
    events["trial_type"] = events["trial_type"].astype(str)
    return events


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
) -> pd.DataFrame:
    """Build the sample table (run, volume, onset, label) across runs and validate it.

    Raises
    ------
    InputValidationError
        When a condition never occurs, fewer than two conditions are asked for, or a
        run holds a condition in a single volume (which cannot be cleaned or
        cross-validated sensibly).
    """
    conditions = list(dict.fromkeys(conditions))
    if len(conditions) < 2:
        raise InputValidationError(
            f"--conditions needs at least two conditions to compare, got {conditions}; "
            "name two or more trial_type values, e.g. --conditions face house."
        )
    names = list(events_files) if events_files is not None else [f"run {r}" for r in runs]
    present = set()
    for events in events_per_run:
        present.update(events["trial_type"].unique())
    absent = [c for c in conditions if c not in present]
    if absent:
        raise InputValidationError(
            f"Condition(s) {absent} do not occur in any events file; the trial_type "
            f"values present are {sorted(present)}. Fix --conditions."
        )
    tables = []
    for events, n_vol, tr, run, name in zip(
        events_per_run, n_volumes_per_run, tr_per_run, runs, names, strict=True
    ):
        labels = label_volumes(events, n_vol, tr, conditions, hrf_delay)
        keep = np.flatnonzero(labels != "")
        counts = pd.Series(labels[keep]).value_counts()
        single = sorted(c for c, n in counts.items() if n == 1)
        if single:
            raise InputValidationError(
                f"In {name}, condition(s) {single} cover a single volume (TR {tr} s). "
                "Each condition needs at least two volumes per run; check the event "
                "durations and --hrf-delay, or drop the condition."
            )
        tables.append(
            pd.DataFrame(
                {
                    "run": run,
                    "volume": keep,
                    "onset": keep * float(tr),
                    "label": labels[keep].astype(str),
                }
            )
        )
    table = pd.concat(tables, ignore_index=True)
    if table.empty:
        raise InputValidationError(
            f"No volume falls inside an event of {conditions}; check the events' onsets "
            "and durations against the BOLD series length and --hrf-delay."
        )
    return table

"""Checks of the runs and timing of an alignment analysis, before any data are loaded.

The same checks serve the Python API, the workflows and the BIDS-App (which maps the
parameter names to its flags: ``train_runs`` -> ``--ha-train-runs``, ``test_runs`` ->
``--ha-test-runs``, ``segment_length`` -> ``--segment-length``):

* :func:`split_runs` chooses disjoint training and test runs present in every subject;
* :func:`check_training_samples` requires the same number of training volumes for all;
* :func:`check_repetition_time` requires one TR;
* :func:`check_segments` turns ``segment_length`` (s) and ``tr`` (s) into volumes per
  segment and a number of segments, refusing fewer than 2 segments.

:class:`RunSelectionError` (a usage error: the run choice itself is wrong, e.g.
circular) is raised apart from the other :class:`InputValidationError` (the data do not
allow the analysis), so that the app can give them different exit codes.
"""

from __future__ import annotations

import math
from numbers import Real

from mvpa_flows.core.errors import InputValidationError

__all__ = [
    "RunSelectionError",
    "check_repetition_time",
    "check_segments",
    "check_training_samples",
    "split_runs",
]


class RunSelectionError(InputValidationError):
    """The training/test run selection cannot work (overlapping runs: circular; no
    separate runs to choose from)."""


def _labels(runs, name):
    if runs is None:
        return None
    if isinstance(runs, (str, bytes)) or not hasattr(runs, "__iter__"):
        runs = [runs]
    out = list(runs)
    if not out:
        raise RunSelectionError(f"Parameter '{name}' is empty; give at least one run or None.")
    return out


def split_runs(runs, train_runs=None, test_runs=None):
    """Disjoint training and test runs that every subject has.

    Parameters
    ----------
    runs : dict
        Subject label -> the run labels it has (e.g. ``{"01": [1, 2], "02": [1, 2]}``).
    train_runs, test_runs : list or None
        The requested runs. When either is None, the runs shared by every subject are
        split: the test runs are the last shared run unless given, the training runs the
        other shared runs unless given.

    Returns
    -------
    (train_runs, test_runs) : lists

    Raises
    ------
    RunSelectionError
        Fewer than 2 shared runs to choose from, or runs in both lists (circular).
    InputValidationError
        A subject lacks a requested run (naming the subject and its runs).
    """
    train, test = _labels(train_runs, "train_runs"), _labels(test_runs, "test_runs")
    present = {str(s): list(r) for s, r in runs.items()}
    if train is None or test is None:
        shared = sorted(set.intersection(*(set(r) for r in present.values()))) if present else []
        if len(shared) < 2:
            raise RunSelectionError(
                "Alignment needs separate training and test runs; the subjects share the "
                f"runs {shared}. Give train_runs and test_runs."
            )
        if test is None:
            test = [r for r in shared if r not in train] if train else shared[-1:]
        if train is None:
            train = [r for r in shared if r not in test]
    overlap = sorted(set(train) & set(test), key=str)
    if overlap:
        raise RunSelectionError(
            f"Runs {overlap} are in both train_runs {list(train)} and test_runs {list(test)}: "
            "estimating the alignment on the test data is circular. Use disjoint runs."
        )
    if not train or not test:
        raise RunSelectionError(
            f"No {'training' if not train else 'test'} run is left (train_runs {train}, "
            f"test_runs {test}); give both explicitly."
        )
    for subject, have in present.items():
        missing = [r for r in list(train) + list(test) if r not in have]
        if missing:
            which = "training" if set(missing) & set(train) else "test"
            raise InputValidationError(
                f"sub-{subject} lacks {which} run(s) {missing} (it has runs {have}); drop the "
                "subject or change train_runs/test_runs."
            )
    return list(train), list(test)


def check_training_samples(n_volumes, train_runs):
    """The number of training volumes, the same for every subject.

    Parameters
    ----------
    n_volumes : dict
        Subject label -> {run label -> number of volumes}.
    train_runs : list

    Returns
    -------
    int
    """
    counts = {}
    for subject, per_run in n_volumes.items():
        missing = [r for r in train_runs if r not in per_run]
        if missing:
            raise InputValidationError(
                f"sub-{subject} lacks training run(s) {missing} (it has runs "
                f"{list(per_run)}); drop the subject or change train_runs."
            )
        counts[subject] = int(sum(per_run[r] for r in train_runs))
    if len(set(counts.values())) != 1:
        raise InputValidationError(
            f"The training runs {list(train_runs)} have different numbers of volumes across "
            f"subjects ({counts}); hyperalignment needs the same samples (time points) for "
            "everyone. Crop the runs to a common length."
        )
    return next(iter(counts.values()))


def check_repetition_time(trs):
    """The one repetition time (s) of every subject's runs.

    Parameters
    ----------
    trs : dict
        Subject label -> list of the TRs of its runs (seconds).
    """
    values = {float(t) for per in trs.values() for t in per}
    if len(values) != 1:
        detail = {s: sorted({float(t) for t in per}) for s, per in trs.items()}
        raise InputValidationError(
            f"The subjects' runs have different TRs {sorted(values)} ({detail}); "
            "between-subject comparisons need one sampling rate. Select runs acquired with "
            "the same TR."
        )
    tr = values.pop()
    if not (math.isfinite(tr) and tr > 0):
        raise InputValidationError(f"The repetition time must be positive; got {tr}.")
    return tr


def check_segments(tr, segment_length, n_samples):
    """Volumes per segment and number of segments of a movie time-segment classification.

    Parameters
    ----------
    tr : float
        Repetition time in seconds.
    segment_length : float
        Segment duration in seconds (Haxby et al., 2011: 18 s).
    n_samples : int
        Test volumes per subject.

    Returns
    -------
    (segment_volumes, n_segments) : ints
        ``round(segment_length / tr)`` and ``n_samples // segment_volumes``.
    """
    for name, value in (("tr", tr), ("segment_length", segment_length)):
        if (
            value is None
            or isinstance(value, bool)
            or not isinstance(value, Real)
            or not math.isfinite(value)
            or value <= 0
        ):
            what = "repetition time" if name == "tr" else "segment duration"
            raise InputValidationError(
                f"Parameter '{name}' ({what} in seconds) must be a positive number in "
                f"segments mode; got {value!r}."
            )
    seg_len = int(round(segment_length / tr))
    n_seg = int(n_samples) // max(seg_len, 1)
    if seg_len < 1 or n_seg < 2:
        raise InputValidationError(
            f"Parameter 'segment_length'={segment_length} s with tr={tr} s gives {seg_len} "
            f"volumes per segment and {n_seg} segments of {n_samples} test volumes; need at "
            f"least 2 segments of at least 1 volume. Use a segment_length between {tr:g} and "
            f"{n_samples * tr / 2:g} s."
        )
    return seg_len, n_seg

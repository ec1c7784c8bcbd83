"""One helper for parameter checks and one message style.

A message names the parameter, says what was expected, what was given, and the fix:
``Parameter 'radius' must be a finite number > 0 (mm); got nan. Pass e.g. radius=6.``
Core messages name Python parameters; the CLI maps them to its flags
(``cli.parser.FLAG_FOR_PARAMETER``). Checks run before any expensive work.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

__all__ = ["check_finite_array", "check_integer", "check_labels", "check_number", "check_option"]


def _fix(fix):
    return f" {fix}" if fix else ""


def check_number(value, name, *, low=None, high=None, low_open=False, unit="", fix=""):
    """A finite real number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    ok = (
        isinstance(value, Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (low is None or (value > low if low_open else value >= low))
        and (high is None or value <= high)
    )
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            bounds.append(f"<= {high:g}")
        what = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
        raise ValueError(
            f"Parameter '{name}' must be {what}{f' ({unit})' if unit else ''}; "
            f"got {value!r}.{_fix(fix)}"
        )
    return float(value)


def check_integer(value, name, *, low=None, high=None, fix=""):
    """An integer (not a bool) in ``[low, high]``."""
    ok = (
        isinstance(value, Integral)
        and not isinstance(value, bool)
        and (low is None or value >= low)
        and (high is None or value <= high)
    )
    if not ok:
        bounds = [f">= {low}" if low is not None else "", f"<= {high}" if high is not None else ""]
        what = " and ".join(b for b in bounds if b)
        raise ValueError(
            f"Parameter '{name}' must be an integer{' ' + what if what else ''}; "
            f"got {value!r}.{_fix(fix)}"
        )
    return int(value)


def check_option(value, name, options, fix=""):
    """One of ``options`` (compared with ``==``)."""
    if value not in options:
        raise ValueError(
            f"Parameter '{name}' must be one of {list(options)}; got {value!r}.{_fix(fix)}"
        )
    return value


def check_finite_array(X, name, fix="Clean the data or drop those voxels from the mask."):
    """``X`` has no NaN or infinite value; the message counts and locates them."""
    X = np.asarray(X)
    bad = ~np.isfinite(X)
    if bad.any():
        where = ""
        if X.ndim == 2:
            cols = np.flatnonzero(bad.any(axis=0))
            where = f" in {len(cols)} column(s) (first: {cols[:5].tolist()})"
        raise ValueError(
            f"Parameter '{name}' contains {int(bad.sum())} NaN or infinite value(s){where}."
            f"{_fix(fix)}"
        )
    return X


def check_labels(y, name="y"):
    """Class labels: 1D, no NaN or None (a missing label is not a class)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"Parameter '{name}' must be 1D (one label per sample); got {y.shape}.")
    if y.dtype.kind == "f":
        missing = np.isnan(y)
    elif y.dtype.kind == "O":
        missing = np.array([v is None or (isinstance(v, float) and math.isnan(v)) for v in y])
    else:
        missing = np.zeros(len(y), bool)
    if missing.any():
        raise ValueError(
            f"Parameter '{name}' has {int(missing.sum())} missing label(s) (NaN or None) at "
            f"sample(s) {np.flatnonzero(missing)[:5].tolist()}; a missing label is not a "
            "class. Drop those samples (and their rows of X and groups) first."
        )
    return y

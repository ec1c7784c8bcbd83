"""Group statistics of searchlight accuracy maps: mean, t and FWE-corrected p.

A one-sample test of (accuracy - chance) > 0 over subjects at every voxel, with family-wise
error control by the maximum statistic over voxels under random sign flips (Nichols &
Holmes, 2002), the scheme of :func:`nilearn.mass_univariate.permuted_ols` with an
intercept-only design (``model_intercept=False``, tested variable = ones). With
``2**n_subjects <= n_perm`` all sign flips are enumerated (an exact test).
"""

from __future__ import annotations

import numbers

import numpy as np

from mvpa_flows.core.errors import InputValidationError

__all__ = ["one_sample_t", "group_searchlight_stats"]


def one_sample_t(d):
    """t of the column means of d (n_subjects, n_voxels) against 0 (ddof=1).

    Columns without variance get t = 0 (undefined), so they never drive the maximum.
    """
    d = np.asarray(d, dtype=np.float64)
    n = d.shape[0]
    mean = d.mean(axis=0)
    ss = np.einsum("ij,ij->j", d, d)
    return _t_from_mean(mean, ss, n)


def _t_from_mean(mean, ss, n):
    var = (ss - n * mean**2) / (n - 1)
    se = np.sqrt(np.clip(var, 0, None) / n)
    ok = se > 1e-12 * np.sqrt(ss / n + 1e-300)
    t = np.zeros(np.broadcast(mean, se).shape)
    np.divide(mean, se, out=t, where=ok)
    return t


def group_searchlight_stats(
    maps, chance, n_perm=10000, two_sided=False, random_state=0, batch_size=256
):
    """Group mean accuracy, one-sample t against chance, FWE p by sign-flip max-t.

    Parameters
    ----------
    maps : array-like, shape (n_subjects, n_voxels)
        One accuracy (or other score) map per subject, same voxels.
    chance : float or array of shape (n_voxels,)
        Chance level subtracted before testing.
    n_perm : int, default 10000
        Random sign flips; if ``2**n_subjects <= n_perm`` every flip is enumerated.
    two_sided : bool, default False
        Test |t| (accuracy different from chance) instead of above chance.
    random_state : int or numpy Generator
    batch_size : int
        Permutations per block (memory: batch_size x n_voxels floats).

    Returns
    -------
    dict with ``mean`` (n_voxels), ``t`` (n_voxels), ``p_fwe`` (n_voxels; the smallest
    value is 1 / (n_perm + 1)), ``logp_fwe`` (-log10 p_fwe, as nilearn's ``logp_max_t``),
    ``h0_max_t`` (n_perm) the null distribution of the maximum, ``n_perm`` and
    ``exact`` (True when all flips were enumerated).
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 2:
        raise InputValidationError(
            f"`maps` must be (n_subjects, n_voxels); got shape {maps.shape}. Stack one "
            "flattened accuracy map per subject."
        )
    n, v = maps.shape
    if n < 2:
        raise InputValidationError(
            f"`maps` must hold at least 2 subjects for a group test; got {n}."
        )
    if not np.isfinite(maps).all():
        raise InputValidationError(
            "`maps` contains NaN or infinite values; restrict to voxels inside every "
            "subject's mask first."
        )
    chance = np.asarray(chance, dtype=np.float64)
    if chance.ndim not in (0, 1) or (chance.ndim == 1 and chance.shape != (v,)):
        raise InputValidationError(
            f"`chance` must be a number or one value per voxel ({v}); got shape {chance.shape}."
        )
    if not isinstance(n_perm, numbers.Integral) or n_perm < 1:
        raise InputValidationError(f"`n_perm` must be a positive integer; got {n_perm!r}.")
    d = maps - chance
    ss = np.einsum("ij,ij->j", d, d)
    t = _t_from_mean(d.mean(axis=0), ss, n)
    stat = np.abs(t) if two_sided else t

    exact = 2**n <= n_perm
    if exact:
        codes = np.arange(2**n)
        flips = 1.0 - 2.0 * ((codes[:, None] >> np.arange(n)) & 1)
    else:
        rng = np.random.default_rng(random_state)
        flips = rng.choice([-1.0, 1.0], size=(n_perm, n))
    h0 = np.empty(flips.shape[0])
    for start in range(0, flips.shape[0], batch_size):
        S = flips[start : start + batch_size]
        # Sums of squares do not change under sign flips: only the means do.
        tp = _t_from_mean((S @ d) / n, ss, n)
        h0[start : start + batch_size] = (np.abs(tp) if two_sided else tp).max(axis=1)
    h0_sorted = np.sort(h0)
    n_ge = h0.size - np.searchsorted(h0_sorted, stat, side="left")
    if exact:
        p = n_ge / h0.size
    else:
        p = (1.0 + n_ge) / (h0.size + 1.0)
    return {
        "mean": maps.mean(axis=0),
        "t": t,
        "p_fwe": p,
        "logp_fwe": -np.log10(p),
        "h0_max_t": h0,
        "n_perm": int(h0.size),
        "exact": bool(exact),
    }

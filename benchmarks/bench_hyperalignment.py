"""Benchmark: ROI hyperalignment against a straightforward full-SVD implementation.

Targets (issue): 10 subjects x 1,000 voxels x 2,000 samples <= 3 s;
10 subjects x 5,000 voxels x 1,000 samples <= 15 s. Both run PyMVPA's three levels with
default parameters (29 Procrustes fits). The reference is a literal transcription of
PyMVPA 2.6 (``ProcrusteanMapper``: zero-padding, normalisation, full SVD of the
voxels x voxels cross-product, dense maps). For the 5,000-voxel case the reference is
timed on one Procrustes fit and multiplied by the 29 fits of the algorithm (marked
"extrapolated"; ``--full-reference`` runs it whole, which takes tens of minutes).

    python benchmarks/bench_hyperalignment.py [--repeat 3] [--full-reference]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from mvpa_flows.core.hyperalignment import hyperalign
from mvpa_flows.core.procrustes import UnderdeterminedRotationWarning

N_FITS = lambda n_subjects: 3 * n_subjects - 1  # noqa: E731  level 1 + level 2 + level 3


def _zscore(x):
    x = x - x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1
    return x / std


def _ref_procrustes(source, target):
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    s, t = source - mu_s, target - mu_t
    ns, nt = np.linalg.norm(s), np.linalg.norm(t)
    s, t = s / ns, t / nt
    U, sv, Vh = np.linalg.svd(t.T @ s, full_matrices=False)
    proj = (Vh.T @ U.T) * (sv.sum() * nt / ns)
    return lambda x: (x - mu_s) @ proj + mu_t


def reference_hyperalign(dss):
    n = len(dss)
    common = _zscore(dss[0])
    mapped = list(dss)
    for i in range(1, n):
        mapped[i] = _zscore(_ref_procrustes(dss[i], common)(dss[i]))
        common = _zscore(0.5 * (mapped[i] + common))
    common = np.mean(mapped, axis=0)
    for i in range(n):
        temp = _zscore((common * n - mapped[i]) / (n - 1))
        mapped[i] = _zscore(_ref_procrustes(dss[i], temp)(dss[i]))
    common = _zscore(np.mean(mapped, axis=0))
    return [_ref_procrustes(d, common) for d in dss]


def _data(n_subjects, n_voxels, n_samples, seed=0):
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n_samples, n_voxels))
    return [shared @ np.linalg.qr(rng.standard_normal((n_voxels, n_voxels)))[0]
            + rng.standard_normal((n_samples, n_voxels)) for _ in range(n_subjects)]


def _time(fn, repeat):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--full-reference", action="store_true")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", UnderdeterminedRotationWarning)
    cases = [(10, 1000, 2000, 3.0), (10, 5000, 1000, 15.0)]
    print(f"{'case':<26}{'ours (s)':>10}{'target':>8}{'reference (s)':>16}{'ratio':>8}")
    for n_sub, n_vox, n_samp, target in cases:
        dss = _data(n_sub, n_vox, n_samp)
        hyperalign(dss[:2])                       # warm up LAPACK workspaces
        ours = _time(lambda dss=dss: hyperalign(dss), args.repeat)
        if n_vox <= 2000 or args.full_reference:
            ref = _time(lambda dss=dss: reference_hyperalign(dss), 1)
            note = ""
        else:
            one = _time(lambda dss=dss: _ref_procrustes(dss[1], dss[0]), 1)
            ref = one * N_FITS(n_sub)
            note = " (extrapolated)"
        ok = "ok" if ours <= target else "MISSED"
        name = f"{n_sub} x {n_vox} vox x {n_samp} smp"
        print(f"{name:<26}{ours:>10.2f}{target:>7.0f}s{ref:>16.1f}{ref / ours:>7.1f}x"
              f"  {ok}{note}")


if __name__ == "__main__":
    main()

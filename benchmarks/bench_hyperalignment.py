"""Benchmark: ROI hyperalignment against a straightforward full-SVD implementation.

Targets (issue): 10 subjects x 1,000 voxels x 2,000 samples <= 3 s;
10 subjects x 5,000 voxels x 1,000 samples <= 15 s. Both run PyMVPA's three levels with
default parameters (29 Procrustes fits). The reference is a literal transcription of
PyMVPA 2.6 (``ProcrusteanMapper``: zero-padding, normalisation, full SVD of the
voxels x voxels cross-product, dense maps). For the 5,000-voxel case the reference is
timed on one Procrustes fit and multiplied by the 29 fits of the algorithm (marked
"extrapolated"; ``--full-reference`` runs it whole, which takes tens of minutes).

    python benchmarks/bench_hyperalignment.py [--repeat 3] [--n-jobs 2] [--full-reference]

Wall-clock seconds are the best of ``--repeat`` runs; the CPU seconds of that run and the
load average are printed too, because on a shared machine the wall clock of
multi-threaded BLAS is mostly a measure of the other users.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from mvpa_flows.core.alignment.hyperalignment import hyperalign
from mvpa_flows.core.alignment.procrustes import UnderdeterminedRotationWarning

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
    return [
        shared @ np.linalg.qr(rng.standard_normal((n_voxels, n_voxels)))[0]
        + rng.standard_normal((n_samples, n_voxels))
        for _ in range(n_subjects)
    ]


def _time(fn, repeat):
    best, cpu = np.inf, np.nan
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    return best, cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--full-reference", action="store_true")
    ap.add_argument(
        "--n-jobs", type=int, default=1, help="threads for levels 2 and 3 (hyperalign n_jobs)"
    )
    ap.add_argument("--cases", default="0,1", help="comma-separated case indices")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", UnderdeterminedRotationWarning)
    cases = [(10, 1000, 2000, 3.0), (10, 5000, 1000, 15.0)]
    import os

    print(f"load average before: {os.getloadavg()[0]:.2f}; n_jobs={args.n_jobs}")
    print(
        f"{'case':<26}{'ours (s)':>10}{'cpu (s)':>9}{'target':>8}{'reference (s)':>15}"
        f"{'cpu (s)':>9}{'ratio':>7}"
    )
    for k in map(int, args.cases.split(",")):
        n_sub, n_vox, n_samp, target = cases[k]
        dss = _data(n_sub, n_vox, n_samp)
        hyperalign(dss[:2])  # warm up LAPACK workspaces
        ours, ours_cpu = _time(lambda dss=dss: hyperalign(dss, n_jobs=args.n_jobs), args.repeat)
        if n_vox <= 2000 or args.full_reference:
            ref, ref_cpu = _time(lambda dss=dss: reference_hyperalign(dss), 1)
            note = ""
        else:
            one, one_cpu = _time(lambda dss=dss: _ref_procrustes(dss[1], dss[0]), 1)
            ref, ref_cpu = one * N_FITS(n_sub), one_cpu * N_FITS(n_sub)
            note = " (reference extrapolated from one fit x 29)"
        ok = "ok" if ours <= target else "MISSED"
        name = f"{n_sub} x {n_vox} vox x {n_samp} smp"
        print(
            f"{name:<26}{ours:>10.2f}{ours_cpu:>9.1f}{target:>7.0f}s{ref:>15.1f}"
            f"{ref_cpu:>9.1f}{ref / ours:>6.1f}x  {ok}{note}",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

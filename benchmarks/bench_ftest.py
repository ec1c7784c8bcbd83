"""Benchmark: vectorised F-test vs sklearn.feature_selection.f_classif.

Run: python benchmarks/bench_ftest.py [--samples 1500] [--voxels 50000] [--repeats 3]
"""

import argparse
import time

import numpy as np
from sklearn.feature_selection import f_classif

from mvpa_flows.core.stats.ftest import f_oneway_voxels


def best_of(func, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=1500)
    parser.add_argument("--voxels", type=int, default=50000)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.samples, args.voxels))
    y = rng.integers(0, args.classes, args.samples)
    ours, (F, _) = best_of(lambda: f_oneway_voxels(X, y), args.repeats)
    ref, (F_ref, _) = best_of(lambda: f_classif(X, y), args.repeats)
    err = np.max(np.abs(F - F_ref) / np.abs(F_ref))
    print(f"F-test, {args.samples} samples x {args.voxels} voxels, {args.classes} classes")
    print(f"{'implementation':<28}{'seconds':>10}")
    print(f"{'mvpa_flows f_oneway_voxels':<28}{ours:>10.3f}")
    print(f"{'sklearn f_classif':<28}{ref:>10.3f}")
    print(f"ratio (f_classif / ours): {ref / ours:.1f}x; max relative difference in F: {err:.1e}")


if __name__ == "__main__":
    main()

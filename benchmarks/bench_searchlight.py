"""Searchlight speed: mvpa_flows on the whole mask vs nilearn on a voxel subset.

Builds Haxby-sized synthetic data (40x64x64 grid, 3.5x3.75x3.75 mm, ~45,000-voxel
mask, 12 runs, 216 face/house samples), runs ``mvpa_flows.decoding.SearchLight``
on the whole mask and ``nilearn.decoding.SearchLight`` on a random subset of
process voxels in the same run, and prints per-voxel times and the ratio.

    python benchmarks/bench_searchlight.py             # all engines, 5.6 and 11 mm
    python benchmarks/bench_searchlight.py --quick     # gnb/ridge/correlation, 5.6 mm
    python benchmarks/bench_searchlight.py --engines gnb svc --radii 5.6 --nilearn-voxels 20
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
import warnings

import nibabel as nib
import numpy as np

ENGINES = ["gnb", "lda", "ridge", "correlation", "svc", "logistic"]


def make_data(seed=0):
    """Haxby-sized synthetic 4D image, mask, labels and runs."""
    rng = np.random.default_rng(seed)
    shape = (40, 64, 64)
    affine = np.diag([3.5, 3.75, 3.75, 1.0])
    ii, jj, kk = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    # ellipsoid of ~45,000 voxels (Haxby's brain mask size)
    mask = ((ii - 19.5) / 18.2) ** 2 + ((jj - 31.5) / 24.3) ** 2 + ((kk - 31.5) / 24.3) ** 2 < 1
    n_runs, per = 12, 9
    y = np.tile(np.repeat(np.array(["face", "house"]), per), n_runs)
    runs = np.repeat(np.arange(n_runs), 2 * per)
    n = len(y)
    X = rng.standard_normal((n, int(mask.sum()))).astype(np.float64)
    # a smooth-ish informative blob
    coords = np.stack(np.where(mask), axis=1)
    blob = np.linalg.norm((coords - [20, 40, 30]) * [3.5, 3.75, 3.75], axis=1) < 20
    X[np.ix_(y == "house", np.flatnonzero(blob))] += 0.6
    data = np.zeros((*shape, n), dtype=np.float32)
    data[mask] = X.T
    return (
        nib.Nifti1Image(data, affine),
        nib.Nifti1Image(mask.astype(np.uint8), affine),
        mask,
        y,
        runs,
    )


def nilearn_estimator(name):
    from mvpa_flows.core.searchlight import resolve_estimator

    return "svc" if name == "svc" else resolve_estimator(name)


def _subset_mask(mask, idx):
    proc = np.zeros(mask.shape, dtype=np.uint8)
    coords = np.stack(np.where(mask), axis=1)[idx]
    proc[tuple(coords.T)] = 1
    return proc


def time_ours(
    imgs, mask_img, y, runs, name, radius, n_permutations=0, n_jobs=2, process_mask=None
):
    """Wall time of SearchLight.fit (untraced; best of two when under 30 s), then its
    peak memory in a traced re-run.

    tracemalloc slows every numpy allocation, so the timed run is not traced. The memory
    run uses at most 5,000 centres: the engines work in chunks of spheres, so the peak
    does not grow with the number of centres beyond that.
    """
    from mvpa_flows.decoding import SearchLight

    def fit(process):
        pm = (
            None if process is None else nib.Nifti1Image(process.astype(np.uint8), mask_img.affine)
        )
        return SearchLight(
            mask_img,
            process_mask_img=pm,
            radius=radius,
            estimator=name,
            n_jobs=n_jobs,
            n_permutations=n_permutations,
        ).fit(imgs, y, runs)

    t0 = time.perf_counter()
    sl = fit(process_mask)
    dt = time.perf_counter() - t0
    if dt < 30:  # fast engines: best of two, so one-off import and warm-up costs drop out
        t0 = time.perf_counter()
        sl = fit(process_mask)
        dt = min(dt, time.perf_counter() - t0)
    centres = process_mask if process_mask is not None else np.asarray(mask_img.dataobj) > 0
    subset = np.zeros(centres.shape, dtype=bool)
    subset.flat[np.flatnonzero(centres)[:5000]] = True
    tracemalloc.start()
    fit(subset)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return dt, peak / 1024**2, sl


def time_neighbourhoods(mask, affine, radius):
    from mvpa_flows.core.searchlight.neighbourhoods import sphere_adjacency

    t0 = time.perf_counter()
    A = sphere_adjacency(mask, affine, radius)
    return time.perf_counter() - t0, A


def _nilearn_fit(imgs, mask_img, mask, y, runs, name, radius, idx):
    from nilearn.decoding import SearchLight
    from sklearn.model_selection import LeaveOneGroupOut

    proc = _subset_mask(mask, idx)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sl = SearchLight(
            mask_img,
            process_mask_img=nib.Nifti1Image(proc, mask_img.affine),
            radius=radius,
            estimator=nilearn_estimator(name),
            cv=LeaveOneGroupOut(),
            n_jobs=1,
        ).fit(imgs, y, runs)
    return time.perf_counter() - t0, sl.scores_, proc.astype(bool)


def time_nilearn(
    imgs, mask_img, mask, y, runs, name, radius, n_small, n_large, ours_map, candidates, seed=1
):
    """Per-voxel nilearn time from two subset sizes (the difference cancels the start-up)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(candidates, n_large, replace=False)
    t_small, _, _ = _nilearn_fit(
        imgs, mask_img, mask, y, runs, name, radius, np.sort(idx[:n_small])
    )
    t_large, scores, proc = _nilearn_fit(imgs, mask_img, mask, y, runs, name, radius, np.sort(idx))
    per_vox = (t_large - t_small) / (n_large - n_small)
    same = np.mean(np.abs(scores[proc] - ours_map[proc]) < 1e-12)
    return per_vox, same


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", nargs="+", default=None, choices=ENGINES)
    p.add_argument("--radii", nargs="+", type=float, default=None)
    p.add_argument(
        "--nilearn-voxels",
        type=int,
        nargs=2,
        default=None,
        help="two nilearn subset sizes (default: 20 60; 8 24 for svc/logistic)",
    )
    p.add_argument(
        "--permutations",
        type=int,
        default=100,
        help="permutations for the GaussianNB permutation benchmark (0: skip)",
    )
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument(
        "--max-whole",
        type=float,
        default=600.0,
        help="when ours would take longer than this many seconds on the whole mask "
        "(estimated on --probe centres), report the extrapolation from the probe",
    )
    p.add_argument(
        "--probe",
        type=int,
        default=1000,
        help="centres of the probe run for slow engines at radius > 6 mm",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="gnb, ridge and correlation at 5.6 mm, 10 permutations",
    )
    args = p.parse_args(argv)
    engines = args.engines or (["gnb", "ridge", "correlation"] if args.quick else ENGINES)
    radii = args.radii or ([5.6] if args.quick else [5.6, 11.0])
    perms = 10 if args.quick and args.permutations == 100 else args.permutations

    imgs, mask_img, mask, y, runs = make_data()
    n_mask = int(mask.sum())
    print(
        f"data: grid {mask.shape}, mask {n_mask} voxels, {len(y)} samples, "
        f"{len(np.unique(runs))} runs, leave-one-run-out, n_jobs={args.n_jobs}"
    )
    rows = []
    rng = np.random.default_rng(0)
    for radius in radii:
        t_nb, A = time_neighbourhoods(mask, imgs.affine, radius)
        print(
            f"radius {radius} mm: neighbourhoods {t_nb:.3f} s, mean sphere "
            f"{A.nnz / A.shape[0]:.1f} voxels",
            flush=True,
        )
        rows.append(
            ("neighbourhoods", radius, t_nb, np.nan, np.nan, np.nan, np.nan, np.nan, 0, "")
        )
        for name in engines:
            candidates = np.arange(n_mask)
            note = ""
            probe = None
            if radius > 6 and name not in ("gnb", "correlation"):
                probe = np.sort(rng.choice(n_mask, args.probe, replace=False))
                t, mem, sl = time_ours(
                    imgs,
                    mask_img,
                    y,
                    runs,
                    name,
                    radius,
                    n_jobs=args.n_jobs,
                    process_mask=_subset_mask(mask, probe),
                )
                est = t * n_mask / args.probe
                if est > args.max_whole:
                    candidates = probe
                    note = f"extrapolated from {args.probe} centres ({t:.1f} s)"
                    t = est
            if not note:
                t, mem, sl = time_ours(imgs, mask_img, y, runs, name, radius, n_jobs=args.n_jobs)
            slow = name in ("svc", "logistic") or (radius > 6 and name == "lda")
            n_small, n_large = args.nilearn_voxels or ((8, 24) if slow else (20, 60))
            per_vox, same = time_nilearn(
                imgs,
                mask_img,
                mask,
                y,
                runs,
                name,
                radius,
                n_small,
                n_large,
                sl.scores_,
                candidates,
            )
            extrap = per_vox * n_mask
            rows.append(
                (name, radius, t, per_vox * 1e3, extrap, extrap / t, mem, same, n_large, note)
            )
            print(
                f"  {name:12s} ours {t:8.2f} s  nilearn {per_vox * 1e3:8.1f} ms/voxel "
                f"(~{extrap / 60:7.1f} min whole mask)  x{extrap / t:7.0f}  "
                f"peak {mem:6.0f} MiB  identical {same:.0%} of {n_large} {note}",
                flush=True,
            )
        if perms and "gnb" in engines:
            t, mem, _ = time_ours(
                imgs, mask_img, y, runs, "gnb", radius, n_permutations=perms, n_jobs=args.n_jobs
            )
            rows.append(
                (f"gnb+{perms}perm", radius, t, np.nan, np.nan, np.nan, mem, np.nan, 0, "")
            )
            print(f"  gnb + {perms} permutations: {t:.2f} s, peak {mem:.0f} MiB", flush=True)

    print(
        "\n| engine | radius (mm) | ours, whole mask (s) | nilearn (ms/voxel) | "
        "nilearn extrapolated (min) | ratio | peak memory (MiB) | identical | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r, t, pv, ex, ratio, mem, same, nv, note in rows:
        if np.isnan(pv):
            m = "-" if np.isnan(mem) else f"{mem:.0f}"
            print(f"| {name} | {r} | {t:.2f} | - | - | - | {m} | - | {note} |")
        else:
            print(
                f"| {name} | {r} | {t:.2f} | {pv:.1f} | {ex / 60:.1f} | {ratio:.0f}x | "
                f"{mem:.0f} | {same:.0%} of {nv} | {note} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

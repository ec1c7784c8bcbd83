"""Searchlight speed: mvpa_flows against nilearn's SearchLight, per centre, in the same run.

Two synthetic grids, 216 face/house samples, 12 runs, leave-one-run-out:

* ``--grid 3.5mm`` (default): Haxby-sized (40x64x64 voxels of 3.5x3.75x3.75 mm, a
  45,032-voxel mask), radii 5.6 and 11 mm;
* ``--grid 2mm``: fMRIPrep's usual output grid (80x96x80 voxels of 2 mm, a 231,000-voxel
  brain-shaped mask, mildly smooth noise), radius 6 mm (123 voxels per sphere).

Cases (``--cases``): ``whole`` (every mask voxel a centre; for lda/svc/logistic, when
that would take more than ``--max-whole`` seconds, a contiguous block of ``--block``
centres in the middle of the mask is timed and the whole mask extrapolated from it),
``slice`` (a process mask of one axial slice) and ``scattered`` (3,000 random centres).
nilearn's ``SearchLight`` runs on two subsets of centres (its per-centre time is the
difference, so its start-up cancels). Ratios are nilearn's per-centre wall time (one core)
over ours (``--n-jobs`` cores), and the same with CPU time (robust to a loaded machine,
blind to our use of several cores). Every line carries the CPU time and the load average
at the time it was measured, and projects the whole mask twice: from the wall time (on the
machine as loaded) and from the CPU time spread over ``--n-jobs`` idle cores. The ``whole``
case also reports the peak resident memory of the whole process for a whole-mask
``SearchLight.fit``, measured in a fresh process after the data are made (for
lda/svc/logistic the engine computes ``--memory-centres`` of the largest spheres, with
everything else allocated as for every centre; see ``probe_memory``).

    python benchmarks/bench_searchlight.py                       # 3.5 mm, every engine
    python benchmarks/bench_searchlight.py --grid 2mm            # 2 mm, r 6 mm, three cases
    python benchmarks/bench_searchlight.py --grid 2mm --engines svc --cases whole scattered
    python benchmarks/bench_searchlight.py --quick               # gnb/ridge/correlation, 5.6 mm
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import nibabel as nib
import numpy as np

ENGINES = ["gnb", "lda", "ridge", "correlation", "svc", "logistic"]
SLOW = ("lda", "svc", "logistic")
CASES = ("whole", "slice", "scattered")


def loadavg():
    """1-minute load average (nan where /proc is absent)."""
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return float("nan")


def _labels():
    n_runs, per = 12, 9
    y = np.tile(np.repeat(np.array(["face", "house"]), per), n_runs)
    runs = np.repeat(np.arange(n_runs), 2 * per)
    return y, runs


def make_data(grid="3.5mm", seed=0):
    """Synthetic 4D image, mask image, mask, labels and runs on the requested grid."""
    rng = np.random.default_rng(seed)
    y, runs = _labels()
    n = len(y)
    if grid == "3.5mm":
        shape, zooms = (40, 64, 64), (3.5, 3.75, 3.75)
        centre, axes = (19.5, 31.5, 31.5), (18.2, 24.3, 24.3)  # ~45,000 voxels (Haxby's mask)
    else:
        shape, zooms = (80, 96, 80), (2.0, 2.0, 2.0)
        centre, axes = (39.5, 47.5, 39.5), (36.0, 44.0, 35.0)  # ~231,000 voxels (MNI brain)
    affine = np.diag([*zooms, 1.0])
    ii, jj, kk = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    mask = sum(((g - c) / a) ** 2 for g, c, a in zip((ii, jj, kk), centre, axes, strict=True)) < 1
    del ii, jj, kk
    n_vox = int(mask.sum())
    if grid == "3.5mm":
        X = rng.standard_normal((n, n_vox))
    else:
        # resampled fMRI is spatially smooth: Gaussian noise filtered with sigma 1 voxel
        from scipy.ndimage import gaussian_filter

        X = np.empty((n, n_vox))
        for i in range(n):
            vol = rng.standard_normal(shape).astype(np.float32)
            X[i] = gaussian_filter(vol, 1.0, truncate=3.0)[mask]
        X /= X.std(axis=0)
    coords = np.stack(np.where(mask), axis=1)
    blob_centre = np.array(centre) + np.array([0.5, 8.5, -1.5]) * (1 if grid == "3.5mm" else 1.75)
    blob = np.linalg.norm((coords - blob_centre) * zooms, axis=1) < 20
    X[np.ix_(y == "house", np.flatnonzero(blob))] += 0.6
    data = np.zeros((*shape, n), dtype=np.float32)
    data[mask] = X.T
    del X
    return (
        nib.Nifti1Image(data, affine),
        nib.Nifti1Image(mask.astype(np.uint8), affine),
        mask,
        y,
        runs,
    )


def process_masks(mask, block, seed=0):
    """Centre sets of the cases: a contiguous block, one axial slice, 3,000 scattered."""
    n_mask = int(mask.sum())
    rng = np.random.default_rng(seed)
    start = max(0, n_mask // 2 - block // 2)
    idx = {"block": np.arange(start, min(n_mask, start + block))}
    coords = np.stack(np.where(mask), axis=1)
    idx["slice"] = np.flatnonzero(coords[:, 2] == int(np.median(coords[:, 2])))
    idx["scattered"] = np.sort(rng.choice(n_mask, min(3000, n_mask), replace=False))
    return idx


def subset_mask(mask, idx):
    proc = np.zeros(mask.shape, dtype=bool)
    proc[tuple(np.stack(np.where(mask), axis=1)[idx].T)] = True
    return proc


def nilearn_estimator(name):
    from mvpa_flows.core.searchlight import resolve_estimator

    return "svc" if name == "svc" else resolve_estimator(name)


def fit_ours(imgs, mask_img, y, runs, name, radius, n_jobs, process=None, n_permutations=0):
    """One SearchLight.fit: (fitted object, wall s, CPU s, search_light wall s)."""
    from mvpa_flows.decoding import SearchLight

    pm = None if process is None else nib.Nifti1Image(process.astype(np.uint8), mask_img.affine)
    t0, c0 = time.perf_counter(), time.process_time()
    sl = SearchLight(
        mask_img,
        process_mask_img=pm,
        radius=radius,
        estimator=name,
        n_jobs=n_jobs,
        n_permutations=n_permutations,
    ).fit(imgs, y, runs)
    return sl, time.perf_counter() - t0, time.process_time() - c0, sl.result_.timings["total_s"]


def time_ours(imgs, mask_img, y, runs, name, radius, n_jobs, process=None, n_permutations=0):
    """Untraced timing (best of two when under 30 s, so one-off warm-up costs drop out)."""
    best = None
    for _ in range(2):
        load = loadavg()
        sl, wall, cpu, core = fit_ours(
            imgs, mask_img, y, runs, name, radius, n_jobs, process, n_permutations
        )
        if best is None or wall < best[1]:
            best = (sl, wall, cpu, core, load)
        if wall >= 30:
            break
    return best


def _status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def probe_memory(grid, name, radius, n_jobs, centres):
    """Child process: whole-process peak resident memory of one whole-mask SearchLight.fit.

    The data are made first, the kernel's high-water mark is reset (Linux
    ``/proc/self/clear_refs``), then the fit runs on every mask voxel. With ``centres``,
    the engine computes only its batches of the largest spheres covering that many
    centres: everything a whole-mask run allocates for all centres (the samples, the
    adjacency, per-voxel statistics, the batches' column lists, the score arrays) is
    allocated as in the full run, and the engines then hold one bounded batch per thread,
    so the peak is the whole run's. Prints one JSON line.
    """
    import gc
    import json

    imgs, mask_img, _, y, runs = make_data(grid)
    gc.collect()
    if centres:
        from mvpa_flows.core.searchlight.engines import lda, newton, ridge

        module = {"lda": lda, "ridge": ridge, "svc": newton, "logistic": newton}[name]
        full = module.size_batches

        def largest_batches(A, bytes_per_sphere):
            batches, kept, n = full(A, bytes_per_sphere), [], 0
            while batches and n < centres:
                kept.append(batches.pop())
                n += len(kept[-1][1])
            return kept[::-1]

        module.size_batches = largest_batches
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mib("VmRSS")
    _, wall, cpu, _ = fit_ours(imgs, mask_img, y, runs, name, radius, n_jobs)
    out = dict(peak=_status_mib("VmHWM"), before=before, wall=wall, cpu=cpu, load=loadavg())
    print("MEMORY " + json.dumps(out), flush=True)


def peak_memory(args, name, radius):
    """Whole-process peak RSS (MiB) of a whole-mask fit, and the RSS before it (the data),
    measured in a fresh process (:func:`probe_memory`); NaNs where /proc is absent."""
    import json
    import subprocess

    if not os.path.exists("/proc/self/clear_refs"):
        return float("nan"), float("nan"), ""
    centres = args.memory_centres if name in SLOW else 0
    cmd = [sys.executable, os.path.abspath(__file__), "--grid", args.grid, "--n-jobs",
           str(args.n_jobs), "--probe-memory", name, str(radius), str(centres)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = [x for x in run.stdout.splitlines() if x.startswith("MEMORY ")][-1]
    res = json.loads(line[len("MEMORY ") :])
    note = f" (largest spheres, {centres} centres)" if centres else ""
    return res["peak"], res["before"], note


def _nilearn_fit(imgs, mask_img, mask, y, runs, name, radius, idx):
    from nilearn.decoding import SearchLight
    from sklearn.model_selection import LeaveOneGroupOut

    proc = subset_mask(mask, idx)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sl = SearchLight(
            mask_img,
            process_mask_img=nib.Nifti1Image(proc.astype(np.uint8), mask_img.affine),
            radius=radius,
            estimator=nilearn_estimator(name),
            cv=LeaveOneGroupOut(),
            n_jobs=1,
        ).fit(imgs, y, runs)
    return time.perf_counter() - t0, time.process_time() - c0, sl.scores_, proc


def time_nilearn(imgs, mask_img, mask, y, runs, name, radius, sizes, candidates, ours, seed=1):
    """nilearn's per-centre wall and CPU time from two subset sizes, and the fraction of
    those centres where its score equals ours (``ours``: score map on the grid)."""
    n_small, n_large = sizes
    rng = np.random.default_rng(seed)
    idx = rng.choice(candidates, n_large, replace=False)
    load = loadavg()
    w_small, c_small, _, _ = _nilearn_fit(
        imgs, mask_img, mask, y, runs, name, radius, np.sort(idx[:n_small])
    )
    w_large, c_large, scores, proc = _nilearn_fit(
        imgs, mask_img, mask, y, runs, name, radius, np.sort(idx)
    )
    per_wall = (w_large - w_small) / (n_large - n_small)
    per_cpu = (c_large - c_small) / (n_large - n_small)
    same = float(np.mean(np.abs(scores[proc] - ours[proc]) < 1e-12))
    return per_wall, per_cpu, same, load


def run_engine_cases(args, data, idx, radius, name, rows):
    imgs, mask_img, mask, y, runs = data
    n_mask = int(mask.sum())
    per_centre = {}
    ours_map, candidates = None, None
    for case in args.cases:
        if case == "whole":
            block = subset_mask(mask, idx["block"])
            sl, wall, cpu, core, load = time_ours(
                imgs, mask_img, y, runs, name, radius, args.n_jobs, block
            )
            n_c = len(idx["block"])
            note = f"block of {n_c} centres, extrapolated"
            if name not in SLOW or wall * n_mask / n_c <= args.max_whole:
                sl, wall, cpu, core, load = time_ours(
                    imgs, mask_img, y, runs, name, radius, args.n_jobs
                )
                n_c, note = n_mask, ""
            process = block if note else mask
            mem, mem_before, mem_note = peak_memory(args, name, radius)
            ours_map, candidates = sl.scores_, np.flatnonzero(process[mask])
        else:
            proc = subset_mask(mask, idx[case])
            sl, wall, cpu, core, load = time_ours(
                imgs, mask_img, y, runs, name, radius, args.n_jobs, proc
            )
            n_c, note, mem, mem_before, mem_note = len(idx[case]), "", float("nan"), 0.0, ""
            if ours_map is None:
                ours_map, candidates = sl.scores_, idx[case]
        per_centre[case] = wall / n_c
        rows.append(
            dict(
                engine=name,
                radius=radius,
                case=case,
                centres=n_c,
                wall=wall,
                cpu=cpu,
                core=core,
                ms=1e3 * wall / n_c,
                cpu_ms=1e3 * cpu / n_c,
                whole_min=wall / n_c * n_mask / 60,
                whole_cpu_min=cpu / n_c * n_mask / 60 / args.n_jobs,
                mem=mem,
                mem_before=mem_before,
                load=load,
                note=note,
            )
        )
        print(
            f"  {name:12s} {case:9s} {n_c:7d} centres  {wall:8.2f} s wall "
            f"({core:7.2f} s in search_light)  {cpu:8.2f} s CPU  {1e3 * wall / n_c:7.3f} "
            f"ms/centre  whole mask ~{wall / n_c * n_mask / 60:6.1f} min "
            f"(~{cpu / n_c * n_mask / 60 / args.n_jobs:5.1f} min on {args.n_jobs} idle cores "
            f"from CPU time)  load {load:.2f} "
            + (
                ""
                if np.isnan(mem)
                else f"peak RSS {mem:.0f} MiB whole mask{mem_note}, {mem_before:.0f} MiB "
                "resident before the fit (the data) "
            )
            + note,
            flush=True,
        )
    if args.nilearn:
        sizes = args.nilearn_voxels or ((8, 24) if name in SLOW else (20, 60))
        per_wall, per_cpu, same, load = time_nilearn(
            imgs, mask_img, mask, y, runs, name, radius, sizes, candidates, ours_map
        )
        for row in rows[-len(args.cases) :]:
            row.update(
                nl_ms=1e3 * per_wall,
                nl_cpu_ms=1e3 * per_cpu,
                ratio=per_wall / (row["ms"] / 1e3),
                cpu_ratio=per_cpu / (row["cpu_ms"] / 1e3),
                same=f"{same:.0%} of {sizes[1]}",
                nl_load=load,
            )
        print(
            f"  {name:12s} nilearn {1e3 * per_wall:8.1f} ms/centre ({1e3 * per_cpu:.1f} ms CPU, "
            f"load {load:.2f}); ratios "
            + ", ".join(
                f"{r['case']} {r['ratio']:.0f}x (CPU {r['cpu_ratio']:.0f}x)"
                for r in rows[-len(args.cases) :]
            )
            + f"; identical {same:.0%} of {sizes[1]}",
            flush=True,
        )
    if "whole" in per_centre and "scattered" in per_centre:
        print(
            f"  {name:12s} scattered / whole per-centre cost: "
            f"{per_centre['scattered'] / per_centre['whole']:.2f}",
            flush=True,
        )


def print_table(rows, grid):
    print(
        "\n| grid | radius (mm) | engine | case | centres | ours (ms/centre) | CPU (ms/centre) "
        "| whole mask (min) | idle cores (min) | nilearn (ms/centre) | nilearn CPU (ms/centre) "
        "| ratio | CPU ratio | peak RSS (MiB) | identical | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        nl = f"{r['nl_ms']:.1f} | {r['nl_cpu_ms']:.1f}" if "nl_ms" in r else "- | -"
        ratio = f"{r['ratio']:.0f}x | {r['cpu_ratio']:.0f}x" if "ratio" in r else "- | -"
        mem = "-" if np.isnan(r["mem"]) else f"{r['mem']:.0f}"
        print(
            f"| {grid} | {r['radius']} | {r['engine']} | {r['case']} | {r['centres']} | "
            f"{r['ms']:.3f} | {r['cpu_ms']:.3f} | {r['whole_min']:.1f} | "
            f"{r['whole_cpu_min']:.1f} | {nl} | {ratio} | "
            f"{mem} | {r.get('same', '-')} | {r['load']:.2f} |"
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", choices=("3.5mm", "2mm"), default="3.5mm")
    p.add_argument("--engines", nargs="+", default=None, choices=ENGINES)
    p.add_argument("--radii", nargs="+", type=float, default=None)
    p.add_argument("--cases", nargs="+", choices=CASES, default=None)
    p.add_argument(
        "--nilearn-voxels",
        type=int,
        nargs=2,
        default=None,
        help="two nilearn subset sizes (default: 20 60; 8 24 for lda/svc/logistic)",
    )
    p.add_argument("--no-nilearn", dest="nilearn", action="store_false")
    p.add_argument(
        "--permutations",
        type=int,
        default=100,
        help="permutations for the GaussianNB permutation case at 3.5 mm (0: skip)",
    )
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument(
        "--max-whole",
        type=float,
        default=600.0,
        help="run the whole mask when the block estimate is below this many seconds",
    )
    p.add_argument("--block", type=int, default=None, help="centres of the block (whole case)")
    p.add_argument(
        "--quick", action="store_true", help="gnb, ridge and correlation at 5.6 mm, whole mask"
    )
    p.add_argument(
        "--memory-centres",
        type=int,
        default=4000,
        help="centres computed in the whole-mask peak-memory run of lda/svc/logistic "
        "(their largest spheres; the rest of the run is allocated as for every centre)",
    )
    p.add_argument("--probe-memory", nargs=3, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe_memory:
        name, radius, centres = args.probe_memory
        probe_memory(args.grid, name, float(radius), args.n_jobs, int(centres))
        return 0
    args.engines = args.engines or (["gnb", "ridge", "correlation"] if args.quick else ENGINES)
    if args.grid == "2mm":
        args.radii = args.radii or [6.0]
        args.cases = args.cases or list(CASES)
        args.block = args.block or 4000
    else:
        args.radii = args.radii or ([5.6] if args.quick else [5.6, 11.0])
        args.cases = args.cases or ["whole"]
        args.block = args.block or 1000
    if "whole" in args.cases:
        args.cases = ["whole"] + [c for c in args.cases if c != "whole"]
    perms = 10 if args.quick and args.permutations == 100 else args.permutations

    t0 = time.perf_counter()
    data = make_data(args.grid)
    imgs, mask_img, mask, y, runs = data
    n_mask = int(mask.sum())
    idx = process_masks(mask, args.block)
    print(
        f"data ({time.perf_counter() - t0:.0f} s): grid {args.grid} {mask.shape}, mask "
        f"{n_mask} voxels, {len(y)} samples, {len(np.unique(runs))} runs, leave-one-run-out, "
        f"n_jobs={args.n_jobs}, {os.cpu_count()} CPUs; cases {args.cases} (slice "
        f"{len(idx['slice'])} centres, scattered {len(idx['scattered'])}, block "
        f"{len(idx['block'])}); load {loadavg():.2f}",
        flush=True,
    )
    from mvpa_flows.core.searchlight.neighbourhoods import sphere_adjacency

    rows = []
    for radius in args.radii:
        t0 = time.perf_counter()
        A = sphere_adjacency(mask, imgs.affine, radius)
        t_nb = time.perf_counter() - t0
        print(
            f"radius {radius} mm: neighbourhoods {t_nb:.3f} s, mean sphere "
            f"{A.nnz / A.shape[0]:.1f} voxels, load {loadavg():.2f}",
            flush=True,
        )
        del A
        for name in args.engines:
            run_engine_cases(args, data, idx, radius, name, rows)
        if perms and "gnb" in args.engines and args.grid == "3.5mm":
            _, wall, cpu, _, load = time_ours(
                imgs, mask_img, y, runs, "gnb", radius, args.n_jobs, n_permutations=perms
            )
            print(
                f"  gnb + {perms} permutations: {wall:.2f} s wall, {cpu:.2f} s CPU, load "
                f"{load:.2f}",
                flush=True,
            )
    print_table(rows, args.grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: searchlight hyperalignment against the PyMVPA transcription, same run.

Synthetic data: 10 subjects x ~40,000 voxels (an ellipsoid on a 3.5 mm grid) x 1,000
samples (float32, z-scored; a shared response plus subject-specific noise and voxel
swaps), spheres of radius 10 mm (about 93 voxels inside the mask). Cases:

``grid``    centres every third voxel along each axis (the issue's sparse case);
``sparse``  PyMVPA's ``sparse_radius=3`` voxels (``sparse_radius=10.5`` mm): greedy scatter;
``every``   a sphere at every voxel (``--every full`` runs it whole, otherwise it is
            extrapolated from a random subset of ``--every-subset`` centres).

Each case runs in a child process so that its peak resident memory (data included) is
its own. The PyMVPA transcription (``tests/pymvpa_searchlight_reference.py``: per
sphere ``FeatureSelectionHyperalignment`` -> ``Hyperalignment`` with full SVDs, COO ->
CSC of every local map, running CSC sums in float32) runs ``--ref-spheres`` centres of
the grid case on the same data, its running CSC sums starting at half the size of the
final ones (their average size over a whole run); its time per sphere times the number
of centres is the extrapolated reference.

    python benchmarks/bench_searchlight_ha.py [--cases grid,sparse,every] [--n-jobs 2]
        [--every estimate|full] [--ref-spheres 20] [--quick]

Targets (issue): grid case under 5 minutes on 2 cores, peak memory under 4 GB.
Printed with CPU seconds and the load average, because wall time on a shared machine
measures the other users too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHAPE = (42, 52, 42)
VOXEL = 3.5
RADIUS = 10.0


def make_mask(shape=SHAPE):
    ii, jj, kk = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = [(s - 1) / 2 for s in shape]
    r = (19.6, 24.8, 19.6)
    return ((ii - c[0]) / r[0]) ** 2 + ((jj - c[1]) / r[1]) ** 2 + ((kk - c[2]) / r[2]) ** 2 < 1


def make_data(mask, n_subjects=10, n_samples=1000, seed=0):
    """Z-scored float32 subjects: a shared response, neighbour swaps and noise."""
    rng = np.random.default_rng(seed)
    V = int(mask.sum())
    shared = rng.standard_normal((n_samples, V), dtype=np.float32)
    out = []
    for _ in range(n_subjects):
        perm = np.arange(V)
        swap = rng.choice(V - 1, V // 10, replace=False)
        perm[swap], perm[swap + 1] = perm[swap + 1], perm[swap]
        X = shared[:, perm]
        X += rng.standard_normal((n_samples, V), dtype=np.float32)
        X -= X.mean(axis=0)
        X /= X.std(axis=0)
        out.append(X)
    return out


def grid_centres(mask, step=3):
    grid = np.zeros(mask.shape, bool)
    grid[::step, ::step, ::step] = True
    return np.flatnonzero(grid[mask])


def _estimator(mask, case, n_jobs, centres=None):
    import nibabel as nib

    from mvpa_flows.hyperalignment import SearchlightHyperalignment

    img = nib.Nifti1Image(mask.astype(np.uint8), np.diag([VOXEL, VOXEL, VOXEL, 1.0]))
    kw = {"radius": RADIUS, "n_jobs": n_jobs}
    if case == "grid":
        kw["centres"] = grid_centres(mask)
    elif case == "sparse":
        kw["sparse_radius"] = 3 * VOXEL
    if centres is not None:
        kw["centres"] = centres
    return SearchlightHyperalignment(img, **kw)


def run_case(case, n_jobs, n_subjects, n_samples, every_subset, ref_spheres):
    """One case in this process; prints a JSON line."""
    from mvpa_flows.core.alignment.searchlight import _Plan

    mask = make_mask()
    dss = make_data(mask, n_subjects, n_samples)
    out = {
        "case": case,
        "n_voxels": int(mask.sum()),
        "n_subjects": n_subjects,
        "n_samples": n_samples,
    }
    centres = None
    if case == "every-subset":
        rng = np.random.default_rng(1)
        centres = np.sort(rng.choice(int(mask.sum()), every_subset, replace=False))
    est = _estimator(mask, "every" if case.startswith("every") else case, n_jobs, centres)
    p = est._params()
    plan = _Plan(mask, np.diag([VOXEL] * 3 + [1.0]), RADIUS, p["sparse_radius"], est.centres, True)
    out["n_centres"] = len(plan.centres)
    out["sphere_voxels_max"] = int(plan.sizes.max())
    out["sphere_voxels_mean"] = float(plan.sizes.mean())
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(dss)
    out["wall"] = time.perf_counter() - t0
    out["cpu"] = time.process_time() - c0
    out["load"] = [load0, os.getloadavg()[0]]
    out["nnz_per_subject"] = int(est.transforms_[0].matrix.nnz)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if ref_spheres:
        sys.path.insert(0, str(REPO / "tests"))
        import pymvpa_searchlight_reference as ref

        vi = np.stack(np.where(mask), axis=1)
        rng = np.random.default_rng(2)
        subset = np.sort(rng.choice(plan.centres, ref_spheres, replace=False))
        from scipy import sparse

        # running sums of half the final size: the average size they have during a run
        V = int(mask.sum())
        init = [
            sparse.vstack([t.matrix[: V // 2], sparse.csr_matrix((V - V // 2, V))])
            .tocsc()
            .astype(np.float32)
            for t in est.transforms_
        ]
        out["ref_running_sum_nnz"] = int(init[0].nnz)
        t0, c0 = time.perf_counter(), time.process_time()
        ref.searchlight_hyperalignment(
            dss, vi, radius=RADIUS / VOXEL, centres=subset, projections=init
        )
        out["ref_wall_per_sphere"] = (time.perf_counter() - t0) / ref_spheres
        out["ref_cpu_per_sphere"] = (time.process_time() - c0) / ref_spheres
        out["ref_spheres"] = ref_spheres
    print(json.dumps(out), flush=True)


def _child(args, case, ref_spheres):
    cmd = [
        sys.executable,
        __file__,
        "--child",
        case,
        "--n-jobs",
        str(args.n_jobs),
        "--subjects",
        str(args.subjects),
        "--samples",
        str(args.samples),
        "--every-subset",
        str(args.every_subset),
        "--ref-spheres",
        str(ref_spheres),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"case {case} failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="grid,sparse,every")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--every", choices=["estimate", "full"], default="estimate")
    ap.add_argument("--every-subset", type=int, default=3000)
    ap.add_argument("--ref-spheres", type=int, default=20)
    ap.add_argument("--subjects", type=int, default=10)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="3 subjects x 200 samples")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.subjects, args.samples = 3, 200
    if args.child:
        run_case(
            args.child,
            args.n_jobs,
            args.subjects,
            args.samples,
            args.every_subset,
            args.ref_spheres,
        )
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    print(
        f"{args.subjects} subjects x {int(make_mask().sum())} voxels x {args.samples} "
        f"samples, radius {RADIUS} mm on {VOXEL} mm voxels, n_jobs={args.n_jobs}; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows = []
    ref_per_sphere = None
    for case in args.cases.split(","):
        name = case
        if case == "every" and args.every == "estimate":
            name = "every-subset"
        r = _child(args, name, args.ref_spheres if case == "grid" else 0)
        if "ref_cpu_per_sphere" in r:
            ref_per_sphere = (r["ref_wall_per_sphere"], r["ref_cpu_per_sphere"])
        if name == "every-subset":
            mask = make_mask()
            scale = int(mask.sum()) / r["n_centres"]
            r.update(
                case="every (extrapolated)",
                wall=r["wall"] * scale,
                cpu=r["cpu"] * scale,
                n_centres=int(mask.sum()),
                peak_rss_gb=float("nan"),
            )
        rows.append(r)
        ok = ""
        if case == "grid":
            ok = "ok" if r["wall"] < 300 and r["peak_rss_gb"] < 4 else "MISSED"
        print(
            f"{r['case']:<22} centres {r['n_centres']:>6}  wall {r['wall']:8.1f} s  "
            f"cpu {r['cpu']:8.1f} s  peak {r['peak_rss_gb']:5.2f} GB  "
            f"nnz/subject {r['nnz_per_subject']:>10}  load {r['load'][0]:.1f}->"
            f"{r['load'][1]:.1f}  {ok}",
            flush=True,
        )
    if ref_per_sphere is not None:
        for r in rows:
            ref_wall = ref_per_sphere[0] * r["n_centres"]
            ref_cpu = ref_per_sphere[1] * r["n_centres"]
            print(
                f"{r['case']:<22} PyMVPA transcription (extrapolated from "
                f"{args.ref_spheres} spheres): wall {ref_wall:9.0f} s  cpu {ref_cpu:9.0f} s"
                f"  ratio wall {ref_wall / r['wall']:6.1f}x  cpu {ref_cpu / r['cpu']:6.1f}x"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""Benchmark: LSS trial-wise betas vs nilearn's FirstLevelModel fitted once per trial.

The data: 300 trials over 6 runs of 300 volumes (TR 2 s, ISI 8-14 s, two conditions),
50,000 voxels in a (40, 40, 32) grid, written as uncompressed NIfTI files. Ours
(:func:`mvpa_flows.core.data.betas.run_betaseries`, the same path as the workflow: read
the files, check, build the designs with nilearn, solve) runs on all trials, in a fresh
process whose peak resident memory is reported. nilearn's loop (``FirstLevelModel(t_r=2,
hrf_model="glover", drift_model="cosine", high_pass=0.01, noise_model="ols",
signal_scaling=False).fit`` on the events with that trial as its own condition, then
``compute_contrast(..., "effect_size")``) runs on ``--reference-trials`` trials spread
over the runs, given the images already in memory, and is extrapolated to all trials.
The betas of those trials are compared.

Run: python benchmarks/bench_betas.py [--voxels 50000] [--reference-trials 12]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

TR = 2.0
SHAPE = (40, 40, 32)


def make_data(folder, n_runs, n_volumes, n_voxels, trials_per_run, seed=0):
    """Write the runs' BOLD (baseline 1000 + noise), mask, events and sidecars."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(int(np.prod(SHAPE)), dtype=bool)
    mask[:n_voxels] = True
    mask = mask.reshape(SHAPE)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    nb.Nifti1Image(mask.astype(np.uint8), affine).to_filename(folder / "mask.nii")
    runs = []
    for run in range(1, n_runs + 1):
        gaps = rng.uniform(8.0, 14.0, trials_per_run)
        onsets = 6.0 + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
        onsets *= min(1.0, ((n_volumes - 1) * TR - 20.0) / onsets[-1])
        events = pd.DataFrame({
            "onset": np.round(onsets, 2), "duration": 1.0,
            "trial_type": rng.permutation(np.resize(["face", "house"], trials_per_run)),
        })  # fmt:skip
        data = np.zeros((*SHAPE, n_volumes), dtype=np.float32)
        data[mask] = 1000 + rng.standard_normal((n_voxels, n_volumes), dtype=np.float32) * 10
        stem = folder / f"sub-01_task-bench_run-{run}_desc-preproc_bold"
        img = nb.Nifti1Image(data, affine)
        img.header["pixdim"][4] = TR
        img.to_filename(f"{stem}.nii")
        Path(f"{stem}.json").write_text(json.dumps({"RepetitionTime": TR}))
        events.to_csv(folder / f"run-{run}_events.tsv", sep="\t", index=False)
        runs.append((f"{stem}.nii", str(folder / f"run-{run}_events.tsv")))
    return str(folder / "mask.nii"), runs


def run_ours(folder, n_runs):
    """LSS on every run (in this process); prints JSON with times and the betas file."""
    import nilearn.glm.first_level  # noqa: F401  (imports outside the timing, as for nilearn)

    from mvpa_flows.core.data.betas import run_betaseries

    runs = [
        (str(folder / f"sub-01_task-bench_run-{r}_desc-preproc_bold.nii"),
         str(folder / f"run-{r}_events.tsv"))
        for r in range(1, n_runs + 1)
    ]  # fmt:skip
    wall, cpu = time.perf_counter(), time.process_time()
    betas = []
    for bold, events in runs:
        result = run_betaseries(bold, str(folder / "mask.nii"), events, confounds=["none"])
        betas.append(np.asanyarray(result.img.dataobj))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    np.save(folder / "ours.npy", np.concatenate(betas, axis=3))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak_mb}))


def run_nilearn(mask_file, runs, trials):
    """FirstLevelModel per trial for ``trials`` = [(run index, trial index)]."""
    from nilearn.glm.first_level import FirstLevelModel

    imgs = {}
    for r in {r for r, _ in trials}:
        img = nb.load(runs[r][0])
        imgs[r] = nb.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)
    betas = []
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r, i in trials:
            events = pd.read_csv(runs[r][1], sep="\t")
            events.loc[i, "trial_type"] = "thistrial"
            model = FirstLevelModel(
                t_r=TR, hrf_model="glover", drift_model="cosine", high_pass=0.01,
                noise_model="ols", signal_scaling=False, mask_img=mask_file,
            ).fit(imgs[r], events=events)  # fmt:skip
            betas.append(model.compute_contrast("thistrial", output_type="effect_size"))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, betas


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--volumes", type=int, default=300)
    parser.add_argument("--voxels", type=int, default=50000)
    parser.add_argument("--trials-per-run", type=int, default=50)
    parser.add_argument("--reference-trials", type=int, default=12)
    parser.add_argument("--ours-only", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ours_only:
        return run_ours(Path(args.ours_only), args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mask_file, runs = make_data(
            folder, args.runs, args.volumes, args.voxels, args.trials_per_run
        )
        n_trials = args.runs * args.trials_per_run
        child = subprocess.run(
            [sys.executable, __file__, "--ours-only", str(folder), "--runs", str(args.runs)],
            check=True, capture_output=True, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        )  # fmt:skip
        ours = json.loads(child.stdout.strip().splitlines()[-1])
        picks = np.linspace(0, n_trials - 1, args.reference_trials).astype(int)
        trials = [(p // args.trials_per_run, p % args.trials_per_run) for p in picks]
        wall, cpu, ref = run_nilearn(mask_file, runs, trials)
        mask = np.asanyarray(nb.load(mask_file).dataobj) > 0
        ours_betas = np.load(folder / "ours.npy")
        err = max(
            np.abs(ours_betas[..., p][mask] - img.get_fdata()[mask]).max()
            / np.abs(img.get_fdata()[mask]).max()
            for p, img in zip(picks, ref, strict=True)
        )
    loop_wall = wall / len(trials) * n_trials
    loop_cpu = cpu / len(trials) * n_trials
    print(
        f"LSS betas: {n_trials} trials over {args.runs} runs of {args.volumes} volumes, "
        f"{args.voxels} voxels (load average {os.getloadavg()[0]:.2f})"
    )
    print(f"{'implementation':<44}{'wall s':>10}{'CPU s':>10}")
    print(
        f"{'mvpa_flows run_betaseries (all trials)':<44}{ours['wall']:>10.2f}{ours['cpu']:>10.2f}"
    )
    print(
        f"{'nilearn FirstLevelModel per trial':<44}{loop_wall:>10.1f}{loop_cpu:>10.1f}"
        f"   (extrapolated from {len(trials)} trials: {wall:.1f} s wall)"
    )
    print(
        f"ratio (nilearn loop / ours): {loop_wall / ours['wall']:.0f}x wall, "
        f"{loop_cpu / ours['cpu']:.0f}x CPU (target >= 50x)"
    )
    print(f"peak memory of ours (whole process): {ours['peak_mb']:.0f} MB (target < 2048 MB)")
    print(f"max relative difference of the betas (nilearn scale): {err:.1e}")


if __name__ == "__main__":
    main()

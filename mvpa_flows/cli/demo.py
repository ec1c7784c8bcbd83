"""``mvpa-flows-demo``: make a synthetic dataset and run the participant level on it."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mvpa-flows-demo",
        description="Generate a small synthetic BIDS dataset with derivatives named as "
        "fMRIPrep 24/25 names them (sessions, space-T1w and space-MNI152NLin2009cAsym_res-2, "
        "native boldrefs and transforms, surfaces and CIFTI beside the volumes, the full "
        "confounds table; a block design with face/house/chair and a planted "
        "condition-selective patch) and run mvpa-flows on it, sessions pooled, in MNI space. "
        "Works offline.",
    )
    parser.add_argument("output_dir", type=Path, help="folder for the dataset and results")
    parser.add_argument("--subjects", type=int, default=3, help="number of subjects")
    parser.add_argument("--sessions", type=int, default=2, help="sessions per subject")
    parser.add_argument("--runs", type=int, default=2, help="runs per session")
    parser.add_argument(
        "--analyses",
        nargs="+",
        default=["ftest", "searchlight"],
        help="participant analyses to run",
    )
    parser.add_argument("--estimator", default="gnb", help="searchlight classifier")
    parser.add_argument(
        "--nprocs", type=int, default=1, help="processes (the demo data are small: default 1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the data")
    return parser


def main(argv=None):
    """Make the demo dataset, run the participant level, print where the outputs are."""
    from mvpa_flows.cli.run import main as run_main
    from mvpa_flows.datasets import make_fmriprep_dataset

    args = build_parser().parse_args(argv)
    out = args.output_dir.absolute()
    start = time.perf_counter()
    info = make_fmriprep_dataset(
        out / "bids",
        n_subjects=args.subjects,
        sessions=[str(s + 1) for s in range(args.sessions)],
        n_runs=args.runs,
        seed=args.seed,
    )
    print(
        f"Synthetic dataset: {info['bids_dir']} (subjects {info['subjects']}, sessions "
        f"{info['sessions'] or 'none'}, task {info['task']}, fMRIPrep spaces {info['spaces']}, "
        f"conditions {info['conditions']})"
    )
    command = [
        str(info["bids_dir"]),
        str(out / "mvpa_flows"),
        "participant",
        "--space",
        "MNI152NLin2009cAsym:res-2",
        "--conditions",
        "face",
        "house",
        "--hrf-delay",
        "4",
        "--analyses",
        *args.analyses,
        "--estimator",
        args.estimator,
        "--radius",
        "6",
        "-w",
        str(out / "work"),
    ]
    if args.nprocs:
        command += ["--nprocs", str(args.nprocs)]
    print("Running: mvpa-flows " + " ".join(command))
    code = run_main(command)
    if code == 0:
        print(f"Done in {time.perf_counter() - start:.0f} s. Outputs: {out / 'mvpa_flows'}")
        for path in sorted((out / "mvpa_flows").glob("sub-*/**/func/*_statmap.nii.gz")):
            print(f"  {path.relative_to(out)}")
        for path in sorted((out / "mvpa_flows").glob("*.html")):
            print(f"  report: {path}")
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: functional alignment, ours against every peer, on the same data in one run.

Cases (``--cases``, comma-separated):

``sherlock``
    The 6 Sherlock subjects of ``../shared/data/sherlock-pmc`` (posterior medial cortex,
    481 voxels): fit on run 1 (946 volumes), between-subject segment classification of
    run 2 (18 s segments, 85 of them; chance 0.012). Every method's fit is timed (best of
    ``--repeat``, with its CPU time) and its accuracy scored by the same code
    (:func:`mvpa_flows.core.alignment.bsc.score_aligned`). Ours: Procrustes (PyMVPA's
    three levels), ridge on the Procrustes and on the PCA template, deterministic and
    probabilistic SRM (k=50), and each one's ``fit_subject`` accuracy (every subject left
    out of the model in turn). Peers, each in its own environment: hyperalignment 0.1.1
    (Procrustes template; PCA template + ridge, alpha 1e3), fmralign 0.0.6
    (``GroupAlignment`` Procrustes and ridge), BrainIAK 0.12 (``DetSRM``/``SRM``, k=50),
    PyMVPA 2.6 (installed, else the literal full-SVD transcription below).
``loaded``
    Our default Procrustes fit on Sherlock without, then with, 4 busy single-threaded
    processes started by the benchmark (target: loaded <= 3x unloaded; a fair share of
    2 cores among 5 busy processes is 2.5x).
``synthetic``
    10 subjects x 1,000 voxels x 2,000 samples and 10 x 5,000 x 1,000 (PyMVPA's three
    levels, 29 Procrustes fits): ours against the full-SVD transcription of PyMVPA (the
    5,000-voxel reference extrapolated from one fit x 29 unless ``--full-reference``)
    and, on the 1,000-voxel case, the peers' Procrustes.

Peers live in separate virtual environments under ``--peers`` (default
``$MVPA_FLOWS_PEERS`` or ``/work/peers``): ``hyperalignment/``, ``fmralign/``,
``brainiak/``, ``pymvpa2/`` (each with ``bin/python``); a missing one is reported and
skipped. Every process gets the BLAS thread settings of this one (``OMP_NUM_THREADS``).

    python benchmarks/bench_alignment.py [--cases sherlock,loaded,synthetic] [--repeat 3]

Wall-clock seconds are the best of ``--repeat`` runs, with the CPU seconds of that run;
the load average is printed before and after, because on a shared machine the wall clock
measures the other users too. Ratios are peer time / our time (> 1: we are faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from mvpa_flows.core.alignment.bsc import _Spec, score_aligned
from mvpa_flows.core.alignment.hyperalignment import Hyperalignment, hyperalign
from mvpa_flows.core.alignment.procrustes import UnderdeterminedRotationWarning
from mvpa_flows.core.alignment.srm import SharedResponseModel

REPO = Path(__file__).resolve().parents[1]
SHERLOCK = REPO.parent / "shared" / "data" / "sherlock-pmc"
TR, SEGMENT = 1.5, 18.0
N_FITS = lambda n_subjects: 3 * n_subjects - 1  # noqa: E731  level 1 + level 2 + level 3

# ------------------------------------------------------------------ PyMVPA reference


def _zscore(x):
    x = x - x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1
    return x / std


def _ref_procrustes(source, target):
    """PyMVPA 2.6 ProcrusteanMapper (demean, scaling): full SVD of the cross-product."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    s, t = source - mu_s, target - mu_t
    ns, nt = np.linalg.norm(s), np.linalg.norm(t)
    s, t = s / ns, t / nt
    U, sv, Vh = np.linalg.svd(t.T @ s, full_matrices=False)
    proj = (Vh.T @ U.T) * (sv.sum() * nt / ns)
    return lambda x: (x - mu_s) @ proj + mu_t


def reference_hyperalign(dss):
    """PyMVPA 2.6 Hyperalignment (alpha=1, defaults), transcribed literally."""
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


# --------------------------------------------------------------------------- peers

PEER_SCRIPT = r"""
import json, sys, time
import numpy as np
method, data, out, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
d = np.load(data)
n = len([k for k in d.files if k.startswith("train")])
train = [d[f"train{i}"] for i in range(n)]
test = [d[f"test{i}"] for i in range(n)]

def fit_transform():
    if method == "ha-procrustes":
        from hyperalignment import compute_template, procrustes
        tmpl = compute_template(np.stack(train), kind="procrustes")
        maps = [procrustes(x, tmpl) for x in train]
        return lambda: [t @ m for t, m in zip(test, maps)]
    if method == "ha-pca-ridge":
        from hyperalignment import compute_template, ridge
        tmpl = compute_template(np.stack(train), kind="pca")
        maps = [ridge(x, tmpl, 1e3) for x in train]
        return lambda: [t @ m for t, m in zip(test, maps)]
    if method in ("fmralign-procrustes", "fmralign-ridge"):
        from fmralign import GroupAlignment
        ga = GroupAlignment(method=method.split("-")[1]).fit(
            {str(i): x for i, x in enumerate(train)}, y="template")
        return lambda: list(ga.transform({str(i): x for i, x in enumerate(test)}).values())
    if method in ("brainiak-detsrm", "brainiak-srm"):
        from brainiak.funcalign.srm import SRM, DetSRM
        cls = DetSRM if method == "brainiak-detsrm" else SRM
        m = cls(n_iter=10, features=50, rand_seed=0).fit([x.T for x in train])
        return lambda: [s.T for s in m.transform([x.T for x in test])]
    if method == "pymvpa":
        from mvpa2.algorithms.hyperalignment import Hyperalignment
        from mvpa2.datasets.base import Dataset
        mappers = Hyperalignment()([Dataset(x) for x in train])
        return lambda: [m.forward(Dataset(t)).samples for m, t in zip(mappers, test)]
    raise SystemExit("unknown method " + method)

fit_transform()  # warm-up (imports, LAPACK workspaces)
best, cpu = float("inf"), float("nan")
for _ in range(repeat):
    t0, c0 = time.perf_counter(), time.process_time()
    apply = fit_transform()
    wall = time.perf_counter() - t0
    if wall < best:
        best, cpu = wall, time.process_time() - c0
aligned = apply()
np.savez(out + ".npz", **{f"a{i}": a for i, a in enumerate(aligned)})
import importlib.metadata as md
name = {"ha": "hyperalignment", "fmralign": "fmralign", "brainiak": "brainiak",
        "pymvpa": "pymvpa2"}[method.split("-")[0]]
json.dump({"wall": best, "cpu": cpu, "version": md.version(name)}, open(out + ".json", "w"))
"""

PEERS = {
    "ha-procrustes": ("hyperalignment", "Procrustes template"),
    "ha-pca-ridge": ("hyperalignment", "PCA template + ridge (alpha 1e3)"),
    "fmralign-procrustes": ("fmralign", "GroupAlignment Procrustes"),
    "fmralign-ridge": ("fmralign", "GroupAlignment ridge"),
    "brainiak-detsrm": ("brainiak", "DetSRM k=50"),
    "brainiak-srm": ("brainiak", "SRM k=50"),
    "pymvpa": ("pymvpa2", "Hyperalignment (3 levels)"),
}
PROCRUSTES_PEERS = ("ha-procrustes", "fmralign-procrustes", "pymvpa")


def run_peer(peers_dir, method, data_file, repeat, workdir):
    """Time one peer in its own environment; ``None`` when it is not installed."""
    env_dir = Path(peers_dir) / PEERS[method][0]
    python = env_dir / "bin" / "python"
    if not python.exists():
        return None, f"{env_dir} absent"
    script = Path(workdir) / "peer.py"
    script.write_text(PEER_SCRIPT)
    out = str(Path(workdir) / method)
    proc = subprocess.run(
        [str(python), str(script), method, str(data_file), out, str(repeat)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return None, proc.stderr.strip().splitlines()[-1][:120]
    res = json.loads(Path(out + ".json").read_text())
    arrays = np.load(out + ".npz")
    res["aligned"] = [arrays[f"a{i}"] for i in range(len(arrays.files))]
    return res, ""


# ---------------------------------------------------------------------------- ours


def _time(fn, repeat):
    best, cpu, out = np.inf, np.nan, None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        res = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu, out = wall, time.process_time() - c0, res
    return best, cpu, out


def _accuracy(aligned, test):
    spec = _Spec("segments", test, None, None, SEGMENT, TR, None)
    rows = score_aligned(aligned, test, spec, [str(i) for i in range(len(test))])
    return float(np.mean([r["hyperaligned"] for r in rows])), float(
        np.mean([r["anatomical"] for r in rows])
    )


def _new_subject_accuracy(estimator, train, test):
    from sklearn.base import clone

    from mvpa_flows.core.alignment.evaluate import evaluate_new_subjects

    scores = []
    for s in range(len(train)):
        others = [j for j in range(len(train)) if j != s]
        model = clone(estimator).fit([train[j] for j in others])
        res = evaluate_new_subjects(
            model, [train[s]], [test[s]], [test[j] for j in others], tr=TR, segment_length=SEGMENT
        )
        scores.append(res["scores"].hyperaligned.iloc[0])
    return float(np.mean(scores))


OURS = {
    "procrustes": ("Procrustes, 3 levels (default)", lambda: Hyperalignment()),
    "procrustes-n2": ("Procrustes, 3 levels, n_jobs=2", lambda: Hyperalignment(n_jobs=2)),
    "ridge": ("ridge, Procrustes template", lambda: Hyperalignment(method="ridge")),
    "ridge-pca": (
        "ridge, PCA template",
        lambda: Hyperalignment(method="ridge", template="pca"),
    ),
    "detsrm": ("SRM deterministic k=50", lambda: SharedResponseModel(50, "deterministic")),
    "srm": ("SRM probabilistic k=50", lambda: SharedResponseModel(50)),
}


def load_sherlock():
    import nibabel as nib

    out = {1: [], 2: []}
    for sub in range(1, 7):
        func = SHERLOCK / "derivatives" / "fmriprep" / f"sub-{sub:02d}" / "func"
        for run in (1, 2):
            stem = f"sub-{sub:02d}_task-sherlock_run-{run}_space-MNI152NLin6Asym"
            mask = nib.load(func / f"{stem}_desc-brain_mask.nii.gz").get_fdata() > 0
            bold = nib.load(func / f"{stem}_desc-preproc_bold.nii.gz").get_fdata()
            out[run].append(bold[mask].T)
    return out[1], out[2]


def case_sherlock(args, workdir):
    train, test = load_sherlock()
    data_file = Path(workdir) / "sherlock.npz"
    np.savez(
        data_file,
        **{f"train{i}": x for i, x in enumerate(train)},
        **{f"test{i}": x for i, x in enumerate(test)},
    )
    _, anat = _accuracy(test, test)
    print(
        f"\nSherlock: 6 subjects x 481 voxels, fit run 1 (946 vol), test run 2 "
        f"(85 segments of 18 s, chance {1 / 85:.3f}); anatomical accuracy {anat:.3f}"
    )
    print(
        f"{'package':<16}{'method':<34}{'accuracy':>9}{'new subj':>9}{'fit (s)':>9}"
        f"{'cpu (s)':>9}{'peer/ours':>10}"
    )
    rows = {}
    for key in args.ours.split(","):
        label, make = OURS[key]
        wall, cpu, est = _time(lambda make=make: make().fit(train), args.repeat)
        acc, _ = _accuracy(est.transform(test), test)
        new = _new_subject_accuracy(make(), train, test) if args.new_subjects else np.nan
        rows[key] = wall
        print(f"{'mvpa_flows':<16}{label:<34}{acc:>9.3f}{new:>9.3f}{wall:>9.2f}{cpu:>9.2f}")
    ours_procrustes = rows.get("procrustes")
    fastest = None
    for method in args.peer_methods.split(","):
        res, why = run_peer(args.peers, method, data_file, args.repeat, workdir)
        package, label = PEERS[method]
        if res is None and method == "pymvpa":
            wall, cpu, maps = _time(lambda: reference_hyperalign(train), args.repeat)
            res = {"wall": wall, "cpu": cpu, "version": "2.6 transcription"}
            res["aligned"] = [m(t) for m, t in zip(maps, test, strict=True)]
            label = "3 levels, transcription (full SVD)"
            print(f"{'':<16}(pymvpa2 not installed: {why[:60]}; timing the transcription)")
        if res is None:
            print(f"{package:<16}{label:<34}  not run: {why}")
            continue
        acc, _ = _accuracy(res["aligned"], test)
        kind = "srm" if "srm" in method else "ridge" if "ridge" in method else "procrustes"
        ref = rows.get(kind) or ours_procrustes
        ratio = f"{res['wall'] / ref:>9.2f}x" if ref else ""
        name = f"{package} {res['version']}"[:15]
        print(
            f"{name:<16}{label:<34}{acc:>9.3f}{'':>9}{res['wall']:>9.2f}{res['cpu']:>9.2f}{ratio}"
        )
        if method in PROCRUSTES_PEERS and (fastest is None or res["wall"] < fastest[1]):
            fastest = (f"{package} {label}", res["wall"])
    if fastest and ours_procrustes:
        ratio = fastest[1] / ours_procrustes
        verdict = "met" if ratio >= 1.5 else "MISSED"
        print(
            f"Procrustes fit: ours {ours_procrustes:.2f} s vs fastest peer ({fastest[0]}) "
            f"{fastest[1]:.2f} s: {ratio:.2f}x (target >= 1.5x: {verdict})"
        )


def case_loaded(args, workdir):
    train, _ = load_sherlock()
    fit = lambda: hyperalign(train)  # noqa: E731
    fit()
    idle, idle_cpu, _ = _time(fit, args.repeat)
    load_idle = os.getloadavg()[0]
    # With Linux's session autogroups, busy processes in this session share its CPU share
    # (the arithmetic: 5 busy processes on 2 cores, 2.5x); in a new session they
    # load the machine as another user's jobs would.
    new_session = args.busy_session == "new"
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=new_session)
        for _ in range(4)
    ]
    try:
        time.sleep(1.0)
        loaded, loaded_cpu, _ = _time(fit, args.repeat)
        load_busy = os.getloadavg()[0]
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    ratio = loaded / idle
    print(
        f"\nLoaded machine (Sherlock Procrustes fit, n_jobs=1; busy processes in the "
        f"{args.busy_session} session): without the 4 busy processes "
        f"{idle:.2f} s (cpu {idle_cpu:.2f}, load {load_idle:.1f}); with them {loaded:.2f} s "
        f"(cpu {loaded_cpu:.2f}, load {load_busy:.1f}): {ratio:.2f}x "
        f"(target <= 3x: {'met' if ratio <= 3 else 'MISSED'})"
    )


def _data(n_subjects, n_voxels, n_samples, seed=0):
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n_samples, n_voxels))
    return [
        shared @ np.linalg.qr(rng.standard_normal((n_voxels, n_voxels)))[0]
        + rng.standard_normal((n_samples, n_voxels))
        for _ in range(n_subjects)
    ]


def case_synthetic(args, workdir):
    print(
        f"\n{'case':<28}{'ours (s)':>9}{'cpu (s)':>9}{'reference':<34}{'ref (s)':>9}"
        f"{'cpu (s)':>9}{'ref/ours':>9}"
    )
    for n_sub, n_vox, n_samp in ((10, 1000, 2000), (10, 5000, 1000)):
        dss = _data(n_sub, n_vox, n_samp)
        hyperalign(dss[:2])
        ours, ours_cpu, _ = _time(lambda dss=dss: hyperalign(dss, n_jobs=args.n_jobs), args.repeat)
        name = f"{n_sub} x {n_vox} vox x {n_samp} smp"
        if n_vox <= 2000 or args.full_reference:
            ref, ref_cpu, _ = _time(lambda dss=dss: reference_hyperalign(dss), 1)
            label = "PyMVPA transcription (full SVD)"
        else:
            ref, ref_cpu, _ = _time(lambda dss=dss: _ref_procrustes(dss[1], dss[0]), 1)
            ref, ref_cpu = ref * N_FITS(n_sub), ref_cpu * N_FITS(n_sub)
            label = "PyMVPA transcr. (1 fit x 29)"
        print(
            f"{name:<28}{ours:>9.2f}{ours_cpu:>9.2f}  {label:<32}{ref:>9.1f}{ref_cpu:>9.1f}"
            f"{ref / ours:>8.1f}x",
            flush=True,
        )
        if n_vox > 2000:
            continue
        data_file = Path(workdir) / f"synthetic{n_vox}.npz"
        np.savez(
            data_file,
            **{f"train{i}": x for i, x in enumerate(dss)},
            **{f"test{i}": x[:10] for i, x in enumerate(dss)},
        )
        for method in ("ha-procrustes", "fmralign-procrustes"):
            res, why = run_peer(args.peers, method, data_file, 1, workdir)
            package, label = PEERS[method]
            if res is None:
                print(f"{'':<28}{'':>18}  {package} {label}: not run ({why})")
                continue
            print(
                f"{'':<28}{'':>18}  {(package + ' ' + label)[:32]:<32}{res['wall']:>9.1f}"
                f"{res['cpu']:>9.1f}{res['wall'] / ours:>8.1f}x",
                flush=True,
            )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="sherlock,loaded,synthetic")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n-jobs", type=int, default=1, help="our n_jobs (synthetic cases)")
    ap.add_argument("--peers", default=os.environ.get("MVPA_FLOWS_PEERS", "/work/peers"))
    ap.add_argument("--ours", default=",".join(k for k in OURS if k != "procrustes-n2"))
    ap.add_argument("--peer-methods", default=",".join(PEERS))
    ap.add_argument(
        "--no-new-subjects",
        dest="new_subjects",
        action="store_false",
        help="skip the fit_subject accuracies (6 refits per method)",
    )
    ap.add_argument("--full-reference", action="store_true")
    ap.add_argument(
        "--busy-session",
        choices=("same", "new"),
        default="same",
        help="loaded case: busy processes in this session or in a new one",
    )
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", UnderdeterminedRotationWarning)
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print(f"load average before: {os.getloadavg()}; {threads}; cores {os.cpu_count()}")
    cases = {"sherlock": case_sherlock, "loaded": case_loaded, "synthetic": case_synthetic}
    with tempfile.TemporaryDirectory() as workdir:
        for case in args.cases.split(","):
            if case != "synthetic" and not SHERLOCK.is_dir():
                print(f"\n{case}: Sherlock data absent at {SHERLOCK}; skipped")
                continue
            cases[case](args, workdir)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

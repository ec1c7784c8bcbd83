"""Command-line parser of the ``mvpa-flows`` BIDS-App (nipreps flag spellings)."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from mvpa_flows import bids_specs
from mvpa_flows.__about__ import __version__

EXIT_USAGE = 64

#: Python parameter names (as core messages spell them) -> the command-line flag.
FLAG_FOR_PARAMETER = {
    "radius": "--radius",
    "estimator": "--estimator",
    "cv": "--cv",
    "scoring": "--scoring",
    "n_permutations": "--n-permutations",
    "random_state": "--random-seed",
    "random_seed": "--random-seed",
    "n_jobs": "--nprocs",
    "process_mask": "--process-mask",
    "conditions": "--conditions",
    "confounds": "--confounds",
    "confounds_strategy": "--confounds-strategy",
    "confounds_strategy_options": "--confounds-strategy",
    "hrf_delay": "--hrf-delay",
    "standardize": "--standardize",
    "detrend": "--detrend",
    "sessions": "--session-label",
    "space": "--space",
    "train_runs": "--ha-train-runs",
    "test_runs": "--ha-test-runs",
    "segment_length": "--segment-length",
    "roi_mask": "--roi-mask",
    "alphas": "--ha-alphas",
    "cv_blocks": "--ha-cv-blocks",
    "n_components": "--ha-n-components",
    "n_iter": "--ha-n-iter",
    "searchlight_radius": "--ha-searchlight-radius",
    "sparse_radius": "--ha-sparse-radius",
    "n_chunks": "--searchlight-chunks",
    "common_space": "--ha-common-space",
    "zscore_output": "--ha-zscore-output",
    "hrf_model": "--hrf-model",
    "drift_model": "--drift-model",
    "high_pass": "--high-pass",
    "drift_order": "--drift-order",
    "slice_time_ref": "--slice-time-ref",
    "min_trials_per_run": "--min-trials-per-run",
}


#: Parameter names whose flag depends on the analysis level.
LEVEL_FLAGS = {
    "participant": {"method": "--samples"},
    "group": {"method": "--ha-method"},
}


def cli_message(text, level=None):
    """Rewrite a core message for the command line: Python parameters become flags.

    ``Parameter 'radius' must be ...`` becomes ``Option --radius must be ...``,
    ```n_permutations``` becomes ``--n-permutations`` and, at the participant level,
    ``method='lss'`` becomes ``--samples lss`` (``--ha-method`` at the group level);
    other text is left alone.
    """
    flags = {**FLAG_FOR_PARAMETER, **LEVEL_FLAGS.get(level, {})}

    def phrase(match):
        flag = flags.get(match.group(1))
        return f"Option {flag}" if flag else match.group(0)

    def quoted(match):
        return flags.get(match.group(1), match.group(0))

    def assigned(match):
        flag = flags.get(match.group(1))
        return f"{flag} {match.group(2)}" if flag else match.group(0)

    text = re.sub(r"Parameter '(\w+)'", phrase, str(text))
    text = re.sub(r"(?<![-\w])(\w+)='([^'\s]*)'", assigned, text)
    return re.sub(r"`(\w+)`", quoted, text)


class UsageError(Exception):
    """Bad command-line usage (exit code 64)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage()
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _memory_gb(value):
    """Parse ``--mem`` (``8G``, ``16000M``, ``16GB``; a bare number is megabytes) to GB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)[bB]?\s*", str(value))
    if not match:
        raise argparse.ArgumentTypeError(
            f"--mem {value!r}: expected a number with a unit suffix, e.g. 8G or 16000M."
        )
    number, unit = float(match.group(1)), match.group(2).upper() or "M"
    return number * {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}[unit]


def _derivative(value):
    name, sep, path = value.partition("=")
    if not sep:
        name, path = "fmriprep", value
    return name, Path(path)


def _label(value):
    return value[4:] if value.startswith("sub-") else value


def _radius(value):
    """``--radius``: a finite number of millimetres above 0."""
    try:
        radius = float(value)
    except ValueError:
        radius = float("nan")
    if not math.isfinite(radius) or radius <= 0:
        raise argparse.ArgumentTypeError(
            f"expected the sphere radius in mm, a finite number > 0 (e.g. 5.6); got {value!r}."
        )
    return radius


def _cv(value):
    """``--cv``: ``loro`` or ``kfold:N`` with at least 2 folds."""
    match = re.fullmatch(r"loro|kfold:(\d+)", value.strip().lower())
    if not match or (match[1] is not None and int(match[1]) < 2):
        raise argparse.ArgumentTypeError(
            f"expected 'loro' (leave one run out) or 'kfold:N' with N >= 2 folds; got {value!r}."
        )
    return value.strip().lower()


def _estimator(value):
    """``--estimator``: a name, or the import path of a scikit-learn classifier."""
    names = bids_specs.load("analysis.schema.json")["properties"]["estimator"]["oneOf"][0]
    if value in names["enum"]:
        return value
    if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", value):
        return {"class": value}
    raise argparse.ArgumentTypeError(
        f"expected one of {names['enum']} or the import path of a scikit-learn classifier "
        f"(e.g. sklearn.svm.SVC); got {value!r}."
    )


def _param(value):
    """``KEY=VALUE`` of ``--estimator-params``; VALUE is read as JSON when it parses."""
    key, sep, text = value.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. kernel=rbf); got {value!r}.")
    try:
        return key, json.loads(text)
    except json.JSONDecodeError:
        return key, text


def _session(value):
    return value[4:] if value.startswith("ses-") else value


def _run_token(value):
    """``--ha-train-runs`` items: RUN, or SESSION:RUN (with or without ses-)."""
    match = re.fullmatch(r"(?:(?:ses-)?([a-zA-Z0-9]+):)?(?:run-)?(\d+)", value)
    if not match:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected a run number (2) or SESSION:RUN (1:2) when the subjects "
            "have sessions."
        )
    session, run = match.groups()
    return f"{session}:{int(run)}" if session else int(run)


def build_parser():
    """Return the argument parser. Defaults of analysis options live in the schema."""
    schema = bids_specs.load("analysis.schema.json")["properties"]

    def help_of(key):
        default = schema[key].get("default")
        if default is None or "(default" in schema[key]["description"]:
            return schema[key]["description"]
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        return f"{schema[key]['description']} (default: {shown})"

    parser = _Parser(
        prog="mvpa-flows",
        description="Multivariate pattern analysis of fMRIPrep outputs (BIDS-App). Every "
        "default is shown once, in the option's help.",
    )
    parser.add_argument("bids_dir", type=Path, help="raw BIDS dataset (events live here)")
    parser.add_argument("output_dir", type=Path, help="derivatives output folder")
    parser.add_argument(
        "analysis_level",
        help="'participant' or 'group'",
    )
    parser.add_argument("--version", action="version", version=f"mvpa-flows {__version__}")
    g = parser.add_argument_group("inputs")
    g.add_argument(
        "-d",
        "--derivatives",
        type=_derivative,
        nargs="+",
        metavar="NAME=PATH",
        help="derivatives to use; fmriprep=PATH (default BIDS_DIR/derivatives/fmriprep)",
    )
    g.add_argument(
        "--participant-label",
        "--participant_label",
        dest="participant_label",
        nargs="+",
        type=_label,
        help="subjects to analyse, with or without 'sub-' (default: all)",
    )
    g.add_argument("-t", "--task", "--task-id", dest="task", help=help_of("task"))
    g.add_argument(
        "--session-label",
        "--session_label",
        dest="session_label",
        nargs="+",
        type=_session,
        metavar="LABEL",
        help=help_of("session_label"),
    )
    g.add_argument(
        "--per-session",
        action="store_const",
        const=True,
        default=None,
        help=help_of("per_session"),
    )
    g.add_argument("--space", metavar="NAME[:res-N][:cohort-N]", help=help_of("space"))
    g.add_argument(
        "--bids-filter-file",
        type=Path,
        help="JSON of pybids filters per query (bold, mask, confounds, events)",
    )
    g.add_argument("--bids-database-dir", type=Path, help="reuse a pybids database folder")
    g.add_argument(
        "--skip-bids-validation",
        "--skip_bids_validation",
        action="store_true",
        help="do not validate BIDS_DIR with pybids",
    )
    g.add_argument(
        "--no-datalad-get",
        action="store_true",
        help="in DataLad datasets, do not fetch missing input content (default: fetch "
        "only the files this run reads)",
    )
    g.add_argument("--spec", type=Path, help="analysis spec (JSON) holding any option below")
    a = parser.add_argument_group("samples and cleaning")
    a.add_argument("--conditions", nargs="+", help=help_of("conditions"))
    a.add_argument("--contrast-label", help=help_of("contrast_label"))
    a.add_argument("--confounds", nargs="+", help=help_of("confounds"))
    a.add_argument(
        "--confounds-strategy",
        nargs="+",
        metavar="STRATEGY|KEY=VALUE",
        help="a nilearn denoising strategy (simple, scrubbing, compcor, ica_aroma) and "
        "its options, e.g. 'compcor n_compcor=5' or 'scrubbing fd_threshold=0.3'; "
        "censored volumes are left out of the samples (default: --confounds)",
    )
    a.add_argument(
        "--detrend", action=argparse.BooleanOptionalAction, default=None, help=help_of("detrend")
    )
    a.add_argument(
        "--standardize", choices=schema["standardize"]["enum"], help=help_of("standardize")
    )
    a.add_argument("--hrf-delay", type=float, metavar="SECONDS", help=help_of("hrf_delay"))
    a.add_argument(
        "--analyses",
        nargs="+",
        choices=schema["analyses"]["items"]["enum"],
        help=help_of("analyses"),
    )
    b = parser.add_argument_group("trial-wise betas (participant level, --samples lss|lsa)")
    b.add_argument("--samples", choices=schema["samples"]["enum"], help=help_of("samples"))
    b.add_argument(
        "--hrf-model", choices=schema["hrf_model"]["enum"], metavar="MODEL",
        help=help_of("hrf_model") + f"; one of {schema['hrf_model']['enum']}",
    )  # fmt:skip
    b.add_argument(
        "--drift-model", choices=schema["drift_model"]["enum"], help=help_of("drift_model")
    )
    b.add_argument("--high-pass", type=float, metavar="HZ", help=help_of("high_pass"))
    b.add_argument("--drift-order", type=int, metavar="N", help=help_of("drift_order"))
    b.add_argument(
        "--slice-time-ref", type=float, metavar="FRACTION", help=help_of("slice_time_ref")
    )
    b.add_argument(
        "--min-trials-per-run", type=int, metavar="N", help=help_of("min_trials_per_run")
    )
    s = parser.add_argument_group("searchlight")
    s.add_argument("--radius", type=_radius, metavar="MM", help=help_of("radius"))
    s.add_argument("--estimator", type=_estimator, metavar="NAME|CLASS", help=help_of("estimator"))
    s.add_argument(
        "--estimator-params",
        type=_param,
        nargs="+",
        metavar="KEY=VALUE",
        help="parameters of an --estimator given as a class path (VALUE read as JSON when "
        "it parses: C=10, kernel=rbf, class_weight=balanced)",
    )
    s.add_argument("--cv", type=_cv, metavar="{loro,kfold:N}", help=help_of("cv"))
    s.add_argument("--scoring", choices=schema["scoring"]["enum"], help=help_of("scoring"))
    s.add_argument("--n-permutations", type=int, help=help_of("n_permutations"))
    s.add_argument("--process-mask", help=help_of("process_mask"))
    h = parser.add_argument_group("hyperalignment (group level)")
    h.add_argument("--roi-mask", help=help_of("roi_mask"))
    h.add_argument("--ha-train-runs", nargs="+", type=_run_token, help=help_of("ha_train_runs"))
    h.add_argument("--ha-test-runs", nargs="+", type=_run_token, help=help_of("ha_test_runs"))
    h.add_argument("--bsc", choices=schema["bsc"]["enum"], help=help_of("bsc"))
    h.add_argument(
        "--segment-length", type=float, metavar="SECONDS", help=help_of("segment_length")
    )
    m = parser.add_argument_group("alignment method and model (group level)")
    m.add_argument("--ha-method", choices=schema["ha_method"]["enum"], help=help_of("ha_method"))
    m.add_argument(
        "--ha-alphas", nargs="+", type=float, metavar="ALPHA", help=help_of("ha_alphas")
    )
    m.add_argument("--ha-cv-blocks", type=int, metavar="N", help=help_of("ha_cv_blocks"))
    m.add_argument("--ha-n-components", type=int, metavar="K", help=help_of("ha_n_components"))
    m.add_argument(
        "--ha-srm-method", choices=schema["ha_srm_method"]["enum"], help=help_of("ha_srm_method")
    )
    m.add_argument("--ha-n-iter", type=int, metavar="N", help=help_of("ha_n_iter"))
    m.add_argument(
        "--ha-searchlight-radius",
        type=_radius,
        metavar="MM",
        help=help_of("ha_searchlight_radius"),
    )
    m.add_argument(
        "--ha-sparse-radius", type=_radius, metavar="MM", help=help_of("ha_sparse_radius")
    )
    m.add_argument(
        "--ha-common-space",
        choices=schema["ha_common_space"]["enum"],
        help=help_of("ha_common_space"),
    )
    m.add_argument(
        "--ha-zscore-output",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=help_of("ha_zscore_output"),
    )
    m.add_argument("--ha-model", type=Path, metavar="DIR", help=help_of("ha_model"))
    group = parser.add_argument_group("group statistics")
    group.add_argument(
        "--allow-subject-space",
        action="store_const",
        const=True,
        default=None,
        help=help_of("allow_subject_space"),
    )
    p = parser.add_argument_group("execution")
    p.add_argument(
        "-w",
        "--work-dir",
        type=Path,
        help="Nipype work directory (default OUTPUT_DIR/../work-mvpa_flows, or a folder "
        "in the system temporary directory when that would be inside an input dataset); "
        "reuse it to resume from cache; one run at a time",
    )
    p.add_argument(
        "--nprocs",
        "--nthreads",
        "--n_cpus",
        dest="nprocs",
        type=int,
        help="processes for MultiProc (default: all cores)",
    )
    p.add_argument("--omp-nthreads", type=int, help="BLAS threads per process (default 1)")
    p.add_argument(
        "--mem",
        "--mem_mb",
        "--mem-mb",
        dest="mem_gb",
        type=_memory_gb,
        help="memory limit with unit suffix (e.g. 8G)",
    )
    p.add_argument("--use-plugin", type=Path, help="Nipype plugin settings (YAML or JSON)")
    p.add_argument(
        "--searchlight-chunks",
        type=int,
        default=1,
        metavar="N",
        help="split each subject's searchlight spheres (and the sphere centres of group "
        "searchlight hyperalignment) into N nodes (for cluster plugins); results are "
        "identical to one node (default: 1)",
    )
    p.add_argument("--random-seed", type=int, help=help_of("random_seed"))
    p.add_argument("--stop-on-first-crash", action="store_true", help="stop at the first error")
    p.add_argument("--write-graph", action="store_true", help="write the workflow graph")
    p.add_argument(
        "-v",
        "--verbose",
        dest="verbose_count",
        action="count",
        default=0,
        help="more output (-vv for debug)",
    )
    return parser

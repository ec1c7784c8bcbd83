"""The run configuration: command line + analysis spec + schema defaults, validated."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema

from mvpa_flows import bids_specs
from mvpa_flows.cli.parser import UsageError

LEVELS = ("participant", "group")
PARTICIPANT_ANALYSES = ("ftest", "searchlight")
GROUP_ANALYSES = ("searchlight", "hyperalignment")
#: Options of the trial-wise GLM (``--samples lss|lsa`` only).
BETA_OPTIONS = (
    "hrf_model",
    "drift_model",
    "high_pass",
    "drift_order",
    "slice_time_ref",
    "min_trials_per_run",
)


@dataclass
class RunConfig:
    """Everything a run needs; built once by :func:`build_config`."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    fmriprep_dir: Path
    work_dir: Path
    participant_label: list | None = None
    task: str | None = None
    session_label: list | None = None
    per_session: bool = False
    space: str | None = None
    conditions: list | None = None
    contrast_label: str | None = None
    confounds: list | None = None
    confounds_strategy: str | None = None
    confounds_strategy_options: dict = field(default_factory=dict)
    detrend: bool = True
    standardize: str = "zscore_run"
    hrf_delay: float = 0.0
    samples: str = "volumes"
    hrf_model: str = "glover"
    drift_model: str = "cosine"
    high_pass: float = 0.01
    drift_order: int = 1
    slice_time_ref: float = 0.0
    min_trials_per_run: int = 2
    analyses: list = field(default_factory=lambda: ["ftest"])
    radius: float = 5.6
    estimator: str | dict = "svc"
    cv: str = "loro"
    scoring: str = "accuracy"
    n_permutations: int = 0
    process_mask: str | None = None
    roi_mask: str | None = None
    ha_train_runs: list | None = None
    ha_test_runs: list | None = None
    bsc: str = "segments"
    segment_length: float = 18.0
    ha_method: str = "procrustes"
    ha_alphas: list | None = None
    ha_cv_blocks: int = 5
    ha_n_components: int = 50
    ha_srm_method: str = "probabilistic"
    ha_n_iter: int = 10
    ha_searchlight_radius: float | None = None
    ha_sparse_radius: float | None = None
    ha_common_space: str = "auto"
    ha_zscore_output: bool = True
    ha_model: str | None = None
    random_seed: int | None = None
    allow_subject_space: bool = False
    derivatives: dict = field(default_factory=dict)
    work_dir_given: bool = True
    options_given: tuple = ()
    space_entities: dict = field(default_factory=dict)
    bids_filters: dict = field(default_factory=dict)
    bids_database_dir: Path | None = None
    skip_bids_validation: bool = False
    datalad_get: bool = True
    nprocs: int = 1
    searchlight_chunks: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    plugin: dict = field(default_factory=dict)
    stop_on_first_crash: bool = False
    write_graph: bool = False
    verbose: int = 0
    command_line: str = ""
    log_file: Path | None = None
    subject_data: dict = field(default_factory=dict)

    @property
    def show_progress(self):
        """Progress lines on the terminal: with -v, or on an interactive terminal outside CI."""
        import sys

        interactive = sys.stderr.isatty() and not os.environ.get("CI")
        return self.verbose > 0 or interactive

    @property
    def searchlight_jobs(self):
        """Workers inside each searchlight chunk node: the cores left per chunk."""
        return max(1, self.nprocs // max(1, self.searchlight_chunks))

    @property
    def input_dirs(self):
        """Name -> folder of every input dataset (raw, fmriprep and other derivatives)."""
        dirs = {"raw": self.bids_dir, "fmriprep": self.fmriprep_dir}
        dirs.update({name: Path(path).absolute() for name, path in self.derivatives.items()})
        return dirs

    @property
    def dataset_links(self):
        """Dataset name -> root, for BIDS URIs and dataset_description.json.

        With ``ha_model`` in another derivatives folder, that folder is the ``hamodel``
        dataset (the model and its ROI are inputs of the run)."""
        links = {"raw": str(self.bids_dir), "fmriprep": str(self.fmriprep_dir)}
        if self.ha_model:
            root = Path(self.ha_model).absolute().parent
            output = Path(self.output_dir).absolute()
            if root != output and output not in root.parents:
                links["hamodel"] = str(root)
        return links

    def parameters(self):
        """The analysis choices, as recorded in logs and the report."""
        schema = bids_specs.load("analysis.schema.json")["properties"]
        return {key: getattr(self, key) for key in schema}


def load_spec(path):
    """Read and validate an analysis spec file against ``analysis.schema.json``."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--spec {path}: no such file.") from None
    except json.JSONDecodeError as err:
        raise UsageError(f"--spec {path} is not valid JSON: {err}.") from None
    validate_spec(spec, str(path))
    return spec


def _not_finite(value, path=""):
    """Keys (``a/b``) of the NaN and infinite numbers in a parsed spec."""
    if isinstance(value, float) and not math.isfinite(value):
        return [path or "(top level)"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _not_finite(v, f"{path}/{k}".strip("/"))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _not_finite(v, f"{path}/{i}")]
    return []


def validate_spec(spec, source="analysis spec"):
    """Raise :class:`UsageError` naming the key and what the schema expects."""
    bad = _not_finite(spec)
    if bad:
        raise UsageError(
            f"{source}: {', '.join(bad)} must be a finite number (NaN and Infinity are not "
            "numbers JSON allows); see bids_specs/analysis.schema.json."
        )
    schema = bids_specs.load("analysis.schema.json")
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(spec), key=lambda e: list(e.path)
    )
    if errors:
        lines = [f"  {'/'.join(map(str, e.path)) or '(top level)'}: {e.message}" for e in errors]
        raise UsageError(
            f"{source} does not follow bids_specs/analysis.schema.json:\n" + "\n".join(lines)
        )


def _merge_estimator_params(values, params):
    if not params:
        return
    if not isinstance(values.get("estimator"), dict):
        raise UsageError(
            f"--estimator-params applies to an --estimator given as a class path (e.g. "
            f"--estimator sklearn.svm.SVC --estimator-params kernel=rbf); the estimator is "
            f"{values.get('estimator')!r}, whose parameters are fixed."
        )
    values["estimator"] = {
        "class": values["estimator"]["class"],
        "params": {**values["estimator"].get("params", {}), **dict(params)},
    }


def check_estimator(spec):
    """Build the estimator of ``spec`` once, so a bad one fails before any work."""
    from mvpa_flows.core.searchlight.spec import estimator_from_spec

    try:
        estimator_from_spec(spec)
    except (TypeError, ValueError) as err:
        message = re.sub(r"^Parameter 'estimator':? ?", "", str(err))
        raise UsageError(f"--estimator: {message}") from None


def _load_plugin(path):
    if path is None:
        return {}
    text = Path(path).read_text()
    if str(path).endswith((".yml", ".yaml")):
        import yaml

        plugin = yaml.safe_load(text)
    else:
        plugin = json.loads(text)
    if not isinstance(plugin, dict) or "plugin" not in plugin:
        raise UsageError(
            f"--use-plugin {path}: expected a mapping with 'plugin' (and optional "
            "'plugin_args'), as fMRIPrep accepts, e.g. {plugin: MultiProc, plugin_args: "
            "{n_procs: 4}}."
        )
    return plugin


def _option_value(text):
    """A KEY=VALUE option value: integers, numbers, booleans and null as JSON reads them."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"none": None, "true": True, "false": False}.get(text.lower(), text)


def _confounds_strategy(tokens):
    """``--confounds-strategy NAME [KEY=VALUE ...]`` -> (name, options)."""
    name, *pairs = tokens
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(
                f"--confounds-strategy {' '.join(tokens)}: {pair!r} is not KEY=VALUE (e.g. "
                "--confounds-strategy compcor n_compcor=5)."
            )
        options[key] = _option_value(value)
    return name, options


def _run_label(key, value):
    """A run of an analysis spec as the command line reads it (``ses-1:2`` -> ``1:2``)."""
    import argparse

    from mvpa_flows.cli.parser import _run_token

    if not isinstance(value, str):
        return value
    try:
        return _run_token(value)
    except argparse.ArgumentTypeError as err:
        raise UsageError(f"--{key.replace('_', '-')} {err}") from None


def default_work_dir(output_dir, input_dirs):
    """``OUTPUT_DIR/../work-mvpa_flows``, or a folder of the system temporary directory
    when that would be inside an input dataset (e.g. ``BIDS_DIR/derivatives``)."""
    import hashlib
    import tempfile

    candidate = Path(output_dir).parent / "work-mvpa_flows"
    resolved = candidate.resolve()
    roots = [Path(d).resolve() for d in input_dirs]
    if any(resolved == root or root in resolved.parents for root in roots):
        digest = hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"mvpa_flows-work-{digest}"
    return candidate


def build_config(args, argv=None):
    """Resolve the configuration from parsed ``args`` (explicit flags > spec > defaults)."""
    from mvpa_flows.cli.parser import cli_message
    from mvpa_flows.core.data.confounds import check_strategy
    from mvpa_flows.interfaces.bids import parse_space

    schema = bids_specs.load("analysis.schema.json")["properties"]
    spec = load_spec(args.spec) if args.spec else {}
    values = {key: prop.get("default") for key, prop in schema.items()}
    values["participant_label"] = None
    values.update(spec)
    for key in schema:
        given = getattr(args, key, None)
        if given is not None:
            values[key] = given
    if getattr(args, "confounds_strategy", None):
        values["confounds_strategy"], values["confounds_strategy_options"] = _confounds_strategy(
            args.confounds_strategy
        )
    if values.get("process_mask"):
        values["process_mask"] = str(Path(values["process_mask"]).absolute())
    for key in ("roi_mask", "ha_model"):
        if values.get(key):
            values[key] = str(Path(values[key]).absolute())
    for key in ("ha_train_runs", "ha_test_runs"):
        if values.get(key):
            values[key] = [_run_label(key, v) for v in values[key]]
    for key, prefix in (("participant_label", "sub-"), ("session_label", "ses-")):
        if values.get(key):
            values[key] = [p[len(prefix) :] if p.startswith(prefix) else p for p in values[key]]
    _merge_estimator_params(values, getattr(args, "estimator_params", None))
    try:
        parse_space(values.get("space"))
    except ValueError as err:
        raise UsageError(f"--space: {err}") from None
    validate_spec({k: v for k, v in values.items() if v is not None}, "the options given")
    check_estimator(values["estimator"])
    if values.get("confounds_strategy"):
        if values.get("confounds") and values["confounds"] != ["none"]:
            raise UsageError(
                f"--confounds {' '.join(values['confounds'])} and --confounds-strategy "
                f"{values['confounds_strategy']} both choose the confounds; give one of them."
            )
        try:
            check_strategy(values["confounds_strategy"], values["confounds_strategy_options"])
        except ValueError as err:
            raise UsageError(cli_message(err)) from None
    values["confounds_strategy_options"] = dict(values.get("confounds_strategy_options") or {})
    design_given = [
        f"--{key.replace('_', '-')}"
        for key in BETA_OPTIONS
        if getattr(args, key, None) is not None or key in spec
    ]
    if values.get("samples", "volumes") == "volumes" and design_given:
        raise UsageError(
            f"{', '.join(design_given)} set(s) the trial-wise GLM, which only --samples lss "
            "or --samples lsa fit; add one of them (volume samples are labelled, not "
            "modelled)."
        )
    if values.get("samples") in ("lss", "lsa") and values.get("confounds_strategy"):
        raise UsageError(
            f"--samples {values['samples']} enters confounds as GLM regressors chosen with "
            f"--confounds (columns or patterns such as 'a_comp_cor_0*'); --confounds-strategy "
            f"{values['confounds_strategy']} applies to --samples volumes only. Give the "
            "columns with --confounds instead."
        )

    level = args.analysis_level
    bids_dir = Path(args.bids_dir).absolute()
    output_dir = Path(args.output_dir).absolute()
    derivatives = dict(args.derivatives or [])
    fmriprep_dir = Path(derivatives.get("fmriprep", bids_dir / "derivatives" / "fmriprep"))
    others = {k: Path(v).absolute() for k, v in derivatives.items() if k != "fmriprep"}
    inputs = [bids_dir, fmriprep_dir.absolute(), *others.values()]
    work_dir = Path(args.work_dir or default_work_dir(output_dir, inputs)).absolute()
    filters = {}
    if args.bids_filter_file:
        try:
            filters = json.loads(Path(args.bids_filter_file).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UsageError(f"--bids-filter-file {args.bids_filter_file}: {err}") from None
    nprocs = args.nprocs or os.cpu_count() or 1
    return RunConfig(
        bids_dir=bids_dir,
        output_dir=output_dir,
        analysis_level=level,
        fmriprep_dir=fmriprep_dir.absolute(),
        work_dir=work_dir,
        work_dir_given=args.work_dir is not None,
        options_given=tuple(
            key for key in schema if getattr(args, key, None) is not None or key in spec
        ),
        derivatives=others,
        bids_filters=filters,
        bids_database_dir=args.bids_database_dir,
        skip_bids_validation=args.skip_bids_validation,
        datalad_get=not args.no_datalad_get,
        nprocs=nprocs,
        searchlight_chunks=args.searchlight_chunks,
        omp_nthreads=args.omp_nthreads or 1,
        mem_gb=args.mem_gb,
        plugin=_load_plugin(args.use_plugin),
        stop_on_first_crash=args.stop_on_first_crash,
        write_graph=args.write_graph,
        verbose=args.verbose_count,
        command_line=" ".join(argv) if argv else "",
        **values,
    )

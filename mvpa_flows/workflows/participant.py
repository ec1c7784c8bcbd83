"""The participant-level MVPA sub-workflow, connectable after fMRIPrep."""

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mvpa_flows.interfaces.bids import DerivativesDataSink
from mvpa_flows.interfaces.reports import MethodsText
from mvpa_flows.interfaces.searchlight import STAT_LABELS
from mvpa_flows.workflows.betas import BETA_SAMPLES, init_betas_wf
from mvpa_flows.workflows.ftest import init_ftest_wf
from mvpa_flows.workflows.prepare import init_prepare_wf
from mvpa_flows.workflows.reports import (
    init_betas_report_wf,
    init_ftest_report_wf,
    init_searchlight_report_wf,
)
from mvpa_flows.workflows.searchlight import init_searchlight_wf

PARTICIPANT_ANALYSES = ("ftest", "searchlight")

#: Methods text, filled from the sidecar of the samples table.
METHODS = MethodsText(
    "Multivariate pattern analyses were performed with mvpa_flows {GeneratedBy} "
    "[@mvpa_flows], a BIDS-App built on Nipype [@nipype], on data preprocessed with fMRIPrep "
    "[@fmriprep]; inputs were queried with PyBIDS [@pybids].",
    describes={"suffix": "samples"},
)

#: Input fields of :func:`init_mvpa_wf`; fMRIPrep's own names are accepted as aliases.
INPUT_FIELDS = [
    "bold_file",
    "bold_mask",
    "confounds_file",
    "events_file",
    "source_file",
    "runs",
    "sessions",
    "repetition_time",
]
FMRIPREP_ALIASES = {
    "bold_std": "bold_file",
    "bold_mask_std": "bold_mask",
    "confounds": "confounds_file",
}


def _pick(primary=None, alias=None):
    """Return ``primary`` unless it is unset, else ``alias``."""
    from nipype.interfaces.base import isdefined

    return primary if isdefined(primary) and primary else alias


def _sources(
    bold_file=None, bold_mask=None, events_file=None, confounds_file=None, source_file=None
):
    """Flatten the inputs of an analysis into the sidecars' Sources list."""
    from nipype.interfaces.base import isdefined

    files = []
    for group in (source_file, bold_file, bold_mask, events_file, confounds_file):
        if isdefined(group) and group:
            files.extend(f for f in (group if isinstance(group, list) else [group]) if f)
    return list(dict.fromkeys(files))


def init_mvpa_wf(
    *,
    output_dir,
    analyses=("ftest",),
    dataset_links=None,
    conditions=None,
    contrast_label=None,
    confounds=None,
    detrend=True,
    standardize="zscore_run",
    hrf_delay=0.0,
    confounds_strategy=None,
    confounds_strategy_options=None,
    samples="volumes",
    betas=None,
    searchlight=None,
    entities=None,
    sidecar=None,
    name="mvpa_wf",
):
    """
    One subject's MVPA: samples, the chosen analyses and their BIDS-Derivatives.

    Connect it after fMRIPrep in a user's own graph: the inputnode takes fMRIPrep's
    field names (``bold_file``/``bold_std``, ``bold_mask``/``bold_mask_std``,
    ``confounds_file``/``confounds``) plus ``events_file`` from the raw dataset; each is
    a list with one entry per run.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from mvpa_flows.workflows.participant import init_mvpa_wf
            wf = init_mvpa_wf(output_dir=".")

    Parameters
    ----------
    output_dir : str
        Derivatives root; outputs are named from ``bids_specs/mvpa_flows.json``.
    analyses : sequence of {"ftest", "searchlight"}
        Analyses to run.
    dataset_links : dict or None
        Dataset name -> root, so sidecars cite ``bids:<name>:<path>`` URIs.
    conditions, confounds, detrend, standardize, hrf_delay
        See :func:`~mvpa_flows.workflows.prepare.init_prepare_wf`.
    confounds_strategy, confounds_strategy_options
        A nilearn denoising strategy instead of ``confounds`` (see
        :func:`~mvpa_flows.workflows.prepare.init_prepare_wf`; volume samples only).
    samples : {"volumes", "lss", "lsa"}
        Volumes labelled by the event they fall in
        (:func:`~mvpa_flows.workflows.prepare.init_prepare_wf`), or one GLM beta per
        trial (:func:`~mvpa_flows.workflows.betas.init_betas_wf`: the betaseries of
        every run are written, confounds enter the GLM as regressors, ``standardize``
        z-scores the betas within each run before decoding).
    betas : dict or None
        Design options of :func:`~mvpa_flows.workflows.betas.init_betas_wf`
        (hrf_model, drift_model, high_pass, drift_order, slice_time_ref,
        min_trials_per_run) for ``samples`` lss or lsa.
    contrast_label : str or None
        Value of the ``contrast-`` entity (default: the conditions in camelCase joined
        by ``Vs``).
    searchlight : dict or None
        Keyword arguments of
        :func:`~mvpa_flows.workflows.searchlight.init_searchlight_wf` (radius,
        estimator, cv, scoring, n_permutations, random_seed, process_mask, n_chunks,
        n_jobs).
    entities : dict or None
        Entities of the output names (``subject``, ``session``, ``task``, ``space``,
        ``cohort``, ``res``, ``den``). Default: those every BOLD series shares, so an
        analysis pooled over sessions carries no ``ses-``.
    sidecar : dict or None
        Fields added to every output's sidecar (``SpatialReference``, ``Resolution``,
        and ``SkullStripped`` of the BOLD series for the reference image).
    name : str
        Workflow name.

    Inputs
    ------
    bold_file, bold_std
        Preprocessed BOLD series per run.
    bold_mask, bold_mask_std
        Brain masks per run.
    confounds_file, confounds
        fMRIPrep confounds per run (optional).
    events_file
        Raw BIDS events per run.
    source_file
        File(s) whose entities name the outputs (default: the BOLD series).
    runs
        Run labels (default 1..n).
    sessions
        Session label per run (optional): runs are keyed by (session, run) and the
        cross-validation groups are session x run.
    repetition_time
        TR per run (default: the NIfTI header).

    Outputs
    -------
    samples_file, mask_file
        Sample table and analysis mask (work directory copies).
    f_map, p_map
        F-test maps (when ``"ftest"`` is among ``analyses``).
    score_map, score_p_map
        Searchlight maps (when ``"searchlight"`` is among ``analyses``).
    mean_bold
        Reference image: the mean EPI of the first run (``_boldref``; background of the
        report figures).
    """
    from nipype.pipeline.engine import Workflow

    unknown = sorted(set(analyses) - set(PARTICIPANT_ANALYSES))
    if unknown:
        raise ValueError(
            f"analyses {unknown} are not participant analyses of this workflow; choose "
            f"from {list(PARTICIPANT_ANALYSES)}."
        )
    workflow = Workflow(name=name)
    workflow.__desc__ = METHODS
    inputnode = pe.Node(
        niu.IdentityInterface(fields=INPUT_FIELDS + list(FMRIPREP_ALIASES)), name="inputnode"
    )
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=[
                "samples_file",
                "mask_file",
                "mean_bold",
                "f_map",
                "p_map",
                "score_map",
                "score_p_map",
            ]
        ),
        name="outputnode",
    )
    picks = {
        field: pe.Node(niu.Function(function=_pick, output_names=["out"]), name=f"pick_{field}")
        for field in FMRIPREP_ALIASES.values()
    }
    sources = pe.Node(niu.Function(function=_sources, output_names=["out"]), name="sources")
    beta_samples = samples in BETA_SAMPLES
    if beta_samples:
        prepare_wf = init_betas_wf(
            output_dir=output_dir,
            dataset_links=dataset_links,
            method=samples,
            confounds=confounds,
            conditions=conditions,
            standardize=standardize,
            contrast_label=contrast_label,
            **dict(betas or {}),
        )
    elif samples == "volumes":
        prepare_wf = init_prepare_wf(
            conditions=conditions,
            confounds=confounds,
            detrend=detrend,
            standardize=standardize,
            hrf_delay=hrf_delay,
            confounds_strategy=confounds_strategy,
            confounds_strategy_options=confounds_strategy_options,
        )
        prepare_wf.get_node("prepare_samples").inputs.contrast_label = contrast_label
    else:
        raise ValueError(
            f"Parameter 'samples' must be one of {['volumes', *BETA_SAMPLES]}; got {samples!r}."
        )
    common = {k: v for k, v in dict(sidecar or {}).items() if k != "SkullStripped"}
    if beta_samples and common and (entities or {}).get("space"):
        # a template or anatomical space is the same reference for every run's betas
        for node_name in ("ds_betaseries", "ds_trials"):
            prepare_wf.get_node(node_name).inputs.extra_metadata = [common]

    def sink(node_name, out_entities, description, **fields):
        node = pe.Node(
            DerivativesDataSink(
                base_directory=str(output_dir),
                entities=out_entities,
                dataset_links=dict(dataset_links or {}),
                metadata={"Description": description, **common, **fields},
            ),
            name=node_name,
            run_without_submitting=True,
        )
        if entities:
            node.inputs.base_entities = dict(entities)
        return node

    ds_mask = sink(
        "ds_mask",
        {"desc": "analysis", "suffix": "mask"},
        "Analysis mask: the intersection of the runs' brain masks.",
        Type="Brain",
    )
    reference = {"SkullStripped": (sidecar or {}).get("SkullStripped", False)}
    ds_mean = sink(
        "ds_mean_bold",
        {"suffix": "boldref"},
        "Reference image: the mean over time of the first run's preprocessed BOLD series "
        "(figure background).",
        **reference,
    )
    ds_samples = sink(
        "ds_samples",
        {"suffix": "samples"},
        "Labelled samples: one row per volume kept ([session,] run, volume index, "
        "acquisition onset in seconds, label); runs (session x run with sessions) are the "
        "cross-validation groups.",
    )
    for alias, field in FMRIPREP_ALIASES.items():
        workflow.connect([
            (inputnode, picks[field], [(field, "primary"), (alias, "alias")]),
            (picks[field], prepare_wf, [("out", f"inputnode.{field}")]),
            (picks[field], sources, [("out", field)]),
        ])  # fmt:skip
    if beta_samples:
        workflow.connect([
            (inputnode, prepare_wf, [("events_file", "inputnode.events_file"),
                                     ("runs", "inputnode.runs"),
                                     ("sessions", "inputnode.sessions"),
                                     ("repetition_time", "inputnode.tr")]),
        ])  # fmt:skip
        _add_design_report(workflow, prepare_wf, output_dir, dataset_links, entities)
    else:
        workflow.connect([
            (inputnode, prepare_wf, [
                ("events_file", "inputnode.events_file"),
                ("runs", "inputnode.runs"),
                ("sessions", "inputnode.sessions"),
                ("repetition_time", "inputnode.repetition_time"),
            ]),
        ])  # fmt:skip
    workflow.connect([
        (inputnode, sources, [("events_file", "events_file"), ("source_file", "source_file")]),
        (prepare_wf, outputnode, [
            ("outputnode.samples_file", "samples_file"),
            ("outputnode.mask_file", "mask_file"),
        ]),
        (sources, ds_mask, [("out", "source_files")]),
        (sources, ds_mean, [("out", "source_files")]),
        (prepare_wf, ds_mean, [("outputnode.mean_bold", "in_file")]),
        (prepare_wf, outputnode, [("outputnode.mean_bold", "mean_bold")]),
        (sources, ds_samples, [("out", "source_files")]),
        (prepare_wf, ds_mask, [("outputnode.mask_file", "in_file")]),
        (prepare_wf, ds_samples, [("outputnode.samples_file", "in_file"),
                                  (("outputnode.info", _listify), "extra_metadata")]),
    ])  # fmt:skip

    analysis_maps = {}
    if "ftest" in analyses:
        analysis_maps["ftest"] = (init_ftest_wf(), [
            ("f_map", "f_map", "ds_ftest_f", {"stat": "F", "desc": "anova"},
             "One-way ANOVA F statistic across conditions (sklearn f_classif)."),
            ("p_map", "p_map", "ds_ftest_p", {"stat": "p", "desc": "anova"},
             "Uncorrected p-value of the one-way ANOVA F statistic."),
        ])  # fmt:skip
    if "searchlight" in analyses:
        sl_kwargs = dict(searchlight or {})
        maps = [("score_map", "score_map", "ds_searchlight_score",
                 {"stat": STAT_LABELS[sl_kwargs.get("scoring", "accuracy")],
                  "desc": "searchlight"},
                 "Cross-validated decoding score of the searchlight sphere centred on each "
                 "voxel.")]  # fmt:skip
        if sl_kwargs.get("n_permutations", 0) > 0:
            maps.append(("p_map", "score_p_map", "ds_searchlight_p",
                         {"stat": "p", "desc": "searchlight"},
                         "Permutation p-value of the searchlight score (labels shuffled "
                         "within runs)."))  # fmt:skip
        analysis_maps["searchlight"] = (init_searchlight_wf(**sl_kwargs), maps)
    for name, (analysis_wf, maps) in analysis_maps.items():
        meta = pe.Node(niu.Merge(2), name=f"{name}_metadata")
        workflow.connect([
            (prepare_wf, analysis_wf, [
                ("outputnode.data_file", "inputnode.data_file"),
                ("outputnode.samples_file", "inputnode.samples_file"),
                ("outputnode.mask_file", "inputnode.mask_file"),
            ]),
            (prepare_wf, meta, [("outputnode.info", "in1")]),
            (analysis_wf, meta, [("outputnode.metadata", "in2")]),
        ])  # fmt:skip
        for field, out_field, node_name, map_entities, description in maps:
            ds = sink(node_name, {**map_entities, "suffix": "statmap"}, description)
            workflow.connect([
                (analysis_wf, ds, [(f"outputnode.{field}", "in_file")]),
                (meta, ds, [("out", "extra_metadata")]),
                (sources, ds, [("out", "source_files")]),
                (prepare_wf, ds, [("outputnode.contrast", "contrast")]),
                (analysis_wf, outputnode, [(f"outputnode.{field}", out_field)]),
            ])  # fmt:skip
    _add_reports(workflow, analysis_maps, output_dir, dataset_links, searchlight, entities)
    return workflow


def _add_reports(workflow, analysis_maps, output_dir, dataset_links, searchlight, entities=None):
    """Figures of each analysis, made inside the graph and stored under ``figures/``.

    With ``entities``, the figures are named like the maps they show.
    """
    prepare_wf = workflow.get_node("prepare_wf") or workflow.get_node("betas_wf")
    sources = workflow.get_node("sources")
    for name, (analysis_wf, _) in analysis_maps.items():
        if name == "searchlight":
            options = dict(searchlight or {})
            report_wf = init_searchlight_report_wf(
                output_dir=output_dir,
                dataset_links=dataset_links,
                stat=STAT_LABELS[options.get("scoring", "accuracy")],
                n_permutations=options.get("n_permutations", 0),
            )
            maps = [("score_map", "score_map"), ("p_map", "p_map")]
        else:
            report_wf = init_ftest_report_wf(output_dir=output_dir, dataset_links=dataset_links)
            maps = [("f_map", "f_map"), ("p_map", "p_map")]
        if entities:
            for node_name in report_wf.list_node_names():
                if node_name.startswith("ds_report"):
                    report_wf.get_node(node_name).inputs.base_entities = dict(entities)
        workflow.connect([
            (analysis_wf, report_wf, [(f"outputnode.{a}", f"inputnode.{b}") for a, b in maps]),
            (workflow.get_node(f"{name}_metadata"), report_wf, [("out", "inputnode.metadata")]),
            (prepare_wf, report_wf, [("outputnode.mean_bold", "inputnode.mean_bold"),
                                     ("outputnode.contrast", "inputnode.contrast")]),
            (sources, report_wf, [("out", "inputnode.source_files")]),
        ])  # fmt:skip


def _listify(value):
    return [value]


def _add_design_report(workflow, betas_wf, output_dir, dataset_links, entities=None):
    """The design of the first run and its neighbouring-trial correlations, as figures."""
    report_wf = init_betas_report_wf(output_dir=output_dir, dataset_links=dataset_links)
    if entities:
        for node_name in report_wf.list_node_names():
            if node_name.startswith("ds_report"):
                report_wf.get_node(node_name).inputs.base_entities = dict(entities)
    workflow.connect([
        (betas_wf, report_wf, [("outputnode.design_file", "inputnode.design_file"),
                               ("outputnode.trials_file", "inputnode.trials_file"),
                               ("outputnode.metadata", "inputnode.metadata"),
                               ("outputnode.contrast", "inputnode.contrast")]),
        (workflow.get_node("sources"), report_wf, [("out", "inputnode.source_files")]),
    ])  # fmt:skip

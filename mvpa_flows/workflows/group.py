"""Group-level workflows: hyperalignment across subjects and searchlight statistics."""

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mvpa_flows.interfaces.bids import DerivativesDataSink, parse_space
from mvpa_flows.interfaces.group import (
    GroupSearchlightStats,
    HyperalignGroup,
    PrepareTimeseries,
)
from mvpa_flows.interfaces.reports import MethodsText
from mvpa_flows.workflows.reports import init_bsc_report_wf, init_group_searchlight_report_wf

#: Methods text shared by the group analyses, filled from the sidecars of group outputs.
GROUP_METHODS = MethodsText(
    "Group analyses were performed with mvpa_flows {GeneratedBy} [@mvpa_flows], a BIDS-App "
    "built on Nipype [@nipype], on data preprocessed with fMRIPrep [@fmriprep].",
    describes={"subject": None, "suffix": ["scores", "statmap"]},
)
#: Methods text of hyperalignment, filled from the sidecar of the classification table.
HYPERALIGNMENT_METHODS = MethodsText(
    "The time series of the {NumberOfFeatures} voxels of the region of interest "
    "were cleaned within each run with nilearn [@nilearn]: {Confounds}[[, {Detrend}]][[ and "
    "{Standardize}]]. Subjects were aligned into a common model space with Procrustes "
    "hyperalignment [@haxby2011] (PyMVPA's three-level algorithm [@pymvpa]) estimated on "
    "{TrainingRuns} ({TrainingSamples} samples), and evaluated by leave-one-subject-out "
    "between-subject classification of {BSCMode}[[ of {SegmentLength}]] on {TestRuns}, "
    "against anatomical alignment (chance level {ChanceLevel}).",
    describes={"desc": "bsc", "suffix": "scores"},
)
#: Methods text of the group searchlight, filled from the sidecar of the group t map.
GROUP_SEARCHLIGHT_METHODS = MethodsText(
    "The searchlight maps of {NumberOfSubjects} subjects were tested against "
    "chance ({ChanceLevel}) with a one-sample t-test at each of the {NumberOfVoxels} voxels "
    "present in every subject; family-wise error was controlled with the maximum t over "
    "{NumberOfPermutations} sign flips ({ExactPermutation}) [@nichols].[[ "
    "{MinimumAttainableP}]]",
    describes={"desc": "searchlightgroup", "suffix": "statmap", "stat": "t"},
)


def _sink(
    name,
    output_dir,
    dataset_links,
    entities,
    description,
    base_entities=None,
    mapnode=False,
    sidecar=None,
):
    kwargs = dict(
        base_directory=str(output_dir),
        dataset_links=dict(dataset_links or {}),
        entities=entities,
        metadata={"Description": description, **dict(sidecar or {})},
    )
    if base_entities is not None and not mapnode:
        kwargs["base_entities"] = base_entities
    if mapnode:
        return pe.MapNode(
            DerivativesDataSink(**kwargs),
            name=name,
            iterfield=["in_file", "source_files", "base_entities"],
            run_without_submitting=True,
        )
    return pe.Node(DerivativesDataSink(**kwargs), name=name, run_without_submitting=True)


def init_group_hyperalignment_wf(
    *,
    subjects,
    output_dir,
    task,
    space,
    train_runs,
    test_runs,
    repetition_time,
    mode="segments",
    segment_length=18.0,
    conditions=None,
    confounds=None,
    detrend=True,
    standardize="zscore_run",
    hrf_delay=0.0,
    hyperalignment_params=None,
    model_label=None,
    dataset_links=None,
    confounds_strategy=None,
    confounds_strategy_options=None,
    session=None,
    sidecar=None,
    name="group_hyperalignment_wf",
):
    """
    Procrustes hyperalignment of every subject into a common model space.

    Each subject's training and test runs are cleaned inside the ROI (a MapNode over
    subjects), the subjects are joined, hyperalignment (PyMVPA's three levels) is fit
    on the training runs, and between-subject classification on the test runs compares
    anatomical alignment, hyperalignment and within-subject decoding.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from mvpa_flows.workflows.group import init_group_hyperalignment_wf
            wf = init_group_hyperalignment_wf(
                subjects=["01", "02"], output_dir=".", task="movie", space="MNI",
                train_runs=[1], test_runs=[2], repetition_time=1.5)

    Parameters
    ----------
    subjects : list of str
        Subject labels, in the order of the inputnode lists.
    output_dir : str
        Derivatives root.
    task : str
        Task entity of the outputs.
    space : str, dict or None
        Space of the inputs: fMRIPrep's spelling (``MNI152NLin2009cAsym:res-2``) or the
        entities (space, cohort, res, den); None is the native space.
    train_runs, test_runs : list of int or str
        Runs estimating the alignment and runs testing it (disjoint); ``SESSION:RUN``
        labels when the runs come from several sessions.
    repetition_time : float
        TR in seconds (shared by every subject).
    mode : {"segments", "conditions"}
        Between-subject classification of movie segments or of condition labels.
    segment_length : float
        Segment length in seconds (segments mode).
    conditions, confounds, detrend, standardize, hrf_delay
        Sample and cleaning options, as at the participant level.
    hyperalignment_params : dict or None
        Parameters of :func:`mvpa_flows.core.alignment.hyperalignment.hyperalign`.
    model_label : str or None
        Label of the common model (``to-``/``tpl-`` entities; default ``<task>HA``).
    dataset_links : dict or None
        Dataset name -> root, for BIDS URIs.
    confounds_strategy, confounds_strategy_options
        A nilearn denoising strategy instead of ``confounds`` (it must not censor).
    session : str or None
        ``ses-`` entity of the outputs (when every run comes from one session).
    sidecar : dict or None
        Fields added to every sidecar (SpatialReference, Resolution).
    name : str
        Workflow name.

    Inputs
    ------
    bold_file, confounds_file, events_file, runs, repetition_time
        One list per subject (lists of runs).
    roi_mask
        ROI on the common grid.
    roi_mask_uri
        How the sidecars cite the ROI (a BIDS URI).

    Outputs
    -------
    transform_files
        One ``_xfm.h5`` per subject.
    scores_file
        Between-subject classification table.
    """
    from nipype.pipeline.engine import Workflow

    model = model_label or f"{task}HA"
    space_ents = parse_space(space)
    grid = {k: space_ents[k] for k in ("cohort", "res", "den")}
    workflow = Workflow(name=name)
    workflow.__desc__ = [GROUP_METHODS, HYPERALIGNMENT_METHODS]
    inputnode = pe.Node(
        niu.IdentityInterface(
            fields=[
                "bold_file",
                "confounds_file",
                "events_file",
                "runs",
                "repetition_time",
                "roi_mask",
                "roi_mask_uri",
            ]
        ),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["transform_files", "scores_file"]), name="outputnode"
    )
    prepare = pe.MapNode(
        PrepareTimeseries(
            train_runs=list(train_runs),
            test_runs=list(test_runs),
            mode=mode,
            conditions=conditions,
            confounds=confounds,
            detrend=detrend,
            standardize=standardize,
            hrf_delay=hrf_delay,
            confounds_strategy=confounds_strategy,
            confounds_strategy_options=dict(confounds_strategy_options or {}),
        ),
        iterfield=[
            "subject",
            "bold_file",
            "confounds_file",
            "events_file",
            "runs",
            "repetition_time",
        ],
        name="prepare_timeseries",
    )
    prepare.inputs.subject = list(subjects)
    fit = pe.Node(
        HyperalignGroup(
            subjects=list(subjects),
            mode=mode,
            segment_length=segment_length,
            repetition_time=repetition_time,
            train_runs=list(train_runs),
            test_runs=list(test_runs),
            hyperalignment_params=dict(hyperalignment_params or {}),
            cleaning=_cleaning(detrend, standardize, hrf_delay if mode == "conditions" else None),
        ),
        name="hyperalign",
    )
    meta = pe.Node(
        niu.Function(function=_transform_metadata, output_names=["out"]), name="transform_metadata"
    )
    ds_xfm = _sink(
        "ds_transforms",
        output_dir,
        dataset_links,
        {
            "from": space_ents["space"] or "boldref",
            "to": model,
            "mode": "image",
            "desc": "procrustes",
            "suffix": "xfm",
        },
        "Procrustes hyperalignment transform of the subject's ROI voxels into the "
        "common model space.",
        mapnode=True,
        sidecar=sidecar,
    )
    ds_xfm.inputs.base_entities = [
        {"subject": s, "session": session, "task": task, **grid} for s in subjects
    ]
    group_entities = {"session": session, "task": task, **space_ents}
    ds_model = _sink(
        "ds_model",
        output_dir,
        dataset_links,
        {"template": model, "desc": "common", "suffix": "model"},
        "Common model space: the hyperalignment template (training samples x model dimensions).",
        base_entities=group_entities,
        sidecar=sidecar,
    )
    ds_scores = _sink(
        "ds_bsc_scores",
        output_dir,
        dataset_links,
        {"desc": "bsc", "suffix": "scores"},
        "Between-subject classification, leave one subject out: anatomical "
        "alignment, hyperalignment and within-subject accuracy per subject.",
        base_entities=group_entities,
        sidecar=sidecar,
    )
    sources = pe.Node(
        niu.Function(function=_flat_sources, output_names=["flat", "per_subject"]), name="sources"
    )
    workflow.connect([
        (inputnode, prepare, [("bold_file", "bold_file"), ("confounds_file", "confounds_file"),
                              ("events_file", "events_file"), ("runs", "runs"),
                              ("repetition_time", "repetition_time"),
                              ("roi_mask", "roi_mask")]),
        (inputnode, fit, [("roi_mask", "roi_mask")]),
        (prepare, fit, [("confounds_used", "confounds_used")]),
        (prepare, fit, [("train_file", "train_files"), ("test_file", "test_files"),
                        ("test_samples_file", "test_samples_files")]),
        (inputnode, sources, [("bold_file", "bold_file"), ("events_file", "events_file")]),
        (fit, meta, [("metadata", "metadata")]),
        (inputnode, meta, [("roi_mask_uri", "roi_mask_uri")]),
        (fit, ds_xfm, [("transform_files", "in_file")]),
        (sources, ds_xfm, [("per_subject", "source_files")]),
        (meta, ds_xfm, [("out", "extra_metadata")]),
        (fit, ds_model, [("model_file", "in_file")]),
        (fit, ds_scores, [("scores_file", "in_file")]),
        (sources, ds_model, [("flat", "source_files")]),
        (sources, ds_scores, [("flat", "source_files")]),
        (meta, ds_model, [("out", "extra_metadata")]),
        (meta, ds_scores, [("out", "extra_metadata")]),
        (fit, outputnode, [("transform_files", "transform_files"),
                           ("scores_file", "scores_file")]),
    ])  # fmt:skip
    report_wf = init_bsc_report_wf(output_dir=output_dir, dataset_links=dataset_links)
    report_wf.inputs.inputnode.base_entities = group_entities
    workflow.connect([
        (fit, report_wf, [("scores_file", "inputnode.scores_file")]),
        (meta, report_wf, [("out", "inputnode.metadata")]),
        (sources, report_wf, [("flat", "inputnode.source_files")]),
    ])  # fmt:skip
    return workflow


def _cleaning(detrend, standardize, hrf_delay):
    values = {"Detrend": bool(detrend), "Standardize": standardize, "HRFDelay": hrf_delay}
    return {k: v for k, v in values.items() if v is not None}


def _flat_sources(bold_file, events_file):
    """Sources of group outputs (all subjects) and of each subject's transform."""
    per_subject = [list(b) + list(e or []) for b, e in zip(bold_file, events_file, strict=True)]
    return [f for files in per_subject for f in files], per_subject


def _transform_metadata(metadata, roi_mask_uri):
    """Sidecar content of the transforms, model and table."""
    params = metadata.get("HyperalignmentParameters", {})
    return [
        dict(
            metadata,
            Type="Procrustes hyperalignment (PyMVPA three levels)",
            Scaling=params.get("scaling"),
            Reflection=params.get("reflection"),
            ROIMask=roi_mask_uri,
        )
    ]


def init_group_searchlight_wf(
    *,
    output_dir,
    task,
    space,
    contrast,
    stat,
    chance,
    n_permutations=10000,
    random_seed=None,
    dataset_links=None,
    entities=None,
    sidecar=None,
    name="group_searchlight_wf",
):
    """
    Group statistics of participant searchlight maps: mean, t and FWE p maps.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from mvpa_flows.workflows.group import init_group_searchlight_wf
            wf = init_group_searchlight_wf(output_dir=".", task="t", space="MNI",
                                           contrast="faceVsHouse", stat="accuracy",
                                           chance=0.5)

    Parameters
    ----------
    output_dir, task, contrast
        Output location and entities.
    space : str, dict or None
        Space of the maps (fMRIPrep's spelling or entities).
    stat : str
        stat- entity of the participant maps (accuracy, balancedAccuracy, auc).
    chance : float
        Chance level of the participant maps.
    n_permutations : int
        Sign flips for the max-t null distribution.
    random_seed : int or None
        Seed of the sign flips.
    dataset_links : dict or None
        Dataset name -> root, for BIDS URIs.
    entities : dict or None
        More entities of the output names (``session`` for maps of one session).
    sidecar : dict or None
        Fields added to every sidecar (SpatialReference, Resolution).
    name : str
        Workflow name.

    Inputs
    ------
    score_maps
        Participant searchlight maps (one per subject, same space).
    mask_files
        Their analysis masks.
    mean_bold
        The subjects' mean EPIs (averaged: the figures' background).

    Outputs
    -------
    t_map, p_map, mean_map
        Group maps.
    """
    from nipype.pipeline.engine import Workflow

    workflow = Workflow(name=name)
    workflow.__desc__ = [GROUP_METHODS, GROUP_SEARCHLIGHT_METHODS]
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["score_maps", "mask_files", "mean_bold"]), name="inputnode"
    )
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["t_map", "p_map", "mean_map"]), name="outputnode"
    )
    stats = pe.Node(
        GroupSearchlightStats(
            chance=chance, n_permutations=n_permutations, random_seed=random_seed
        ),
        name="group_stats",
    )
    base = {**dict(entities or {}), "task": task, **parse_space(space), "contrast": contrast}
    sinks = {
        "t_map": (
            "t",
            "One-sample t statistic of the participant searchlight scores against chance.",
        ),
        "p_map": ("p", "Family-wise error corrected p-value (sign-flip permutations, maximum t)."),
        "mean_map": (stat, "Group mean of the participant searchlight scores."),
    }
    for field, (stat_label, description) in sinks.items():
        node = _sink(
            f"ds_group_{field}",
            output_dir,
            dataset_links,
            {"stat": stat_label, "desc": "searchlightgroup", "suffix": "statmap"},
            description,
            base_entities=base,
            sidecar=sidecar,
        )
        workflow.connect([
            (stats, node, [(field, "in_file"), (("metadata", _listify), "extra_metadata")]),
            (inputnode, node, [("score_maps", "source_files")]),
            (stats, outputnode, [(field, field)]),
        ])  # fmt:skip
    report_wf = init_group_searchlight_report_wf(
        output_dir=output_dir, dataset_links=dataset_links
    )
    report_wf.inputs.inputnode.contrast = contrast
    workflow.connect([
        (inputnode, stats, [("score_maps", "score_maps"), ("mask_files", "mask_files")]),
        (inputnode, report_wf, [("mean_bold", "inputnode.mean_bold")]),
        (stats, report_wf, [("t_map", "inputnode.t_map"), ("p_map", "inputnode.p_map"),
                            (("metadata", _listify), "inputnode.metadata")]),
        (workflow.get_node("ds_group_t_map"), report_wf, [
            (("out_file", _listify), "inputnode.source_files")]),
    ])  # fmt:skip
    return workflow


def _listify(value):
    return [value]

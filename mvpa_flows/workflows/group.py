"""Group-level workflows: hyperalignment across subjects and searchlight statistics."""

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mvpa_flows.interfaces.bids import DerivativesDataSink, parse_space, space_label
from mvpa_flows.interfaces.group import (
    METHOD_NAMES,
    GroupSearchlightStats,
    HyperalignGroup,
    MapNewSubjects,
    MergeSearchlightAlignment,
    PrepareTimeseries,
    SearchlightAlignmentChunk,
)
from mvpa_flows.interfaces.reports import MethodsText
from mvpa_flows.workflows.reports import init_bsc_report_wf, init_group_searchlight_report_wf

#: Methods text shared by the group analyses, filled from the sidecars of group outputs.
GROUP_METHODS = MethodsText(
    "Group analyses were performed with mvpa_flows {GeneratedBy} [@mvpa_flows], a BIDS-App "
    "built on Nipype [@nipype], on data preprocessed with fMRIPrep [@fmriprep].",
    describes={"subject": None, "suffix": ["scores", "statmap"]},
)
_CLEANING = (
    "The time series of the {NumberOfFeatures} voxels of the region of interest "
    "were cleaned within each run with nilearn [@nilearn]: {Confounds}[[, {Detrend}]][[ and "
    "{Standardize}]]. "
)
_EVALUATION = (
    "evaluated by leave-one-subject-out between-subject classification of {BSCMode}[[ of "
    "{SegmentLength}]] on {TestRuns}, against anatomical alignment (chance level "
    "{ChanceLevel})."
)
_BSC = {"desc": "bsc", "suffix": "scores"}
#: Methods text of each alignment method, filled from the sidecar of the classification
#: table (the workflow carries the one it runs).
ALIGNMENT_METHODS = {
    "procrustes": MethodsText(
        _CLEANING + "Subjects were aligned into a common model space with Procrustes "
        "hyperalignment [@haxby2011] (PyMVPA's three-level algorithm [@pymvpa]) estimated "
        "on {TrainingRuns} ({TrainingSamples} samples), and " + _EVALUATION,
        describes=_BSC,
    ),
    "ridge": MethodsText(
        _CLEANING + "Subjects were aligned into a common model space by ridge "
        "hyperalignment: the common space was the Procrustes hyperalignment template "
        "[@haxby2011] (PyMVPA's levels 1 and 2 [@pymvpa]) and each subject's voxels were "
        "mapped onto it by ridge regression [@bazeille2021], its penalty chosen among "
        "{AlignmentParameters.alphas} by cross-validation over "
        "{AlignmentParameters.cv_blocks} contiguous blocks of the training samples "
        "(chosen: {ChosenPenalties}); the model was estimated on {TrainingRuns} "
        "({TrainingSamples} samples), and " + _EVALUATION,
        describes=_BSC,
    ),
    "searchlight": MethodsText(
        _CLEANING + "Subjects were aligned into a common model space with searchlight "
        "hyperalignment [@guntupalli2016] (PyMVPA's algorithm [@pymvpa]): "
        "{AlignmentParameters.method} maps [@haxby2011] onto "
        "{AlignmentParameters.common_space} were estimated in spheres of "
        "{SearchlightRadius} mm radius centred on {SearchlightCentres} of the "
        "{NumberOfFeatures} voxels and summed into one sparse voxel-by-voxel map per subject"
        "[[ (ridge penalties chosen: {ChosenPenalties})]][[; {AlignmentParameters.zscore_output}"
        "]]. The model was estimated on {TrainingRuns} ({TrainingSamples} samples), and "
        + _EVALUATION,
        describes=_BSC,
    ),
    "srm": MethodsText(
        _CLEANING + "Subjects were aligned into a shared space of {ModelDimensions} "
        "dimensions with a {AlignmentParameters.method} shared response model [@chen2015] "
        "({AlignmentParameters.n_iter} iterations, seed {RandomSeed}, each subject's mean "
        "removed) estimated on {TrainingRuns} ({TrainingSamples} samples), and " + _EVALUATION,
        describes=_BSC,
    ),
}
#: Methods text of new subjects mapped into an existing model, by the model's method.
NEW_SUBJECTS_METHODS = {
    method: MethodsText(
        _CLEANING + "{NewSubjects} were mapped into an existing alignment model ({Type}) of "
        "{ModelSubjects} (estimated on {TrainingRuns}, {TrainingSamples} samples) without "
        "refitting it: each new subject's map was fitted to the model's common space on its "
        "own data of the training samples, as the model's subjects were in the last step "
        f"of the fit [{cite}]. Every new subject was evaluated by classification of its "
        "{BSCMode}[[ of {SegmentLength}]] on {TestRuns} against the model's subjects, "
        "against anatomical alignment (chance level {ChanceLevel}).",
        describes={"desc": "bscmapped", "suffix": "scores"},
    )
    for method, cite in (
        ("procrustes", "@haxby2011"),
        ("ridge", "@haxby2011; @bazeille2021"),
        ("srm", "@chen2015"),
        ("searchlight", "@guntupalli2016"),
    )
}
#: Methods text of the ISC maps.
ISC_METHODS = MethodsText(
    "Voxel-wise leave-one-out inter-subject correlation [@hasson2004; @nastase2019] of the "
    "test time series (each subject's time series correlated with the mean of the other "
    "subjects', Fisher-z averaged over subjects) was computed in the anatomical voxels "
    "(median over voxels {MedianISCAnatomical})[[ and after alignment, in "
    "{AlignedISCSpace} (median {MedianISCAligned})]].",
    describes={"desc": "iscanatomical", "suffix": "statmap"},
)
#: The same, for the maps of a run that mapped new subjects into an existing model.
ISC_MAPPED_METHODS = MethodsText(
    ISC_METHODS.template, describes={"desc": "iscanatomicalmapped", "suffix": "statmap"}
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
    method="procrustes",
    alignment_params=None,
    n_chunks=1,
    model_file=None,
    new_subjects=None,
    model_label=None,
    dataset_links=None,
    confounds_strategy=None,
    confounds_strategy_options=None,
    session=None,
    sidecar=None,
    name="group_hyperalignment_wf",
):
    """
    Functional alignment of every subject into a common model space, and its evaluation.

    Each subject's training and test runs are cleaned inside the ROI (a MapNode over
    subjects), the subjects are joined, and either the alignment (Procrustes
    hyperalignment, ridge hyperalignment or a shared response model) is fitted on the
    training runs, or, with ``model_file``, the new subjects are mapped into an existing
    model without refitting it. Between-subject classification on the test runs compares
    anatomical and functional alignment; inter-subject correlation maps (segments mode)
    show it voxel by voxel.

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
        Subject labels, in the order of the inputnode lists (with ``model_file``: the
        model's subjects, in the model's order, then the new subjects).
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
    method : {"procrustes", "ridge", "srm"}
        Alignment method (:func:`mvpa_flows.core.alignment.evaluate.alignment_estimator`).
    alignment_params : dict or None
        Parameters of the method's estimator; with ``searchlight_radius`` (and
        ``mask_img``, the ROI file), searchlight hyperalignment with local maps of
        ``method`` (procrustes or ridge), written as ``desc-searchlight`` transforms.
    n_chunks : int
        Searchlight hyperalignment: the sphere centres are split into ``n_chunks``
        chunks fitted by a MapNode (each holds the training data and its chunk's maps)
        and summed by a merge node; the outputs equal an unchunked run bit for bit.
    model_file : str or None
        An alignment model written by an earlier run: map ``new_subjects`` into it.
    new_subjects : list of str or None
        With ``model_file``: the subjects to map (the last ones of ``subjects``).
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
        One ``_xfm.h5`` per subject fitted or mapped.
    scores_file
        Between-subject classification table.
    """
    from nipype.pipeline.engine import Workflow

    model = model_label or f"{task}HA"
    space_ents = parse_space(space)
    grid = {k: space_ents[k] for k in ("cohort", "res", "den")}
    mapping = model_file is not None
    fit_method = method
    if not mapping and (alignment_params or {}).get("searchlight_radius") is not None:
        method = "searchlight"  # local maps of fit_method, aggregated over the mask
    method_desc = ALIGNMENT_METHODS[method]
    workflow = Workflow(name=name)
    workflow.__desc__ = [GROUP_METHODS, NEW_SUBJECTS_METHODS[method] if mapping else method_desc]
    if mode == "segments":
        workflow.__desc__.append(ISC_MAPPED_METHODS if mapping else ISC_METHODS)
    inputnode = pe.Node(
        niu.IdentityInterface(
            fields=["bold_file", "confounds_file", "events_file", "runs",
                    "repetition_time", "roi_mask", "roi_mask_uri"]
        ),
        name="inputnode",
    )  # fmt:skip
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["transform_files", "scores_file"]), name="outputnode"
    )
    prepare = _prepare_node(
        subjects, train_runs, test_runs, mode, conditions, confounds, detrend, standardize,
        hrf_delay, confounds_strategy, confounds_strategy_options,
    )  # fmt:skip
    common = dict(
        subjects=list(subjects),
        mode=mode,
        segment_length=segment_length,
        repetition_time=repetition_time,
        train_runs=list(train_runs),
        test_runs=list(test_runs),
        cleaning=_cleaning(detrend, standardize, hrf_delay if mode == "conditions" else None),
    )
    if mapping:
        fit = pe.Node(
            MapNewSubjects(model_file=str(model_file), new_subjects=list(new_subjects), **common),
            name="map_new_subjects",
        )
        written = list(new_subjects)
    else:
        fit = pe.Node(
            HyperalignGroup(
                method=fit_method,
                alignment_params=dict(alignment_params or {}),
                model_metadata={
                    "task": task,
                    "space": space_label(space_ents),
                    "session": session,
                    "model_label": model,
                },
                **common,
            ),
            name="hyperalign",
        )
        written = list(subjects)
        if method == "searchlight" and n_chunks > 1:
            _connect_chunks(workflow, prepare, fit, fit_method, alignment_params, n_chunks)
    meta = pe.Node(
        niu.Function(function=_transform_metadata, output_names=["out"]), name="transform_metadata"
    )
    ds_xfm = _sink(
        "ds_transforms",
        output_dir,
        dataset_links,
        {"from": space_ents["space"] or "boldref", "to": model, "mode": "image",
         "desc": method, "suffix": "xfm"},
        "Map of the subject's ROI voxels into the common model space "
        f"({METHOD_NAMES[method]}).",
        mapnode=True,
        sidecar=sidecar,
    )  # fmt:skip
    ds_xfm.inputs.base_entities = [
        {"subject": s, "session": session, "task": task, **grid} for s in written
    ]
    group_entities = {"session": session, "task": task, **space_ents}
    scores_desc = "bscmapped" if mapping else "bsc"
    ds_scores = _sink(
        "ds_bsc_scores",
        output_dir,
        dataset_links,
        {"desc": scores_desc, "suffix": "scores"},
        "Between-subject classification: anatomical alignment, functional alignment and "
        "within-subject accuracy per "
        + ("new subject, against the model's subjects." if mapping else "left-out subject."),
        base_entities=group_entities,
        sidecar=sidecar,
    )
    sources = pe.Node(
        niu.Function(function=_flat_sources, output_names=["flat", "per_subject"]), name="sources"
    )
    sources.inputs.keep = written
    sources.inputs.subjects = list(subjects)
    workflow.connect([
        (inputnode, prepare, [("bold_file", "bold_file"), ("confounds_file", "confounds_file"),
                              ("events_file", "events_file"), ("runs", "runs"),
                              ("repetition_time", "repetition_time"),
                              ("roi_mask", "roi_mask")]),
        (inputnode, fit, [("roi_mask", "roi_mask")]),
        (prepare, fit, [("confounds_used", "confounds_used"), ("train_file", "train_files"),
                        ("test_file", "test_files"),
                        ("test_samples_file", "test_samples_files")]),
        (inputnode, sources, [("bold_file", "bold_file"), ("events_file", "events_file")]),
        (fit, meta, [("metadata", "metadata")]),
        (inputnode, meta, [("roi_mask_uri", "roi_mask_uri")]),
        (fit, ds_xfm, [("transform_files", "in_file")]),
        (sources, ds_xfm, [("per_subject", "source_files")]),
        (meta, ds_xfm, [("out", "extra_metadata")]),
        (fit, ds_scores, [("scores_file", "in_file")]),
        (sources, ds_scores, [("flat", "source_files")]),
        (meta, ds_scores, [("out", "extra_metadata")]),
        (fit, outputnode, [("transform_files", "transform_files"),
                           ("scores_file", "scores_file")]),
    ])  # fmt:skip
    if not mapping:
        ds_model = _sink(
            "ds_model",
            output_dir,
            dataset_links,
            {"template": model, "desc": "common", "suffix": "model"},
            f"Alignment model ({METHOD_NAMES[method]}): the common space over the training "
            "samples and every subject's map (mvpa_flows-alignment-model HDF5).",
            base_entities=group_entities,
            sidecar=sidecar,
        )
        workflow.connect([
            (fit, ds_model, [("model_file", "in_file")]),
            (sources, ds_model, [("flat", "source_files")]),
            (meta, ds_model, [("out", "extra_metadata")]),
        ])  # fmt:skip
    isc = mode == "segments"
    if isc:
        _connect_isc(
            workflow, fit, meta, sources, output_dir, dataset_links, group_entities, sidecar,
            suffix="mapped" if mapping else "",
        )  # fmt:skip
    report_wf = init_bsc_report_wf(
        output_dir=output_dir,
        dataset_links=dataset_links,
        desc=scores_desc,
        isc_desc=("iscmapped" if mapping else "isc") if isc else None,
    )
    report_wf.inputs.inputnode.base_entities = group_entities
    workflow.connect([
        (fit, report_wf, [("scores_file", "inputnode.scores_file"),
                          ("isc_anatomical", "inputnode.isc_anatomical"),
                          ("isc_aligned", "inputnode.isc_aligned"),
                          (("isc_metadata", _listify), "inputnode.isc_metadata")]),
        (meta, report_wf, [("out", "inputnode.metadata")]),
        (sources, report_wf, [("flat", "inputnode.source_files")]),
    ])  # fmt:skip
    return workflow


def _prepare_node(
    subjects,
    train_runs,
    test_runs,
    mode,
    conditions,
    confounds,
    detrend,
    standardize,
    hrf_delay,
    confounds_strategy,
    confounds_strategy_options,
):
    """Per-subject cleaning of the training and test runs inside the ROI (a MapNode)."""
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
        iterfield=["subject", "bold_file", "confounds_file", "events_file", "runs",
                   "repetition_time"],
        name="prepare_timeseries",
    )  # fmt:skip
    prepare.inputs.subject = list(subjects)
    return prepare


def _connect_chunks(workflow, prepare, fit, method, alignment_params, n_chunks):
    """Searchlight hyperalignment fitted in ``n_chunks`` chunks of centres, merged into
    the model that ``fit`` evaluates (instead of fitting it)."""
    params = dict(alignment_params)
    chunks = pe.MapNode(
        SearchlightAlignmentChunk(method=method, alignment_params=params, n_chunks=n_chunks),
        iterfield=["chunk_index"],
        name="searchlight_alignment_chunks",
    )
    chunks.inputs.chunk_index = list(range(n_chunks))
    merge = pe.Node(
        MergeSearchlightAlignment(method=method, alignment_params=params, n_chunks=n_chunks),
        name="merge_searchlight_alignment",
    )
    workflow.connect([
        (prepare, chunks, [("train_file", "train_files")]),
        (chunks, merge, [("partial_file", "partial_files")]),
        (merge, fit, [("model_file", "fitted_model")]),
    ])  # fmt:skip


def _connect_isc(
    workflow, fit, meta, sources, output_dir, dataset_links, entities, sidecar, suffix
):
    """Sinks of the group ISC maps (``desc-isc<key><suffix>``): the alignment's metadata
    (method, parameters, runs) and the ISC facts in their sidecars."""
    merged = pe.Node(niu.Merge(2), name="isc_metadata", run_without_submitting=True)
    workflow.connect([(meta, merged, [("out", "in1")]), (fit, merged, [("isc_metadata", "in2")])])
    for key, description in (
        ("anatomical", "Group leave-one-out inter-subject correlation of the test runs "
         "before alignment (anatomical voxels), Fisher-z averaged over subjects."),
        ("aligned", "Group leave-one-out inter-subject correlation of the test runs after "
         "functional alignment, Fisher-z averaged over subjects."),
    ):  # fmt:skip
        sink = _sink(
            f"ds_isc_{key}",
            output_dir,
            dataset_links,
            {"stat": "r", "desc": f"isc{key}{suffix}", "suffix": "statmap"},
            description,
            base_entities=entities,
            sidecar=sidecar,
        )
        workflow.connect([
            (fit, sink, [(f"isc_{key}", "in_file")]),
            (merged, sink, [("out", "extra_metadata")]),
            (sources, sink, [("flat", "source_files")]),
        ])  # fmt:skip


def _cleaning(detrend, standardize, hrf_delay):
    values = {"Detrend": bool(detrend), "Standardize": standardize, "HRFDelay": hrf_delay}
    return {k: v for k, v in values.items() if v is not None}


def _flat_sources(bold_file, events_file, subjects, keep):
    """Sources of group outputs (all subjects) and of each written subject's transform."""
    per_subject = [list(b) + list(e or []) for b, e in zip(bold_file, events_file, strict=True)]
    written = [files for s, files in zip(subjects, per_subject, strict=True) if s in keep]
    return [f for files in per_subject for f in files], written


def _transform_metadata(metadata, roi_mask_uri):
    """Sidecar content of the transforms, model and table."""
    params = metadata.get("AlignmentParameters", {})
    extra = {}
    if metadata.get("AlignmentMethod") == "procrustes":
        extra = {"Scaling": params.get("scaling"), "Reflection": params.get("reflection")}
    return [dict(metadata, ROIMask=roi_mask_uri, **extra)]


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

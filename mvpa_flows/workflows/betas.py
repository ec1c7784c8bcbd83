"""Trial-wise betas (LSS/LSA) from fMRIPrep outputs, written per run and stacked as samples."""

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mvpa_flows.interfaces.betas import (
    DESIGN_DEFAULTS,
    MIN_TRIALS_PER_RUN,
    BetaSamples,
    BetaSeries,
)
from mvpa_flows.interfaces.bids import DerivativesDataSink
from mvpa_flows.interfaces.reports import MethodsText

#: ``samples`` values of the participant workflow whose samples are trial-wise betas.
BETA_SAMPLES = ("lss", "lsa")

#: Methods text, filled from the sidecar of the samples table.
METHODS = MethodsText(
    "Samples were trial-wise response estimates (betas) of the conditions {Conditions}: for "
    "each run, {Design.Method}, built with nilearn's make_first_level_design_matrix "
    "[@nilearn] ({Design.HRFModel}, {Design.DriftModel}[[ with a high-pass cut-off of "
    "{Design.HighPass}]][[ of order {Design.DriftOrder}]]) and fitted by ordinary least "
    "squares to the unscaled BOLD series of the {NumberOfVoxels} voxels inside the "
    "intersection of the runs' brain masks. Confounds entered each GLM as regressors "
    "({GLMConfounds}) and drift was modelled in the design; no separate cleaning step was "
    "applied. Runs ({Runs}) served as cross-validation groups[[; decoding used "
    "{Standardize} (over the run's trials)]].",
    describes={"suffix": "samples"},
)

#: Outputs shared with :func:`~mvpa_flows.workflows.prepare.init_prepare_wf`.
SAMPLE_OUTPUTS = ["data_file", "samples_file", "mask_file", "info", "contrast", "mean_bold"]


def init_betas_wf(
    *,
    output_dir=None,
    dataset_links=None,
    method=DESIGN_DEFAULTS["method"],
    hrf_model=DESIGN_DEFAULTS["hrf_model"],
    drift_model=DESIGN_DEFAULTS["drift_model"],
    high_pass=DESIGN_DEFAULTS["high_pass"],
    drift_order=DESIGN_DEFAULTS["drift_order"],
    slice_time_ref=DESIGN_DEFAULTS["slice_time_ref"],
    confounds=None,
    conditions=None,
    standardize="zscore_run",
    min_trials_per_run=MIN_TRIALS_PER_RUN,
    contrast_label=None,
    name="betas_wf",
):
    """
    Estimate one beta per trial in every run and stack them as labelled samples.

    Each run gets its own GLM(s), built with nilearn's design-matrix code: LSA fits one
    regressor per trial; LSS (Mumford et al. 2012) fits each trial against the run's
    other trials grouped by trial_type. Confounds enter the GLM as regressors and
    drift is modelled in the design (no separate cleaning). With ``output_dir`` the
    betas of each run are written as
    ``sub-<l>[_ses-<s>]_task-<t>[_run-<r>][_space-<s>]_desc-<method>_betaseries.nii.gz``
    (one volume per event, events order) with a ``.tsv`` of the same stem (the events)
    and a JSON sidecar (every design option, the confounds used, Sources). The samples
    are the betas of the compared conditions, optionally z-scored within each run.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from mvpa_flows.workflows.betas import init_betas_wf
            wf = init_betas_wf(output_dir=".")

    Parameters
    ----------
    output_dir : str or None
        Derivatives root for the per-run betaseries (None: write nothing).
    dataset_links : dict or None
        Dataset name -> root, so sidecars cite ``bids:<name>:<path>`` URIs.
    method : {"lss", "lsa"}
        Least-squares-separate or least-squares-all.
    hrf_model, drift_model, high_pass, drift_order, slice_time_ref
        nilearn's design options (defaults: those of ``FirstLevelModel``).
    confounds : list of str or None
        Confound columns entered in each GLM (None: the six motion parameters when
        present; ``["none"]`` disables).
    conditions : list of str or None
        trial_type values kept as samples (None: all).
    standardize : {"zscore_run", "none"}
        z-score each voxel over each run's trials (the written betas are not).
    min_trials_per_run : int
        Trials of each compared condition that every run must hold.
    contrast_label : str or None
        Value of the ``contrast-`` entity (None: from the conditions).
    name : str
        Workflow name.

    Inputs
    ------
    bold_file
        Preprocessed BOLD series, one per run (fMRIPrep ``desc-preproc_bold``).
    bold_mask
        Brain masks on the BOLD grid, one per run.
    confounds_file
        fMRIPrep ``desc-confounds_timeseries.tsv`` per run (None where absent).
    events_file
        Raw BIDS ``_events.tsv`` per run.
    tr
        Repetition time per run in seconds (None: the BOLD sidecar's).
    runs
        Run labels (cross-validation groups; default 1..n).
    sessions
        Session label per run (optional): the cross-validation groups are then
        session x run and the sample table has a ``session`` column.

    Outputs
    -------
    data_file, samples_file, mask_file, info, contrast, mean_bold
        The samples, as :func:`~mvpa_flows.workflows.prepare.init_prepare_wf` gives them.
    betaseries_file, trials_file, design_file, metadata
        Per run: the 4D betas, their events, the design matrix (.tsv) and the sidecar
        content (work-directory copies).
    """
    from nipype.pipeline.engine import Workflow

    workflow = Workflow(name=name)
    workflow.__desc__ = METHODS
    fields = ["bold_file", "bold_mask", "confounds_file", "events_file", "tr", "runs", "sessions"]
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=SAMPLE_OUTPUTS + ["betaseries_file", "trials_file", "design_file", "metadata"]
        ),
        name="outputnode",
    )
    per_run = pe.Node(
        niu.Function(function=_per_run, output_names=["confounds_file", "tr", "sources"]),
        name="per_run",
    )
    betaseries = pe.MapNode(
        BetaSeries(
            method=method,
            hrf_model=hrf_model,
            drift_model=drift_model or "none",
            high_pass=high_pass,
            drift_order=drift_order,
            slice_time_ref=slice_time_ref,
            confounds=confounds,
            conditions=conditions,
            min_trials_per_run=min_trials_per_run,
        ),
        iterfield=["bold_file", "bold_mask", "events_file", "confounds_file", "tr"],
        name="betaseries",
    )
    samples = pe.Node(
        BetaSamples(
            conditions=conditions,
            standardize=standardize,
            min_trials_per_run=min_trials_per_run,
            contrast_label=contrast_label,
        ),
        name="beta_samples",
    )
    workflow.connect([
        (inputnode, per_run, [("bold_file", "bold_file"), ("bold_mask", "bold_mask"),
                              ("events_file", "events_file"),
                              ("confounds_file", "confounds_file"), ("tr", "tr")]),
        (inputnode, betaseries, [("bold_file", "bold_file"), ("bold_mask", "bold_mask"),
                                 ("events_file", "events_file")]),
        (per_run, betaseries, [("confounds_file", "confounds_file"), ("tr", "tr")]),
        (inputnode, samples, [("bold_mask", "bold_mask"), ("bold_file", "bold_file"),
                              ("runs", "runs"), ("sessions", "sessions")]),
        (betaseries, samples, [("betaseries_file", "betaseries_file"),
                               ("trials_file", "trials_file"), ("metadata", "metadata")]),
        (samples, outputnode, [(field, field) for field in SAMPLE_OUTPUTS]),
        (betaseries, outputnode, [("betaseries_file", "betaseries_file"),
                                  ("trials_file", "trials_file"),
                                  ("design_file", "design_file"), ("metadata", "metadata")]),
    ])  # fmt:skip
    if output_dir is None:
        return workflow
    for field in ("betaseries_file", "trials_file"):
        # both files share one stem, so both sinks write the same JSON sidecar
        ds = pe.MapNode(
            DerivativesDataSink(
                base_directory=str(output_dir),
                entities={"desc": method, "suffix": "betaseries"},
                dataset_links=dict(dataset_links or {}),
            ),
            iterfield=["in_file", "source_files", "base_entities", "metadata"],
            name=f"ds_{field[:-5]}",
            run_without_submitting=True,
        )
        workflow.connect([
            (betaseries, ds, [(field, "in_file"), ("entities", "base_entities"),
                              ("metadata", "metadata")]),
            (per_run, ds, [("sources", "source_files")]),
        ])  # fmt:skip
    return workflow


def _per_run(bold_file, bold_mask, events_file, confounds_file=None, tr=None):
    """Per-run lists of the optional inputs (None where absent) and of the sources."""
    from nipype.interfaces.base import isdefined

    n_runs = len(bold_file)
    confounds_file = list(confounds_file) if isdefined(confounds_file) and confounds_file else []
    tr = list(tr) if isdefined(tr) and tr else []
    confounds_file = confounds_file or [None] * n_runs
    tr = [None if t is None else float(t) for t in tr] or [None] * n_runs
    if not (len(bold_mask) == len(events_file) == len(confounds_file) == len(tr) == n_runs):
        raise ValueError(
            f"Got {n_runs} BOLD series, {len(bold_mask)} masks, {len(events_file)} events "
            f"files, {len(confounds_file)} confounds files and {len(tr)} TRs; give one of "
            "each per run (confounds_file and tr may be omitted)."
        )
    sources = [
        [f for f in (bold, mask, events, conf) if f]
        for bold, mask, events, conf in zip(
            bold_file, bold_mask, events_file, confounds_file, strict=True
        )
    ]
    return confounds_file, tr, sources

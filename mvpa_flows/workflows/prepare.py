"""Samples from fMRIPrep outputs: labelling and per-run cleaning."""

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mvpa_flows.interfaces.reports import MethodsText
from mvpa_flows.interfaces.samples import PrepareSamples

#: Methods text, filled from the sidecar of the samples table.
METHODS = MethodsText(
    "Each volume was labelled with the condition ({Conditions}) of the event covering its "
    "acquisition time, event onsets being delayed by {HRFDelay}; runs ({Runs}) served as "
    "cross-validation groups. Within each run, the time series of the {NumberOfVoxels} voxels "
    "inside the intersection of the runs' brain masks were cleaned with nilearn [@nilearn]: "
    "{Confounds}[[, {Detrend}]][[ and {Standardize}]].",
    describes={"suffix": "samples"},
)


def init_prepare_wf(
    *,
    conditions=None,
    confounds=None,
    detrend=True,
    standardize="zscore_run",
    hrf_delay=0.0,
    confounds_strategy=None,
    confounds_strategy_options=None,
    name="prepare_wf",
):
    """
    Build labelled, cleaned samples from one subject's runs.

    Volumes are labelled from the raw dataset's events (a volume acquired at
    ``index * TR`` belongs to an event when it falls in
    ``[onset + hrf_delay, onset + duration + hrf_delay)``), each run is cleaned
    (confound regression and linear detrending, then z-scoring within the run) inside
    the intersection of the runs' brain masks, and the labelled volumes are stacked.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from mvpa_flows.workflows.prepare import init_prepare_wf
            wf = init_prepare_wf()

    Parameters
    ----------
    conditions : list of str or None
        trial_type values to keep (None: every trial_type in the events).
    confounds : list of str or None
        Confound columns or shell-style patterns such as ``"a_comp_cor_*"`` (None: the
        six motion parameters when present; ``["none"]`` disables).
    detrend : bool
        Remove a linear trend per run.
    standardize : {"zscore_run", "none"}
        z-score each voxel within each run.
    hrf_delay : float
        Seconds added to event onsets.
    confounds_strategy : {"simple", "scrubbing", "compcor", "ica_aroma"} or None
        A nilearn denoising strategy instead of ``confounds``; censored volumes are left
        out of the samples.
    confounds_strategy_options : dict or None
        Its options (``nilearn.interfaces.fmriprep.load_confounds_strategy``).
    name : str
        Workflow name.

    Inputs
    ------
    bold_file
        Preprocessed BOLD series, one per run (fMRIPrep ``desc-preproc_bold``).
    bold_mask
        Brain masks on the BOLD grid, one per run (``desc-brain_mask``).
    confounds_file
        fMRIPrep ``desc-confounds_timeseries.tsv`` per run (None where absent).
    events_file
        Raw BIDS ``_events.tsv`` per run.
    runs
        Run labels.
    sessions
        Session label per run (optional); the cross-validation groups are then
        session x run.
    repetition_time
        TR per run in seconds.

    Outputs
    -------
    data_file
        Cleaned samples (.npy, samples x voxels).
    samples_file
        Sample table (run, volume, onset, label).
    mask_file
        Analysis mask.
    info
        Dictionary describing the samples and cleaning.
    contrast
        Value of the ``contrast-`` entity.
    mean_bold
        Mean EPI of the first run.
    """
    from nipype.pipeline.engine import Workflow

    workflow = Workflow(name=name)
    workflow.__desc__ = METHODS
    inputnode = pe.Node(
        niu.IdentityInterface(
            fields=[
                "bold_file",
                "bold_mask",
                "confounds_file",
                "events_file",
                "runs",
                "sessions",
                "repetition_time",
            ]
        ),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["data_file", "samples_file", "mask_file", "info", "contrast", "mean_bold"]
        ),
        name="outputnode",
    )
    prepare = pe.Node(
        PrepareSamples(
            conditions=conditions,
            confounds=confounds,
            detrend=detrend,
            standardize=standardize,
            hrf_delay=hrf_delay,
            confounds_strategy=confounds_strategy,
            confounds_strategy_options=dict(confounds_strategy_options or {}),
        ),
        name="prepare_samples",
    )
    workflow.connect([
        (inputnode, prepare, [
            ("bold_file", "bold_file"),
            ("bold_mask", "bold_mask"),
            ("confounds_file", "confounds_file"),
            ("events_file", "events_file"),
            ("runs", "runs"),
            ("sessions", "sessions"),
            ("repetition_time", "repetition_time"),
        ]),
        (prepare, outputnode, [
            ("data_file", "data_file"),
            ("samples_file", "samples_file"),
            ("mask_file", "mask_file"),
            ("info", "info"),
            ("contrast", "contrast"),
            ("mean_bold", "mean_bold"),
        ]),
    ])  # fmt:skip
    return workflow

"""Top-level workflows: the whole run and one subject."""

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mvpa_flows.workflows.participant import PARTICIPANT_ANALYSES, init_mvpa_wf


def init_mvpa_flows_wf(config):
    """
    Build the participant-level workflow of a run: one sub-workflow per subject.

    This and the CLI are the only places that read the run configuration; everything
    below receives plain keyword arguments.

    Workflow Graph
        ``mvpa_flows_wf`` holds one ``single_subject_<label>_wf`` per subject, each
        wrapping :func:`init_single_subject_wf`.

    Parameters
    ----------
    config : mvpa_flows.cli.config.RunConfig
        The resolved run configuration, with ``subject_data`` filled by input
        collection.
    """
    from nipype.pipeline.engine import Workflow

    workflow = Workflow(name="mvpa_flows_wf")
    workflow.base_dir = str(config.work_dir)
    for subject, subject_data in config.subject_data.items():
        single = init_single_subject_wf(
            subject_id=subject,
            subject_data=subject_data,
            output_dir=str(config.output_dir),
            dataset_links=config.dataset_links,
            analyses=[a for a in config.analyses if a in PARTICIPANT_ANALYSES],
            conditions=config.conditions,
            contrast_label=config.contrast_label,
            confounds=config.confounds,
            detrend=config.detrend,
            standardize=config.standardize,
            hrf_delay=config.hrf_delay,
            confounds_strategy=config.confounds_strategy,
            confounds_strategy_options=config.confounds_strategy_options,
            samples=config.samples,
            betas={
                "hrf_model": config.hrf_model,
                "drift_model": config.drift_model,
                "high_pass": config.high_pass,
                "drift_order": config.drift_order,
                "slice_time_ref": config.slice_time_ref,
                "min_trials_per_run": config.min_trials_per_run,
            },
            searchlight={
                "radius": config.radius,
                "estimator": config.estimator,
                "cv": config.cv,
                "scoring": config.scoring,
                "n_permutations": config.n_permutations,
                "random_seed": config.random_seed,
                "process_mask": config.process_mask,
                "n_chunks": config.searchlight_chunks,
                "n_jobs": config.searchlight_jobs,
                "verbose": int(config.show_progress),
            },
        )
        workflow.add_nodes([single])
    return workflow


def init_single_subject_wf(*, subject_id, subject_data, name=None, **mvpa_kwargs):
    """
    Feed one subject's collected BIDS inputs to :func:`init_mvpa_wf`.

    A subject analysed session by session holds one ``mvpa_ses_<label>_wf`` per session;
    otherwise one ``mvpa_wf`` takes every run (sessions pooled).

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from mvpa_flows.workflows.base import init_single_subject_wf
            wf = init_single_subject_wf(
                subject_id="01", output_dir=".",
                subject_data={"bold": [], "mask": [], "events": [], "confounds": [],
                              "runs": [], "bold_metadata": []},
            )

    Parameters
    ----------
    subject_id : str
        Label without ``sub-``.
    subject_data : dict or list of dict
        Output of :func:`mvpa_flows.interfaces.bids.collect_inputs`, or one such dict per
        analysis unit (session), each with ``label`` (the session, or None when pooled),
        ``entities`` (output name entities) and ``sidecar`` (extra sidecar fields).
    name : str or None
        Workflow name (default ``single_subject_<label>_wf``).
    **mvpa_kwargs
        Passed to :func:`~mvpa_flows.workflows.participant.init_mvpa_wf`.
    """
    from nipype.pipeline.engine import Workflow

    workflow = Workflow(name=name or f"single_subject_{subject_id}_wf")
    units = [subject_data] if isinstance(subject_data, dict) else list(subject_data)
    fields = ["bold_file", "bold_mask", "confounds_file", "events_file", "runs", "sessions",
              "repetition_time"]  # fmt:skip
    for unit in units:
        label = unit.get("label")
        suffix = f"_ses_{label}" if label is not None else ""
        bidssrc = pe.Node(niu.IdentityInterface(fields=fields), name=f"bidssrc{suffix}")
        bidssrc.inputs.bold_file = list(unit["bold"])
        bidssrc.inputs.bold_mask = list(unit["mask"])
        bidssrc.inputs.events_file = list(unit["events"])
        bidssrc.inputs.confounds_file = list(unit["confounds"])
        bidssrc.inputs.runs = list(unit["runs"])
        bidssrc.inputs.sessions = list(unit.get("sessions") or [None] * len(unit["runs"]))
        bidssrc.inputs.repetition_time = [
            float(meta["RepetitionTime"]) for meta in unit["bold_metadata"]
        ]
        mvpa_wf = init_mvpa_wf(
            **mvpa_kwargs,
            entities=unit.get("entities"),
            sidecar=unit.get("sidecar"),
            name=f"mvpa{suffix}_wf",
        )
        workflow.connect([
            (bidssrc, mvpa_wf, [
                ("bold_file", "inputnode.bold_file"),
                ("bold_mask", "inputnode.bold_mask"),
                ("confounds_file", "inputnode.confounds_file"),
                ("events_file", "inputnode.events_file"),
                ("runs", "inputnode.runs"),
                ("sessions", "inputnode.sessions"),
                ("repetition_time", "inputnode.repetition_time"),
            ]),
        ])  # fmt:skip
    return workflow

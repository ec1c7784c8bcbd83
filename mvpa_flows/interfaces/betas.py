"""Interfaces: trial-wise betas (LSS/LSA) of one run, and their stacking into samples."""

import json
import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mvpa_flows.core.data.beta_samples import load_betaseries_samples
from mvpa_flows.core.data.betas import (
    BETA_METHODS,
    DESIGN_DEFAULTS,
    HRF_MODELS,
    MIN_TRIALS_PER_RUN,
    run_betaseries,
)
from mvpa_flows.core.data.dataset import mean_epi
from mvpa_flows.core.data.samples import SESSION_COLUMN, contrast_label, run_keys
from mvpa_flows.interfaces.bids import OUTPUT_ENTITIES, source_entities

#: Entities of the BOLD series that name its betaseries (a run's output keeps its ses-).
RUN_ENTITIES = (*OUTPUT_ENTITIES, "run")


class _BetaSeriesInputSpec(BaseInterfaceInputSpec):
    bold_file = File(exists=True, mandatory=True, desc="preprocessed BOLD series of one run")
    bold_mask = File(exists=True, mandatory=True, desc="brain mask on the BOLD grid")
    events_file = File(exists=True, mandatory=True, desc="the run's BIDS _events.tsv")
    confounds_file = traits.Either(
        None, File(exists=True), default=None, usedefault=True,
        desc="fMRIPrep confounds table of the run (None: no confounds file)",
    )  # fmt:skip
    tr = traits.Either(
        None, traits.Float, default=None, usedefault=True,
        desc="repetition time in seconds (None: RepetitionTime of the BOLD's JSON sidecar)",
    )  # fmt:skip
    confounds = traits.Either(
        None, traits.List(traits.Str), default=None, usedefault=True,
        desc="confound columns entered in the GLM (None: motion when present; ['none']: none)",
    )  # fmt:skip
    conditions = traits.Either(
        None, traits.List(traits.Str), default=None, usedefault=True,
        desc="compared conditions the run must hold min_trials_per_run trials of (None: no "
        "check)",
    )  # fmt:skip
    min_trials_per_run = traits.Int(
        MIN_TRIALS_PER_RUN, usedefault=True, desc="trials of each compared condition per run"
    )
    method = traits.Enum(*BETA_METHODS, usedefault=True, desc="lss or lsa")
    hrf_model = traits.Enum(*HRF_MODELS, usedefault=True, desc="nilearn's HRF model")
    drift_model = traits.Enum(
        "cosine", "polynomial", "none", usedefault=True, desc="nilearn's drift model"
    )
    high_pass = traits.Float(
        DESIGN_DEFAULTS["high_pass"], usedefault=True, desc="cosine drift cut-off (Hz)"
    )
    drift_order = traits.Int(
        DESIGN_DEFAULTS["drift_order"], usedefault=True, desc="polynomial drift order"
    )
    slice_time_ref = traits.Float(
        DESIGN_DEFAULTS["slice_time_ref"], usedefault=True,
        desc="reference slice time as a fraction of the TR (0 to 1)",
    )  # fmt:skip
    noise_model = traits.Enum("ols", usedefault=True, desc="ordinary least squares")


class _BetaSeriesOutputSpec(TraitedSpec):
    betaseries_file = File(exists=True, desc="4D betas, one volume per event, events order")
    trials_file = File(exists=True, desc="the events modelled, one row per beta volume (.tsv)")
    design_file = File(exists=True, desc="the run's design matrix, one column per trial (.tsv)")
    metadata = traits.Dict(desc="sidecar content: every design option, confounds used")
    entities = traits.Dict(desc="BIDS entities of the run (subject, session, task, run, space...)")


class BetaSeries(SimpleInterface):
    """Trial-wise betas (LSS or LSA) of one run, checked before the data are read.

    Calls :func:`mvpa_flows.core.data.betas.run_betaseries`.
    """

    input_spec = _BetaSeriesInputSpec
    output_spec = _BetaSeriesOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        result = run_betaseries(
            inputs.bold_file,
            inputs.bold_mask,
            inputs.events_file,
            tr=inputs.tr,
            confounds_file=inputs.confounds_file,
            confounds=inputs.confounds,
            conditions=inputs.conditions,
            min_trials_per_run=inputs.min_trials_per_run,
            method=inputs.method,
            hrf_model=inputs.hrf_model,
            drift_model=inputs.drift_model,
            high_pass=inputs.high_pass,
            drift_order=inputs.drift_order,
            slice_time_ref=inputs.slice_time_ref,
            noise_model=inputs.noise_model,
        )
        out = {
            "betaseries_file": os.path.join(runtime.cwd, "betaseries.nii.gz"),
            "trials_file": os.path.join(runtime.cwd, "trials.tsv"),
            "design_file": os.path.join(runtime.cwd, "design.tsv"),
        }
        result.img.to_filename(out["betaseries_file"])
        result.trials.to_csv(out["trials_file"], sep="\t", index=False, na_rep="n/a")
        result.design.to_csv(out["design_file"], sep="\t", index_label="time")
        self._results.update(out)
        self._results["metadata"] = result.metadata
        self._results["entities"] = source_entities(inputs.bold_file, keep=RUN_ENTITIES)
        return runtime


class _BetaSamplesInputSpec(BaseInterfaceInputSpec):
    betaseries_file = traits.List(File(exists=True), mandatory=True, desc="4D betas, one per run")
    trials_file = traits.List(File(exists=True), mandatory=True, desc="trial tables, one per run")
    bold_mask = traits.List(File(exists=True), mandatory=True, desc="brain masks, one per run")
    bold_file = traits.List(
        File(exists=True), mandatory=True, desc="BOLD series (the first run's mean EPI is kept)"
    )
    metadata = traits.List(traits.Dict, desc="the runs' betaseries metadata (design options)")
    runs = traits.List(traits.Any, desc="run labels, the cross-validation groups")
    sessions = traits.List(
        traits.Either(None, traits.Str),
        desc="session label per run (None: no session); the groups are then session x run",
    )
    conditions = traits.Either(
        None, traits.List(traits.Str), default=None, usedefault=True,
        desc="trial_type values kept as samples (None: all)",
    )  # fmt:skip
    standardize = traits.Enum(
        "zscore_run", "none", usedefault=True, desc="z-score each voxel over each run's trials"
    )
    min_trials_per_run = traits.Int(
        MIN_TRIALS_PER_RUN, usedefault=True, desc="trials of each compared condition per run"
    )
    contrast_label = traits.Either(
        None, traits.Str, default=None, usedefault=True,
        desc="contrast- entity (None: the conditions in camelCase joined by 'Vs')",
    )  # fmt:skip


class _BetaSamplesOutputSpec(TraitedSpec):
    data_file = File(exists=True, desc="beta samples, (n_samples, n_voxels) .npy")
    samples_file = File(exists=True, desc="sample table: run, volume, onset, duration, label")
    mask_file = File(exists=True, desc="analysis mask (intersection of the runs' masks)")
    info = traits.Dict(desc="what was used: conditions, counts, design, confounds")
    info_file = File(exists=True, desc="the same information as JSON")
    contrast = traits.Str(desc="the contrast- entity of the outputs")
    mean_bold = File(exists=True, desc="mean EPI of the first run (report background)")


class BetaSamples(SimpleInterface):
    """Stack the runs' trial-wise betas into labelled samples (like ``PrepareSamples``).

    Calls :func:`mvpa_flows.core.data.beta_samples.load_betaseries_samples`.
    """

    input_spec = _BetaSamplesInputSpec
    output_spec = _BetaSamplesOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        n_runs = len(self.inputs.betaseries_file)
        runs = list(self.inputs.runs) if self.inputs.runs else list(range(1, n_runs + 1))
        sessions = list(self.inputs.sessions) if self.inputs.sessions else None
        with_sessions = sessions is not None and any(s is not None for s in sessions)
        X, table, mask_img, info = load_betaseries_samples(
            self.inputs.betaseries_file,
            self.inputs.trials_file,
            self.inputs.bold_mask,
            runs=run_keys(runs, sessions) if with_sessions else runs,
            conditions=self.inputs.conditions,
            standardize=self.inputs.standardize,
            min_trials_per_run=self.inputs.min_trials_per_run,
            metadata=self.inputs.metadata or None,
        )
        if with_sessions:
            # the sample table of volume samples: a session column and the run label
            # (sample_groups() rebuilds the session x run groups from both)
            by_key = dict(zip(run_keys(runs, sessions), zip(sessions, runs, strict=True),
                              strict=True))  # fmt:skip
            pairs = [by_key[key] for key in table["run"]]
            table.insert(0, SESSION_COLUMN, [s for s, _ in pairs])
            table["run"] = [r for _, r in pairs]
            info["Sessions"] = sessions
            info["CrossValidationGroups"] = "session x run"
        cwd = runtime.cwd
        out = {
            "data_file": os.path.join(cwd, "samples.npy"),
            "samples_file": os.path.join(cwd, "samples.tsv"),
            "mask_file": os.path.join(cwd, "analysis_mask.nii.gz"),
            "mean_bold": os.path.join(cwd, "mean_bold.nii.gz"),
            "info_file": os.path.join(cwd, "samples_info.json"),
        }
        np.save(out["data_file"], X)
        table.to_csv(out["samples_file"], sep="\t", index=False)
        mask_img.to_filename(out["mask_file"])
        mean_epi(self.inputs.bold_file[0]).to_filename(out["mean_bold"])
        info["Contrast"] = self.inputs.contrast_label or contrast_label(info["Conditions"])
        # the same columns, phrased for the methods text as GLM regressors
        info["GLMConfounds"] = list(info.get("Confounds", []))
        with open(out["info_file"], "w") as handle:
            json.dump(info, handle, indent=2, sort_keys=True)
        self._results.update(out)
        self._results["contrast"] = info["Contrast"]
        self._results["info"] = info
        return runtime

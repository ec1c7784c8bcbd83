"""Interface: events + fMRIPrep outputs -> cleaned, labelled samples."""

import json
import os

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mvpa_flows.core.data.dataset import load_samples, mean_epi
from mvpa_flows.core.data.samples import contrast_label


class _PrepareSamplesInputSpec(BaseInterfaceInputSpec):
    bold_file = traits.List(
        File(exists=True), mandatory=True, desc="preprocessed BOLD, one per run"
    )
    bold_mask = traits.List(File(exists=True), mandatory=True, desc="brain mask, one per run")
    events_file = traits.List(File(exists=True), mandatory=True, desc="BIDS events, one per run")
    confounds_file = traits.List(
        traits.Either(None, File(exists=True)),
        desc="fMRIPrep confounds table per run (None where absent)",
    )
    runs = traits.List(traits.Any, desc="run labels (with sessions, groups are session x run)")
    sessions = traits.List(
        traits.Either(None, traits.Str), desc="session label per run (None: no session)"
    )
    repetition_time = traits.List(traits.Float, desc="TR in seconds per run")
    conditions = traits.Either(
        None,
        traits.List(traits.Str),
        default=None,
        usedefault=True,
        desc="trial_type values to keep (None: all)",
    )
    confounds = traits.Either(
        None,
        traits.List(traits.Str),
        default=None,
        usedefault=True,
        desc="confound columns or shell-style patterns (None: motion when present; "
        "['none']: none)",
    )
    confounds_strategy = traits.Either(
        None,
        traits.Enum("simple", "scrubbing", "compcor", "ica_aroma"),
        default=None,
        usedefault=True,
        desc="nilearn denoising strategy (load_confounds_strategy) instead of columns",
    )
    confounds_strategy_options = traits.Dict(desc="options of the confounds strategy")
    detrend = traits.Bool(True, usedefault=True, desc="remove a linear trend per run")
    standardize = traits.Enum("zscore_run", "none", usedefault=True, desc="per-run scaling")
    hrf_delay = traits.Float(0.0, usedefault=True, desc="seconds added to event onsets")
    contrast_label = traits.Either(
        None,
        traits.Str,
        default=None,
        usedefault=True,
        desc="contrast- entity (None: the conditions in camelCase joined by 'Vs')",
    )


class _PrepareSamplesOutputSpec(TraitedSpec):
    data_file = File(exists=True, desc="cleaned samples, (n_samples, n_voxels) .npy")
    samples_file = File(exists=True, desc="sample table: run, volume, onset, label")
    mask_file = File(exists=True, desc="analysis mask (intersection of the runs' masks)")
    info = traits.Dict(desc="what was used: conditions, counts, confounds, cleaning")
    info_file = File(exists=True, desc="the same information as JSON")
    contrast = traits.Str(desc="the contrast- entity of the outputs")
    mean_bold = File(
        exists=True, desc="reference image: mean EPI of the first run (report background)"
    )


class PrepareSamples(SimpleInterface):
    """Label volumes from events, clean each run and stack the labelled volumes.

    Calls :func:`mvpa_flows.core.data.dataset.load_samples`.
    """

    input_spec = _PrepareSamplesInputSpec
    output_spec = _PrepareSamplesOutputSpec

    def _run_interface(self, runtime):
        optional = {
            name: getattr(self.inputs, name) or None
            for name in ("confounds_file", "runs", "repetition_time", "sessions")
        }
        X, table, mask_img, info = load_samples(
            self.inputs.bold_file,
            self.inputs.bold_mask,
            self.inputs.events_file,
            confounds_files=optional["confounds_file"],
            runs=optional["runs"],
            repetition_times=optional["repetition_time"],
            conditions=self.inputs.conditions,
            confounds=self.inputs.confounds,
            detrend=self.inputs.detrend,
            standardize=self.inputs.standardize,
            hrf_delay=self.inputs.hrf_delay,
            sessions=optional["sessions"],
            confounds_strategy=self.inputs.confounds_strategy,
            confounds_strategy_options=self.inputs.confounds_strategy_options or None,
        )
        cwd = runtime.cwd
        self._results["data_file"] = os.path.join(cwd, "samples.npy")
        np.save(self._results["data_file"], X)
        self._results["samples_file"] = os.path.join(cwd, "samples.tsv")
        table.to_csv(self._results["samples_file"], sep="\t", index=False)
        self._results["mask_file"] = os.path.join(cwd, "analysis_mask.nii.gz")
        mask_img.to_filename(self._results["mask_file"])
        self._results["mean_bold"] = os.path.join(cwd, "mean_bold.nii.gz")
        mean_epi(self.inputs.bold_file[0]).to_filename(self._results["mean_bold"])
        self._results["contrast"] = self.inputs.contrast_label or contrast_label(
            info["Conditions"]
        )
        info["Contrast"] = self._results["contrast"]
        self._results["info"] = info
        self._results["info_file"] = os.path.join(cwd, "samples_info.json")
        with open(self._results["info_file"], "w") as handle:
            json.dump(info, handle, indent=2, sort_keys=True)
        return runtime

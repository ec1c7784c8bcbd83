"""Interfaces of the group level: per-subject time series, hyperalignment, group maps."""

import os

import nibabel as nb
import numpy as np
import pandas as pd
from nilearn.masking import unmask
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mvpa_flows.core.alignment.evaluate import hyperalign_and_evaluate, save_template
from mvpa_flows.core.alignment.xfm import save_transform
from mvpa_flows.core.data.dataset import load_timeseries
from mvpa_flows.core.data.samples import build_sample_table, read_events
from mvpa_flows.core.errors import InputValidationError
from mvpa_flows.core.stats.group import group_searchlight_stats


class _PrepareTimeseriesInputSpec(BaseInterfaceInputSpec):
    subject = traits.Str(mandatory=True, desc="subject label (for messages)")
    bold_file = traits.List(File(exists=True), mandatory=True, desc="BOLD series per run")
    confounds_file = traits.List(
        traits.Either(None, File(exists=True)), desc="confounds table per run"
    )
    events_file = traits.List(File(exists=True), desc="events per run (conditions mode)")
    runs = traits.List(
        traits.Either(traits.Int, traits.Str),
        mandatory=True,
        desc="run label of each series (RUN, or SESSION:RUN with sessions)",
    )
    repetition_time = traits.List(traits.Float, desc="TR per run")
    roi_mask = File(exists=True, mandatory=True, desc="ROI on the BOLD grid")
    train_runs = traits.List(
        traits.Either(traits.Int, traits.Str), mandatory=True, desc="runs to estimate alignment"
    )
    test_runs = traits.List(
        traits.Either(traits.Int, traits.Str), mandatory=True, desc="runs to test it on"
    )
    mode = traits.Enum("segments", "conditions", usedefault=True, desc="BSC mode")
    conditions = traits.Either(
        None,
        traits.List(traits.Str),
        default=None,
        usedefault=True,
        desc="trial types (conditions mode)",
    )
    confounds = traits.Either(
        None,
        traits.List(traits.Str),
        default=None,
        usedefault=True,
        desc="confound columns or shell-style patterns",
    )
    confounds_strategy = traits.Either(
        None,
        traits.Enum("simple", "scrubbing", "compcor", "ica_aroma"),
        default=None,
        usedefault=True,
        desc="nilearn denoising strategy instead of columns (no censoring allowed)",
    )
    confounds_strategy_options = traits.Dict(desc="options of the confounds strategy")
    detrend = traits.Bool(True, usedefault=True, desc="linear detrending per run")
    standardize = traits.Enum("zscore_run", "none", usedefault=True, desc="per-run scaling")
    hrf_delay = traits.Float(0.0, usedefault=True, desc="seconds added to event onsets")


class _PrepareTimeseriesOutputSpec(TraitedSpec):
    train_file = File(exists=True, desc="training time series (.npy, volumes x voxels)")
    test_file = File(exists=True, desc="test samples (.npy)")
    test_samples_file = File(exists=True, desc="test sample table (run, volume, label)")
    confounds_used = traits.List(traits.Str, desc="confound columns regressed out")


class PrepareTimeseries(SimpleInterface):
    """Clean one subject's training and test runs inside the ROI.

    Calls :func:`mvpa_flows.core.data.dataset.load_timeseries`; in conditions mode the test
    volumes are labelled from the events
    (:func:`mvpa_flows.core.data.samples.build_sample_table`).
    """

    input_spec = _PrepareTimeseriesInputSpec
    output_spec = _PrepareTimeseriesOutputSpec

    def _run_interface(self, runtime):
        runs = list(self.inputs.runs)
        want = list(self.inputs.train_runs) + list(self.inputs.test_runs)
        missing = [r for r in want if r not in runs]
        if missing:
            raise InputValidationError(
                f"sub-{self.inputs.subject} has no run(s) {missing} (runs found: {runs}); "
                "fix --ha-train-runs/--ha-test-runs or the subject's data."
            )
        index = [runs.index(r) for r in want]

        def pick(values):
            values = list(values) if values else [None] * len(runs)
            return [values[i] for i in index]

        series, regressed = load_timeseries(
            pick(self.inputs.bold_file),
            self.inputs.roi_mask,
            confounds_files=pick(self.inputs.confounds_file),
            repetition_times=pick(self.inputs.repetition_time),
            confounds=self.inputs.confounds,
            detrend=self.inputs.detrend,
            standardize=self.inputs.standardize,
            confounds_strategy=self.inputs.confounds_strategy,
            confounds_strategy_options=self.inputs.confounds_strategy_options or None,
            return_confounds=True,
        )
        self._results["confounds_used"] = sorted({c for names in regressed for c in names})
        n_train = len(self.inputs.train_runs)
        train, test = series[:n_train], series[n_train:]
        if self.inputs.mode == "conditions":
            events = [read_events(f) for f in pick(self.inputs.events_file)[n_train:]]
            trs = pick(self.inputs.repetition_time)[n_train:]
            table = build_sample_table(
                events,
                [x.shape[0] for x in test],
                trs,
                self.inputs.test_runs,
                self.inputs.conditions or sorted({t for e in events for t in e["trial_type"]}),
                hrf_delay=self.inputs.hrf_delay,
            )
            test = [
                x[table.loc[table["run"] == r, "volume"].to_numpy()]
                for x, r in zip(test, self.inputs.test_runs, strict=True)
            ]
        else:
            table = pd.DataFrame({
                "run": np.concatenate([[r] * x.shape[0]
                                       for x, r in zip(test, self.inputs.test_runs, strict=True)]),
                "volume": np.concatenate([np.arange(x.shape[0]) for x in test]),
            })  # fmt:skip
        for key, data in (("train_file", train), ("test_file", test)):
            self._results[key] = os.path.join(runtime.cwd, f"{key[:-5]}.npy")
            np.save(self._results[key], np.concatenate(data, axis=0))
        self._results["test_samples_file"] = os.path.join(runtime.cwd, "test_samples.tsv")
        table.to_csv(self._results["test_samples_file"], sep="\t", index=False)
        return runtime


class _HyperalignGroupInputSpec(BaseInterfaceInputSpec):
    subjects = traits.List(traits.Str, mandatory=True, desc="subject labels")
    train_files = traits.List(File(exists=True), mandatory=True, desc="training data")
    test_files = traits.List(File(exists=True), mandatory=True, desc="test data")
    test_samples_files = traits.List(File(exists=True), mandatory=True, desc="test sample tables")
    roi_mask = File(exists=True, mandatory=True, desc="ROI the data come from")
    mode = traits.Enum("segments", "conditions", usedefault=True, desc="BSC mode")
    segment_length = traits.Float(18.0, usedefault=True, desc="segment length in s")
    repetition_time = traits.Float(mandatory=True, desc="TR in s")
    train_runs = traits.List(
        traits.Either(traits.Int, traits.Str), mandatory=True, desc="alignment runs"
    )
    test_runs = traits.List(
        traits.Either(traits.Int, traits.Str), mandatory=True, desc="test runs"
    )
    hyperalignment_params = traits.Dict(desc="parameters of hyperalign()")
    confounds_used = traits.List(
        traits.List(traits.Str), desc="confound columns regressed out, per subject"
    )
    cleaning = traits.Dict(desc="cleaning settings for the sidecars (Detrend, Standardize, ...)")


class _HyperalignGroupOutputSpec(TraitedSpec):
    transform_files = traits.List(File(exists=True), desc="one transform (.h5) per subject")
    model_file = File(exists=True, desc="common model (.h5)")
    scores_file = File(exists=True, desc="between-subject classification table (.tsv)")
    metadata = traits.Dict(desc="parameters and results for the sidecars")


class HyperalignGroup(SimpleInterface):
    """Fit Procrustes hyperalignment on the training runs; evaluate it on the test runs.

    Calls :func:`mvpa_flows.core.alignment.evaluate.hyperalign_and_evaluate`.
    """

    input_spec = _HyperalignGroupInputSpec
    output_spec = _HyperalignGroupOutputSpec

    def _run_interface(self, runtime):
        tables = [pd.read_csv(f, sep="\t") for f in self.inputs.test_samples_files]
        conditions = self.inputs.mode == "conditions"
        result = hyperalign_and_evaluate(
            [np.load(f) for f in self.inputs.train_files],
            [np.load(f) for f in self.inputs.test_files],
            self.inputs.subjects,
            mode=self.inputs.mode,
            test_labels=[t["label"].astype(str).to_numpy() for t in tables]
            if conditions
            else None,
            test_groups=[t["run"].to_numpy() for t in tables] if conditions else None,
            segment_length=self.inputs.segment_length,
            tr=self.inputs.repetition_time,
            train_runs=self.inputs.train_runs,
            test_runs=self.inputs.test_runs,
            hyperalignment_params=self.inputs.hyperalignment_params or None,
        )
        fit, scores = result["fit"], result["scores"]
        roi = np.asarray(nb.load(self.inputs.roi_mask).dataobj) > 0
        voxels = np.flatnonzero(roi.ravel())
        self._results["transform_files"] = []
        for subject, transform in zip(self.inputs.subjects, fit["transforms"], strict=True):
            path = os.path.join(runtime.cwd, f"sub-{subject}_xfm.h5")
            save_transform(
                path, transform, voxel_indices=voxels, roi=roi, params={"subject": subject}
            )
            self._results["transform_files"].append(path)
        self._results["model_file"] = os.path.join(runtime.cwd, "model.h5")
        save_template(
            self._results["model_file"], fit["template"], voxels, {"ref_ds": int(fit["ref_ds"])}
        )
        self._results["scores_file"] = os.path.join(runtime.cwd, "bsc_scores.tsv")
        scores.to_csv(self._results["scores_file"], sep="\t", index=False, na_rep="n/a")
        self._results["metadata"] = {
            "HyperalignmentParameters": {k: v for k, v in fit["params"].items()},
            "ReferenceSubject": self.inputs.subjects[int(fit["ref_ds"])],
            "NumberOfFeatures": int(voxels.size),
            "TrainingRuns": list(self.inputs.train_runs),
            "TestRuns": list(self.inputs.test_runs),
            "TrainingSamples": int(fit["template"].shape[0]),
            "BSCMode": self.inputs.mode,
            "SegmentLength": self.inputs.segment_length if not conditions else None,
            "RepetitionTime": self.inputs.repetition_time,
            "MeanAccuracy": {
                k: float(np.nanmean(scores[k]))
                for k in ("anatomical", "hyperaligned", "within_subject")
                if k in scores and scores[k].notna().any()
            },
            "ChanceLevel": float(scores["chance"].iloc[0]),
            "Notes": str(scores.attrs.get("notes", "")),
            "Confounds": _per_subject(self.inputs.subjects, self.inputs.confounds_used),
            **(self.inputs.cleaning or {}),
        }
        return runtime


def _per_subject(subjects, values):
    """One value when every subject shares it, else ``{subject: value}``."""
    values = list(values or [])
    if not values:
        return None
    if all(v == values[0] for v in values):
        return values[0]
    return dict(zip(subjects, values, strict=True))


class _GroupSearchlightStatsInputSpec(BaseInterfaceInputSpec):
    score_maps = traits.List(
        File(exists=True), mandatory=True, desc="participant searchlight maps, same grid"
    )
    mask_files = traits.List(
        File(exists=True), mandatory=True, desc="participant analysis masks (intersected)"
    )
    chance = traits.Float(mandatory=True, desc="chance level subtracted before the test")
    n_permutations = traits.Int(10000, usedefault=True, desc="sign flips")
    random_seed = traits.Either(
        None, traits.Int, default=None, usedefault=True, desc="seed of the sign flips"
    )


class _GroupSearchlightStatsOutputSpec(TraitedSpec):
    mean_map = File(exists=True, desc="group mean score")
    t_map = File(exists=True, desc="one-sample t against chance")
    p_map = File(exists=True, desc="FWE-corrected p (sign-flip max-t)")
    mask_file = File(exists=True, desc="voxels present in every subject")
    metadata = traits.Dict(desc="test description")


class GroupSearchlightStats(SimpleInterface):
    """One-sample test of searchlight maps against chance with FWE control.

    Calls :func:`mvpa_flows.core.stats.group.group_searchlight_stats`.
    """

    input_spec = _GroupSearchlightStatsInputSpec
    output_spec = _GroupSearchlightStatsOutputSpec

    def _run_interface(self, runtime):
        imgs = [nb.load(f) for f in self.inputs.score_maps]
        masks = [np.asarray(nb.load(f).dataobj) > 0 for f in self.inputs.mask_files]
        reference = imgs[0]
        for img, name in zip(imgs, self.inputs.score_maps, strict=True):
            if img.shape != reference.shape or not np.allclose(
                img.affine, reference.affine, atol=1e-3
            ):
                raise InputValidationError(
                    f"{os.path.basename(name)} is not on the grid of "
                    f"{os.path.basename(self.inputs.score_maps[0])}; group statistics need "
                    "every subject's map in one space (run fMRIPrep with a common --space)."
                )
        mask = np.logical_and.reduce(masks)
        mask_img = nb.Nifti1Image(mask.astype(np.uint8), reference.affine)
        maps = np.stack([np.asarray(img.dataobj)[mask] for img in imgs])
        stats = group_searchlight_stats(
            maps,
            self.inputs.chance,
            n_perm=self.inputs.n_permutations,
            random_state=self.inputs.random_seed,
        )
        for key, values in (
            ("mean_map", stats["mean"]),
            ("t_map", stats["t"]),
            ("p_map", stats["p_fwe"]),
        ):
            self._results[key] = os.path.join(runtime.cwd, f"group_{key}.nii.gz")
            unmask(np.asarray(values, dtype=np.float32), mask_img).to_filename(self._results[key])
        self._results["mask_file"] = os.path.join(runtime.cwd, "group_mask.nii.gz")
        mask_img.to_filename(self._results["mask_file"])
        self._results["metadata"] = {
            "Test": "one-sample t-test against chance, sign-flip permutations, max-t FWE",
            "ChanceLevel": self.inputs.chance,
            "NumberOfSubjects": len(imgs),
            "NumberOfPermutations": int(stats["n_perm"]),
            "ExactPermutation": bool(stats["exact"]),
            "RandomSeed": self.inputs.random_seed,
            "NumberOfVoxels": int(mask.sum()),
            "MinimumAttainableP": 1.0 / stats["n_perm"]
            if stats["exact"]
            else 1.0 / (stats["n_perm"] + 1),
        }
        return runtime

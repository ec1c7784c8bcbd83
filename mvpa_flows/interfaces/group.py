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
    isdefined,
    traits,
)

from mvpa_flows.core.alignment.evaluate import (
    alignment_estimator,
    alignment_parameters,
    check_searchlight_partials,
    evaluate_new_subjects,
    hyperalign_and_evaluate,
)
from mvpa_flows.core.alignment.isc import isc_maps, mean_isc
from mvpa_flows.core.alignment.model import load_model
from mvpa_flows.core.alignment.searchlight import load_partial, save_partial
from mvpa_flows.core.alignment.xfm import save_transform
from mvpa_flows.core.data.dataset import load_timeseries
from mvpa_flows.core.data.samples import build_sample_table, read_events
from mvpa_flows.core.errors import InputValidationError
from mvpa_flows.core.stats.group import group_searchlight_stats


def _out(runtime, name):
    return os.path.join(runtime.cwd, name)


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


class _AlignmentInputSpec(BaseInterfaceInputSpec):
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
    confounds_used = traits.List(
        traits.List(traits.Str), desc="confound columns regressed out, per subject"
    )
    cleaning = traits.Dict(desc="cleaning settings for the sidecars (Detrend, Standardize, ...)")


class _AlignmentOutputSpec(TraitedSpec):
    transform_files = traits.List(File(exists=True), desc="one map (.h5) per subject written")
    scores_file = File(exists=True, desc="between-subject classification table (.tsv)")
    isc_anatomical = File(desc="group ISC before alignment (NIfTI; segments mode)")
    isc_aligned = File(desc="group ISC after alignment (NIfTI; segments mode, voxel-wise)")
    metadata = traits.Dict(desc="parameters and results for the sidecars")
    isc_metadata = traits.Dict(desc="ISC parameters and results for the sidecars")


class _HyperalignGroupInputSpec(_AlignmentInputSpec):
    method = traits.Enum("procrustes", "ridge", "srm", usedefault=True, desc="alignment method")
    alignment_params = traits.Dict(desc="parameters of the method's estimator")
    model_metadata = traits.Dict(desc="provenance stored in the model file (task, space, ...)")

    fitted_model = File(
        exists=True,
        desc="the model already fitted on the training files (the merge of searchlight "
        "chunks): evaluated as is, not refitted",
    )


class _HyperalignGroupOutputSpec(_AlignmentOutputSpec):
    model_file = File(exists=True, desc="the fitted alignment model (.h5)")


class HyperalignGroup(SimpleInterface):
    """Fit the alignment on the training runs; evaluate it on the test runs; ISC maps.

    Calls :func:`mvpa_flows.core.alignment.evaluate.hyperalign_and_evaluate` with the
    estimator of :func:`~mvpa_flows.core.alignment.evaluate.alignment_estimator`.
    """

    input_spec = _HyperalignGroupInputSpec
    output_spec = _HyperalignGroupOutputSpec

    def _run_interface(self, runtime):
        estimator = alignment_estimator(self.inputs.method, **self.inputs.alignment_params)
        alignment = estimator
        if isdefined(self.inputs.fitted_model):
            alignment = load_model(self.inputs.fitted_model)
        test = [np.load(f) for f in self.inputs.test_files]
        tables = [pd.read_csv(f, sep="\t") for f in self.inputs.test_samples_files]
        conditions = self.inputs.mode == "conditions"
        result = hyperalign_and_evaluate(
            [np.load(f) for f in self.inputs.train_files],
            test,
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
            alignment=alignment,
        )
        model, scores = result["model"], result["scores"]
        roi = np.asarray(nb.load(self.inputs.roi_mask).dataobj) > 0
        model.voxel_indices = np.flatnonzero(roi.ravel())
        model.roi = roi.astype(np.uint8)
        model.metadata.update(self.inputs.model_metadata or {})
        self._results["model_file"] = str(model.save(_out(runtime, "model.h5")))
        self._results["transform_files"] = _save_maps(
            runtime, model.maps, self.inputs.subjects, model.voxel_indices, roi
        )
        self._results["scores_file"] = _save_scores(runtime, scores)
        self._results["metadata"] = {
            **_alignment_metadata(self.inputs, model, scores, estimator),
            "ReferenceSubject": (
                self.inputs.subjects[int(model.info["ref_ds"])]
                if model.info.get("ref_ds") is not None
                else None
            ),
            "Confounds": _per_subject(self.inputs.subjects, self.inputs.confounds_used),
        }
        aligned = model.transform(test, name="test_datasets")
        _isc_outputs(self, runtime, model, test, aligned, model.maps, roi)
        return runtime


class _SearchlightAlignmentChunkInputSpec(BaseInterfaceInputSpec):
    train_files = traits.List(
        File(exists=True), mandatory=True, desc="training data, one (.npy) per subject"
    )
    method = traits.Enum("procrustes", "ridge", usedefault=True, desc="local maps")
    alignment_params = traits.Dict(
        mandatory=True, desc="searchlight estimator parameters (searchlight_radius, mask_img)"
    )
    chunk_index = traits.Int(0, usedefault=True, desc="which chunk of centres (0-based)")
    n_chunks = traits.Int(1, usedefault=True, desc="number of chunks the centres are split in")


class _SearchlightAlignmentChunkOutputSpec(TraitedSpec):
    partial_file = File(exists=True, desc="the chunk's summed local maps (HDF5 partial)")


class SearchlightAlignmentChunk(SimpleInterface):
    """The local maps of one chunk of searchlight hyperalignment centres.

    Calls :meth:`~mvpa_flows.core.alignment.searchlight.SearchlightHyperalignment.fit_partial`
    and writes the partial with :func:`~mvpa_flows.core.alignment.searchlight.save_partial`;
    :class:`MergeSearchlightAlignment` sums the chunks into the model that a single
    ``fit`` gives, bit for bit. Memory: the training data and this chunk's maps.
    """

    input_spec = _SearchlightAlignmentChunkInputSpec
    output_spec = _SearchlightAlignmentChunkOutputSpec

    def _run_interface(self, runtime):
        estimator = alignment_estimator(self.inputs.method, **self.inputs.alignment_params)
        partial = estimator.fit_partial(
            [np.load(f) for f in self.inputs.train_files],
            chunk=self.inputs.chunk_index,
            n_chunks=self.inputs.n_chunks,
        )
        path = _out(runtime, f"searchlight_alignment_chunk{self.inputs.chunk_index:04d}.h5")
        save_partial(path, partial)
        self._results["partial_file"] = path
        return runtime


class _MergeSearchlightAlignmentInputSpec(BaseInterfaceInputSpec):
    partial_files = traits.List(
        File(exists=True), mandatory=True, desc="one partial per chunk, in chunk order"
    )
    method = traits.Enum("procrustes", "ridge", usedefault=True, desc="local maps")
    alignment_params = traits.Dict(
        mandatory=True, desc="searchlight estimator parameters (as for the chunks)"
    )
    n_chunks = traits.Int(mandatory=True, desc="number of chunks the centres were split in")


class _MergeSearchlightAlignmentOutputSpec(TraitedSpec):
    model_file = File(exists=True, desc="the fitted searchlight model (.h5)")


class MergeSearchlightAlignment(SimpleInterface):
    """Sum the chunks of searchlight hyperalignment into the fitted model.

    Refuses a missing, repeated or foreign chunk (another split, other data or other
    parameters), then calls
    :meth:`~mvpa_flows.core.alignment.searchlight.SearchlightHyperalignment.merge_partials`.
    """

    input_spec = _MergeSearchlightAlignmentInputSpec
    output_spec = _MergeSearchlightAlignmentOutputSpec

    def _run_interface(self, runtime):
        partials = [load_partial(f) for f in self.inputs.partial_files]
        check_searchlight_partials(partials, self.inputs.n_chunks, self.inputs.partial_files)
        estimator = alignment_estimator(self.inputs.method, **self.inputs.alignment_params)
        model = estimator.merge_partials(partials, consume=True).model_
        del partials
        self._results["model_file"] = str(model.save(_out(runtime, "searchlight_model.h5")))
        return runtime


class _MapNewSubjectsInputSpec(_AlignmentInputSpec):
    model_file = File(exists=True, mandatory=True, desc="alignment model of an earlier run")
    new_subjects = traits.List(
        traits.Str, mandatory=True, desc="subjects to map into the model (not its own)"
    )


class _MapNewSubjectsOutputSpec(_AlignmentOutputSpec):
    pass


class MapNewSubjects(SimpleInterface):
    """Map new subjects into a fitted model without refitting it; evaluate them.

    ``subjects``, ``train_files``, ``test_files`` hold the model's subjects (in the
    model's order) and then the new subjects. Calls
    :func:`mvpa_flows.core.alignment.evaluate.evaluate_new_subjects`.
    """

    input_spec = _MapNewSubjectsInputSpec
    output_spec = _MapNewSubjectsOutputSpec

    def _run_interface(self, runtime):
        model = load_model(self.inputs.model_file)
        subjects = list(self.inputs.subjects)
        new = list(self.inputs.new_subjects)
        n_model = len(subjects) - len(new)
        if subjects[:n_model] != list(model.subjects) or subjects[n_model:] != new:
            raise InputValidationError(
                f"`subjects` must list the model's subjects {model.subjects} and then the "
                f"new subjects {new}; got {subjects}."
            )
        train = [np.load(f) for f in self.inputs.train_files[n_model:]]
        test = [np.load(f) for f in self.inputs.test_files]
        tables = [pd.read_csv(f, sep="\t") for f in self.inputs.test_samples_files]
        conditions = self.inputs.mode == "conditions"
        result = evaluate_new_subjects(
            model,
            train,
            test[n_model:],
            test[:n_model],
            new_subjects=new,
            mode=self.inputs.mode,
            test_labels=[t["label"].astype(str).to_numpy() for t in tables]
            if conditions
            else None,
            segment_length=self.inputs.segment_length,
            tr=self.inputs.repetition_time,
        )
        maps, scores = result["maps"], result["scores"]
        roi = np.asarray(nb.load(self.inputs.roi_mask).dataobj) > 0
        voxels = np.flatnonzero(roi.ravel())
        self._results["transform_files"] = _save_maps(runtime, maps, new, voxels, roi)
        self._results["scores_file"] = _save_scores(runtime, scores)
        meta = _alignment_metadata(self.inputs, model, scores, None)
        meta.update(
            ModelSubjects=list(model.subjects),
            NewSubjects=new,
            TrainingRuns=model.metadata.get("train_runs", meta["TrainingRuns"]),
            Confounds=_per_subject(subjects, self.inputs.confounds_used),
        )
        self._results["metadata"] = meta
        all_maps = list(model.maps) + list(maps)
        aligned = model.transform(test[:n_model], name="model_test_datasets") + [
            m.transform(X) for m, X in zip(maps, test[n_model:], strict=True)
        ]
        _isc_outputs(self, runtime, model, test, aligned, all_maps, roi)
        return runtime


def _save_maps(runtime, maps, subjects, voxels, roi):
    files = []
    for subject, transform in zip(subjects, maps, strict=True):
        params = {"subject": subject}
        if "alpha" in transform.info:
            params["alpha"] = float(transform.info["alpha"])
        path = _out(runtime, f"sub-{subject}_xfm.h5")
        save_transform(path, transform, voxel_indices=voxels, roi=roi, params=params)
        files.append(path)
    return files


def _save_scores(runtime, scores):
    path = _out(runtime, "bsc_scores.tsv")
    scores.to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


#: How the sidecars name each method.
METHOD_NAMES = {
    "procrustes": "Procrustes hyperalignment (PyMVPA three levels)",
    "ridge": "ridge hyperalignment (ridge maps onto a common template)",
    "srm": "shared response model",
    "searchlight": "searchlight hyperalignment: local maps summed into one sparse map",
}


def _alignment_metadata(inputs, model, scores, estimator):
    """Sidecar fields shared by fitted and loaded models."""
    conditions = inputs.mode == "conditions"
    params = (
        alignment_parameters(estimator)
        if estimator is not None
        else {k: v for k, v in model.params.items() if k != "n_jobs"}
    )
    meta = {
        "AlignmentMethod": model.method,
        "Type": METHOD_NAMES[model.method],
        "AlignmentParameters": params,
        "NumberOfFeatures": int(np.asarray(nb.load(inputs.roi_mask).dataobj).astype(bool).sum()),
        "ModelDimensions": int(model.n_components),
        "TrainingRuns": list(inputs.train_runs),
        "TestRuns": list(inputs.test_runs),
        "TrainingSamples": int(model.n_samples),
        "BSCMode": inputs.mode,
        "SegmentLength": inputs.segment_length if not conditions else None,
        "RepetitionTime": inputs.repetition_time,
        "MeanAccuracy": {
            k: float(np.nanmean(scores[k]))
            for k in ("anatomical", "hyperaligned", "within_subject")
            if k in scores and scores[k].notna().any()
        },
        "ChanceLevel": float(scores["chance"].iloc[0]),
        "Notes": str(scores.attrs.get("notes", "")),
        **(inputs.cleaning or {}),
    }
    if model.method == "ridge":
        meta["ChosenPenalties"] = [float(m.info["alpha"]) for m in model.maps]
    if model.method == "searchlight":
        meta["SearchlightRadius"] = float(params["radius"])
        sparse = params.get("sparse_radius")
        meta["SearchlightCentres"] = (
            f"{len(model.centres)} centres at least {sparse:g} mm apart"
            if sparse is not None
            else f"every one ({len(model.centres)} centres)"
        )
        if params.get("method") == "ridge":
            meta["ChosenPenalties"] = [float(m.info["alpha"]) for m in model.maps]
    if model.method == "srm":
        meta["RandomSeed"] = params.get("random_state")
    return meta


def _isc_outputs(interface, runtime, model, test, aligned, maps, roi):
    """Group ISC maps (Fisher-z mean over subjects) before and after alignment."""
    results = interface._results
    if interface.inputs.mode != "segments" or len({X.shape for X in test}) != 1:
        results["isc_metadata"] = {}
        return
    isc = isc_maps(model, test, aligned, maps)
    img = nb.load(interface.inputs.roi_mask)
    mask_img = nb.Nifti1Image(roi.astype(np.uint8), img.affine)
    facts = {
        "Statistic": "leave-one-out inter-subject correlation (Pearson r of each subject "
        "with the mean of the others), Fisher-z averaged over subjects",
        "NumberOfSubjects": len(test),
        "TestRuns": list(interface.inputs.test_runs),
        "TestSamples": int(test[0].shape[0]),
        "NumberOfFeatures": int(roi.sum()),
        "AlignmentMethod": model.method,
    }
    for key, r in (("anatomical", isc["anatomical"]), ("aligned", isc["aligned"])):
        if r is None:
            continue
        group = mean_isc(r)
        path = _out(runtime, f"isc_{key}.nii.gz")
        unmask(np.nan_to_num(group).astype(np.float32), mask_img).to_filename(path)
        results[f"isc_{key}"] = path
        name = "Anatomical" if key == "anatomical" else "Aligned"
        facts[f"MedianISC{name}"] = float(np.nanmedian(group))
        facts[f"MeanISC{name}PerSubject"] = dict(
            zip(
                [str(s) for s in interface.inputs.subjects],
                [float(v) for v in mean_isc(r.T)],
                strict=True,
            )
        )
    common = (
        "the searchlight common space, whose dimensions are the mask voxels in their own "
        "places (each subject's sparse map mixes only voxels of the spheres around each "
        "voxel)"
        if model.method == "searchlight"
        else "the common space, whose dimensions are the ROI voxels of the reference subject"
    )
    facts["AlignedISCSpace"] = {
        "common": common,
        "subject": "each subject's voxels: the others' aligned data mapped back with the "
        "inverse of the subject's map",
        None: "not voxel-wise (ridge onto a PCA template): no map after alignment",
    }[isc["aligned_space"]]
    results["isc_metadata"] = facts


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

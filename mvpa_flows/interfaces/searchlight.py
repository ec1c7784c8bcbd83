"""Interfaces: searchlight decoding in chunks of spheres, and the merge into maps."""

import json
import logging
import os
import re
import time

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

from mvpa_flows.core.data.samples import sample_groups
from mvpa_flows.core.searchlight import SearchlightResult, merge_results, search_light
from mvpa_flows.core.searchlight.maps import (
    chunk_centres,
    load_adjacency,
    result_from_npz,
    result_to_npz,
    searchlight_metadata,
)
from mvpa_flows.core.searchlight.spec import estimator_from_spec

#: stat- entity of the score map, per scoring
STAT_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balancedAccuracy",
               "roc_auc": "auc"}  # fmt:skip


class _SearchlightChunkInputSpec(BaseInterfaceInputSpec):
    data_file = File(exists=True, mandatory=True, desc="cleaned samples (.npy)")
    samples_file = File(exists=True, mandatory=True, desc="sample table (run, label)")
    mask_file = File(exists=True, mandatory=True, desc="analysis mask of the samples")
    process_mask = traits.Either(
        None,
        File(exists=True),
        default=None,
        usedefault=True,
        desc="mask restricting sphere centres (None: every mask voxel)",
    )
    radius = traits.Float(5.6, usedefault=True, desc="sphere radius in mm")
    estimator = traits.Either(
        traits.Str,
        traits.Dict,
        default="svc",
        usedefault=True,
        desc="estimator name, or {'class': import path, 'params': {...}} of a classifier",
    )
    cv = traits.Str("loro", usedefault=True, desc="'loro' or 'kfold:N'")
    scoring = traits.Str("accuracy", usedefault=True, desc="accuracy, balanced_accuracy, roc_auc")
    n_permutations = traits.Int(0, usedefault=True, desc="label permutations within runs")
    random_seed = traits.Either(
        None, traits.Int, default=None, usedefault=True, desc="seed of permutations and estimators"
    )
    n_chunks = traits.Int(1, usedefault=True, desc="number of chunks the spheres are split in")
    chunk_index = traits.Int(0, usedefault=True, desc="which chunk to compute (0-based)")
    n_jobs = traits.Int(1, usedefault=True, nohash=True, desc="worker processes inside this node")
    verbose = traits.Int(
        0, usedefault=True, nohash=True, desc="print spheres done / total and ETA if > 0"
    )
    heartbeat = traits.Float(
        30.0, usedefault=True, nohash=True, desc="seconds between progress lines in the log"
    )


class _SearchlightChunkOutputSpec(TraitedSpec):
    result_file = File(exists=True, desc="chunk scores, folds, nulls (.npz)")


class SearchlightChunk(SimpleInterface):
    """Cross-validated decoding in one chunk of searchlight spheres.

    Calls :func:`mvpa_flows.core.searchlight.search_light` on the rows of the sphere
    adjacency given by ``chunk_index``; chunks merged by :class:`MergeSearchlight`
    equal the unchunked run bit for bit.
    """

    input_spec = _SearchlightChunkInputSpec
    output_spec = _SearchlightChunkOutputSpec

    def _run_interface(self, runtime):
        A = load_adjacency(self.inputs.mask_file, self.inputs.radius, self.inputs.process_mask)
        samples = pd.read_csv(self.inputs.samples_file, sep="\t")
        result = search_light(
            np.load(self.inputs.data_file, mmap_mode="r"),
            samples["label"].astype(str).to_numpy(),
            estimator_from_spec(self.inputs.estimator, self.inputs.random_seed),
            A,
            groups=sample_groups(samples),
            cv=self.inputs.cv,
            scoring=self.inputs.scoring,
            n_permutations=self.inputs.n_permutations,
            random_state=self.inputs.random_seed,
            n_jobs=self.inputs.n_jobs,
            return_fold_scores=True,
            centres=chunk_centres(A.shape[0], self.inputs.n_chunks, self.inputs.chunk_index),
            verbose=self.inputs.verbose,
            progress=Heartbeat(self._label(), self.inputs.heartbeat),
        )
        self._results["result_file"] = os.path.join(
            runtime.cwd, f"searchlight_chunk{self.inputs.chunk_index:04d}.npz"
        )
        result_to_npz(result, self._results["result_file"])
        return runtime

    def _label(self):
        subject = re.search(r"single_subject_([^_/]+)_wf", os.getcwd())
        chunk = (
            f", chunk {self.inputs.chunk_index + 1}/{self.inputs.n_chunks}"
            if self.inputs.n_chunks > 1
            else ""
        )
        return f"searchlight{f' sub-{subject[1]}' if subject else ''}{chunk}"


def _duration(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class Heartbeat:
    """Progress callback of ``search_light``: a log line every ``interval`` seconds.

    Lines go to the ``mvpa_flows.progress`` logger (the run's log, and the terminal when
    the interactive progress line is off): spheres done, time spent, time left.
    """

    def __init__(self, label, interval=30.0):
        self.label, self.interval = label, float(interval)
        self.start = self.last = time.monotonic()

    def __call__(self, done, total):
        now = time.monotonic()
        if now - self.last < self.interval and (done < total or self.last == self.start):
            return
        self.last = now
        elapsed = now - self.start
        left = elapsed / done * (total - done) if done else float("nan")
        logging.getLogger("mvpa_flows.progress").info(
            "%s: %s of %s spheres (%.0f%%), %s elapsed, about %s left",
            self.label,
            f"{done:,}",
            f"{total:,}",
            100 * done / max(total, 1),
            _duration(elapsed),
            _duration(left) if done else "unknown",
        )


class _MergeSearchlightInputSpec(BaseInterfaceInputSpec):
    result_files = traits.List(File(exists=True), mandatory=True, desc="chunk results, in order")
    mask_file = File(exists=True, mandatory=True, desc="analysis mask of the samples")
    samples_file = File(exists=True, mandatory=True, desc="sample table (run, label)")
    process_mask = traits.Either(
        None,
        File(exists=True),
        default=None,
        usedefault=True,
        desc="mask restricting sphere centres",
    )
    radius = traits.Float(mandatory=True, desc="sphere radius in mm")
    estimator = traits.Either(
        traits.Str, traits.Dict, mandatory=True, desc="estimator name or class spec"
    )
    random_seed = traits.Either(
        None, traits.Int, default=None, usedefault=True, desc="seed of permutations and estimators"
    )


class _MergeSearchlightOutputSpec(TraitedSpec):
    score_map = File(exists=True, desc="cross-validated score per sphere centre")
    p_map = File(desc="permutation p-value map (with permutations)")
    stat = traits.Str(desc="stat- entity of the score map")
    metadata = traits.Dict(desc="searchlight parameters and summaries for the sidecars")


class MergeSearchlight(SimpleInterface):
    """Merge chunk results into score and p-value maps with their metadata.

    Calls :func:`mvpa_flows.core.searchlight.merge_results`.
    """

    input_spec = _MergeSearchlightInputSpec
    output_spec = _MergeSearchlightOutputSpec

    def _run_interface(self, runtime):
        result: SearchlightResult = merge_results(
            [result_from_npz(f) for f in self.inputs.result_files]
        )
        mask_img = nb.load(self.inputs.mask_file)
        centres_mask = (
            np.asarray(nb.load(self.inputs.process_mask).dataobj) > 0
            if self.inputs.process_mask
            else np.asarray(mask_img.dataobj) > 0
        ) & (np.asarray(mask_img.dataobj) > 0)
        centres_img = nb.Nifti1Image(centres_mask.astype(np.uint8), mask_img.affine)
        self._results["score_map"] = os.path.join(runtime.cwd, "searchlight_scores.nii.gz")
        unmask(result.scores.astype(np.float32), centres_img).to_filename(
            self._results["score_map"]
        )
        if result.pvalues is not None:
            self._results["p_map"] = os.path.join(runtime.cwd, "searchlight_p.nii.gz")
            unmask(result.pvalues.astype(np.float32), centres_img).to_filename(
                self._results["p_map"]
            )
        labels = pd.read_csv(self.inputs.samples_file, sep="\t")["label"].astype(str)
        self._results["stat"] = STAT_LABELS[result.scoring]
        self._results["metadata"] = searchlight_metadata(
            result,
            radius=self.inputs.radius,
            estimator=estimator_from_spec(self.inputs.estimator, self.inputs.random_seed),
            random_seed=self.inputs.random_seed,
            labels=labels,
        )
        self._results["metadata"]["Estimator"] = self.inputs.estimator
        with open(os.path.join(runtime.cwd, "metadata.json"), "w") as handle:
            json.dump(self._results["metadata"], handle, indent=2, sort_keys=True)
        return runtime

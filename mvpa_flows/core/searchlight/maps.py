"""Glue between searchlight results, images and files (chunks, maps, metadata)."""

from __future__ import annotations

from importlib.metadata import version

import nibabel as nb
import numpy as np

from mvpa_flows.core.data.cleaning import check_same_grid
from mvpa_flows.core.searchlight import SearchlightResult, resolve_estimator
from mvpa_flows.core.searchlight.neighbourhoods import sphere_adjacency

_ARRAYS = ("scores", "fold_scores", "null_scores", "pvalues", "sphere_sizes", "centres",
           "classes")  # fmt:skip
_SCALARS = ("engine", "n_folds", "chance_level", "scoring", "cv", "n_permutations")


def load_adjacency(mask_file, radius, process_mask_file=None):
    """Sphere x voxel adjacency of ``mask_file`` (centres from ``process_mask_file``)."""
    mask_img = nb.load(mask_file)
    process = None
    if process_mask_file:
        process_img = nb.load(process_mask_file)
        check_same_grid(
            process_img,
            mask_img,
            f"--process-mask {process_mask_file}",
            "the analysis mask (the BOLD grid)",
        )
        process = np.asarray(process_img.dataobj) > 0
    return sphere_adjacency(np.asarray(mask_img.dataobj) > 0, mask_img.affine, radius, process)


def chunk_centres(n_centres, n_chunks, index):
    """Row indices of chunk ``index`` when ``n_centres`` spheres are split in ``n_chunks``."""
    if not 0 <= index < n_chunks:
        raise ValueError(f"chunk index {index} is outside 0..{n_chunks - 1}.")
    return np.array_split(np.arange(n_centres), n_chunks)[index]


def result_to_npz(result: SearchlightResult, path):
    """Store a (chunk) result as a plain ``.npz`` (no pickles)."""
    arrays = {name: getattr(result, name) for name in _ARRAYS if getattr(result, name) is not None}
    if "classes" in arrays:
        arrays["classes"] = np.asarray(arrays["classes"]).astype(str)
    scalars = {name: np.asarray(getattr(result, name)) for name in _SCALARS}
    np.savez(path, **arrays, **scalars)


def result_from_npz(path) -> SearchlightResult:
    """Read a result written by :func:`result_to_npz`."""
    with np.load(path, allow_pickle=False) as data:
        values = {name: data[name] for name in _ARRAYS if name in data}
        values.update({name: data[name].item() for name in _SCALARS})
    return SearchlightResult(**values)


def searchlight_metadata(result: SearchlightResult, radius, estimator, random_seed, labels):
    """Sidecar content: every parameter of the run and summaries for the report."""
    labels = np.asarray(labels).astype(str)
    names, counts = np.unique(labels, return_counts=True)
    sizes = np.asarray(result.sphere_sizes)
    meta = {
        "Estimator": estimator,
        "EstimatorDefinition": repr(resolve_estimator(estimator, random_state=random_seed)),
        "Engine": result.engine,
        "CrossValidation": result.cv,
        "NumberOfFolds": int(result.n_folds),
        "Scoring": result.scoring,
        "Radius": float(radius),
        "RadiusUnits": "mm",
        "SphereSize": {
            "Mean": float(sizes.mean()),
            "Min": int(sizes.min()),
            "Max": int(sizes.max()),
        },
        "SphereSizeHistogram": _histogram(sizes, bins=min(20, max(1, int(np.ptp(sizes)) + 1))),
        "NumberOfSpheres": int(sizes.size),
        "ChanceLevel": float(result.chance_level),
        "Labels": names.tolist(),
        "LabelCounts": {n: int(c) for n, c in zip(names, counts, strict=True)},
        "NumberOfPermutations": int(result.n_permutations),
        "RandomSeed": random_seed,
        "MeanScore": float(np.mean(result.scores)),
        "MaxScore": float(np.max(result.scores)),
        "SoftwareVersions": {
            pkg: version(pkg)
            for pkg in ("mvpa_flows", "scikit-learn", "nilearn", "numpy", "scipy")
        },
    }
    if result.fold_scores is not None:
        meta["FoldMeanScores"] = [float(v) for v in np.mean(result.fold_scores, axis=1)]
    if result.null_scores is not None and result.null_scores.size:
        meta["NullDistribution"] = _histogram(result.null_scores.ravel(), bins=30)
        meta["NullMaxScores"] = [float(v) for v in result.null_scores.max(axis=1)]
        meta["PValue"] = "(1 + #(null >= observed)) / (1 + NumberOfPermutations), per sphere"
    return meta


def _histogram(values, bins):
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins)
    return {"Counts": counts.tolist(), "BinEdges": [float(e) for e in edges]}

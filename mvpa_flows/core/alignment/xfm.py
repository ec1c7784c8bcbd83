"""Save and load one subject's alignment map as HDF5 (``*_xfm.h5``).

Layout (a plain, documented HDF5 file; nothing pickled)::

    /matrix          (n_voxels_source, n_voxels_target) dense rotation R   [dense maps]
    /left, /right    factors with R = left @ right.T                       [factored maps]
    /source_mean     (n_voxels_source,)  input offset
    /source_scale    optional (n_voxels_source,) per-voxel factor after centring
    /target_mean     (n_voxels_target,)  output offset
    /voxel_indices   (n_voxels_source,)  optional: flat indices of the voxels in the mask
    /roi             optional: ROI mask array (e.g. the 3-D analysis mask)
    attrs: format="mvpa_flows-procrustes-xfm", format_version, scale, rank, kind,
           shape, map_kind ("procrustes" | "ridge" | "srm"; absent: procrustes), and one
           attribute per entry of ``params`` (JSON-encoded when not scalar)

``transform(x) = scale * ((x - source_mean) * source_scale) @ R + target_mean``. The file
is written to a temporary name in the same folder and renamed, so a crash never leaves
half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np

from mvpa_flows.core.alignment.maps import MAP_KINDS, LinearMap
from mvpa_flows.core.alignment.procrustes import ProcrustesMap
from mvpa_flows.core.errors import InputValidationError

__all__ = ["save_transform", "load_transform", "FORMAT", "FORMAT_VERSION"]

FORMAT = "mvpa_flows-procrustes-xfm"
FORMAT_VERSION = "1.0"
_RESERVED = {"format", "format_version", "scale", "rank", "kind", "shape", "map_kind"}


def _attr_value(value):
    if isinstance(value, (str, bool, int, float, np.integer, np.floating, np.bool_)):
        return value
    if value is None:
        return "null"
    return json.dumps(value, default=str)


def _attr_back(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        if value == "null":
            return None
        if value[:1] in "[{":
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_transform(path, transform, voxel_indices=None, roi=None, params=None, compression="gzip"):
    """Write one subject's map (plus voxel indices / ROI and parameters) to ``path``.

    ``transform`` is a :class:`ProcrustesMap`, ``RidgeMap`` or ``SRMMap`` (any
    :class:`~mvpa_flows.core.alignment.maps.LinearMap`: ``Hyperalignment.transforms_``,
    ``AlignmentModel.maps``, ``fit_subject``), or a searchlight hyperalignment
    :class:`~mvpa_flows.core.alignment.searchlight.SparseTransform`, written in its own
    sparse layout (``roi`` is then the analysis mask and required).
    """
    from mvpa_flows.core.alignment.searchlight import SparseTransform

    if isinstance(transform, SparseTransform):
        from mvpa_flows.core.alignment import searchlight

        if roi is None:
            raise InputValidationError(
                "A searchlight transform is written with its analysis mask; pass `roi` "
                "(the 3-D mask whose voxels, in order, are the transform's rows)."
            )
        return searchlight.save_transform(path, transform, roi, None, params, compression)
    if not isinstance(transform, LinearMap):
        raise InputValidationError(
            f"`transform` must be a fitted map (ProcrustesMap, RidgeMap or SRMMap, from "
            f"procrustes(), Hyperalignment.transforms_ or fit_subject); got "
            f"{type(transform).__name__}."
        )
    path = Path(path)
    if path.suffix != ".h5":
        raise InputValidationError(f"`path` must end in .h5 (BIDS '_xfm.h5'); got {path.name!r}.")
    if voxel_indices is not None:
        voxel_indices = np.asarray(voxel_indices)
        if voxel_indices.shape != (transform.shape[0],):
            raise InputValidationError(
                f"`voxel_indices` must have one entry per source voxel "
                f"({transform.shape[0]}); got shape {voxel_indices.shape}."
            )
    params = dict(transform.params, **(params or {}))
    clash = _RESERVED & set(params)
    if clash:
        raise InputValidationError(f"`params` may not use reserved names {sorted(clash)}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".h5.tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            left, right = transform.factors
            if right is None:
                f.create_dataset("matrix", data=left, compression=compression)
            else:
                f.create_dataset("left", data=left, compression=compression)
                f.create_dataset("right", data=right, compression=compression)
            f.create_dataset("source_mean", data=transform.source_mean)
            f.create_dataset("target_mean", data=transform.target_mean)
            if transform.source_scale is not None:
                f.create_dataset("source_scale", data=transform.source_scale)
            if voxel_indices is not None:
                f.create_dataset("voxel_indices", data=voxel_indices)
            if roi is not None:
                f.create_dataset("roi", data=np.asarray(roi), compression=compression)
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["scale"] = transform.scale
            f.attrs["rank"] = transform.rank
            f.attrs["kind"] = "factored" if right is not None else "dense"
            f.attrs["shape"] = np.asarray(transform.shape)
            f.attrs["map_kind"] = transform.kind
            for key, value in params.items():
                f.attrs[key] = _attr_value(value)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_transform(path):
    """Read a transform written by :func:`save_transform`.

    Returns
    -------
    transform : LinearMap or SparseTransform
        ``ProcrustesMap``, ``RidgeMap`` or ``SRMMap``, as written (a searchlight file gives
        a ``SparseTransform``; its ``info`` also has ``mask`` and ``affine``)
    info : dict with ``voxel_indices`` and ``roi`` (or None) and ``params`` (attributes)
    """
    path = Path(path)
    if not path.exists():
        raise InputValidationError(f"No transform file at {path}.")
    with h5py.File(path, "r") as f:
        found = _attr_back(f.attrs.get("format"))
    from mvpa_flows.core.alignment import searchlight

    if found == searchlight.FORMAT_TRANSFORM:
        return searchlight.load_transform(path)
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise InputValidationError(
                f"{path} is not an mvpa_flows Procrustes transform (attribute format="
                f"{f.attrs.get('format')!r}, expected {FORMAT!r})."
            )
        params = {k: _attr_back(v) for k, v in f.attrs.items() if k not in _RESERVED}
        kw = {}
        if "matrix" in f:
            kw["dense"] = f["matrix"][()]
        else:
            kw["left"], kw["right"] = f["left"][()], f["right"][()]
        kind = _attr_back(f.attrs.get("map_kind", "procrustes"))
        transform = MAP_KINDS.get(kind, ProcrustesMap)(
            float(f.attrs["scale"]),
            f["source_mean"][()],
            f["target_mean"][()],
            rank=int(f.attrs["rank"]),
            params=params,
            source_scale=f["source_scale"][()] if "source_scale" in f else None,
            **kw,
        )
        info = {
            "voxel_indices": f["voxel_indices"][()] if "voxel_indices" in f else None,
            "roi": f["roi"][()] if "roi" in f else None,
            "params": params,
            "format_version": _attr_back(f.attrs["format_version"]),
        }
    return transform, info

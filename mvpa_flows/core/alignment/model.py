"""The fitted alignment model: common space, per-subject maps, provenance; HDF5 files.

One object serves evaluation, new subjects and the app, whatever the method
(Procrustes hyperalignment, ridge hyperalignment, shared response model)::

    model = Hyperalignment().fit(train).model_      # or SharedResponseModel(...).fit(...)
    model.transform(test)                           # the fitted subjects, new samples
    new = model.fit_subject(X_new_train)            # a new subject, same training stimulus
    new.transform(X_new_test)
    model.save("model.h5"); load_model("model.h5", task="movie", space="MNI152NLin6Asym")

HDF5 layout (plain arrays and attributes; nothing pickled)::

    /                 attrs: format="mvpa_flows-alignment-model", format_version,
                      method ("procrustes" | "ridge" | "srm"), n_subjects, n_samples,
                      n_components, params (JSON), info (JSON), metadata (JSON: task,
                      space, training runs, tr, ...), mvpa_flows_version
    /template         (n_samples, n_components) the common space over the training samples
                      (Procrustes/ridge: the hyperalignment template; SRM: the shared
                      response)
    /subjects         (n_subjects,) subject labels (UTF-8)
    /maps/<i>         one group per subject, in order: attrs kind ("procrustes" | "ridge" |
                      "srm"), scale, rank, info (JSON); datasets ``matrix`` (dense) or
                      ``left``/``right`` (W = left @ right.T), ``source_mean``,
                      ``target_mean``, optional ``source_scale``
    /voxel_indices    optional (n_voxels,) flat indices of the ROI voxels
    /roi              optional ROI mask array

``map.transform(x) = scale * ((x - source_mean) * source_scale) @ W + target_mean``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mvpa_flows.core.alignment.maps import MAP_KINDS, LinearMap, SRMMap, _as_2d
from mvpa_flows.core.errors import InputValidationError

__all__ = [
    "AlignmentModel",
    "check_model_metadata",
    "load_model",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
]

MODEL_FORMAT = "mvpa_flows-alignment-model"
MODEL_FORMAT_VERSION = "1.0"
#: Searchlight hyperalignment models (sparse maps; see ``core.alignment.searchlight``).
SEARCHLIGHT_MODEL_FORMAT = "mvpa_flows-searchlight-model"
METHODS = ("procrustes", "ridge", "srm")


def _json(value):
    return json.dumps(value, default=_json_default, sort_keys=True)


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


class AlignmentModel:
    """A fitted common space and one map per subject into it.

    Parameters
    ----------
    method : {"procrustes", "ridge", "srm"}
    template : ndarray (n_samples, n_components)
        The common space over the training samples; new subjects are fitted to it.
    maps : list of LinearMap
        One map per fitted subject, in order.
    params : dict
        The estimator's parameters (what :meth:`fit_subject` reuses).
    info : dict, optional
        Fit details (reference subject, residuals, chosen penalties, SRM variances).
    subjects : list of str, optional
        Subject labels (default "0", "1", ...).
    metadata : dict, optional
        Provenance for files and checks: ``task``, ``space``, ``train_runs``, ``tr``, ...
    voxel_indices, roi : ndarray, optional
        Where the voxels come from (flat indices in the ROI grid, the ROI mask).
    """

    #: The ``method`` values this class holds (a subclass with other maps sets its own).
    methods = METHODS

    def __init__(
        self,
        method,
        template,
        maps,
        params=None,
        info=None,
        subjects=None,
        metadata=None,
        voxel_indices=None,
        roi=None,
    ):
        if method not in self.methods:
            raise ValueError(f"method must be one of {self.methods}; got {method!r}.")
        self.method = method
        self.template = np.asarray(template, dtype=np.float64)
        self.maps = list(maps)
        self.params = dict(params or {})
        self.info = dict(info or {})
        self.subjects = (
            [str(s) for s in subjects]
            if subjects is not None
            else [str(i) for i in range(len(self.maps))]
        )
        if len(self.subjects) != len(self.maps):
            raise ValueError(f"{len(self.subjects)} subject labels for {len(self.maps)} maps.")
        self.metadata = dict(metadata or {})
        self.voxel_indices = None if voxel_indices is None else np.asarray(voxel_indices)
        self.roi = None if roi is None else np.asarray(roi)

    # -- shape ---------------------------------------------------------------------
    @property
    def n_subjects(self):
        return len(self.maps)

    @property
    def n_samples(self):
        """Training samples (time points) every new subject must provide."""
        return self.template.shape[0]

    @property
    def n_components(self):
        """Dimensions of the common space."""
        return self.template.shape[1]

    @property
    def n_features_per_subject(self):
        return [int(m.shape[0]) for m in self.maps]

    def __repr__(self):
        return (
            f"AlignmentModel(method={self.method!r}, n_subjects={self.n_subjects}, "
            f"n_samples={self.n_samples}, n_components={self.n_components})"
        )

    # -- mapping -------------------------------------------------------------------
    def transform(self, datasets, name="datasets"):
        """Map each fitted subject's data (any number of samples) into the common space."""
        data = self._per_subject(datasets, name)
        return [m.transform(X) for m, X in zip(self.maps, data, strict=True)]

    def inverse_transform(self, datasets, name="datasets"):
        """Map common-space data (one array per subject) back into each subject's voxels."""
        data = self._per_subject(datasets, name, inverse=True)
        return [m.inverse_transform(Y) for m, Y in zip(self.maps, data, strict=True)]

    def _per_subject(self, datasets, name, inverse=False):
        if isinstance(datasets, np.ndarray) and datasets.ndim == 3:
            datasets = list(datasets)
        if not isinstance(datasets, (list, tuple)) or len(datasets) != self.n_subjects:
            got = len(datasets) if isinstance(datasets, (list, tuple)) else type(datasets)
            raise InputValidationError(
                f"`{name}` must be a list with one array per fitted subject "
                f"({self.n_subjects}: {self.subjects}); got {got}. Pass the subjects in "
                "the order used in fit, or map a new subject with fit_subject."
            )
        for i, (m, X) in enumerate(zip(self.maps, datasets, strict=True)):
            X = np.asarray(X)
            width = m.shape[1] if inverse else m.shape[0]
            if X.ndim != 2 or X.shape[1] != width:
                what = (
                    "the common space"
                    if inverse
                    else f"the training data of subject {self.subjects[i]}"
                )
                raise InputValidationError(
                    f"`{name}[{i}]` must be (n_samples, {width}) like {what}; got shape {X.shape}."
                )
        return datasets

    # -- new subjects --------------------------------------------------------------
    def check_new_subject(self, X, name="X"):
        """``X`` as float64 after checking it against what the model expects."""
        X = _as_2d(X, name)
        if X.shape[0] != self.n_samples:
            raise InputValidationError(
                f"`{name}` has {X.shape[0]} training samples but the model was fitted on "
                f"{self.n_samples}; a new subject must provide the same training samples "
                "(the same stimulus time points, same run and length) as the model's "
                "subjects."
            )
        voxels = set(self.n_features_per_subject)
        if len(voxels) == 1 and X.shape[1] != next(iter(voxels)):
            raise InputValidationError(
                f"`{name}` has {X.shape[1]} voxels but the model's subjects have "
                f"{next(iter(voxels))} (the model's ROI); extract the new subject's data "
                "with the same ROI mask."
            )
        if not np.isfinite(X).all():
            raise InputValidationError(
                f"`{name}` contains NaN or infinite values; mask or impute them first."
            )
        if not np.any(X.std(axis=0) > 0):
            raise InputValidationError(
                f"`{name}` has no voxel that varies over samples; check its mask and run."
            )
        return X

    def fit_subject(self, X):
        """Fit the map of a new subject into this (unchanged) common space.

        Parameters
        ----------
        X : array (n_samples, n_voxels)
            The new subject's data on the model's training samples.

        Returns
        -------
        LinearMap
            :class:`ProcrustesMap`, :class:`RidgeMap` or :class:`SRMMap` (the method's
            own map, fitted exactly as the model's subjects were fitted to the final
            common space).
        """
        X = self.check_new_subject(X)
        if self.method == "procrustes":
            from mvpa_flows.core.alignment.hyperalignment import fit_procrustes_map

            return fit_procrustes_map(X, self.template, self.params)
        if self.method == "ridge":
            from mvpa_flows.core.alignment.ridge import ridge_map

            return ridge_map(
                X,
                self.template,
                alphas=self.params.get("alphas"),
                cv_blocks=self.params.get("cv_blocks", 5),
                params={"method": "ridge"},
            )
        from mvpa_flows.core.alignment.srm import srm_basis

        mean = X.mean(axis=0)
        W = srm_basis(X - mean, self.template)
        return SRMMap(1.0, mean, np.zeros(self.n_components), dense=W, params={"method": "srm"})

    # -- files ---------------------------------------------------------------------
    def _write_header(self, f, file_format, format_version, compression):
        """What every model file holds: format, sizes, parameters, template, subjects."""
        import h5py

        from mvpa_flows import __version__

        f.attrs["format"] = file_format
        f.attrs["format_version"] = format_version
        f.attrs["method"] = self.method
        f.attrs["n_subjects"] = self.n_subjects
        f.attrs["n_samples"] = self.n_samples
        f.attrs["n_components"] = self.n_components
        f.attrs["params"] = _json(self.params)
        f.attrs["info"] = _json(self.info)
        f.attrs["metadata"] = _json(self.metadata)
        f.attrs["mvpa_flows_version"] = __version__
        f.create_dataset("template", data=self.template, compression=compression)
        f.create_dataset("subjects", data=np.array(self.subjects, dtype=h5py.string_dtype()))

    def save(self, path, compression="gzip"):
        """Write the model to ``path`` (HDF5, layout in the module docstring), atomically."""
        import h5py

        from mvpa_flows.core.io import atomic_path

        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            self._write_header(f, MODEL_FORMAT, MODEL_FORMAT_VERSION, compression)
            group = f.create_group("maps")
            for i, m in enumerate(self.maps):
                g = group.create_group(str(i))
                g.attrs["kind"] = m.kind
                g.attrs["scale"] = m.scale
                g.attrs["rank"] = m.rank
                g.attrs["info"] = _json(m.info)
                g.attrs["params"] = _json(m.params)
                left, right = m.factors
                if right is None:
                    g.create_dataset("matrix", data=left, compression=compression)
                else:
                    g.create_dataset("left", data=left, compression=compression)
                    g.create_dataset("right", data=right, compression=compression)
                g.create_dataset("source_mean", data=m.source_mean)
                g.create_dataset("target_mean", data=m.target_mean)
                if m.source_scale is not None:
                    g.create_dataset("source_scale", data=m.source_scale)
            if self.voxel_indices is not None:
                f.create_dataset("voxel_indices", data=self.voxel_indices)
            if self.roi is not None:
                f.create_dataset("roi", data=self.roi, compression=compression)
        return Path(path)

    @classmethod
    def load(cls, path, task=None, space=None):
        """Read a model written by :meth:`save` (see :func:`load_model`)."""
        return load_model(path, task=task, space=space)


def _read_map(g):
    kind = g.attrs["kind"]
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    cls = MAP_KINDS.get(kind, LinearMap)
    kw = {}
    if "matrix" in g:
        kw["dense"] = g["matrix"][()]
    else:
        kw["left"], kw["right"] = g["left"][()], g["right"][()]
    return cls(
        float(g.attrs["scale"]),
        g["source_mean"][()],
        g["target_mean"][()],
        rank=int(g.attrs["rank"]),
        params=json.loads(g.attrs["params"]),
        info=json.loads(g.attrs["info"]),
        source_scale=g["source_scale"][()] if "source_scale" in g else None,
        **kw,
    )


def check_model_metadata(path, metadata, task=None, space=None):
    """Refuse a model file whose recorded ``task``/``space`` differ from the wanted ones."""
    wanted = {"task": task, "space": space}
    wrong = {
        k: (metadata.get(k), v)
        for k, v in wanted.items()
        if v is not None and metadata.get(k) is not None and str(metadata[k]) != str(v)
    }
    if wrong:
        have = ", ".join(f"{k} '{a}'" for k, (a, _) in wrong.items())
        want = ", ".join(f"{k} '{b}'" for k, (_, b) in wrong.items())
        raise InputValidationError(
            f"{path} is a model of {have}, not of {want}: its common space cannot "
            "hold these subjects. Use a model fitted on the same task and space, or "
            "fit a new one."
        )


def load_model(path, task=None, space=None):
    """Read an :class:`AlignmentModel` from HDF5; refuse one from another task or space.

    Searchlight hyperalignment models (written by ``SearchlightModel.save``) are read
    as :class:`~mvpa_flows.core.alignment.searchlight.SearchlightModel`.

    Parameters
    ----------
    path : str or Path
        A file written by :meth:`AlignmentModel.save`.
    task, space : str, optional
        When given, the model's recorded ``task``/``space`` (``metadata``) must match.

    Raises
    ------
    InputValidationError
        Missing file, not a model file, or a model of another task or space.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputValidationError(
            f"No alignment model at {path}; pass the model file written by an earlier fit "
            "(AlignmentModel.save)."
        )
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise InputValidationError(
            f"{path} is not an HDF5 alignment model ({err}); pass a file written by "
            "AlignmentModel.save."
        ) from None
    with f:
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt == SEARCHLIGHT_MODEL_FORMAT:
            from mvpa_flows.core.alignment.searchlight import read_searchlight_model

            return read_searchlight_model(f, path, task=task, space=space)
        if fmt != MODEL_FORMAT:
            raise InputValidationError(
                f"{path} is not an mvpa_flows alignment model (format={fmt!r}, expected "
                f"{MODEL_FORMAT!r}); pass a file written by AlignmentModel.save."
            )
        metadata = json.loads(f.attrs["metadata"])
        check_model_metadata(path, metadata, task=task, space=space)
        subjects = [s.decode() if isinstance(s, bytes) else str(s) for s in f["subjects"][()]]
        maps = [_read_map(f["maps"][str(i)]) for i in range(int(f.attrs["n_subjects"]))]
        method = f.attrs["method"]
        return AlignmentModel(
            method.decode() if isinstance(method, bytes) else str(method),
            f["template"][()],
            maps,
            params=json.loads(f.attrs["params"]),
            info=json.loads(f.attrs["info"]),
            subjects=subjects,
            metadata=metadata,
            voxel_indices=f["voxel_indices"][()] if "voxel_indices" in f else None,
            roi=f["roi"][()] if "roi" in f else None,
        )

"""Group level on arrays: alignment fitted once, evaluated between subjects; new subjects."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mvpa_flows.core.alignment.bsc import _Spec, evaluate_alignment, score_aligned
from mvpa_flows.core.alignment.hyperalignment import DEFAULT_PARAMS
from mvpa_flows.core.errors import InputValidationError

__all__ = [
    "ALIGNMENT_METHODS",
    "alignment_estimator",
    "alignment_parameters",
    "check_alignment",
    "check_searchlight_partials",
    "evaluate_new_subjects",
    "hyperalign_and_evaluate",
]

#: The alignment methods, by name: Procrustes and ridge hyperalignment, shared response.
ALIGNMENT_METHODS = ("procrustes", "ridge", "srm")


def hyperalign_and_evaluate(
    train_datasets,
    test_datasets,
    subjects,
    mode="segments",
    test_labels=None,
    test_groups=None,
    segment_length=18.0,
    tr=None,
    train_runs=None,
    test_runs=None,
    hyperalignment_params=None,
    alignment=None,
):
    """Fit the group's common space on the training runs (once) and score it on the test
    runs; every input is validated before the fit.

    Parameters
    ----------
    train_datasets, test_datasets : lists of (n_samples, n_voxels) arrays, one per subject
        Alignment data (the same time points for everyone) and independent test data.
    subjects : list of str
        Subject labels, for the table and the model.
    mode, test_labels, test_groups, segment_length, tr, train_runs, test_runs
        See :func:`mvpa_flows.core.alignment.bsc.between_subject_classification`.
    hyperalignment_params : dict or None
        Parameters of :class:`~mvpa_flows.core.alignment.hyperalignment.Hyperalignment`.
    alignment : estimator, optional
        Another alignment method (e.g. ``SharedResponseModel(50)``), instead of
        ``hyperalignment_params``.

    Returns
    -------
    dict
        ``model`` (the fitted :class:`~mvpa_flows.core.alignment.model.AlignmentModel`,
        with ``subjects`` and the runs and timing in ``metadata``), ``scores`` (a
        DataFrame, one row per subject: anatomical, hyperaligned, within_subject, chance
        and counts) and ``fit`` (a summary with ``template``, ``transforms``, ``ref_ds``,
        ``params``).
    """
    scores, model = evaluate_alignment(
        train_datasets,
        test_datasets,
        mode=mode,
        test_labels=test_labels,
        test_groups=test_groups,
        segment_length=segment_length,
        tr=tr,
        hyperalignment_params=hyperalignment_params,
        subject_labels=list(subjects),
        train_runs=train_runs,
        test_runs=test_runs,
        alignment=alignment,
    )
    model.subjects = [str(s) for s in subjects]
    model.metadata.update(
        {
            k: v
            for k, v in {
                "train_runs": None if train_runs is None else list(train_runs),
                "test_runs": None if test_runs is None else list(test_runs),
                "tr": tr,
            }.items()
            if v is not None
        }
    )
    fit = {
        "template": model.template,
        "transforms": model.maps,
        "ref_ds": model.info.get("ref_ds"),
        "params": (
            {k: model.params[k] for k in DEFAULT_PARAMS}
            if model.method == "procrustes"
            else {k: v for k, v in model.params.items() if k != "n_jobs"}
        ),
        "method": model.method,
    }
    return {"fit": fit, "model": model, "scores": scores}


def evaluate_new_subjects(
    model,
    new_train_datasets,
    new_test_datasets,
    model_test_datasets,
    new_subjects=None,
    mode="segments",
    test_labels=None,
    segment_length=18.0,
    tr=None,
    estimator=None,
):
    """Map new subjects into a fitted model (without refitting it) and score them against
    the model's subjects.

    Parameters
    ----------
    model : AlignmentModel or fitted estimator
    new_train_datasets : list of (n_samples, n_voxels) arrays
        The new subjects' data on the model's training samples (same stimulus).
    new_test_datasets : list of arrays
        The new subjects' test data.
    model_test_datasets : list of arrays
        The model subjects' test data (the same test samples), one per model subject.
    new_subjects : list of str, optional
        Labels of the new subjects.
    mode, test_labels, segment_length, tr, estimator
        As :func:`~mvpa_flows.core.alignment.bsc.between_subject_classification`;
        ``test_labels`` (conditions mode) is one array for all or a list with the model
        subjects first, then the new subjects.

    Returns
    -------
    dict
        ``maps`` (one fitted map per new subject) and ``scores`` (one row per new subject:
        ``anatomical`` and ``hyperaligned`` against the mean of the model's subjects).
    """
    model = getattr(model, "model_", model)
    new_train = list(new_train_datasets)
    new_test = [np.asarray(X, dtype=np.float64) for X in new_test_datasets]
    if len(new_train) != len(new_test) or not new_train:
        raise InputValidationError(
            f"`new_train_datasets` ({len(new_train)}) and `new_test_datasets` "
            f"({len(new_test)}) must hold the same, at least one, new subjects."
        )
    model_test = [np.asarray(X, dtype=np.float64) for X in model_test_datasets]
    labels = (
        list(new_subjects)
        if new_subjects is not None
        else [f"new{i}" for i in range(len(new_train))]
    )
    for i, X in enumerate(new_train):
        model.check_new_subject(X, name=f"new_train_datasets[{i}]")
    aligned_model = model.transform(model_test, name="model_test_datasets")
    tests = model_test + new_test
    spec = _Spec(mode, tests, test_labels, None, segment_length, tr, estimator)
    maps = [model.fit_subject(X) for X in new_train]
    for i, (m, X) in enumerate(zip(maps, new_test, strict=True)):
        if X.ndim != 2 or X.shape[1] != m.shape[0]:
            raise InputValidationError(
                f"`new_test_datasets[{i}]` must be (n_samples, {m.shape[0]}) like the new "
                f"subject's training data; got shape {X.shape}."
            )
    aligned = aligned_model + [m.transform(X) for m, X in zip(maps, new_test, strict=True)]
    n_model = len(model_test)
    same = len({X.shape[1] for X in tests}) == 1
    rows = score_aligned(
        aligned,
        tests if same else None,
        spec,
        list(model.subjects) + labels,
        evaluate=range(n_model, n_model + len(new_test)),
        pool=range(n_model),
    )
    scores = pd.DataFrame(rows)
    scores.attrs.update(spec.attrs)
    scores.attrs.update(method=model.method, model_subjects=list(model.subjects))
    return {"maps": maps, "scores": scores}


def alignment_estimator(method="procrustes", searchlight_radius=None, **params):
    """The unfitted estimator of an alignment ``method`` with ``params``.

    Parameters
    ----------
    method : {"procrustes", "ridge", "srm"}
        :class:`~mvpa_flows.core.alignment.hyperalignment.Hyperalignment` with
        ``method="procrustes"`` or ``"ridge"``, or
        :class:`~mvpa_flows.core.alignment.srm.SharedResponseModel`.
    searchlight_radius : float or None, default None
        Sphere radius in mm: whole-mask searchlight hyperalignment
        (:class:`~mvpa_flows.core.alignment.searchlight.SearchlightHyperalignment`,
        Procrustes or ridge local maps) instead of one ROI; needs ``mask_img``.
    **params
        The estimator's parameters (``alphas``, ``cv_blocks``, ``template`` for ridge;
        ``n_components``, ``method``, ``n_iter``, ``random_state`` for SRM, where
        ``srm_method`` is accepted for ``method``; ``mask_img``, ``sparse_radius``,
        ``common_space``, ... for the searchlight).
    """
    from mvpa_flows.core.alignment.hyperalignment import Hyperalignment
    from mvpa_flows.core.alignment.srm import SharedResponseModel

    if method not in ALIGNMENT_METHODS:
        raise InputValidationError(
            f"Parameter 'method' must be one of {list(ALIGNMENT_METHODS)}; got {method!r}."
        )
    params = dict(params)
    if searchlight_radius is not None:
        return _searchlight_estimator(method, searchlight_radius, params)
    if method == "srm":
        if "srm_method" in params:
            params["method"] = params.pop("srm_method")
        cls = SharedResponseModel
    else:
        params["method"] = method
        cls = Hyperalignment
    valid = cls().get_params()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise InputValidationError(
            f"Unknown parameter(s) {unknown} for alignment method {method!r}; valid names "
            f"are {sorted(valid)}."
        )
    return cls(**params)


def _searchlight_estimator(method, radius, params):
    from mvpa_flows.core.alignment.searchlight import SearchlightHyperalignment

    if method == "srm":
        raise InputValidationError(
            "Parameter 'searchlight_radius' applies to method='procrustes' or 'ridge' "
            "(local hyperalignment maps); a shared response model has no searchlight "
            "form. Drop the radius or use method='procrustes'."
        )
    if params.get("mask_img") is None:
        raise InputValidationError(
            "Searchlight hyperalignment (searchlight_radius) needs 'mask_img': the mask "
            "whose voxels (in order) are every subject's data."
        )
    valid = set(SearchlightHyperalignment(None, None).get_params())
    unknown = sorted(set(params) - valid)
    if unknown:
        raise InputValidationError(
            f"Unknown parameter(s) {unknown} for searchlight hyperalignment; valid names "
            f"are {sorted(valid - {'radius', 'method'})}."
        )
    return SearchlightHyperalignment(radius=radius, method=method, **params)


def alignment_parameters(estimator):
    """The parameters that decide an alignment estimator's result, defaults filled in
    (for sidecars and methods text; ``n_jobs`` left out)."""
    from mvpa_flows.core.alignment.ridge import check_alphas

    if type(estimator).__name__ == "SearchlightHyperalignment":
        from mvpa_flows.core.alignment.searchlight import _model_params

        params = _model_params(estimator, estimator._params())
        params.pop("n_jobs")
        params["centres"] = None if estimator.centres is None else "given"
        if params["method"] == "procrustes":
            params.pop("alphas")
            params.pop("cv_blocks")
        return params
    params = {k: v for k, v in estimator.get_params().items() if k != "n_jobs"}
    if type(estimator).__name__ == "SharedResponseModel":
        return params
    if params["method"] == "ridge":
        params["alphas"] = check_alphas(params["alphas"]).tolist()
        keep = ("method", "template", "alphas", "cv_blocks")
        if params["template"] == "procrustes":
            keep += tuple(DEFAULT_PARAMS)
        return {k: params[k] for k in keep}
    return {k: params[k] for k in ("method", *DEFAULT_PARAMS)}


def check_alignment(estimator, n_samples, n_voxels, n_chunks=1):
    """Refuse, before any data are loaded, parameters that the data cannot support.

    Parameters
    ----------
    estimator : Hyperalignment, SharedResponseModel or SearchlightHyperalignment
    n_samples : int
        Training samples (time points) per subject.
    n_voxels : int or list of int
        Voxels per subject (the ROI size).
    n_chunks : int, default 1
        Searchlight hyperalignment: chunks the sphere centres will be split in
        (:meth:`SearchlightHyperalignment.fit_partial`); at most one per centre.

    Raises
    ------
    InputValidationError
        SRM with more components than samples or voxels; ridge with fewer than 3
        contiguous training blocks (or blocks of fewer than 2 samples); bad penalties;
        searchlight: data voxels other than the mask's, single-voxel spheres, ridge
        without a penalty on fewer samples than sphere voxels.
    """
    from mvpa_flows.core.alignment.ridge import check_alphas, contiguous_blocks
    from mvpa_flows.core.alignment.srm import _check_components

    voxels = [int(n_voxels)] if np.ndim(n_voxels) == 0 else [int(v) for v in n_voxels]
    if type(estimator).__name__ == "SearchlightHyperalignment":
        estimator.check_inputs(n_samples, voxels)
        if n_chunks != 1:
            if not isinstance(n_chunks, int) or isinstance(n_chunks, bool) or n_chunks < 1:
                raise InputValidationError(
                    f"Parameter 'n_chunks' must be a positive integer; got {n_chunks!r}."
                )
            n_centres = len(estimator._plan(estimator._params()).centres)
            if n_chunks > n_centres:
                raise InputValidationError(
                    f"Parameter 'n_chunks' ({n_chunks}) exceeds the {n_centres} sphere "
                    "centres of searchlight hyperalignment; use at most that many chunks."
                )
        return estimator
    if type(estimator).__name__ == "SharedResponseModel":
        _check_components(estimator.n_components, int(n_samples), voxels)
        return estimator
    if estimator.method == "ridge":
        check_alphas(estimator.alphas)
        contiguous_blocks(int(n_samples), estimator.cv_blocks)
    return estimator


def check_searchlight_partials(partials, n_chunks, names=None):
    """Refuse a set of searchlight hyperalignment partials that is not every chunk
    ``0 .. n_chunks - 1`` of one split exactly once.

    Parameters
    ----------
    partials : list of SearchlightPartial
        As :meth:`SearchlightHyperalignment.fit_partial` returns them (or
        :func:`~mvpa_flows.core.alignment.searchlight.load_partial` reads them).
    n_chunks : int
        The number of chunks the centres were split in.
    names : list of str, optional
        The partials' files, named in the messages.

    Raises
    ------
    InputValidationError
        A partial of another split, a chunk given twice, or a missing chunk. (Partials
        of other data or parameters are refused by ``merge_partials``.)
    """
    import os

    names = (
        [f"partial {i}" for i in range(len(partials))]
        if names is None
        else [os.path.basename(str(f)) for f in names]
    )
    found = {}
    for name, q in zip(names, partials, strict=True):
        index, total = (int(c) for c in q.chunk)
        if total != n_chunks:
            raise InputValidationError(
                f"{name} is chunk {index + 1} of a split into {total} chunks; expected "
                f"one of {n_chunks} chunks. Compute every chunk with the same `n_chunks`."
            )
        if index in found:
            raise InputValidationError(
                f"{name} and {found[index]} are both chunk {index + 1} of {n_chunks}; pass "
                "every chunk exactly once."
            )
        found[index] = name
    missing = sorted(set(range(n_chunks)) - set(found))
    if missing:
        raise InputValidationError(
            f"Chunk(s) {[i + 1 for i in missing]} of {n_chunks} are missing (got "
            f"{names}); every chunk of the split is needed for the model."
        )

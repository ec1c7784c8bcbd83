"""Group level on arrays: alignment fitted once, evaluated between subjects; new subjects."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mvpa_flows.core.alignment.bsc import _Spec, evaluate_alignment, score_aligned
from mvpa_flows.core.alignment.hyperalignment import DEFAULT_PARAMS
from mvpa_flows.core.errors import InputValidationError

__all__ = ["evaluate_new_subjects", "hyperalign_and_evaluate", "save_template"]


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


def save_template(path, template, voxel_indices=None, params=None):
    """Write the common model (samples x model dimensions) to HDF5, atomically."""
    import h5py

    from mvpa_flows.core.io import atomic_path

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("template", data=np.asarray(template), compression="gzip")
            if voxel_indices is not None:
                handle.create_dataset("voxel_indices", data=np.asarray(voxel_indices))
            handle.attrs["format"] = "mvpa_flows-hyperalignment-model"
            for key, value in (params or {}).items():
                handle.attrs[key] = value if value is not None else "None"
    return path

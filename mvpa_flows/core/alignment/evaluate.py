"""Group level on arrays: hyperalignment with its between-subject evaluation."""

from __future__ import annotations

import numpy as np

from mvpa_flows.core.alignment.bsc import between_subject_classification
from mvpa_flows.core.alignment.hyperalignment import hyperalign


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
):
    """Fit the group's common space on the training runs and score it on the test runs.

    Parameters
    ----------
    train_datasets, test_datasets : lists of (n_samples, n_voxels) arrays, one per subject
        Alignment data (the same time points for everyone) and independent test data.
    subjects : list of str
        Subject labels, for the table.
    mode, test_labels, test_groups, segment_length, tr, train_runs, test_runs
        See :func:`mvpa_flows.core.alignment.bsc.between_subject_classification`.
    hyperalignment_params : dict or None
        Parameters of :func:`mvpa_flows.core.alignment.hyperalignment.hyperalign`.

    Returns
    -------
    dict
        ``fit`` (the output of :func:`hyperalign` on every subject's training data) and
        ``scores`` (a DataFrame, one row per subject: anatomical, hyperaligned,
        within_subject, chance and counts).
    """
    params = dict(hyperalignment_params or {})
    scores = between_subject_classification(
        train_datasets,
        test_datasets,
        mode=mode,
        test_labels=test_labels,
        test_groups=test_groups,
        segment_length=segment_length,
        tr=tr,
        hyperalignment_params=params,
        subject_labels=list(subjects),
        train_runs=train_runs,
        test_runs=test_runs,
    )
    fit = hyperalign([np.asarray(X) for X in train_datasets], **params)
    return {"fit": fit, "scores": scores}


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

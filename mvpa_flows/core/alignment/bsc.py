"""Between-subject classification (BSC) with and without hyperalignment.

Haxby et al. (2011) and PyMVPA's hyperalignment example: a classifier trained on other
people's brains decodes a left-out person. Three numbers per left-out subject:

``anatomical``
    no functional alignment: the subjects' voxels are assumed to correspond (same
    template space and mask); ``NaN`` when the voxel counts differ.
``hyperaligned``
    every subject's test data mapped into the common space estimated on *training* data
    (alignment data independent of the test data: another run or another task).
``within_subject``
    the left-out subject's own data, cross-validated over ``test_groups`` (conditions
    mode); see below for the segments mode.

The hyperalignment is estimated once on every subject's training data, the left-out
subject included (as in Haxby et al., 2011, and the PyMVPA tutorial); this is not
circular because the training data share no samples with the test data. The function
refuses test arrays that are the training arrays (same object, shared memory or
identical values) and overlapping ``train_runs``/``test_runs`` labels.

Modes
-----
``conditions``
    samples carry condition labels (blocks or events; ``test_labels``). The estimator
    (default :class:`sklearn.svm.LinearSVC`) is trained on the other subjects' test
    samples and scores the left-out subject's. Chance = 1 / number of classes.
``segments``
    movie time-segment classification (Haxby et al., 2011): the test time series is cut
    into consecutive non-overlapping segments of ``segment_length`` seconds
    (``round(segment_length / tr)`` volumes, trailing volumes dropped). Each segment of
    the left-out subject, vectorised over (time x features), is matched by Pearson
    correlation against *all* segments of the mean of the other subjects; it is correct
    when the best match is the same segment. Chance = 1 / n_segments.
    ``within_subject`` is ``NaN`` here: a within-subject equivalent would need a second,
    independent viewing of the same segments (a split-half of one viewing matches a
    subject's own noise). Haxby et al. (2011) report within-subject accuracy only for
    the category experiments. The explanation is in ``df.attrs["within_subject_note"]``.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from sklearn.base import clone

from mvpa_flows.core.alignment.hyperalignment import (
    apply_transforms,
    hyperalign,
    validate_datasets,
)
from mvpa_flows.core.errors import InputValidationError

__all__ = ["between_subject_classification", "segment_patterns", "segment_classification_accuracy"]

WITHIN_SEGMENTS_NOTE = (
    "within_subject is not defined in segments mode: it would need an independent "
    "repetition of the same movie segments for the same subject; matching a subject's "
    "segments against themselves is trivially correct, and a split of one viewing "
    "matches the subject's own noise. Reported as NaN."
)


def segment_patterns(X, seg_len):
    """(n_samples, n_features) -> (n_segments, seg_len * n_features), consecutive TRs."""
    n_seg = X.shape[0] // seg_len
    return X[: n_seg * seg_len].reshape(n_seg, seg_len * X.shape[1])


def _standardize_rows(P):
    P = P - P.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(P, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    return P / norm


def segment_classification_accuracy(test, reference):
    """Share of rows of ``test`` whose most correlated row of ``reference`` is itself."""
    r = _standardize_rows(test) @ _standardize_rows(reference).T
    return float(np.mean(np.argmax(r, axis=1) == np.arange(test.shape[0])))


def _check_not_circular(train, test, train_runs, test_runs):
    for i, Xte in enumerate(test):
        for j, Xtr in enumerate(train):
            if Xte is Xtr or (
                isinstance(Xte, np.ndarray)
                and isinstance(Xtr, np.ndarray)
                and np.shares_memory(Xte, Xtr)
            ):
                raise InputValidationError(
                    f"`test_datasets[{i}]` is (or shares memory with) `train_datasets[{j}]`: "
                    "the alignment would be estimated on the test data (circular "
                    "analysis). Estimate hyperalignment on independent data (another run "
                    "or task) and pass that as `train_datasets`."
                )
        Xtr = np.asarray(train[i])
        Xte_a = np.asarray(Xte)
        if Xtr.shape == Xte_a.shape and np.array_equal(Xtr, Xte_a):
            raise InputValidationError(
                f"`test_datasets[{i}]` holds the same values as `train_datasets[{i}]`: "
                "testing on the alignment data is circular. Use a different run or task "
                "for the test data."
            )
    if (train_runs is None) != (test_runs is None):
        raise InputValidationError(
            "Pass both `train_runs` and `test_runs` (the run labels of the alignment and "
            "test data) or neither."
        )
    if train_runs is not None:
        overlap = set(np.ravel(np.asarray(train_runs, dtype=object)).tolist()) & set(
            np.ravel(np.asarray(test_runs, dtype=object)).tolist()
        )
        if overlap:
            raise InputValidationError(
                f"Runs {sorted(map(str, overlap))} are in both `train_runs` and `test_runs`: "
                "alignment and test data must come from different runs (no circular "
                "analysis). Split the runs into disjoint sets."
            )


def _labels_per_subject(labels, test, name):
    n = len(test)
    if labels is None:
        return None
    per_subject = (
        isinstance(labels, (list, tuple))
        and len(labels) == n
        and all(np.ndim(lab) == 1 for lab in labels)
    )
    arr = labels if per_subject else [labels] * n
    out = []
    for i, (lab, X) in enumerate(zip(arr, test, strict=True)):
        lab = np.asarray(lab)
        if lab.shape != (X.shape[0],):
            raise InputValidationError(
                f"`{name}` for subject {i} must have one entry per test sample "
                f"({X.shape[0]}); got shape {lab.shape}. Pass one array shared by all "
                "subjects or a list with one array per subject."
            )
        out.append(lab)
    return out


def between_subject_classification(
    train_datasets,
    test_datasets,
    mode="segments",
    test_labels=None,
    test_groups=None,
    segment_length=18.0,
    tr=None,
    estimator=None,
    hyperalignment_params=None,
    subject_labels=None,
    train_runs=None,
    test_runs=None,
):
    """Leave-one-subject-out classification: anatomical, hyperaligned, within-subject.

    Parameters
    ----------
    train_datasets : list of (n_train_samples, n_voxels_i) arrays
        Alignment data (same samples in the same order for every subject).
    test_datasets : list of (n_test_samples_i, n_voxels_i) arrays
        Test data of the same subjects and voxels, independent of the alignment data.
        In segments mode every subject must have the same time points.
    mode : {"segments", "conditions"}
    test_labels : array or list of arrays, conditions mode
        Condition label per test sample (one array for all subjects or one per subject).
    test_groups : array or list of arrays, optional (conditions mode)
        Group (run) per test sample for the within-subject leave-one-group-out
        cross-validation; without it ``within_subject`` is NaN.
    segment_length : float, default 18.0
        Segment duration in seconds (segments mode; Haxby et al., 2011).
    tr : float, segments mode
        Repetition time in seconds.
    estimator : scikit-learn classifier, default ``LinearSVC()``
    hyperalignment_params : dict, optional
        Parameters of :func:`mvpa_flows.core.alignment.hyperalignment.hyperalign`.
    subject_labels : list of str, optional
        Names for the rows (default "0", "1", ...).
    train_runs, test_runs : sequence, optional
        Run labels of the alignment and the test data; overlapping labels are refused.

    Returns
    -------
    pandas.DataFrame, one row per left-out subject: ``subject``, ``anatomical``,
    ``hyperaligned``, ``within_subject``, ``chance``, ``n_segments`` (segments mode) or
    ``n_samples`` and ``n_classes`` (conditions mode). ``df.attrs`` records the mode,
    parameters and notes.
    """
    if mode not in ("segments", "conditions"):
        raise InputValidationError(f"`mode` must be 'segments' or 'conditions'; got {mode!r}.")
    # Circularity is checked on the raw inputs, before any conversion copies them.
    if not isinstance(test_datasets, (list, tuple)):
        raise InputValidationError(
            "`test_datasets` must be a list of 2-D arrays, one per subject; got "
            f"{type(test_datasets).__name__}."
        )
    if isinstance(train_datasets, (list, tuple)):
        _check_not_circular(train_datasets, test_datasets, train_runs, test_runs)
    train = validate_datasets(train_datasets, "train_datasets")
    n = len(train)
    if len(test_datasets) != n:
        raise InputValidationError(
            f"`test_datasets` has {len(test_datasets)} subjects but `train_datasets` has "
            f"{n}; pass the same subjects in the same order."
        )
    test = []
    for i, X in enumerate(test_datasets):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != train[i].shape[1]:
            raise InputValidationError(
                f"`test_datasets[{i}]` must be (n_samples, {train[i].shape[1]}) with the "
                f"voxels of `train_datasets[{i}]`; got shape {X.shape}."
            )
        test.append(X)
    if subject_labels is None:
        subject_labels = [str(i) for i in range(n)]
    elif len(subject_labels) != n:
        raise InputValidationError(
            f"`subject_labels` has {len(subject_labels)} names for {n} subjects."
        )
    same_voxels = len({X.shape[1] for X in test}) == 1

    hp = dict(hyperalignment_params or {})
    fit = hyperalign(train, **hp)
    aligned = apply_transforms(fit["transforms"], test, fit["zscore_params"])

    attrs = {
        "mode": mode,
        "hyperalignment_params": fit["params"],
        "ref_ds": fit["ref_ds"],
        "anatomical_defined": same_voxels,
    }
    rows = []
    if mode == "segments":
        if tr is None or not isinstance(tr, numbers.Real) or tr <= 0:
            raise InputValidationError(
                f"`tr` (repetition time in seconds) is required in segments mode and must "
                f"be positive; got {tr!r}."
            )
        if len({X.shape[0] for X in test}) != 1:
            raise InputValidationError(
                "In segments mode every subject's test data must have the same time points; "
                f"got {[X.shape[0] for X in test]} samples."
            )
        seg_len = int(round(segment_length / tr))
        n_seg = test[0].shape[0] // max(seg_len, 1)
        if seg_len < 1 or n_seg < 2:
            raise InputValidationError(
                f"`segment_length`={segment_length} s with `tr`={tr} s gives {seg_len} volumes "
                f"per segment and {n_seg} segments of {test[0].shape[0]} volumes; need at "
                "least 2 segments of at least 1 volume."
            )
        seg_h = [segment_patterns(X, seg_len) for X in aligned]
        seg_a = [segment_patterns(X, seg_len) for X in test] if same_voxels else None
        sum_h = np.sum(seg_h, axis=0)
        sum_a = np.sum(seg_a, axis=0) if same_voxels else None
        for s in range(n):
            hyp = segment_classification_accuracy(seg_h[s], (sum_h - seg_h[s]) / (n - 1))
            anat = (
                segment_classification_accuracy(seg_a[s], (sum_a - seg_a[s]) / (n - 1))
                if same_voxels
                else np.nan
            )
            rows.append(
                {
                    "subject": subject_labels[s],
                    "anatomical": anat,
                    "hyperaligned": hyp,
                    "within_subject": np.nan,
                    "chance": 1.0 / n_seg,
                    "n_segments": n_seg,
                    "segment_volumes": seg_len,
                }
            )
        attrs.update(
            segment_length=segment_length,
            tr=tr,
            segment_volumes=seg_len,
            n_segments=n_seg,
            within_subject_note=WITHIN_SEGMENTS_NOTE,
        )
    else:
        labels = _labels_per_subject(test_labels, test, "test_labels")
        if labels is None:
            raise InputValidationError(
                "`test_labels` (one condition label per test sample) is required in "
                "conditions mode."
            )
        groups = _labels_per_subject(test_groups, test, "test_groups")
        if estimator is None:
            from sklearn.svm import LinearSVC

            estimator = LinearSVC()
        classes = np.unique(np.concatenate(labels))
        if classes.size < 2:
            raise InputValidationError(
                f"`test_labels` must contain at least two conditions; got {classes.tolist()}."
            )
        for s in range(n):
            others = [i for i in range(n) if i != s]
            y_tr = np.concatenate([labels[i] for i in others])

            def _score(data, s=s, others=others, y_tr=y_tr):
                clf = clone(estimator).fit(np.vstack([data[i] for i in others]), y_tr)
                return float(np.mean(clf.predict(data[s]) == labels[s]))

            hyp = _score(aligned)
            anat = _score(test) if same_voxels else np.nan
            within = np.nan
            if groups is not None and np.unique(groups[s]).size > 1:
                from sklearn.model_selection import LeaveOneGroupOut, cross_val_score

                within = float(
                    np.mean(
                        cross_val_score(
                            clone(estimator),
                            test[s],
                            labels[s],
                            groups=groups[s],
                            cv=LeaveOneGroupOut(),
                        )
                    )
                )
            rows.append(
                {
                    "subject": subject_labels[s],
                    "anatomical": anat,
                    "hyperaligned": hyp,
                    "within_subject": within,
                    "chance": 1.0 / classes.size,
                    "n_samples": test[s].shape[0],
                    "n_classes": classes.size,
                }
            )
        attrs.update(
            estimator=repr(estimator),
            classes=[str(c) for c in classes],
            within_subject_note=(
                "leave-one-group-out cross-validation within the left-out subject's test data"
                if groups is not None
                else "no test_groups given: within_subject not computed (NaN)"
            ),
        )
    df = pd.DataFrame(rows)
    df.attrs.update(attrs)
    return df

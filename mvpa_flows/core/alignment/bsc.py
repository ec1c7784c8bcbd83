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

The alignment (any estimator with ``fit``/``model_``: :class:`Hyperalignment` with
Procrustes or ridge maps, :class:`SharedResponseModel`) is estimated once on every
subject's training data, the left-out subject included (as in Haxby et al., 2011, and the
PyMVPA tutorial); this is not circular because the training data share no samples with
the test data. The function refuses test arrays that are the training arrays (same
object, shared memory or identical values) and overlapping ``train_runs``/``test_runs``
labels.

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

import numpy as np
import pandas as pd
from sklearn.base import clone

from mvpa_flows.core.alignment.hyperalignment import Hyperalignment, validate_datasets
from mvpa_flows.core.alignment.runs import check_segments
from mvpa_flows.core.errors import InputValidationError

__all__ = [
    "between_subject_classification",
    "fit_alignment",
    "score_aligned",
    "segment_classification_accuracy",
    "segment_patterns",
]

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


def fit_alignment(train, alignment=None, hyperalignment_params=None):
    """The fitted :class:`~mvpa_flows.core.alignment.model.AlignmentModel` of ``train``.

    ``alignment``: None (``Hyperalignment(**hyperalignment_params)``), an unfitted
    estimator (cloned, then fitted once on ``train``), a fitted estimator (its
    ``model_``) or an ``AlignmentModel`` (used as is).
    """
    from mvpa_flows.core.alignment.model import AlignmentModel

    if isinstance(alignment, AlignmentModel):
        return alignment
    if alignment is None:
        alignment = Hyperalignment(**dict(hyperalignment_params or {}))
    elif hyperalignment_params:
        raise InputValidationError(
            "Pass either `alignment` (an estimator) or `hyperalignment_params`, not both; "
            "set the parameters on the estimator."
        )
    if hasattr(alignment, "model_"):
        return alignment.model_
    if not hasattr(alignment, "fit"):
        raise InputValidationError(
            "`alignment` must be an alignment estimator (Hyperalignment(), "
            f"SharedResponseModel()) or a fitted AlignmentModel; got {alignment!r}."
        )
    return clone(alignment).fit(train).model_


class _Spec:
    """The validated evaluation settings (everything checked before any fit)."""

    def __init__(self, mode, test, test_labels, test_groups, segment_length, tr, estimator):
        if mode not in ("segments", "conditions"):
            raise InputValidationError(
                f"Parameter 'mode' must be 'segments' or 'conditions'; got {mode!r}."
            )
        self.mode = mode
        self.attrs = {"mode": mode}
        if mode == "segments":
            if len({X.shape[0] for X in test}) != 1:
                raise InputValidationError(
                    "In segments mode every subject's test data must have the same time "
                    f"points; got {[X.shape[0] for X in test]} samples."
                )
            self.seg_len, self.n_seg = check_segments(tr, segment_length, test[0].shape[0])
            self.attrs.update(
                segment_length=segment_length,
                tr=tr,
                segment_volumes=self.seg_len,
                n_segments=self.n_seg,
                within_subject_note=WITHIN_SEGMENTS_NOTE,
            )
            return
        self.labels = _labels_per_subject(test_labels, test, "test_labels")
        if self.labels is None:
            raise InputValidationError(
                "`test_labels` (one condition label per test sample) is required in "
                "conditions mode."
            )
        self.groups = _labels_per_subject(test_groups, test, "test_groups")
        if estimator is None:
            from sklearn.svm import LinearSVC

            estimator = LinearSVC()
        self.estimator = estimator
        self.classes = np.unique(np.concatenate(self.labels))
        if self.classes.size < 2:
            raise InputValidationError(
                f"`test_labels` must contain at least two conditions; got {self.classes.tolist()}."
            )
        self.attrs.update(
            estimator=repr(estimator),
            classes=[str(c) for c in self.classes],
            within_subject_note=(
                "leave-one-group-out cross-validation within the left-out subject's test data"
                if self.groups is not None
                else "no test_groups given: within_subject not computed (NaN)"
            ),
        )


def score_aligned(aligned, anatomical, spec, subject_labels, evaluate=None, pool=None):
    """Rows of the BSC table for the subjects in ``evaluate``, each against the subjects
    of ``pool`` other than itself (default: every subject against all the others).

    ``aligned``: every subject's test data in the common space; ``anatomical``: the same
    in voxels (None when the voxel counts differ).
    """
    n = len(aligned)
    evaluate = list(range(n)) if evaluate is None else list(evaluate)
    pool = list(range(n)) if pool is None else list(pool)
    rows = []
    if spec.mode == "segments":
        seg_h = [segment_patterns(X, spec.seg_len) for X in aligned]
        seg_a = [segment_patterns(X, spec.seg_len) for X in anatomical] if anatomical else None
        for s in evaluate:
            others = [j for j in pool if j != s]
            hyp = segment_classification_accuracy(seg_h[s], _mean([seg_h[j] for j in others]))
            anat = (
                segment_classification_accuracy(seg_a[s], _mean([seg_a[j] for j in others]))
                if seg_a is not None
                else np.nan
            )
            rows.append(
                {
                    "subject": subject_labels[s],
                    "anatomical": anat,
                    "hyperaligned": hyp,
                    "within_subject": np.nan,
                    "chance": 1.0 / spec.n_seg,
                    "n_segments": spec.n_seg,
                    "segment_volumes": spec.seg_len,
                }
            )
        return rows
    labels, groups = spec.labels, spec.groups
    for s in evaluate:
        others = [j for j in pool if j != s]
        y_tr = np.concatenate([labels[j] for j in others])

        def _score(data, s=s, others=others, y_tr=y_tr):
            clf = clone(spec.estimator).fit(np.vstack([data[j] for j in others]), y_tr)
            return float(np.mean(clf.predict(data[s]) == labels[s]))

        within = np.nan
        if groups is not None and np.unique(groups[s]).size > 1 and anatomical is not None:
            from sklearn.model_selection import LeaveOneGroupOut, cross_val_score

            within = float(
                np.mean(
                    cross_val_score(
                        clone(spec.estimator),
                        anatomical[s],
                        labels[s],
                        groups=groups[s],
                        cv=LeaveOneGroupOut(),
                    )
                )
            )
        rows.append(
            {
                "subject": subject_labels[s],
                "anatomical": _score(anatomical) if anatomical is not None else np.nan,
                "hyperaligned": _score(aligned),
                "within_subject": within,
                "chance": 1.0 / spec.classes.size,
                "n_samples": aligned[s].shape[0],
                "n_classes": spec.classes.size,
            }
        )
    return rows


def _mean(arrays):
    out = np.array(arrays[0], dtype=np.float64, copy=True)
    for a in arrays[1:]:
        out += a
    return out / len(arrays)


def _validate_inputs(train_datasets, test_datasets, subject_labels, train_runs, test_runs):
    # Circularity is checked on the raw inputs, before any conversion copies them.
    if not isinstance(test_datasets, (list, tuple)):
        raise InputValidationError(
            "`test_datasets` must be a list of 2-D arrays, one per subject; got "
            f"{type(test_datasets).__name__}."
        )
    if isinstance(train_datasets, (list, tuple)):
        _check_not_circular(train_datasets, test_datasets, train_runs, test_runs)
    # float32 data pass without a float64 copy: the estimators convert them exactly
    train = validate_datasets(train_datasets, "train_datasets", keep_float32=True)
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
    return train, test, list(subject_labels)


def evaluate_alignment(
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
    alignment=None,
):
    """:func:`between_subject_classification` that also returns the fitted model:
    ``(scores, model)``. Everything is validated before the (single) fit."""
    train, test, subject_labels = _validate_inputs(
        train_datasets, test_datasets, subject_labels, train_runs, test_runs
    )
    spec = _Spec(mode, test, test_labels, test_groups, segment_length, tr, estimator)
    if alignment is None:
        Hyperalignment(**dict(hyperalignment_params or {}))._validate(train)
    model = fit_alignment(train, alignment, hyperalignment_params)
    aligned = model.transform(test, name="test_datasets")
    same_voxels = len({X.shape[1] for X in test}) == 1
    rows = score_aligned(aligned, test if same_voxels else None, spec, subject_labels)
    df = pd.DataFrame(rows)
    df.attrs.update(spec.attrs)
    df.attrs.update(
        method=model.method,
        hyperalignment_params=model.params,
        ref_ds=model.info.get("ref_ds"),
        anatomical_defined=same_voxels,
    )
    return df, model


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
    alignment=None,
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
        Parameters of :class:`Hyperalignment` (when ``alignment`` is None).
    subject_labels : list of str, optional
        Names for the rows (default "0", "1", ...).
    train_runs, test_runs : sequence, optional
        Run labels of the alignment and the test data; overlapping labels are refused.
    alignment : estimator or AlignmentModel, optional
        The alignment method (default ``Hyperalignment(**hyperalignment_params)``): an
        unfitted estimator is fitted once on ``train_datasets``; a fitted one (or its
        ``model_``) is used as is.

    Returns
    -------
    pandas.DataFrame, one row per left-out subject: ``subject``, ``anatomical``,
    ``hyperaligned`` (in the fitted common space, whatever the method),
    ``within_subject``, ``chance``, ``n_segments`` (segments mode) or ``n_samples`` and
    ``n_classes`` (conditions mode). ``df.attrs`` records the mode, method, parameters
    and notes.
    """
    df, _ = evaluate_alignment(
        train_datasets,
        test_datasets,
        mode=mode,
        test_labels=test_labels,
        test_groups=test_groups,
        segment_length=segment_length,
        tr=tr,
        estimator=estimator,
        hyperalignment_params=hyperalignment_params,
        subject_labels=subject_labels,
        train_runs=train_runs,
        test_runs=test_runs,
        alignment=alignment,
    )
    return df

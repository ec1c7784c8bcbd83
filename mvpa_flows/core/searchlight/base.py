"""Searchlight decoding on arrays: one contract, several engines.

:func:`search_light` mirrors ``nilearn.decoding.searchlight.search_light``
(``X`` samples x mask voxels, ``y``, an estimator, the sparse sphere x voxel
adjacency ``A``) and returns a :class:`SearchlightResult`.  Behind it sit
engines that give the answers scikit-learn would give when fitting the
estimator on every sphere and fold:

``gnb``, ``lda``, ``ridge``, ``correlation``
    closed-form engines (sparse products with per-voxel statistics, batched
    small linear algebra on spheres grouped by size);
``svc``, ``logistic``
    batched Newton solvers of LinearSVC's (squared hinge, penalised
    intercept) and LogisticRegression's (L2, free intercept) convex problems;
``generic``
    any scikit-learn classifier, fitted per sphere and fold in parallel.

A fast engine is used only when the estimator's type *and* parameters are
ones it reproduces exactly (:func:`select_engine`); anything else goes to the
generic engine.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np
from scipy import sparse
from sklearn.base import clone

from .._parallel import resolve_n_jobs
from .._validation import check_finite_array, check_labels
from ._estimators import CorrelationClassifier

__all__ = [
    "CorrelationClassifier",
    "SearchlightResult",
    "merge_results",
    "permuted_labels",
    "resolve_cv",
    "resolve_estimator",
    "search_light",
    "select_engine",
]

ESTIMATOR_STRINGS = ("svc", "gnb", "lda", "logistic", "ridge", "correlation")
SCORINGS = ("accuracy", "balanced_accuracy", "roc_auc")


# --------------------------------------------------------------------------- #
# Result container
# --------------------------------------------------------------------------- #
@dataclass
class SearchlightResult:
    """Scores of a searchlight run (or of one chunk of centres).

    Attributes
    ----------
    scores : ndarray of shape (n_centres,)
        Cross-validated score of every sphere (mean over folds).
    fold_scores : ndarray of shape (n_folds, n_centres) or None
        Per-fold scores, when ``return_fold_scores=True``.
    null_scores : ndarray of shape (n_permutations, n_centres) or None
        Scores with permuted labels.
    pvalues : ndarray of shape (n_centres,) or None
        ``(1 + #(null >= observed)) / (1 + n_permutations)``.
    engine : str
        Engine that computed the scores.
    n_folds : int
        Number of cross-validation folds.
    sphere_sizes : ndarray of shape (n_centres,)
        Number of mask voxels in every sphere.
    chance_level : float
        Expected score under the null (``1 / n_classes`` for accuracy and
        balanced accuracy, 0.5 for ROC AUC).
    classes : ndarray
        Sorted class labels.
    scoring : str
        Scoring name.
    cv : str
        Description of the cross-validation scheme.
    centres : ndarray of shape (n_centres,)
        Row indices of ``A`` the scores belong to.
    n_permutations : int
        Number of permutations.
    """

    scores: np.ndarray
    fold_scores: np.ndarray | None = None
    null_scores: np.ndarray | None = None
    pvalues: np.ndarray | None = None
    engine: str = ""
    n_folds: int = 0
    sphere_sizes: np.ndarray | None = None
    chance_level: float = float("nan")
    classes: np.ndarray | None = None
    scoring: str = "accuracy"
    cv: str = ""
    centres: np.ndarray | None = None
    n_permutations: int = 0
    timings: dict = field(default_factory=dict)


def merge_results(results):
    """Concatenate the results of chunks of centres.

    Parameters
    ----------
    results : list of SearchlightResult
        Chunk results, in the order of their ``centres``.

    Returns
    -------
    SearchlightResult
        The result the unchunked run gives (bit for bit, permutation p-values
        included, when every chunk used the same ``random_state``).
    """
    if not results:
        raise ValueError("Parameter 'results' is empty; pass at least one SearchlightResult.")
    first = results[0]
    for r in results[1:]:
        for name in ("engine", "n_folds", "scoring", "cv", "n_permutations"):
            if getattr(r, name) != getattr(first, name):
                raise ValueError(
                    f"Cannot merge searchlight chunks with different '{name}': "
                    f"{getattr(first, name)!r} and {getattr(r, name)!r}. Run every chunk "
                    "with the same parameters."
                )

    def cat(name, axis=0):
        parts = [getattr(r, name) for r in results]
        if any(p is None for p in parts):
            return None
        return np.concatenate(parts, axis=axis)

    return SearchlightResult(
        scores=cat("scores"),
        fold_scores=cat("fold_scores", axis=1),
        null_scores=cat("null_scores", axis=1),
        pvalues=cat("pvalues"),
        engine=first.engine,
        n_folds=first.n_folds,
        sphere_sizes=cat("sphere_sizes"),
        chance_level=first.chance_level,
        classes=first.classes,
        scoring=first.scoring,
        cv=first.cv,
        centres=cat("centres"),
        n_permutations=first.n_permutations,
    )


# --------------------------------------------------------------------------- #
# Estimators
# --------------------------------------------------------------------------- #
def resolve_estimator(estimator, random_state=0):
    """Turn an estimator name or instance into an unfitted scikit-learn estimator.

    Parameters
    ----------
    estimator : str or estimator instance
        ``'svc'`` (nilearn's ``LinearSVC(penalty='l2', max_iter=10000)``),
        ``'gnb'`` (``GaussianNB()``), ``'lda'``
        (``LinearDiscriminantAnalysis(solver='lsqr', shrinkage='auto')``),
        ``'logistic'`` (``LogisticRegression()``, lbfgs; note that nilearn's
        ``'logistic'`` is a ``LogisticRegressionCV``), ``'ridge'``
        (``RidgeClassifier()``), ``'correlation'``
        (:class:`CorrelationClassifier`), or any scikit-learn classifier
        instance (cloned).
    random_state : int or None, default=0
        Passed to ``'svc'`` (as nilearn does).

    Returns
    -------
    estimator : scikit-learn estimator
        A fresh, unfitted estimator.

    Raises
    ------
    ValueError
        Unknown estimator name.
    TypeError
        A class instead of an instance, an estimator that cannot be cloned, or
        one without ``fit`` and ``predict``.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.naive_bayes import GaussianNB
    from sklearn.svm import LinearSVC

    if isinstance(estimator, str):
        name = estimator.lower()
        if name in ("svc", "svc_l2"):
            return LinearSVC(penalty="l2", max_iter=10000, random_state=random_state)
        if name == "gnb":
            return GaussianNB()
        if name == "lda":
            return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
        if name == "logistic":
            return LogisticRegression()
        if name in ("ridge", "ridge_classifier"):
            return RidgeClassifier()
        if name == "correlation":
            return CorrelationClassifier()
        raise ValueError(
            f"Parameter 'estimator' must be one of {list(ESTIMATOR_STRINGS)} or a "
            f"scikit-learn classifier instance; got {estimator!r}. Pass e.g. "
            "estimator='svc' or estimator=GaussianNB()."
        )
    if isinstance(estimator, type):
        raise TypeError(
            "Parameter 'estimator' must be an estimator *instance*; got the class "
            f"{estimator.__name__}. Pass {estimator.__name__}() instead."
        )
    if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")):
        raise TypeError(
            "Parameter 'estimator' must implement fit(X, y) and predict(X); got "
            f"{type(estimator).__name__}, which lacks "
            f"{' and '.join(m for m in ('fit', 'predict') if not hasattr(estimator, m))}. "
            "Pass a scikit-learn classifier."
        )
    try:
        return clone(estimator)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(
            f"Parameter 'estimator' ({type(estimator).__name__}) cannot be cloned with "
            f"sklearn.base.clone ({exc}). Make it a scikit-learn compatible estimator "
            "(derive from BaseEstimator; __init__ only stores its parameters)."
        ) from exc


def select_engine(estimator, n_classes=2):
    """Name of the engine that reproduces ``estimator`` exactly.

    Parameters
    ----------
    estimator : scikit-learn estimator
        Resolved estimator.
    n_classes : int, default=2
        Number of classes.

    Returns
    -------
    str
        One of ``'gnb'``, ``'lda'``, ``'ridge'``, ``'correlation'``, ``'svc'``,
        ``'logistic'``, ``'generic'``.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.naive_bayes import GaussianNB
    from sklearn.svm import LinearSVC

    t = type(estimator)
    p = estimator.get_params(deep=False) if hasattr(estimator, "get_params") else {}
    if t is GaussianNB and p.get("priors") is None:
        return "gnb"
    if t is CorrelationClassifier:
        return "correlation"
    if (
        t is LinearDiscriminantAnalysis
        and p.get("solver") == "lsqr"
        and p.get("priors") is None
        and p.get("covariance_estimator") is None
        and (
            p.get("shrinkage") in (None, "auto", "empirical")
            or (
                isinstance(p.get("shrinkage"), float | int)
                and not isinstance(p.get("shrinkage"), bool)
                and 0 <= p.get("shrinkage") <= 1
            )
        )
    ):
        return "lda"
    if (
        t is RidgeClassifier
        and p.get("fit_intercept", True)
        and p.get("class_weight") is None
        and not p.get("positive", False)
        and p.get("solver", "auto") in ("auto", "cholesky", "svd")
        and np.ndim(p.get("alpha", 1.0)) == 0
        and float(p.get("alpha", 1.0)) > 0
    ):
        return "ridge"
    if (
        t is LinearSVC
        and n_classes == 2
        and p.get("penalty") == "l2"
        and p.get("loss") == "squared_hinge"
        and p.get("fit_intercept", True)
        and p.get("class_weight") is None
        and p.get("multi_class", "ovr") == "ovr"
    ):
        return "svc"
    if (
        t is LogisticRegression
        and n_classes == 2
        and p.get("solver") in ("lbfgs", "newton-cg", "newton-cholesky")
        and p.get("penalty", "deprecated") in ("deprecated", "l2")
        and p.get("l1_ratio") in (None, 0, 0.0)
        and p.get("fit_intercept", True)
        and p.get("class_weight") is None
        and p.get("C") is not None
        and np.isfinite(p.get("C"))
    ):
        return "logistic"
    return "generic"


# --------------------------------------------------------------------------- #
# Cross-validation and labels
# --------------------------------------------------------------------------- #
def resolve_cv(cv, groups, n_samples):
    """Turn a cross-validation specification into a scikit-learn splitter.

    Parameters
    ----------
    cv : None, int, str, splitter or iterable of (train, test)
        ``None``: leave-one-run-out when ``groups`` are given (note: nilearn
        uses 5-fold stratified CV here), else ``StratifiedKFold(5)``;
        ``'loro'``: ``LeaveOneGroupOut`` (needs ``groups``); ``'kfold:N'``:
        ``KFold(N)``; an int ``N``: ``StratifiedKFold(N)``; any object with
        ``split`` and ``get_n_splits``; an iterable of (train, test) index
        pairs.
    groups : array-like of shape (n_samples,) or None
        Run (group) of every sample.
    n_samples : int
        Number of samples.

    Returns
    -------
    splitter
        An object with ``split(X, y, groups)`` (a list of folds for
        iterables).
    """
    from sklearn.model_selection import KFold, LeaveOneGroupOut, StratifiedKFold

    if cv is None:
        return LeaveOneGroupOut() if groups is not None else StratifiedKFold(5)
    if isinstance(cv, str):
        spec = cv.strip().lower()
        if spec == "loro":
            if groups is None:
                raise ValueError(
                    "Parameter 'cv'='loro' (leave-one-run-out) needs 'groups' (the run "
                    "of every sample); got groups=None. Pass groups=runs, or use "
                    "cv='kfold:N'."
                )
            return LeaveOneGroupOut()
        if spec.startswith("kfold:"):
            try:
                n = int(spec.split(":", 1)[1])
            except ValueError:
                n = -1
            if n < 2:
                raise ValueError(
                    f"Parameter 'cv' must be 'kfold:N' with an integer N >= 2; got {cv!r}. "
                    "Pass e.g. cv='kfold:4'."
                )
            if n > n_samples:
                raise ValueError(
                    f"Parameter 'cv'={cv!r} asks for {n} folds but there are only "
                    f"{n_samples} samples. Use fewer folds."
                )
            return KFold(n)
        raise ValueError(
            "Parameter 'cv' must be None, 'loro', 'kfold:N', an int, a scikit-learn "
            f"splitter or a list of (train, test) pairs; got {cv!r}."
        )
    if isinstance(cv, Integral) and not isinstance(cv, bool):
        if cv < 2:
            raise ValueError(f"Parameter 'cv' as an int must be >= 2 folds; got {cv}.")
        return StratifiedKFold(int(cv))
    if hasattr(cv, "split") and hasattr(cv, "get_n_splits"):
        return cv
    try:
        folds = [(np.asarray(tr), np.asarray(te)) for tr, te in cv]
    except (TypeError, ValueError) as exc:
        raise ValueError(
            "Parameter 'cv' must be None, 'loro', 'kfold:N', an int, a scikit-learn "
            f"splitter or a list of (train, test) pairs; got {type(cv).__name__}."
        ) from exc
    return folds


def _describe_cv(cv):
    if isinstance(cv, list):
        return f"custom ({len(cv)} folds)"
    return repr(cv)


def _make_folds(cv, X, y, groups):
    if isinstance(cv, list):
        folds = cv
    else:
        n_groups = None if groups is None else len(np.unique(groups))
        try:
            folds = [(np.asarray(tr), np.asarray(te)) for tr, te in cv.split(X, y, groups)]
        except ValueError as exc:
            msg = f"Parameter 'cv' ({_describe_cv(cv)}) could not split the data: {exc}"
            if n_groups is not None:
                msg += f" There are {n_groups} run(s) in 'groups'."
            raise ValueError(msg + " Use fewer folds than runs, or pass more runs.") from exc
    if len(folds) < 1:
        raise ValueError(
            f"Parameter 'cv' ({_describe_cv(cv)}) produced no fold. With "
            f"{0 if groups is None else len(np.unique(groups))} run(s), leave-one-run-out "
            "needs at least 2 runs."
        )
    if groups is not None and type(cv).__name__ in ("LeaveOneGroupOut",):
        if len(np.unique(groups)) < 2:
            raise ValueError(
                "Leave-one-run-out needs at least 2 runs in 'groups'; got 1. Pass "
                "more runs or use cv='kfold:N'."
            )
    n = len(y)
    out = []
    for tr, te in folds:
        tr, te = np.asarray(tr), np.asarray(te)
        if tr.dtype == bool:
            tr = np.flatnonzero(tr)
        if te.dtype == bool:
            te = np.flatnonzero(te)
        if len(tr) == 0 or len(te) == 0:
            raise ValueError(
                f"Parameter 'cv' produced a fold with {len(tr)} training and {len(te)} "
                "test samples. Every fold needs both."
            )
        if tr.max() >= n or te.max() >= n:
            raise ValueError("Parameter 'cv' produced indices beyond the number of samples.")
        out.append((tr.astype(np.intp), te.astype(np.intp)))
    return out


def permuted_labels(y_codes, groups, n_permutations, random_state):
    """Label permutations, shuffled within runs, reproducible from a seed.

    Parameters
    ----------
    y_codes : ndarray of shape (n_samples,)
        Labels.
    groups : ndarray of shape (n_samples,) or None
        Runs; labels are shuffled within each run (globally when None).
    n_permutations : int
        Number of permutations.
    random_state : int, numpy Generator or None
        Seed of ``np.random.default_rng``.

    Returns
    -------
    ndarray of shape (n_permutations, n_samples)
    """
    rng = np.random.default_rng(random_state)
    y_codes = np.asarray(y_codes)
    out = np.empty((n_permutations, len(y_codes)), dtype=y_codes.dtype)
    if groups is None:
        blocks = [np.arange(len(y_codes))]
    else:
        _, inv = np.unique(groups, return_inverse=True)
        blocks = [np.flatnonzero(inv == g) for g in range(inv.max() + 1)]
    for p in range(n_permutations):
        yp = y_codes.copy()
        for b in blocks:
            yp[b] = y_codes[b[rng.permutation(len(b))]]
        out[p] = yp
    return out


# --------------------------------------------------------------------------- #
# Scoring (vectorised over spheres)
# --------------------------------------------------------------------------- #
def _fold_scores(pred, dec, y_codes, folds, test_all, scoring, n_classes):
    """pred/dec: (n_sph, n_test_all); returns (n_folds, n_sph)."""
    n_sph = pred.shape[0]
    out = np.empty((len(folds), n_sph))
    start = 0
    for f, (_, te) in enumerate(folds):
        sl = slice(start, start + len(te))
        start += len(te)
        yt = y_codes[te]
        if scoring == "accuracy":
            out[f] = np.mean(pred[:, sl] == yt[None, :], axis=1)
        elif scoring == "balanced_accuracy":
            present = np.unique(yt)
            rec = np.empty((len(present), n_sph))
            for i, c in enumerate(present):
                m = yt == c
                rec[i] = np.mean(pred[:, sl][:, m] == c, axis=1)
            out[f] = np.mean(rec.T, axis=1) if len(present) > 1 else rec[0]
        else:  # roc_auc, binary, positive class = code 1
            from scipy.stats import rankdata

            d = dec[:, sl]
            pos = yt == 1
            n_pos, n_neg = pos.sum(), (~pos).sum()
            ranks = rankdata(d, axis=1)
            out[f] = (ranks[:, pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


# --------------------------------------------------------------------------- #
# Progress
# --------------------------------------------------------------------------- #
class _Progress:
    def __init__(self, total, callback=None, verbose=0):
        self.total, self.callback, self.verbose = int(total), callback, verbose
        self.done = 0
        self.t0 = time.perf_counter()
        self._last = 0.0

    def __call__(self, n):
        self.done = min(self.total, self.done + int(n))
        if self.callback is not None:
            self.callback(self.done, self.total)
        if self.verbose > 0:
            now = time.perf_counter()
            if now - self._last > 0.5 or self.done == self.total:
                self._last = now
                el = now - self.t0
                eta = el / self.done * (self.total - self.done) if self.done else float("nan")
                end = "\n" if self.done == self.total else "\r"
                sys.stderr.write(
                    f"searchlight: {self.done}/{self.total} spheres "
                    f"({100 * self.done / max(self.total, 1):.1f}%), "
                    f"elapsed {el:.1f} s, ETA {eta:.1f} s{end}"
                )
                sys.stderr.flush()


# --------------------------------------------------------------------------- #
# Main entry point
# --------------------------------------------------------------------------- #
def _validate_labels(y, folds):
    classes, y_codes = np.unique(np.asarray(y), return_inverse=True)
    y_codes = y_codes.astype(np.intp)
    if len(classes) < 2:
        raise ValueError(
            f"Parameter 'y' must hold at least 2 classes to decode; got a single class "
            f"{classes.tolist()}. Pass labels of two or more conditions."
        )
    for f, (tr, _) in enumerate(folds):
        present = np.unique(y_codes[tr])
        if len(present) < len(classes):
            missing = [classes[c] for c in range(len(classes)) if c not in present]
            raise ValueError(
                f"Parameter 'cv': training set of fold {f} has no sample of class(es) "
                f"{missing}; every class must be present in every training fold. Use "
                "a stratified or leave-one-run-out scheme, or balance the runs."
            )
    return classes, y_codes


def search_light(
    X,
    y,
    estimator,
    A,
    groups=None,
    cv=None,
    scoring=None,
    n_permutations=0,
    random_state=None,
    n_jobs=1,
    return_fold_scores=False,
    centres=None,
    verbose=0,
    progress=None,
):
    """Cross-validated decoding in every searchlight sphere.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_mask_voxels)
        Cleaned samples (columns in the order of the columns of ``A``).
    y : array-like of shape (n_samples,)
        Class labels (any dtype).
    estimator : str or scikit-learn classifier
        See :func:`resolve_estimator`.
    A : scipy.sparse matrix of shape (n_centres, n_mask_voxels)
        Sphere x voxel adjacency
        (:func:`~mvpa_flows.core.searchlight.neighbourhoods.sphere_adjacency`).
    groups : array-like of shape (n_samples,), optional
        Run of every sample (used by the CV and to permute labels within runs).
    cv : see :func:`resolve_cv`
        Cross-validation scheme; leave-one-run-out by default when ``groups``
        are given.
    scoring : {None, 'accuracy', 'balanced_accuracy', 'roc_auc'}
        Score of every fold (accuracy when None); ``roc_auc`` needs two classes.
    n_permutations : int, default=0
        Number of label permutations (within runs) for voxel-wise p-values.
    random_state : int or None
        Seed of the permutations (``np.random.default_rng``), and of ``'svc'``.
    n_jobs : int, default=1
        Worker count (-1 for all cores); BLAS threads are limited so that
        workers x threads never exceeds it.
    return_fold_scores : bool, default=False
        Also return the per-fold score maps.
    centres : array-like of int, optional
        Rows of ``A`` to compute (for chunked runs); results of chunks merged
        with :func:`merge_results` are bit-for-bit those of the whole run.
    verbose : int, default=0
        Print progress ("spheres done / total, ETA") to stderr when > 0.
    progress : callable, optional
        Called as ``progress(n_done, n_total)`` while spheres are processed.

    Returns
    -------
    SearchlightResult
    """
    t_start = time.perf_counter()
    X = np.ascontiguousarray(X, dtype=np.float64)  # engines gather rows and columns
    if X.ndim != 2:
        raise ValueError(
            f"Parameter 'X' must be a 2D array (n_samples, n_mask_voxels); got shape {X.shape}."
        )
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != X.shape[0]:
        raise ValueError(
            f"Parameter 'y' must be 1D with one label per sample ({X.shape[0]}); got "
            f"shape {y.shape}."
        )
    check_finite_array(X, "X", fix="Clean the data or drop those voxels from the mask.")
    check_labels(y, "y")
    if not sparse.issparse(A):
        raise TypeError(
            f"Parameter 'A' must be a scipy.sparse matrix; got {type(A).__name__}. "
            "Build it with mvpa_flows.core.searchlight.neighbourhoods.sphere_adjacency."
        )
    A = sparse.csr_matrix(A)
    if A.shape[1] != X.shape[1]:
        raise ValueError(
            f"Parameter 'A' has {A.shape[1]} columns but 'X' has {X.shape[1]} voxels; "
            "they must match (columns of A index the columns of X)."
        )
    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(y):
            raise ValueError(
                f"Parameter 'groups' must have one run per sample ({len(y)}); got {len(groups)}."
            )
    scoring_name = "accuracy" if scoring is None else scoring
    if scoring_name not in SCORINGS:
        raise ValueError(
            f"Parameter 'scoring' must be one of {[None, *SCORINGS]}; got {scoring!r}."
        )
    n_permutations = int(n_permutations or 0)
    if n_permutations < 0:
        raise ValueError(f"Parameter 'n_permutations' must be >= 0; got {n_permutations}.")
    n_jobs = resolve_n_jobs(n_jobs)

    est = resolve_estimator(estimator, random_state=0 if random_state is None else random_state)
    splitter = resolve_cv(cv, groups, len(y))
    folds = _make_folds(splitter, X, y, groups)
    classes, y_codes = _validate_labels(y, folds)
    n_classes = len(classes)
    if scoring_name == "roc_auc":
        if n_classes != 2:
            raise ValueError(
                f"Parameter 'scoring'='roc_auc' needs 2 classes; got {n_classes}. Use "
                "'accuracy' or 'balanced_accuracy'."
            )
        for f, (_, te) in enumerate(folds):
            if len(np.unique(y_codes[te])) < 2:
                raise ValueError(
                    f"Parameter 'scoring'='roc_auc' is undefined for fold {f}, whose test "
                    "set holds a single class. Use 'accuracy' or a CV scheme whose test "
                    "folds hold both classes."
                )

    if centres is None:
        centres = np.arange(A.shape[0])
    else:
        centres = np.asarray(centres, dtype=np.intp).ravel()
        if len(centres) and (centres.min() < 0 or centres.max() >= A.shape[0]):
            raise ValueError(
                f"Parameter 'centres' must index rows of 'A' (0..{A.shape[0] - 1}); got "
                f"values in [{centres.min()}, {centres.max()}]."
            )
    A_sub = A[centres]
    A_sub.sort_indices()
    sizes = np.diff(A_sub.indptr)
    if len(sizes) and sizes.min() == 0:
        raise ValueError(
            f"{int((sizes == 0).sum())} sphere(s) hold no mask voxel (e.g. row "
            f"{int(centres[np.argmax(sizes == 0)])} of 'A'). Check 'process_mask' "
            "against 'mask'."
        )

    engine_name = select_engine(est, n_classes)
    labels = [y_codes]
    if n_permutations:
        labels.extend(permuted_labels(y_codes, groups, n_permutations, random_state))
    labels = np.asarray(labels)

    prog = _Progress(len(centres) * len(labels), progress, verbose)
    test_all = np.concatenate([te for _, te in folds])

    from ._engines import run_engine

    means = np.empty((len(labels), len(centres)))
    obs_fold_scores = np.empty((len(folds), len(centres))) if return_fold_scores else None

    def consume(set_index, sph, pred, dec):
        fs = _fold_scores(pred, dec, labels[set_index], folds, test_all, scoring_name, n_classes)
        # mean over folds, summed exactly as np.mean on each sphere's fold vector
        means[set_index, sph] = np.ascontiguousarray(fs.T).mean(axis=1)
        if set_index == 0 and obs_fold_scores is not None:
            obs_fold_scores[:, sph] = fs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        run_engine(
            engine_name,
            est,
            X,
            A_sub,
            labels,
            folds,
            n_classes,
            need_dec=scoring_name == "roc_auc",
            consume=consume,
            n_jobs=n_jobs,
            progress=prog,
        )

    scores = means[0]
    null = means[1:] if n_permutations else None
    pvalues = None
    if n_permutations:
        pvalues = (1.0 + np.sum(null >= scores[None, :], axis=0)) / (1.0 + n_permutations)
    chance = 0.5 if scoring_name == "roc_auc" else 1.0 / n_classes
    return SearchlightResult(
        scores=scores,
        fold_scores=obs_fold_scores,
        null_scores=null,
        pvalues=pvalues,
        engine=engine_name,
        n_folds=len(folds),
        sphere_sizes=sizes,
        chance_level=chance,
        classes=classes,
        scoring=scoring_name,
        cv=_describe_cv(splitter),
        centres=centres,
        n_permutations=n_permutations,
        timings={"total_s": time.perf_counter() - t_start},
    )

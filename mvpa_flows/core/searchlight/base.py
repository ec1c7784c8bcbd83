"""Searchlight decoding on arrays: the contract.

:func:`search_light` mirrors ``nilearn.decoding.searchlight.search_light`` (``X`` samples x
mask voxels, ``y``, an estimator, the sparse sphere x voxel adjacency ``A``) and returns a
:class:`SearchlightResult`. Behind it sit the engines of
:mod:`mvpa_flows.core.searchlight.engines`, which give the answers scikit-learn would give
when fitting the estimator on every sphere and fold. A fast engine is used only when the
estimator's type *and* parameters are ones it reproduces exactly
(:func:`~mvpa_flows.core.searchlight.estimators.select_engine`); anything else goes to the
generic engine.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from .._parallel import resolve_n_jobs
from .._validation import check_finite_array, check_integer, check_labels
from .cv import describe_cv, encode_labels, make_folds, permuted_labels, resolve_cv
from .engines import EngineContext, run_engine
from .engines._context import restrict_columns
from .estimators import resolve_estimator, select_engine
from .scoring import chance_level, check_scoring, fold_scores

__all__ = ["DecodingSetup", "SearchlightResult", "check_decoding", "merge_results", "search_light"]


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
    timings : dict
        Wall time of the run (``total_s``).
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


@dataclass
class DecodingSetup:
    """The checked decoding problem: what :func:`check_decoding` returns.

    Attributes
    ----------
    estimator : scikit-learn classifier
        Resolved, unfitted estimator.
    cv : splitter or list
        Resolved cross-validation scheme.
    folds : list of (train, test)
        Its folds on these samples.
    classes : ndarray
        Sorted class labels.
    y_codes : ndarray of shape (n_samples,)
        Class code of every sample.
    scoring : str
        Scoring name.
    n_permutations : int
        Number of permutations.
    n_jobs : int
        Number of workers.
    """

    estimator: object
    cv: object
    folds: list
    classes: np.ndarray
    y_codes: np.ndarray
    scoring: str
    n_permutations: int
    n_jobs: int


def check_decoding(
    y, estimator, groups=None, cv=None, scoring=None, n_permutations=0, random_state=None,
    n_jobs=1,
):  # fmt: skip
    """Check the decoding parameters of a searchlight before any heavy work.

    Labels (no NaN/None, at least two classes, every class in every training fold), the
    estimator (a classifier, see
    :func:`~mvpa_flows.core.searchlight.estimators.resolve_estimator`), the
    cross-validation (at least 2 folds, see
    :func:`~mvpa_flows.core.searchlight.cv.make_folds`), the scoring and the counts.
    :func:`search_light` and :class:`mvpa_flows.decoding.SearchLight` call it first.

    Parameters
    ----------
    See :func:`search_light`.

    Returns
    -------
    DecodingSetup
    """
    y = check_labels(y, "y")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise ValueError(
                f"Parameter 'groups' must have one run per sample ({len(y)}); got "
                f"shape {groups.shape}."
            )
    scoring_name = check_scoring(scoring)
    n_permutations = check_integer(
        0 if n_permutations is None else n_permutations, "n_permutations", low=0
    )
    n_jobs = resolve_n_jobs(n_jobs)
    est = resolve_estimator(estimator, random_state=0 if random_state is None else random_state)
    splitter = resolve_cv(cv, groups, len(y))
    folds = make_folds(splitter, y, groups)
    classes, y_codes = encode_labels(y, folds)
    check_scoring(scoring_name, est, len(classes), folds, y_codes)
    return DecodingSetup(est, splitter, folds, classes, y_codes, scoring_name, n_permutations,
                         n_jobs)  # fmt: skip


def _check_finite(X_used, cols):
    """No NaN or infinite value in the voxels the spheres use (columns named as in ``X``)."""
    fix = "Clean the data or drop those voxels from the mask."
    if cols is None:
        check_finite_array(X_used, "X", fix=fix)
        return
    bad = ~np.isfinite(X_used)
    if bad.any():
        where = cols[np.flatnonzero(bad.any(axis=0))]
        raise ValueError(
            f"Parameter 'X' contains {int(bad.sum())} NaN or infinite value(s) in "
            f"{len(where)} column(s) (first: {where[:5].tolist()}). {fix}"
        )


#: engines that upcast the samples to float64 where they compute (gathered spheres,
#: blocks of voxels), so float32 samples are kept as they are: no float64 copy of ``X``
_FLOAT32_ENGINES = frozenset({"gnb", "lda", "logistic", "ridge", "svc"})


def samples_dtype(engine_name, dtype):
    """Precision in which :func:`search_light` keeps samples of ``dtype`` for an engine.

    float32 when the values fit it exactly (float32, float16, integers of up to 16 bits)
    and the engine upcasts what it computes on; float64 otherwise. Readers of images
    (:class:`mvpa_flows.decoding.SearchLight`) read the samples in this precision, so
    that no second copy is made.
    """
    fits = np.result_type(dtype, np.float32) == np.float32
    return np.dtype(np.float32 if fits and engine_name in _FLOAT32_ENGINES else np.float64)


def _restrict_samples(A, X, engine_name):
    """:func:`restrict_columns` that keeps float32 samples for engines that upcast them.

    Values are the same either way (float32 to float64 is exact), so the engines' answers
    are bit-identical to those on a float64 copy, at half its memory.
    """
    return restrict_columns(A, X, keep=0.7, dtype=samples_dtype(engine_name, X.dtype))


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
        Class labels (any dtype; NaN and None are refused).
    estimator : str or scikit-learn classifier
        See :func:`~mvpa_flows.core.searchlight.estimators.resolve_estimator`;
        regressors are refused.
    A : scipy.sparse matrix of shape (n_centres, n_mask_voxels)
        Sphere x voxel adjacency
        (:func:`~mvpa_flows.core.searchlight.neighbourhoods.sphere_adjacency`).
    groups : array-like of shape (n_samples,), optional
        Run of every sample (used by the CV and to permute labels within runs).
    cv : see :func:`~mvpa_flows.core.searchlight.cv.resolve_cv`
        Cross-validation scheme (at least 2 folds); leave-one-run-out by default when
        ``groups`` are given.
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
    X = np.asarray(X)
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
    if not sparse.issparse(A):
        raise TypeError(
            f"Parameter 'A' must be a scipy.sparse matrix; got {type(A).__name__}. "
            "Build it with mvpa_flows.core.searchlight.neighbourhoods.sphere_adjacency."
        )
    if A.shape[1] != X.shape[1]:
        raise ValueError(
            f"Parameter 'A' has {A.shape[1]} columns but 'X' has {X.shape[1]} voxels; "
            "they must match (columns of A index the columns of X)."
        )
    setup = check_decoding(y, estimator, groups, cv, scoring, n_permutations, random_state, n_jobs)
    A = sparse.csr_matrix(A)
    if centres is None:
        centres = np.arange(A.shape[0])
    else:
        centres = np.asarray(centres, dtype=np.intp).ravel()
        if len(centres) and (centres.min() < 0 or centres.max() >= A.shape[0]):
            raise ValueError(
                f"Parameter 'centres' must index rows of 'A' (0..{A.shape[0] - 1}); got "
                f"values in [{centres.min()}, {centres.max()}]."
            )
    if A.has_sorted_indices and np.array_equal(centres, np.arange(A.shape[0])):
        A_sub = A  # every sphere, in order: no copy of the adjacency
    else:
        A_sub = A[centres]
        A_sub.sort_indices()
    sizes = np.diff(A_sub.indptr)
    if len(sizes) and sizes.min() == 0:
        raise ValueError(
            f"{int((sizes == 0).sum())} sphere(s) hold no mask voxel (e.g. row "
            f"{int(centres[np.argmax(sizes == 0)])} of 'A'). Check 'process_mask' "
            "against 'mask'."
        )
    folds, y_codes, n_classes = setup.folds, setup.y_codes, len(setup.classes)
    engine_name = select_engine(setup.estimator, n_classes)
    # engines see only the voxels the requested spheres touch, so the cost of a run follows
    # its centres, not the mask (per-voxel work included)
    cols, X_used, A_used = _restrict_samples(A_sub, X, engine_name)
    _check_finite(X_used, cols)
    labels = [y_codes]
    if setup.n_permutations:
        labels.extend(permuted_labels(y_codes, groups, setup.n_permutations, random_state))
    labels = np.asarray(labels)

    means = np.empty((len(labels), len(centres)))
    obs_fold_scores = np.empty((len(folds), len(centres))) if return_fold_scores else None

    def consume(set_index, sph, pred, dec):
        fs = fold_scores(pred, dec, labels[set_index], folds, setup.scoring)
        # mean over folds, summed exactly as np.mean on each sphere's fold vector
        means[set_index, sph] = np.ascontiguousarray(fs.T).mean(axis=1)
        if set_index == 0 and obs_fold_scores is not None:
            obs_fold_scores[:, sph] = fs

    ctx = EngineContext(
        estimator=setup.estimator,
        X=X_used,
        A=A_used,
        labels=labels,
        folds=folds,
        n_classes=n_classes,
        need_dec=setup.scoring == "roc_auc",
        n_jobs=setup.n_jobs,
        consume=consume,
        progress=_Progress(len(centres) * len(labels), progress, verbose),
        source=None if cols is None else X,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        run_engine(engine_name, ctx)

    scores = means[0]
    null = means[1:] if setup.n_permutations else None
    pvalues = None
    if setup.n_permutations:
        pvalues = (1.0 + np.sum(null >= scores[None, :], axis=0)) / (1.0 + setup.n_permutations)
    return SearchlightResult(
        scores=scores,
        fold_scores=obs_fold_scores,
        null_scores=null,
        pvalues=pvalues,
        engine=engine_name,
        n_folds=len(folds),
        sphere_sizes=sizes,
        chance_level=chance_level(setup.scoring, n_classes),
        classes=setup.classes,
        scoring=setup.scoring,
        cv=describe_cv(setup.cv),
        centres=centres,
        n_permutations=setup.n_permutations,
        timings={"total_s": time.perf_counter() - t_start},
    )

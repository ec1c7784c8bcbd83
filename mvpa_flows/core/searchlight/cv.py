"""Cross-validation of the searchlight: splitters from names, folds checked up front, and
label permutations within runs."""

from __future__ import annotations

from numbers import Integral

import numpy as np

__all__ = ["describe_cv", "encode_labels", "make_folds", "permuted_labels", "resolve_cv"]


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


def describe_cv(cv):
    if isinstance(cv, list):
        return f"custom ({len(cv)} folds)"
    return repr(cv)


def make_folds(cv, y, groups):
    """The (train, test) index pairs of ``cv`` on these labels and runs, checked.

    Parameters
    ----------
    cv : splitter or list of (train, test)
        As returned by :func:`resolve_cv`.
    y : ndarray of shape (n_samples,)
        Labels (stratified splitters read them).
    groups : ndarray of shape (n_samples,) or None
        Runs.

    Returns
    -------
    list of (ndarray, ndarray)
        Integer training and test indices of every fold.

    Raises
    ------
    ValueError
        The splitter cannot split these samples, or gives fewer than 2 folds, an empty
        training or test set, or indices beyond the samples.
    """
    n = len(y)
    n_runs = None if groups is None else len(np.unique(groups))
    if isinstance(cv, list):
        folds = cv
    else:
        try:
            splits = cv.split(np.empty((n, 1)), y, groups)
            folds = [(np.asarray(tr), np.asarray(te)) for tr, te in splits]
        except ValueError as exc:
            msg = f"Parameter 'cv' ({describe_cv(cv)}) could not split the data: {exc}"
            if n_runs is not None:
                msg += f" There are {n_runs} run(s) in 'groups'."
            raise ValueError(msg + " Use fewer folds than runs, or pass more runs.") from exc
    if len(folds) < 2:
        runs = "" if n_runs is None else f" ({n_runs} run(s) in 'groups')"
        raise ValueError(
            f"Parameter 'cv' ({describe_cv(cv)}) gives {len(folds)} fold(s){runs}; "
            "cross-validation needs at least 2 folds. Pass more runs (leave-one-run-out "
            "needs 2 or more), or cv='kfold:N' with N >= 2."
        )
    out = []
    for f, (tr, te) in enumerate(folds):
        tr, te = np.asarray(tr), np.asarray(te)
        tr = np.flatnonzero(tr) if tr.dtype == bool else tr
        te = np.flatnonzero(te) if te.dtype == bool else te
        if len(tr) == 0 or len(te) == 0:
            raise ValueError(
                f"Parameter 'cv' produced a fold ({f}) with {len(tr)} training and {len(te)} "
                "test samples. Every fold needs both."
            )
        if max(tr.max(), te.max()) >= n or min(tr.min(), te.min()) < 0:
            raise ValueError(
                f"Parameter 'cv' produced indices outside 0..{n - 1} (fold {f}); there are "
                f"{n} samples."
            )
        out.append((tr.astype(np.intp), te.astype(np.intp)))
    return out


def encode_labels(y, folds):
    """Sorted classes and the class code of every sample, checked against the folds.

    Raises
    ------
    ValueError
        Fewer than 2 classes, or a training fold missing a class.
    """
    classes, y_codes = np.unique(np.asarray(y), return_inverse=True)
    y_codes = y_codes.astype(np.intp).ravel()
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

"""Generic engine: any scikit-learn classifier, fitted per sphere and fold in parallel."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning


def _chunk(est, X, rows_idx, labels, folds, need_dec):
    n_test_all = sum(len(te) for _, te in folds)
    pred = np.empty((len(labels), len(rows_idx), n_test_all), dtype=np.intp)
    dec = np.empty((len(labels), len(rows_idx), n_test_all)) if need_dec else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i, cols in enumerate(rows_idx):
            Xs = X[:, cols]
            for s, y in enumerate(labels):
                start = 0
                for tr, te in folds:
                    e = clone(est)
                    e.fit(Xs[tr], y[tr])
                    sl = slice(start, start + len(te))
                    pred[s, i, sl] = e.predict(Xs[te])
                    if need_dec:
                        if hasattr(e, "decision_function"):
                            dec[s, i, sl] = e.decision_function(Xs[te])
                        else:
                            dec[s, i, sl] = e.predict_proba(Xs[te])[:, 1]
                    start += len(te)
    return pred, dec


def run(ctx):
    """Fit a clone of ``ctx.estimator`` on every sphere and fold (joblib processes)."""
    from joblib import Parallel, delayed

    A, n_sph = ctx.A, ctx.n_spheres
    rows_idx = [A.indices[A.indptr[i] : A.indptr[i + 1]] for i in range(n_sph)]
    chunk = int(np.clip(n_sph // (8 * ctx.n_jobs), 1, 200))
    bounds = list(range(0, n_sph, chunk)) + [n_sph]
    tasks = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    args = (ctx.estimator, ctx.X)
    tail = (ctx.labels, ctx.folds, ctx.need_dec)
    if ctx.n_jobs == 1:
        results = (_chunk(*args, rows_idx[a:b], *tail) for a, b in tasks)
    else:
        results = Parallel(n_jobs=ctx.n_jobs, return_as="generator")(
            delayed(_chunk)(*args, rows_idx[a:b], *tail) for a, b in tasks
        )
    for (a, b), (pred, dec) in zip(tasks, results, strict=True):
        for s in range(ctx.n_sets):
            ctx.consume(s, np.arange(a, b), pred[s], None if dec is None else dec[s])
        ctx.progress((b - a) * ctx.n_sets)

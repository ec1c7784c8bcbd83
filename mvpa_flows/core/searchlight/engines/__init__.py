"""Searchlight engines behind :func:`mvpa_flows.core.searchlight.search_light`.

Every engine is a function ``run(ctx)`` of one :class:`EngineContext` (samples, labels,
folds, sphere adjacency, options) and reports, for each label set (observed labels first,
then permutations) and group of spheres, the predicted class codes and (when
``ctx.need_dec``) the decision values of every test sample, in the order of the
concatenated test sets of ``ctx.folds``, by calling
``ctx.consume(set_index, sphere_indices, pred, dec)``.

Every sphere is computed independently of the other spheres of its batch and of the
voxels outside it (no reduction runs across spheres or over the whole mask), so a run on
any subset of centres gives bit-identical results for those centres.

``gnb``, ``lda``, ``ridge``, ``correlation``
    closed-form engines (sparse products with per-voxel statistics, or batched small
    linear algebra on spheres grouped by size);
``svc``, ``logistic``
    one batched Newton loop for LinearSVC's and LogisticRegression's convex problems;
``generic``
    any scikit-learn classifier, fitted per sphere and fold in parallel.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from . import correlation, generic, gnb, lda, newton, ridge
from ._context import EngineContext

__all__ = ["ENGINES", "EngineContext", "run_engine"]

ENGINES = {
    "gnb": gnb.run,
    "correlation": correlation.run,
    "lda": lda.run,
    "ridge": ridge.run,
    "svc": newton.run_svc,
    "logistic": newton.run_logistic,
    "generic": generic.run,
}


def run_engine(name, ctx):
    """Run engine ``name`` on ``ctx``; BLAS threads are limited to ``ctx.n_jobs``.

    Parameters
    ----------
    name : str
        A key of :data:`ENGINES`.
    ctx : EngineContext
        Samples, labels, folds, adjacency and options.
    """
    engine = ENGINES[name]
    limit = 1 if (name == "generic" and ctx.n_jobs > 1) else ctx.n_jobs
    with threadpool_limits(limits=limit, user_api="blas"), np.errstate(all="ignore"):
        return engine(ctx)

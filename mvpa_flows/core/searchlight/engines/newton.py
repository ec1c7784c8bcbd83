"""Batched Newton solvers for LinearSVC's and LogisticRegression's problems.

Both solve, for a batch of independent problems (one per sphere) sharing the
labels, the same strictly convex problems as scikit-learn:

* LinearSVC (liblinear, L2 penalty, squared hinge, intercept as an extra
  feature equal to ``intercept_scaling`` and penalised like the weights)::

      min_w 0.5 ||w||^2 + C sum_i max(0, 1 - y_i w.z_i)^2

* LogisticRegression (lbfgs, L2 penalty, free intercept)::

      min_{w,b} 0.5 ||w||^2 + C sum_i log(1 + exp(-y_i (w.x_i + b)))

with a (generalised) Newton method and backtracking line search, to machine
precision.  The optimum is unique, so the answer is liblinear's / lbfgs's
answer up to *their* stopping tolerance.  Every problem stops on its own
criterion, so a problem's iterates do not depend on the rest of its batch.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from ._context import gather, size_batches

_TS = 0.5 ** np.arange(30)  # backtracking step sizes


def _solve_spd(H, g):
    try:
        L = np.linalg.cholesky(H)
        z = np.linalg.solve(L, g[..., None])
        return np.linalg.solve(np.swapaxes(L, 1, 2), z)[..., 0]
    except np.linalg.LinAlgError:
        return np.linalg.solve(H, g[..., None])[..., 0]


def _first_armijo(f, f0, gp, steps):
    """Index of the first step size meeting Armijo's condition (-1 if none).

    ``f(T, i)`` evaluates the objective at step sizes ``T`` for problems ``i``.
    The full step is tried first for every problem; only problems that reject
    it evaluate the shorter steps (the answer is the same as trying them all).
    """
    first = np.full(len(f0), -1)
    all_ = np.arange(len(f0))
    ok1 = f(steps[:1], all_)[0] <= f0 + 1e-4 * steps[0] * gp
    first[ok1] = 0
    rest = np.flatnonzero(~ok1)
    if len(rest):
        ft = f(steps[1:], rest)
        ok = ft <= f0[rest][None] + 1e-4 * steps[1:, None] * gp[rest][None]
        first[rest] = np.where(ok.any(axis=0), np.argmax(ok, axis=0) + 1, -1)
    return first


def svc_newton(Z, y, C, tol=1e-11, max_iter=100):
    """Solve L2-regularised squared-hinge SVMs (liblinear's primal) in batch.

    Parameters
    ----------
    Z : ndarray of shape (B, n, d)
        Features with the intercept column (``intercept_scaling``) appended.
    y : ndarray of shape (n,)
        Labels in {-1, +1}.
    C : float
        Inverse regularisation.
    tol : float, default=1e-11
        Stop when ``||grad|| <= tol * ||grad at 0||``.
    max_iter : int, default=100

    Returns
    -------
    w : ndarray of shape (B, d)
    """
    B, n, d = Z.shape
    w = np.zeros((B, d))
    live = np.arange(B)
    g0 = None
    eye = np.eye(d)
    for _ in range(max_iter):
        if len(live) == 0:
            break
        Zl, wl = Z[live], w[live]
        zw = np.einsum("bnd,bd->bn", Zl, wl)
        act = (y * zw) < 1
        r = (zw - y) * act
        g = wl + 2.0 * C * np.einsum("bnd,bn->bd", Zl, r)
        gn = np.linalg.norm(g, axis=1)
        if g0 is None:
            g0 = np.empty(B)
            g0[live] = gn
        keep = gn > tol * np.maximum(g0[live], 1e-300)
        live, Zl, wl, zw, act, g = live[keep], Zl[keep], wl[keep], zw[keep], act[keep], g[keep]
        if len(live) == 0:
            break
        Za = Zl * act[:, :, None]
        H = eye + 2.0 * C * np.matmul(Za.transpose(0, 2, 1), Za)
        p = -_solve_spd(H, g)
        zp = np.einsum("bnd,bd->bn", Zl, p)
        f0 = 0.5 * np.sum(wl * wl, axis=1) + C * np.sum(np.maximum(0, 1 - y * zw) ** 2, axis=1)
        gp = np.sum(g * p, axis=1)
        ww, wp, pp = np.sum(wl * wl, axis=1), np.sum(wl * p, axis=1), np.sum(p * p, axis=1)
        first = _first_armijo(
            lambda T, i, ww=ww, wp=wp, pp=pp, zw=zw, zp=zp: (
                0.5 * (ww[i][None] + 2 * T[:, None] * wp[i][None] + T[:, None] ** 2 * pp[i][None])
                + C
                * np.sum(
                    np.maximum(0, 1 - y * (zw[i][None] + T[:, None, None] * zp[i][None])) ** 2,
                    axis=2,
                )
            ),
            f0,
            gp,
            _TS,
        )
        ok_any = first >= 0
        first = np.where(ok_any, first, len(_TS) - 1)
        step = _TS[first]
        w[live] = wl + step[:, None] * p
        live = live[ok_any]
    return w


def logistic_newton(Z, y, C, tol=1e-11, max_iter=100):
    """Solve L2-regularised logistic regressions with a free intercept in batch.

    Parameters
    ----------
    Z : ndarray of shape (B, n, d)
        Features with a column of ones (the intercept, not penalised) last.
    y : ndarray of shape (n,)
        Labels in {-1, +1}.
    C : float
        Inverse regularisation.
    tol : float, default=1e-11
        Stop when ``||grad|| <= tol * ||grad at 0||``.
    max_iter : int, default=100

    Returns
    -------
    w : ndarray of shape (B, d)
        Weights, intercept last.
    """
    B, n, d = Z.shape
    w = np.zeros((B, d))
    pen = np.ones(d)
    pen[-1] = 0.0
    live = np.arange(B)
    g0 = None
    for _ in range(max_iter):
        if len(live) == 0:
            break
        Zl, wl = Z[live], w[live]
        zw = np.einsum("bnd,bd->bn", Zl, wl)
        m = y * zw
        s = expit(-m)
        g = pen * wl - C * np.einsum("bnd,bn->bd", Zl, y * s)
        gn = np.linalg.norm(g, axis=1)
        if g0 is None:
            g0 = np.empty(B)
            g0[live] = gn
        keep = gn > tol * np.maximum(g0[live], 1e-300)
        live, Zl, wl, zw, s, g = live[keep], Zl[keep], wl[keep], zw[keep], s[keep], g[keep]
        if len(live) == 0:
            break
        h = s * (1 - s)
        H = C * np.matmul((Zl * h[:, :, None]).transpose(0, 2, 1), Zl)
        H[:, np.arange(d), np.arange(d)] += pen + 1e-300
        p = -_solve_spd(H, g)
        zp = np.einsum("bnd,bd->bn", Zl, p)
        wpen = wl * pen
        f0 = 0.5 * np.sum(wpen * wl, axis=1) + C * np.sum(np.logaddexp(0, -y * zw), axis=1)
        gp = np.sum(g * p, axis=1)
        ww, wp, pp = (
            np.sum(wpen * wl, axis=1),
            np.sum(wpen * p, axis=1),
            np.sum(p * p * pen, axis=1),
        )
        T = _TS[:12]
        first = _first_armijo(
            lambda T, i, ww=ww, wp=wp, pp=pp, zw=zw, zp=zp: (
                0.5 * (ww[i][None] + 2 * T[:, None] * wp[i][None] + T[:, None] ** 2 * pp[i][None])
                + C
                * np.sum(
                    np.logaddexp(0, -y * (zw[i][None] + T[:, None, None] * zp[i][None])), axis=2
                )
            ),
            f0,
            gp,
            T,
        )
        ok_any = first >= 0
        first = np.where(ok_any, first, len(T) - 1)
        w[live] = wl + T[first][:, None] * p
        live = live[ok_any]
    return w


def _run(ctx, kind):
    X, est, labels, folds, need_dec = ctx.X, ctx.estimator, ctx.labels, ctx.folds, ctx.need_dec
    if True:
        C = float(est.C)
        if kind == "svc":
            bias = float(est.intercept_scaling)
            Xw = X
        else:
            bias = 1.0
            Xw = X - X.mean(axis=0)  # shift-invariant with a free intercept
        offs = ctx.test_offsets
        for _k, rows, cols in size_batches(
            ctx.A, lambda k: len(X) * (k + 1) * 8 * 4 + (k + 1) ** 2 * 8 * 4
        ):
            if True:
                sel = slice(None)
                Xg = gather(Xw, cols[sel])
                B = Xg.shape[0]
                Z = np.concatenate([Xg, np.full((B, len(X), 1), bias)], axis=2)
                for s in range(len(labels)):
                    ypm = np.where(labels[s] == 1, 1.0, -1.0)
                    dec_all = np.empty((B, offs[-1]))
                    for f, (tr, te) in enumerate(folds):
                        Ztr = np.ascontiguousarray(Z[:, tr])
                        if kind == "svc":
                            w = svc_newton(Ztr, ypm[tr], C)
                        else:
                            w = logistic_newton(Ztr, ypm[tr], C)
                        dec_all[:, offs[f] : offs[f + 1]] = np.einsum("bnk,bk->bn", Z[:, te], w)
                    pred = (dec_all > 0).astype(np.intp)
                    ctx.consume(s, rows[sel], pred, dec_all if need_dec else None)
                    ctx.progress(B)


def run_svc(ctx):
    """LinearSVC (squared hinge, L2, penalised intercept) in every sphere and fold."""
    return _run(ctx, "svc")


def run_logistic(ctx):
    """LogisticRegression (L2, free intercept) in every sphere and fold."""
    return _run(ctx, "logistic")

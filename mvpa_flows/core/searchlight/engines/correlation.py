"""Haxby's nearest-centroid correlation classifier as sparse products.

Pearson's r between a test pattern x and a class centroid m over the k voxels of a
sphere needs only sums over the sphere: sum x, sum x^2, sum m, sum m^2 and sum x m, each
one sparse product ``A @ (per-voxel columns)``.
"""

from __future__ import annotations

import numpy as np

from ._context import BUDGET as _BUDGET
from ._context import restrict_columns, spmm


def run(ctx):
    """Correlation with the class centroids of every fold, in every sphere.

    Centres are processed in blocks (bounded memory on any mask); each block works on the
    voxels its spheres touch.
    """
    K, offs = ctx.n_classes, ctx.test_offsets
    n = ctx.n_samples
    pm = ctx.pattern_mean  # Pearson r is blind to a per-pattern shift; it keeps sums exact
    step = max(1, int(_BUDGET // (8 * 2 * n)))
    for b0 in range(0, ctx.n_spheres, step):
        rows = np.arange(b0, min(ctx.n_spheres, b0 + step))
        _, Xb, Ab = restrict_columns(ctx.A[rows], ctx.X, keep=0.7)
        _block(ctx, rows, Xb - pm[:, None], Ab.astype(np.float64), K, offs)


def _block(ctx, rows, Xs, A, K, offs):
    n_sph, V = A.shape
    n = len(Xs)
    k = np.diff(A.indptr).astype(float)[:, None]
    S = spmm(A, np.concatenate([Xs.T, (Xs**2).T], axis=1), ctx.n_jobs)
    Sx, Sxx = S[:, :n], S[:, n:]
    del S
    vx = Sxx - Sx**2 / k
    vx[vx <= 1e-13 * Sxx] = 0.0
    XteT = [np.ascontiguousarray(Xs[te].T) for _, te in ctx.folds]  # shared by label sets
    for s, y in enumerate(ctx.labels):
        pred = np.empty((n_sph, offs[-1]), dtype=np.intp)
        dec = np.empty((n_sph, offs[-1])) if ctx.need_dec else None
        for f, (tr, te) in enumerate(ctx.folds):
            n_te = len(te)
            # centroids: class means over the training samples (K, V)
            W = np.zeros((K, n))
            for c in range(K):
                members = tr[y[tr] == c]
                W[c, members] = 1.0 / len(members)
            M = W @ Xs
            # columns: sum m, sum m^2 and sum x m for every class and test sample
            Q = np.empty((V, K * (2 + n_te)))
            Q[:, :K] = M.T
            Q[:, K : 2 * K] = (M * M).T
            for c in range(K):
                np.multiply(
                    XteT[f], M[c][:, None], out=Q[:, 2 * K + c * n_te : 2 * K + (c + 1) * n_te]
                )
            P = spmm(A, Q, ctx.n_jobs)
            Sm, Smm = P[:, :K], P[:, K : 2 * K]
            Sxm = P[:, 2 * K :].reshape(n_sph, K, n_te)
            vm = Smm - Sm**2 / k
            vm[vm <= 1e-13 * Smm] = 0.0
            num = Sxm - Sx[:, te][:, None, :] * Sm[:, :, None] / k[:, :, None]
            den = np.sqrt(vx[:, te][:, None, :] * vm[:, :, None])
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.where(den > 0, num / den, 0.0)  # (n_sph, K, n_te)
            pred[:, offs[f] : offs[f + 1]] = np.argmax(r, axis=1)
            if dec is not None:
                dec[:, offs[f] : offs[f + 1]] = r[:, 1] - r[:, 0]
        ctx.consume(s, rows, pred, dec)
        ctx.progress(n_sph)

"""Haxby's nearest-centroid correlation classifier as sparse products.

Pearson's r between a test pattern x and a class centroid m over the k voxels of a
sphere needs only sums over the sphere: sum x, sum x^2, sum m, sum m^2 and sum x m, each
one sparse product ``A @ (per-voxel columns)``.
"""

from __future__ import annotations

import numpy as np

from ._context import spmm


def run(ctx):
    """Correlation with the class centroids of every fold, in every sphere."""
    X, A, K = ctx.X, ctx.A.astype(np.float64), ctx.n_classes
    n_sph = ctx.n_spheres
    k = np.diff(A.indptr).astype(float)[:, None]
    Xs = X - X.mean(axis=1, keepdims=True)  # Pearson r is blind to a per-pattern shift
    S = spmm(A, np.concatenate([Xs.T, (Xs**2).T], axis=1), ctx.n_jobs)
    Sx, Sxx = S[:, : len(X)], S[:, len(X) :]
    vx = Sxx - Sx**2 / k
    vx[vx <= 1e-13 * Sxx] = 0.0
    offs = ctx.test_offsets
    for s, y in enumerate(ctx.labels):
        r_all = np.empty((n_sph, offs[-1], K))
        for f, (tr, te) in enumerate(ctx.folds):
            ytr = y[tr]
            M = np.stack([Xs[tr][ytr == c].mean(axis=0) for c in range(K)])  # (K, V)
            cols = [M.T, (M**2).T, (Xs[te][None] * M[:, None, :]).reshape(-1, X.shape[1]).T]
            P = spmm(A, np.concatenate(cols, axis=1), ctx.n_jobs)
            Sm, Smm = P[:, :K], P[:, K : 2 * K]
            Sxm = P[:, 2 * K :].reshape(n_sph, K, len(te))
            vm = Smm - Sm**2 / k
            vm[vm <= 1e-13 * Smm] = 0.0
            xs = Sx[:, te]
            num = Sxm - xs[:, None, :] * Sm[:, :, None] / k[:, :, None]
            den = np.sqrt(vx[:, te][:, None, :] * vm[:, :, None])
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.where(den > 0, num / den, 0.0)
            r_all[:, offs[f] : offs[f + 1], :] = r.transpose(0, 2, 1)
        pred = np.argmax(r_all, axis=-1)
        dec = r_all[..., 1] - r_all[..., 0] if ctx.need_dec else None
        ctx.consume(s, slice(None), pred, dec)
        ctx.progress(n_sph)

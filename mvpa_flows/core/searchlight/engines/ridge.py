"""RidgeClassifier on batches of spheres: one inverse per sphere for every fold and label set.

scikit-learn's ``RidgeClassifier`` regresses label-binarised targets (+-1) on the training
samples, both centred on the training means, with penalty ``alpha``. With ``G`` the Gram
matrix of a sphere over all samples, a fold's centred Gram plus ``alpha I`` is
``H - U^T U`` with ``H = G + alpha I`` and ``U`` a few rows: the samples outside the
training set and ``sqrt(n_train)`` times the training mean. So ``H`` is inverted once per
sphere and every fold follows from the Woodbury identity with a system the size of ``U``
(19 rows with 12 runs instead of a k x k solve), refined once against the exact product;
every label set (permutations included) shares it. Spheres whose ``H`` is too
ill-conditioned for the identity keep one direct solve per fold.
"""

from __future__ import annotations

import numpy as np

from ..._parallel import thread_imap
from ._context import column_mean, gather, sample_rows, size_batches, solve

#: spheres with a larger (Frobenius) condition number of H solve every fold directly
_MAX_COND = 1e10


def _matmul_t(A, B):
    """Batched ``A^T B``."""
    return np.matmul(A.transpose(0, 2, 1), B)


def _fold_weights(H, Hinv, woodbury, U, rhs):
    """``(H - U^T U)^-1 rhs`` for a batch: Woodbury (refined once) or a direct solve."""
    if woodbury.all():
        return _woodbury(H, Hinv, U, rhs)
    w = np.empty_like(rhs)
    wb, db = np.flatnonzero(woodbury), np.flatnonzero(~woodbury)
    if len(wb):
        w[wb] = _woodbury(H[wb], Hinv[wb], U[wb], rhs[wb])
    w[db] = solve(H[db] - _matmul_t(U[db], U[db]), rhs[db])
    return w


def _woodbury(H, Hinv, U, rhs):
    V = np.matmul(U, Hinv)  # U H^-1
    S = -np.matmul(V, U.transpose(0, 2, 1))
    r = U.shape[1]
    S[:, np.arange(r), np.arange(r)] += 1.0  # I - U H^-1 U^T
    Sinv = np.linalg.inv(S)

    def apply(b):
        x = np.matmul(Hinv, b)
        return x + _matmul_t(V, np.matmul(Sinv, np.matmul(U, x)))

    x = apply(rhs)
    # one refinement against the exact product (H - U^T U) x
    return x + apply(rhs - np.matmul(H, x) + _matmul_t(U, np.matmul(U, x)))


def run(ctx):
    """RidgeClassifier's decision values in every sphere and fold, spheres batched by size."""
    labels, folds, K, need_dec = ctx.labels, ctx.folds, ctx.n_classes, ctx.need_dec
    alpha = float(ctx.estimator.alpha)
    T = 1 if K == 2 else K
    Yc = -np.ones((K, T))  # label-binarised targets in {-1, 1}
    if K == 2:
        Yc[1, 0] = 1.0
    else:
        Yc[np.arange(K), np.arange(K)] = 1.0
    offs = ctx.test_offsets
    L = len(labels)
    X = ctx.X
    mu = column_mean(X)  # ridge centres on the training mean: any shift cancels
    n = len(X)
    Y = Yc[labels.T].reshape(n, L * T)  # every label set's targets
    v = np.zeros((len(folds), n))
    for f, (tr, _) in enumerate(folds):
        v[f, tr] = 1.0
    outside = [np.flatnonzero(vf == 0) for vf in v]

    def chunk(job):
        k, rows, cols = job
        Xg = gather(X, cols, mu)  # (B, n, k)
        B = len(rows)
        H = _matmul_t(Xg, Xg)
        H[:, np.arange(k), np.arange(k)] += alpha
        Hinv = np.linalg.inv(H)
        cond = np.linalg.norm(H, axis=(1, 2)) * np.linalg.norm(Hinv, axis=(1, 2))
        woodbury = cond <= _MAX_COND
        XY = _matmul_t(Xg, np.broadcast_to(Y, (B, n, L * T)))  # (B, k, L*T)
        s1 = Xg.sum(axis=1)
        dec_all = np.empty((L, B, offs[-1], T))
        for f, (tr, te) in enumerate(folds):
            Xo = sample_rows(Xg, outside[f])
            n_tr = len(tr)
            m = (s1 - Xo.sum(axis=1)) / n_tr  # training mean (B, k)
            ybar = Y[tr].mean(axis=0)  # (L*T,)
            U = np.concatenate([Xo, np.sqrt(n_tr) * m[:, None, :]], axis=1)
            rhs = XY - _matmul_t(Xo, np.broadcast_to(Y[outside[f]], (B, len(outside[f]), L * T)))
            rhs -= n_tr * m[:, :, None] * ybar[None, None, :]
            w = _fold_weights(H, Hinv, woodbury, U, rhs)  # (B, k, L*T)
            b = ybar[None] - np.matmul(m[:, None, :], w)[:, 0]  # (B, L*T)
            d = np.matmul(sample_rows(Xg, te), w) + b[:, None, :]
            dec_all[:, :, offs[f] : offs[f + 1]] = d.reshape(B, len(te), L, T).transpose(
                2, 0, 1, 3
            )
        return rows, dec_all

    def per_sphere(k):
        # samples, H and its inverse, targets' products, one fold's temporaries
        return 8 * (2 * n * k + 4 * k * k + 4 * k * L * T + n * L * T)

    for rows, dec_all in thread_imap(chunk, size_batches(ctx.A, per_sphere), ctx.n_jobs):
        for s in range(L):
            if K == 2:
                dd = dec_all[s, ..., 0]
                pred = (dd > 0).astype(np.int8)
                dec = dd if need_dec else None
            else:
                pred = np.argmax(dec_all[s], axis=-1)
                dec = None
            ctx.consume(s, rows, pred, dec)
            ctx.progress(len(rows))

"""RidgeClassifier on batches of spheres: per-atom Gram matrices summed into every fold."""

from __future__ import annotations

import numpy as np

from ..._parallel import thread_imap
from ._context import size_batches, solve


def run(ctx):
    """RidgeClassifier's decision values in every sphere and fold, spheres batched by size."""
    X, labels, folds, n_classes = ctx.X, ctx.labels, ctx.folds, ctx.n_classes
    need_dec = ctx.need_dec
    alpha = float(ctx.estimator.alpha)
    K = n_classes
    T = 1 if K == 2 else K
    Y = -np.ones((K, T))  # label-binarised targets in {-1, 1}
    if K == 2:
        Y[1, 0] = 1.0
    else:
        Y[np.arange(K), np.arange(K)] = 1.0
    offs = ctx.test_offsets
    atom, n_atoms, train_atoms, test_atoms = ctx.atoms
    members = [np.flatnonzero(atom == a) for a in range(n_atoms)]
    L = len(labels)
    # samples x (1 + label sets x targets): ones (for the sums) then every target column
    E = np.concatenate([np.ones((len(X), 1)), Y[labels.T].reshape(len(X), L * T)], axis=1)
    ysum = [E[tr, 1:].sum(axis=0) for tr, _ in folds]
    XT = np.ascontiguousarray((X - X.mean(axis=0)).T)  # (V, n): spheres gather rows

    def chunk(job):
        k, rows, cols = job
        Xt = XT[cols]  # (B, k, n)
        B = len(rows)
        S2 = np.empty((n_atoms, B, k, k))
        P = np.empty((n_atoms, B, k, 1 + L * T))
        for a, idx in enumerate(members):
            Xa = Xt[:, :, idx]
            np.matmul(Xa, Xa.transpose(0, 2, 1), out=S2[a])
            np.matmul(Xa, E[idx], out=P[a])
        S2tot, Ptot = S2.sum(axis=0), P.sum(axis=0)
        dec_all = np.empty((L, B, offs[-1], T))
        diag = np.arange(k)
        for f, (tr, te) in enumerate(folds):
            if len(test_atoms[f]) * 2 <= n_atoms:
                s2, p = S2tot.copy(), Ptot.copy()
                for a in test_atoms[f]:
                    s2 -= S2[a]
                    p -= P[a]
            else:
                s2, p = S2[train_atoms[f]].sum(axis=0), P[train_atoms[f]].sum(axis=0)
            n = len(tr)
            s1 = p[:, :, 0]
            m = s1 / n  # (B, k)
            G = s2 - n * m[:, :, None] * m[:, None, :]
            G[:, diag, diag] += alpha
            ybar = ysum[f] / n  # (L*T,)
            rhs = p[:, :, 1:] - s1[:, :, None] * ybar[None, None, :]
            w = solve(G, rhs)  # (B, k, L*T)
            b = ybar[None] - np.matmul(m[:, None, :], w)[:, 0]  # (B, L*T)
            d = np.matmul(Xt[:, :, te].transpose(0, 2, 1), w) + b[:, None, :]
            dec_all[:, :, offs[f] : offs[f + 1]] = d.reshape(B, len(te), L, T).transpose(
                2, 0, 1, 3
            )
        return rows, dec_all

    jobs = size_batches(
        ctx.A, lambda k: len(X) * k * 8 * 2 + n_atoms * k * (k + 1 + L * T) * 8 * 2
    )
    for rows, dec_all in thread_imap(chunk, jobs, ctx.n_jobs):
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

"""Linear discriminant analysis (lsqr solver, optional shrinkage) on batches of spheres.

Class sums and scatter matrices are accumulated per atom of samples (samples that share
their fold membership), so every fold's statistics are sums over atoms; the per-class
Ledoit-Wolf shrinkage and the solve follow scikit-learn's ``_class_cov`` and ``lsqr``.
"""

from __future__ import annotations

import numpy as np

from ..._parallel import thread_imap
from ._context import gather, size_batches, solve, sum_atoms


def _lda_solve(S1, S2, cnt, shrinkage, U2=None):
    """Per-sphere LDA coefficients from class sums.

    S1 (B, K, k) class sums, S2 (B, K, k, k) class scatter, cnt (K,) counts.
    Returns coef (B, K, k), intercept (B, K).
    """
    B, K, k = S1.shape
    n = cnt.sum()
    priors = cnt / n
    means = S1 / cnt[None, :, None]
    cov = np.zeros((B, k, k))
    diag_add = np.zeros((B, k))
    eye = np.arange(k)
    for c in range(K):
        C = S2[:, c] / cnt[c] - means[:, c, :, None] * means[:, c, None, :]
        if shrinkage in (None, "empirical"):
            cov += priors[c] * C
            continue
        var = np.diagonal(C, axis1=1, axis2=2).copy()  # (B, k)
        var[var < 0] = 0.0
        scale = np.sqrt(var)
        const = scale == 0  # StandardScaler leaves constant features unscaled
        scale[const] = 1.0
        w = 1.0 / scale**2
        tr_diag = var * w  # diag of the correlation matrix (1, or 0 when constant)
        p = k
        mu = tr_diag.sum(axis=1) / p
        if shrinkage == "auto":
            # delta_ = ||R||_F^2 with R = C / (s s^T)
            delta_ = np.einsum("bi,bij,bj->b", w, C * C, w)
            nc = cnt[c]
            beta_ = U2[c]  # sum over samples of (sum_i z_i^2)^2, computed by caller
            beta = 1.0 / (p * nc) * (beta_ / nc - delta_)
            delta = (delta_ - 2.0 * mu * tr_diag.sum(axis=1) + p * mu**2) / p
            beta = np.minimum(beta, delta)
            with np.errstate(invalid="ignore", divide="ignore"):
                sh = np.where(beta == 0, 0.0, beta / delta)
        else:  # shrunk_covariance(empirical_covariance(X), shrinkage): no scaling
            sh = float(shrinkage)
            cov += priors[c] * (1.0 - sh) * C
            diag_add += (priors[c] * sh * np.trace(C, axis1=1, axis2=2) / k)[:, None]
            continue
        # rescaled shrunk covariance: (1-sh) C + sh * mu * diag(scale^2)
        cov += (priors[c] * (1.0 - sh))[:, None, None] * C
        diag_add += (priors[c] * sh * mu)[:, None] * scale**2
    cov[:, eye, eye] += diag_add
    coef = solve(cov, means.transpose(0, 2, 1)).transpose(0, 2, 1)  # (B, K, k)
    intercept = -0.5 * np.einsum("bck,bck->bc", means, coef) + np.log(priors)[None, :]
    return coef, intercept


def run(ctx):
    """LDA's decision values in every sphere and fold, spheres batched by size."""
    labels, folds, n_classes, need_dec = ctx.labels, ctx.folds, ctx.n_classes, ctx.need_dec
    shrinkage = ctx.estimator.shrinkage
    X = ctx.X - ctx.X.mean(axis=0)
    K = n_classes
    offs = ctx.test_offsets
    atom, n_atoms, train_atoms, _ = ctx.atoms

    def chunk(job):
        k, rows, cols = job
        Xg = gather(X, cols)  # (B, n, k)
        B = Xg.shape[0]
        out = []
        for s in range(len(labels)):
            y = labels[s]
            S1 = np.zeros((n_atoms, B, K, k))
            S2 = np.zeros((n_atoms, B, K, k, k))
            cnt = np.zeros((n_atoms, K))
            for a in range(n_atoms):
                for c in range(K):
                    idx = np.flatnonzero((atom == a) & (y == c))
                    if len(idx) == 0:
                        continue
                    Xa = Xg[:, idx]
                    cnt[a, c] = len(idx)
                    S1[a, :, c] = Xa.sum(axis=1)
                    S2[a, :, c] = np.matmul(Xa.transpose(0, 2, 1), Xa)
            S1tot, S2tot = S1.sum(axis=0), S2.sum(axis=0)
            dec_all = np.empty((B, offs[-1], K))
            for f, (tr, te) in enumerate(folds):
                ta = train_atoms[f]
                s1 = sum_atoms(S1, ta, n_atoms, S1tot)
                s2 = sum_atoms(S2, ta, n_atoms, S2tot)
                cn = cnt[ta].sum(axis=0)
                U2 = {}
                if shrinkage == "auto":
                    ytr = y[tr]
                    means = s1 / cn[None, :, None]
                    for c in range(K):
                        Xc = Xg[:, tr[ytr == c]]  # (B, nc, k)
                        m = means[:, c]
                        var = np.einsum("bnk,bnk->bk", Xc, Xc) / cn[c] - m**2
                        var[var < 0] = 0
                        sc = np.sqrt(var)
                        sc[sc == 0] = 1.0
                        w = 1.0 / sc**2
                        # per-sample sum_i ((x_i - m_i) / s_i)^2
                        u = np.einsum("bnk,bk->bn", (Xc - m[:, None, :]) ** 2, w)
                        U2[c] = np.sum(u * u, axis=1)
                coef, icpt = _lda_solve(s1, s2, cn, shrinkage, U2)
                d = np.matmul(Xg[:, te], coef.transpose(0, 2, 1)) + icpt[:, None, :]
                dec_all[:, offs[f] : offs[f + 1]] = d
            pred = np.argmax(dec_all, axis=-1)
            dec = dec_all[..., 1] - dec_all[..., 0] if need_dec else None
            out.append((s, pred, dec))
        return rows, out

    jobs = size_batches(ctx.A, lambda k: len(X) * k * k * 8 * 2)
    for rows, out in thread_imap(chunk, jobs, ctx.n_jobs):
        for s, pred, dec in out:
            ctx.consume(s, rows, pred, dec)
            ctx.progress(len(rows))

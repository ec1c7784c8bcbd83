"""Linear discriminant analysis (lsqr solver, optional shrinkage) on batches of spheres.

scikit-learn's ``lsqr`` LDA pools per-class covariances (each shrunk on its own, for
``'auto'`` by Ledoit-Wolf on standardised data) and solves one k x k system per fold. For
every label set the class scatter matrices of a sphere are formed once over all samples;
a fold's covariance and Ledoit-Wolf statistics then follow from them with low-rank
corrections (the few samples outside the fold's training set, and the class means), so no
per-fold scatter matrix is formed: per fold, one weighted sum of the class scatters, one
small product and the solve (Cholesky). A shared eigendecomposition does not pay: the
shrinkage target (each fold's class variances) changes with the fold, so every fold needs
its own k x k solve, which costs less than one eigendecomposition.
"""

from __future__ import annotations

import numpy as np

from ..._parallel import thread_imap
from ._context import column_mean, gather, sample_rows, size_batches, solve_spd


def _weighted_sq_norm(A, AA, b, sigma, w):
    """``|| A - sum_j sigma_j b_j b_j^T ||^2`` with entries weighted by ``w_i w_j``.

    A, AA (B, k, k): a symmetric matrix and its elementwise square; b (B, r, k) vectors;
    sigma (B, r) or (r,) their weights; w (B, k).
    """
    bw = b * w[:, None, :]
    T = np.matmul(bw, A)  # (B, r, k)
    cross = np.sum(sigma * np.sum(T * bw, axis=2), axis=1)
    gram = np.matmul(bw, b.transpose(0, 2, 1))  # b_j^T W b_l
    ss = sigma[..., :, None] * sigma[..., None, :]
    full = np.sum(np.matmul(AA, w[..., None])[..., 0] * w, axis=1)
    return full - 2.0 * cross + np.sum(ss * gram * gram, axis=(1, 2))


def _fold_system(A, AA, Xo, s1, dA, n_c, shrinkage, U2):
    """Covariance (B, k, k) and class means (B, K, k) of one fold.

    Per class c: ``A[c]`` (B, k, k) scatter over the base samples (all samples, or the
    fold's training samples), ``AA[c]`` its elementwise square (for ``'auto'``), ``Xo[c]``
    (B, r, k) the base samples outside the fold's training set, ``s1[c]`` and ``dA[c]``
    (B, k) the base sums and scatter diagonal, ``n_c[c]`` the base count; ``U2[c]`` (B,)
    Ledoit-Wolf's sum over samples of (sum_i z_i^2)^2.
    """
    K = len(A)
    B, k = s1[0].shape
    n_f = np.array([n_c[c] - Xo[c].shape[1] for c in range(K)], dtype=float)
    priors = n_f / n_f.sum()
    means = np.empty((B, K, k))
    rows, diag_add = [], np.zeros((B, k))
    alpha = []
    for c in range(K):
        nc = n_f[c]
        m = (s1[c] - Xo[c].sum(axis=1)) / nc
        means[:, c] = m
        var = (dA[c] - np.sum(Xo[c] ** 2, axis=1)) / nc - m * m
        var[var < 0] = 0.0
        if shrinkage in (None, "empirical"):
            sh = np.zeros(B)
        elif shrinkage == "auto":
            const = var == 0  # StandardScaler leaves constant features unscaled
            scale2 = np.where(const, 1.0, var)
            w = 1.0 / scale2
            tr_diag = var * w  # diagonal of the correlation matrix (1, or 0 when constant)
            p = k
            mu = tr_diag.sum(axis=1) / p
            # ||C||_W^2 with C = (A - Xo^T Xo) / nc - m m^T and W = w w^T
            b = np.concatenate([Xo[c], m[:, None, :]], axis=1)
            sigma = np.r_[np.ones(Xo[c].shape[1]), nc]
            delta_ = _weighted_sq_norm(A[c], AA[c], b, sigma, w) / (nc * nc)
            beta = 1.0 / (p * nc) * (U2[c] / nc - delta_)
            delta = (delta_ - 2.0 * mu * tr_diag.sum(axis=1) + p * mu**2) / p
            beta = np.minimum(beta, delta)
            with np.errstate(invalid="ignore", divide="ignore"):
                sh = np.where(beta == 0, 0.0, beta / delta)
            diag_add += (priors[c] * sh * mu)[:, None] * scale2
        else:  # shrunk_covariance(empirical_covariance(X), shrinkage): no scaling
            sh = np.full(B, float(shrinkage))
            diag_add += (priors[c] * sh * var.sum(axis=1) / k)[:, None]
        a = priors[c] * (1.0 - sh) / nc  # weight of this class's scatter in the pool
        alpha.append(a)
        root = np.sqrt(a)[:, None, None]
        rows += [root * Xo[c], root * np.sqrt(nc) * m[:, None, :]]
    cov = alpha[0][:, None, None] * A[0]
    for c in range(1, K):
        cov += alpha[c][:, None, None] * A[c]
    E = np.concatenate(rows, axis=1)
    cov -= np.matmul(E.transpose(0, 2, 1), E)
    cov[:, np.arange(k), np.arange(k)] += diag_add
    return cov, means, priors


def _lda_coef(cov, means, priors):
    """Coefficients (B, K, k) and intercepts (B, K) of scikit-learn's lsqr solver."""
    coef = solve_spd(cov, means.transpose(0, 2, 1)).transpose(0, 2, 1)
    intercept = -0.5 * np.sum(means * coef, axis=2) + np.log(priors)[None, :]
    return coef, intercept


def _beta(X, X2, y, v, means, cnt, K):
    """Ledoit-Wolf's ``sum_samples (sum_i z_i^2)^2`` of every fold and class, where
    ``z = (x - mean) / scale`` over the class's training samples (zero-variance voxels
    unscaled).

    X, X2 (B, n, k): samples and their squares; y (n,) classes; v (F, n) training
    indicators; means (F, B, K, k) and cnt (F, K) of the folds' classes.
    Returns (F, K, B).
    """
    F = len(v)
    B, n, k = X.shape
    var = np.empty((F, B, K, k))
    for f in range(F):
        for c in range(K):
            rows = v[f] * (y == c)
            var[f, :, c] = rows @ X2 / cnt[f, c] - means[f, :, c] ** 2
    var[var < 0] = 0.0
    w = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 1.0)  # 1 / scale^2
    # u_s = sum_i (x_si - m_i)^2 w_i = x^2.w - 2 x.(m w) + m^2.w for every fold and class
    Wm = np.concatenate([w, -2.0 * means * w], axis=3)  # (F, B, K, 2k)
    Wm = Wm.transpose(1, 3, 0, 2).reshape(B, 2 * k, F * K)
    u = np.matmul(np.concatenate([X2, X], axis=2), Wm).reshape(B, n, F, K)
    u += np.sum(means**2 * w, axis=3).transpose(1, 0, 2)[:, None]
    mask = v[:, None, :] * (y[None, None, :] == np.arange(K)[None, :, None])  # (F, K, n)
    return np.sum(u * u * mask.transpose(2, 0, 1)[None], axis=1).transpose(1, 2, 0)


def run(ctx):
    """LDA's decision values in every sphere and fold, spheres batched by size."""
    labels, folds, K, need_dec = ctx.labels, ctx.folds, ctx.n_classes, ctx.need_dec
    shrinkage = ctx.estimator.shrinkage
    auto = shrinkage == "auto"
    X = ctx.X
    mu = column_mean(X)  # LDA is shift-invariant; centring keeps sums exact
    n = len(X)
    offs = ctx.test_offsets
    F = len(folds)
    v = np.zeros((F, n))
    for f, (tr, _) in enumerate(folds):
        v[f, tr] = 1.0
    # per fold: downdate the all-sample scatter by the samples outside the training set,
    # or (when those are the majority) form the training scatter directly
    outside = [np.flatnonzero(v[f] == 0) for f in range(F)]
    downdate = [len(o) < len(tr) for o, (tr, _) in zip(outside, folds, strict=True)]

    def scatter(Xc):
        return Xc.sum(axis=1), np.matmul(Xc.transpose(0, 2, 1), Xc)

    def chunk(job):
        k, rows, cols = job
        Xg = gather(X, cols, mu)  # (B, n, k)
        B = Xg.shape[0]
        diag = np.arange(k)
        out = []
        for y in labels:
            base = [scatter(sample_rows(Xg, y == c)) for c in range(K)]
            base_sq = [S2 * S2 for _, S2 in base] if auto else [None] * K
            U2 = None
            if auto:
                cnt = _counts(y, v, K)
                U2 = _beta(Xg, Xg * Xg, y, v, _fold_means(Xg, y, v, K, cnt), cnt, K)
            dec_all = np.empty((B, offs[-1], K))
            for f, (tr, te) in enumerate(folds):
                if downdate[f]:
                    A = [S2 for _, S2 in base]
                    AA = base_sq
                    s1 = [S1 for S1, _ in base]
                    Xo = [sample_rows(Xg, outside[f][y[outside[f]] == c]) for c in range(K)]
                    n_c = [int(np.sum(y == c)) for c in range(K)]
                else:
                    fold = [scatter(sample_rows(Xg, tr[y[tr] == c])) for c in range(K)]
                    A = [S2 for _, S2 in fold]
                    AA = [S2 * S2 for S2 in A] if auto else [None] * K
                    s1 = [S1 for S1, _ in fold]
                    Xo = [np.zeros((B, 0, k))] * K
                    n_c = [int(np.sum(y[tr] == c)) for c in range(K)]
                dA = [a[:, diag, diag] for a in A]
                cov, means, priors = _fold_system(
                    A, AA, Xo, s1, dA, n_c, shrinkage, None if U2 is None else U2[f]
                )
                coef, icpt = _lda_coef(cov, means, priors)
                dec_all[:, offs[f] : offs[f + 1]] = (
                    np.matmul(sample_rows(Xg, te), coef.transpose(0, 2, 1)) + icpt[:, None, :]
                )
            pred = np.argmax(dec_all, axis=-1)
            dec = dec_all[..., 1] - dec_all[..., 0] if need_dec else None
            out.append((pred, dec))
        return rows, out

    def per_sphere(k):
        # samples (+ squares), class scatters (+ squares), one fold's system
        return 8 * (3 * n * k + 2 * K * k * k + 4 * k * k + 2 * n * F * K)

    for rows, out in thread_imap(chunk, size_batches(ctx.A, per_sphere), ctx.n_jobs):
        for s, (pred, dec) in enumerate(out):
            ctx.consume(s, rows, pred, dec)
            ctx.progress(len(rows))


def _counts(y, v, K):
    """(F, K) training samples of every class in every fold."""
    return np.stack([v @ (y == c) for c in range(K)], axis=1)


def _fold_means(X, y, v, K, cnt):
    """(F, B, K, k) class means of every fold's training samples (``cnt``: (F, K))."""
    sums = np.stack([np.matmul(v * (y == c), X) for c in range(K)], axis=2)  # (B, F, K, k)
    return (sums / cnt[None, :, :, None]).transpose(1, 0, 2, 3)

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
from scipy.linalg import blas, lapack

from ..._parallel import thread_imap
from ._context import column_mean, gather, sample_rows, size_batches, solve


def _weighted_sq_norms(A, AA, bs, sigmas, ws):
    """``|| A - sum_j sigma_j b_j b_j^T ||^2`` weighted by ``w_i w_j``, for several folds
    sharing ``A``.

    A, AA (B, k, k): a symmetric matrix and its elementwise square; per fold g, ``bs[g]``
    (B, r_g, k) vectors, ``sigmas[g]`` (r_g,) their weights and ``ws[g]`` (B, k) the
    entry weights. The products with ``A`` and ``AA`` run once over every fold's vectors
    (one pass over each matrix, not one per fold). Returns (B, n_folds).
    """
    G = len(bs)
    W = np.stack(ws, axis=2)  # (B, k, G)
    full = np.sum(np.matmul(AA, W) * W, axis=1)  # w^T AA w of every fold
    bw = [b * w[:, None, :] for b, w in zip(bs, ws, strict=True)]
    BW = np.concatenate(bw, axis=1)  # (B, R, k)
    T = np.matmul(BW, A)
    T *= BW
    q = np.sum(T, axis=2) * np.concatenate(sigmas)  # (B, R)
    del T
    starts = np.r_[0, np.cumsum([len(sg) for sg in sigmas])[:-1]]
    cross = np.add.reduceat(q, starts, axis=1) if q.shape[1] else np.zeros((len(A), G))
    out = full - 2.0 * cross
    for g in range(G):
        gram = np.matmul(bw[g], bs[g].transpose(0, 2, 1))  # b_j^T W b_l
        ss = sigmas[g][:, None] * sigmas[g][None, :]
        out[:, g] += np.sum(ss * gram * gram, axis=(1, 2))
    return out


def _fold_stats(Xo, s1, dA, n_c):
    """Class means (B, K, k), variances (K of (B, k)), training counts and priors of one
    fold from the base sums ``s1[c]``, scatter diagonals ``dA[c]`` and counts ``n_c[c]``
    and the base samples ``Xo[c]`` (B, r, k) outside the fold's training set."""
    K = len(s1)
    B, k = s1[0].shape
    n_f = np.array([n_c[c] - Xo[c].shape[1] for c in range(K)], dtype=float)
    means = np.empty((B, K, k))
    var = []
    for c in range(K):
        m = (s1[c] - Xo[c].sum(axis=1)) / n_f[c]
        means[:, c] = m
        v = (dA[c] - np.sum(Xo[c] ** 2, axis=1)) / n_f[c] - m * m
        v[v < 0] = 0.0
        var.append(v)
    return means, var, n_f, n_f / n_f.sum()


def _auto_shrinkage(folds, U2):
    """Ledoit-Wolf shrinkage of every class of every fold (scikit-learn's ``'auto'``:
    on standardised data), with the weighted norms of folds sharing a base computed
    together.

    ``folds``: one dict per fold (``A``, ``AA``, ``Xo``, ``means``, ``var``, ``n_f``);
    ``U2`` (F, K, B). Sets ``sh`` (K of (B,)), ``mu`` and ``scale2`` in every dict.
    """
    groups = {}
    for f, d in enumerate(folds):
        groups.setdefault(id(d["A"][0]), []).append(f)
    K = len(folds[0]["A"])
    for members in groups.values():
        for c in range(K):
            bs, sigmas, ws = [], [], []
            for f in members:
                d = folds[f]
                var = d["var"][c]
                const = var == 0  # StandardScaler leaves constant features unscaled
                scale2 = np.where(const, 1.0, var)
                d.setdefault("scale2", [None] * K)[c] = scale2
                ws.append(1.0 / scale2)
                Xo = d["Xo"][c]
                bs.append(np.concatenate([Xo, d["means"][:, c][:, None, :]], axis=1))
                sigmas.append(np.r_[np.ones(Xo.shape[1]), d["n_f"][c]])
            norms = _weighted_sq_norms(folds[members[0]]["A"][c], folds[members[0]]["AA"][c],
                                       bs, sigmas, ws)  # fmt: skip
            for g, f in enumerate(members):
                d = folds[f]
                nc = d["n_f"][c]
                tr_diag = d["var"][c] * ws[g]  # correlation diagonal (1, or 0 when constant)
                p = tr_diag.shape[1]
                mu = tr_diag.sum(axis=1) / p
                delta_ = norms[:, g] / (nc * nc)
                beta = 1.0 / (p * nc) * (U2[f][c] / nc - delta_)
                delta = (delta_ - 2.0 * mu * tr_diag.sum(axis=1) + p * mu**2) / p
                beta = np.minimum(beta, delta)
                with np.errstate(invalid="ignore", divide="ignore"):
                    d.setdefault("sh", [None] * K)[c] = np.where(beta == 0, 0.0, beta / delta)
                d.setdefault("mu", [None] * K)[c] = mu


def _fold_system(d, shrinkage):
    """Terms of the pooled, shrunk covariance of one fold (a dict of :func:`_fold_stats`'
    results, the base scatters ``A`` and, for ``'auto'``, :func:`_auto_shrinkage`'s):
    ``cov = sum_c alpha[c] A[c] - E^T E + diag(diag_add)``, with ``alpha`` (K of (B,)), the
    low-rank rows ``E`` (B, r, k) and ``diag_add`` (B, k)."""
    A, Xo, means, n_f, priors = d["A"], d["Xo"], d["means"], d["n_f"], d["priors"]
    K = len(A)
    B, k = means.shape[0], means.shape[2]
    rows, diag_add, alpha = [], np.zeros((B, k)), []
    for c in range(K):
        nc = n_f[c]
        if shrinkage in (None, "empirical"):
            sh = np.zeros(B)
        elif shrinkage == "auto":
            sh = d["sh"][c]
            diag_add += (priors[c] * sh * d["mu"][c])[:, None] * d["scale2"][c]
        else:  # shrunk_covariance(empirical_covariance(X), shrinkage): no scaling
            sh = np.full(B, float(shrinkage))
            diag_add += (priors[c] * sh * d["var"][c].sum(axis=1) / k)[:, None]
        a = priors[c] * (1.0 - sh) / nc  # weight of this class's scatter in the pool
        alpha.append(a)
        root = np.sqrt(a)[:, None, None]
        rows += [root * Xo[c], root * np.sqrt(nc) * means[:, c][:, None, :]]
    return alpha, np.concatenate(rows, axis=1), diag_add


def _fold_solve(A, alpha, E, diag_add, R):
    """``cov^-1 R`` (B, k, m) for the covariances of :func:`_fold_system`.

    Each system is formed in one reused k x k buffer, while it sits in cache, and
    factorised there in place (Cholesky, LAPACK ``posv`` on the Fortran-ordered view of
    the buffer: no copy). Cholesky reads one triangle, so the low-rank term is applied to
    that triangle only (BLAS ``syrk``, half a matrix product). A system that is not
    positive definite numerically is formed again, symmetrised, and solved by LU, or least
    squares when singular (as :func:`~mvpa_flows.core.searchlight.engines._context.solve_spd`).
    """
    B, k = diag_add.shape
    out = np.empty((B, k, R.shape[2]))
    cov = np.empty((k, k))
    flat = cov.reshape(-1)
    diag = np.arange(k)

    def form(i):
        np.multiply(A[0][i], alpha[0][i], out=cov)
        for c in range(1, len(A)):
            blas.daxpy(A[c][i].reshape(-1), flat, a=alpha[c][i])
        # upper triangle of cov (the lower one of its Fortran view): cov -= E^T E
        blas.dsyrk(-1.0, E[i].T, beta=1.0, c=cov.T, trans=0, lower=1, overwrite_c=1)
        cov[diag, diag] += diag_add[i]

    for i in range(B):
        form(i)
        _, x, info = lapack.dposv(cov.T, R[i], lower=1, overwrite_a=1)
        if info == 0:
            out[i] = x
        else:
            form(i)
            upper = np.triu(cov)
            out[i] = solve((upper + np.triu(upper, 1).T)[None], R[i : i + 1])[0]
    return out


def _lda_coef(A, terms, means, priors):
    """Coefficients (B, K, k) and intercepts (B, K) of scikit-learn's lsqr solver."""
    coef = _fold_solve(A, *terms, means.transpose(0, 2, 1)).transpose(0, 2, 1)
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
    member = v[:, None, :] * (y[None, None, :] == np.arange(K)[None, :, None])  # (F, K, n)
    var = np.matmul(member.reshape(F * K, n), X2).reshape(B, F, K, k).transpose(1, 0, 2, 3)
    var /= cnt[:, None, :, None]
    var -= means**2
    var[var < 0] = 0.0
    w = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 1.0)  # 1 / scale^2
    # u_s = sum_i (x_si - m_i)^2 w_i = x^2.w - 2 x.(m w) + m^2.w for every fold and class
    Wsq = w.transpose(1, 3, 0, 2).reshape(B, k, F * K)
    Wx = (-2.0 * means * w).transpose(1, 3, 0, 2).reshape(B, k, F * K)
    u = (np.matmul(X2, Wsq) + np.matmul(X, Wx)).reshape(B, n, F, K)
    u += np.sum(means**2 * w, axis=3).transpose(1, 0, 2)[:, None]
    mask = member
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
            systems = []
            for f, (tr, _) in enumerate(folds):
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
                means, var, n_f, priors = _fold_stats(Xo, s1, [a[:, diag, diag] for a in A], n_c)
                systems.append(
                    dict(A=A, AA=AA, Xo=Xo, means=means, var=var, n_f=n_f, priors=priors)
                )
            if auto:
                _auto_shrinkage(systems, U2)
            dec_all = np.empty((B, offs[-1], K))
            for f, (_, te) in enumerate(folds):
                d = systems[f]
                terms = _fold_system(d, shrinkage)
                coef, icpt = _lda_coef(d["A"], terms, d["means"], d["priors"])
                systems[f] = None
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

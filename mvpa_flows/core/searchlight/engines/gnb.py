"""Gaussian naive Bayes as sparse products of per-voxel statistics.

GaussianNB's joint log-likelihood of a test sample x for class c in a sphere s:
  logp_c - 0.5 sum_v log(2 pi (var_cv + eps_s)) - 0.5 sum_v (x_v - theta_cv)^2 / (var_cv + eps_s)
with eps_s = var_smoothing * max_{v in s} var_v (variance over the training set).
Only eps_s couples the voxels of a sphere.  With e = eps_s / var_cv (about 1e-8 for
real voxels), 1/(var + eps) = (1 - e + e^2 - ...) / var and
log(var + eps) = log(var) + e - e^2/2 + ..., so every sum becomes a sparse product
A @ (per-voxel columns).  Spheres with max e > _GNB_E_MAX (near-constant voxels, large
var_smoothing) take the exact per-sphere path; the others keep the first-order terms
(second order for the log), so the remainder is <= e^2 <= 1e-14 relative.  A global
bound skips the per-sphere check when no sphere can exceed it.  With two classes the
sparse products act on class-1 minus class-0 columns (the decision needs only that).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.special import expit, logsumexp

from ..._parallel import thread_map
from ._context import BUDGET, column_mean, row_max

_GNB_E_MAX = 1e-7
_TINY_VAR = 1e-290
_VCHUNK = 4096
#: adjacency entries given float64 weights at once in the sparse products
_NNZ_BLOCK = 2 * 1024**2


def _row_blocks(A):
    """Blocks of rows of a boolean CSR ``A``: (start, stop, block weighted 1.0 in float64).

    scipy multiplies row by row, so every row of a block's product sums the same terms in
    the same order as a product with the whole float64 matrix; only one block's float64
    weights (and products) exist at a time.
    """
    n = A.shape[0]
    r0 = 0
    while r0 < n:
        r1 = int(np.searchsorted(A.indptr, A.indptr[r0] + _NNZ_BLOCK, side="right")) - 1
        r1 = min(n, max(r1, r0 + 1))
        lo, hi = A.indptr[r0], A.indptr[r1]
        Ab = sparse.csr_matrix(
            (np.ones(hi - lo), A.indices[lo:hi], A.indptr[r0 : r1 + 1] - lo),
            shape=(r1 - r0, A.shape[1]),
        )
        Ab.has_sorted_indices = True
        yield r0, r1, Ab
        r0 = r1


def _onehot(codes, n_codes):
    M = np.zeros((n_codes, len(codes)))
    M[codes, np.arange(len(codes))] = 1.0
    return M


def _gnb_exact(X, mu, tr, te, ytr, K, vs, A, rows):
    """GaussianNB's jll (len(rows), K, n_te) computed as scikit-learn does, per sphere."""
    idx = np.concatenate([np.arange(A.indptr[r], A.indptr[r + 1]) for r in rows])
    ucols = np.unique(A.indices[idx])
    pos = np.full(A.shape[1], -1, dtype=np.intp)
    pos[ucols] = np.arange(len(ucols))
    Xtr = X[np.ix_(tr, ucols)] - mu[ucols]
    Xte = X[np.ix_(te, ucols)] - mu[ucols]
    vtot = np.var(Xtr, axis=0)
    th = np.stack([np.mean(Xtr[ytr == c], axis=0) for c in range(K)])
    var = np.stack([np.var(Xtr[ytr == c], axis=0) for c in range(K)])
    logp = np.log(np.bincount(ytr, minlength=K) / len(ytr))
    out = np.empty((len(rows), K, len(te)))
    for i, r in enumerate(rows):
        c = pos[A.indices[A.indptr[r] : A.indptr[r + 1]]]
        v = var[:, c] + vs * vtot[c].max()
        n_ij = -0.5 * np.sum(np.log(2.0 * np.pi * v), axis=1)  # (K,)
        d = Xte[None, :, c] - th[:, None, c]  # (K, n_te, k)
        out[i] = logp[:, None] + n_ij[:, None] - 0.5 * np.sum(d**2 / v[:, None, :], axis=2)
    return out


def _gnb_fold(
    X, mu, XteT, A, tr, te, ytr, s1, s2, cnt, ef, vtot, K, vs, need_dec, pred_out, dec_out
):
    """Predictions (and P(class 1)) of every sphere for one fold and label set.

    s1, s2: (V, K) class sums of centred values and squares over the training set;
    vtot: (V,) variance of every voxel over the training set.
    """
    V, n_te = XteT.shape
    th = s1 / cnt
    var = s2 / cnt - th * th
    np.maximum(var, 0.0, out=var)
    # a common scale for the sums: a power of two, so scaling is exact and the answers do
    # not depend on which voxels set it (any subset of centres gives identical results)
    gv = 2.0 ** np.floor(np.log2(max(float(var.max()), np.finfo(float).tiny)))
    # degenerate voxels (a class variance of zero, or negligible against the voxel's own)
    badvox = ~((var > 1e-30 * vtot[:, None]) & (var > _TINY_VAR)).all(axis=1)
    safe = np.where(badvox[:, None], 1.0, var)
    inv = gv / safe
    inv[badvox] = 0.0
    es = ef / gv
    imax = inv.max(axis=1)
    if es.max() * imax.max() <= _GNB_E_MAX:  # global bound: no sphere needs the exact path
        bad = np.zeros(len(es), dtype=bool)
    else:
        bad = ~(es * row_max(A, imax) <= _GNB_E_MAX)
    if badvox.any():
        bad |= row_max(A, badvox.astype(np.float64)) > 0
    G = 1 if K == 2 else K  # column blocks: class 1 - class 0, or every class
    base = G * n_te
    # columns: (x - theta)^2 / var, the same times gv / var (first-order correction),
    # log(2 pi var), gv / var, (gv / var)^2
    M = np.empty((V, 2 * base + 3 * G))
    lv = np.log(2.0 * np.pi * safe)
    tmp = np.empty((V, n_te))
    for c in range(K):
        np.subtract(XteT, th[:, c : c + 1], out=tmp)
        tmp *= tmp
        tmp /= safe[:, c : c + 1]  # (x - theta)^2 / var
        g = 0 if K == 2 else c
        blk = M[:, g * n_te : (g + 1) * n_te]
        cor = M[:, base + g * n_te : base + (g + 1) * n_te]
        if K == 2 and c == 0:
            np.negative(tmp, out=blk)
            np.multiply(blk, inv[:, :1], out=cor)
        elif K == 2:
            blk += tmp
            tmp *= inv[:, 1:2]
            cor += tmp
        else:
            blk[:] = tmp
            np.multiply(tmp, inv[:, c : c + 1], out=cor)
    b2 = 2 * base
    if K == 2:
        M[:, b2] = lv[:, 1] - lv[:, 0]
        M[:, b2 + 1] = inv[:, 1] - inv[:, 0]
        M[:, b2 + 2] = inv[:, 1] ** 2 - inv[:, 0] ** 2
    else:
        M[:, b2 : b2 + K] = lv
        M[:, b2 + K : b2 + 2 * K] = inv
        M[:, b2 + 2 * K :] = inv * inv
    logp = np.log(cnt / cnt.sum())
    lp = logp[1:] - logp[:1] if K == 2 else logp
    for r0, r1, Ab in _row_blocks(A):
        R = Ab @ M  # (block, cols)
        e = es[r0:r1]
        lognorm = (
            R[:, b2 : b2 + G]
            + e[:, None] * R[:, b2 + G : b2 + 2 * G]
            - 0.5 * (e * e)[:, None] * R[:, b2 + 2 * G :]
        )  # (block, G)
        quad = R[:, base:b2]
        quad *= -e[:, None]
        quad += R[:, :base]
        jll = quad.reshape(-1, G, n_te)
        jll *= -0.5
        jll += (lp[None, :] - 0.5 * lognorm)[:, :, None]
        rows = np.flatnonzero(bad[r0:r1])
        if K == 2:
            d = jll[:, 0]
            if len(rows):
                ex = _gnb_exact(X, mu, tr, te, ytr, K, vs, A, rows + r0)
                d[rows] = ex[:, 1] - ex[:, 0]
            pred_out[r0:r1] = d > 0
            if need_dec:
                dec_out[r0:r1] = expit(d)
            continue
        if len(rows):
            jll[rows] = _gnb_exact(X, mu, tr, te, ytr, K, vs, A, rows + r0)
        pred_out[r0:r1] = np.argmax(jll, axis=1)
        if need_dec:
            dec_out[r0:r1] = np.exp(jll[:, 1] - logsumexp(jll, axis=1))


def run(ctx):
    """GaussianNB's predictions (and P(class 1)) in every sphere and fold."""
    est, X, A, labels, folds = ctx.estimator, ctx.X, ctx.A, ctx.labels, ctx.folds
    n_classes, need_dec, n_jobs = ctx.n_classes, ctx.need_dec, ctx.n_jobs
    vs = float(est.var_smoothing)
    n_sph, K, V = A.shape[0], n_classes, X.shape[1]
    n = len(X)
    mu = column_mean(X)  # GaussianNB is shift-invariant; centring keeps the sums exact
    atom, n_atoms, train_atoms, test_atoms = ctx.atoms
    offs = ctx.test_offsets
    chunks = [slice(v, min(V, v + _VCHUNK)) for v in range(0, V, _VCHUNK)]

    def sums(Oh):
        """(V, rows of Oh) sums of centred values and of their squares."""
        S1, S2 = np.empty((V, len(Oh))), np.empty((V, len(Oh)))
        for ch in chunks:
            Xc = X[:, ch] - mu[ch]
            S1[ch] = Xc.T @ Oh.T
            Xc *= Xc
            S2[ch] = Xc.T @ Oh.T
        return S1, S2

    # label-independent: sklearn's epsilon_ (variance over each training set) per sphere
    T1, T2 = sums(_onehot(atom, n_atoms))
    eps, vtot = [], []
    for (tr, _), ta in zip(folds, train_atoms, strict=True):
        m = T1[:, ta].sum(axis=1) / len(tr)
        vtot.append(np.maximum(T2[:, ta].sum(axis=1) / len(tr) - m * m, 0.0))
        eps.append(vs * row_max(A, vtot[-1]))
    del T1, T2
    pred = np.empty((n_sph, offs[-1]), dtype=np.int8 if K < 128 else np.intp)
    dec = np.empty((n_sph, offs[-1])) if need_dec else None
    per_set = n_atoms * K * V * 8 * 2
    for batch in _label_batches(len(labels), per_set, budget=BUDGET * 2):
        Lb = len(batch)
        codes = np.concatenate(
            [atom * K + labels[s] + b * n_atoms * K for b, s in enumerate(batch)]
        )
        Oh = np.zeros((Lb * n_atoms * K, Lb * n))
        Oh[codes, np.arange(Lb * n)] = 1.0
        Oh = Oh.reshape(Lb * n_atoms * K, Lb, n).sum(axis=1)
        S1, S2 = sums(Oh)
        S1 = S1.reshape(V, Lb, n_atoms, K)
        S2 = S2.reshape(V, Lb, n_atoms, K)
        C = Oh.sum(axis=1).reshape(Lb, n_atoms, K)
        for b, s in enumerate(batch):
            y = labels[s]
            s1tot, s2tot, ctot = S1[:, b].sum(axis=1), S2[:, b].sum(axis=1), C[b].sum(axis=0)

            def task(f, b=b, y=y, s1tot=s1tot, s2tot=s2tot, ctot=ctot, S1=S1, S2=S2, C=C):
                tr, te = folds[f]
                if len(test_atoms[f]) * 2 <= n_atoms:
                    s1, s2, cnt = s1tot.copy(), s2tot.copy(), ctot.copy()
                    for a in test_atoms[f]:
                        s1 -= S1[:, b, a]
                        s2 -= S2[:, b, a]
                        cnt -= C[b, a]
                else:
                    ta = train_atoms[f]
                    s1, s2 = S1[:, b, ta].sum(axis=1), S2[:, b, ta].sum(axis=1)
                    cnt = C[b, ta].sum(axis=0)
                sl = slice(offs[f], offs[f + 1])
                po = np.empty((n_sph, len(te)), dtype=pred.dtype)
                do = np.empty((n_sph, len(te))) if need_dec else None
                _gnb_fold(
                    X,
                    mu,
                    np.subtract(X[te].T, mu[:, None], out=np.empty((V, len(te)))),
                    A,
                    tr,
                    te,
                    y[tr],
                    s1,
                    s2,
                    cnt,
                    eps[f],
                    vtot[f],
                    K,
                    vs,
                    need_dec,
                    po,
                    do,
                )
                pred[:, sl] = po
                if need_dec:
                    dec[:, sl] = do

            thread_map(task, range(len(folds)), n_jobs)
            ctx.consume(s, slice(None), pred, dec)
            ctx.progress(n_sph)


def _label_batches(n_sets, per_set_bytes, budget):
    step = max(1, int(budget // max(per_set_bytes, 1)))
    for s in range(0, n_sets, step):
        yield range(s, min(n_sets, s + step))

"""Searchlight engines behind :func:`mvpa_flows.core.searchlight.search_light`.

Every engine has the signature ``engine(est, X, A, labels, folds, n_classes,
need_dec, consume, n_jobs, progress)`` and reports, for each label set
(observed labels first, then permutations) and group of spheres, the predicted
class codes and (when ``need_dec``) the decision values of every test sample,
in the order of the concatenated test sets of ``folds``, by calling
``consume(set_index, sphere_indices, pred, dec)``.

Every sphere is computed independently of the other spheres in its batch (no
reduction runs across spheres), so chunked runs give bit-identical results.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.special import expit, logsumexp
from threadpoolctl import threadpool_limits

from .._parallel import thread_imap, thread_map
from ._linear import logistic_newton, svc_newton

_BUDGET = 64 * 1024**2  # bytes per gathered block


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _spmm(A, Q, n_jobs):
    """A @ Q with rows split over threads (scipy releases the GIL)."""
    if n_jobs <= 1 or A.shape[0] < 2000:
        return np.asarray(A @ Q)
    bounds = np.linspace(0, A.shape[0], n_jobs + 1).astype(int)
    out = np.empty((A.shape[0], Q.shape[1]))

    def work(i):
        out[bounds[i] : bounds[i + 1]] = A[bounds[i] : bounds[i + 1]] @ Q

    with ThreadPoolExecutor(n_jobs) as ex:
        list(ex.map(work, range(n_jobs)))
    return out


def _row_max(A, v):
    """Maximum of v over the columns of every (non-empty) row of CSR A."""
    return np.maximum.reduceat(v[A.indices], A.indptr[:-1])


def _size_groups(A):
    """Yield (k, rows, cols (n_rows, k)) for the spheres of every size k."""
    sizes = np.diff(A.indptr)
    for k in np.unique(sizes):
        rows = np.flatnonzero(sizes == k)
        cols = A.indices[A.indptr[rows][:, None] + np.arange(k)[None, :]]
        yield int(k), rows, cols


def _gather(X, cols):
    """(n_spheres, n_samples, k) block of X for the spheres' columns."""
    return np.ascontiguousarray(X[:, cols].transpose(1, 0, 2))


def _atoms(folds, n_samples):
    """Split the samples into atoms of identical fold membership."""
    M = np.zeros((n_samples, len(folds)), dtype=np.int8)
    for f, (tr, te) in enumerate(folds):
        M[tr, f] = 1
        M[te, f] = 2
    _, atom = np.unique(M, axis=0, return_inverse=True)
    atom = atom.ravel()
    n_atoms = atom.max() + 1
    train_atoms = []
    for tr, _ in folds:
        train_atoms.append(np.unique(atom[tr]))
    return atom, n_atoms, train_atoms


def _sum_atoms(stats, train_atoms, n_atoms, total=None):
    """Sum of per-atom statistics (atom axis first) over the training atoms."""
    if len(train_atoms) * 2 > n_atoms:
        rest = np.setdiff1d(np.arange(n_atoms), train_atoms)
        out = stats.sum(axis=0) if total is None else total
        for a in rest:
            out = out - stats[a]
        return out
    out = stats[train_atoms[0]].copy()
    for a in train_atoms[1:]:
        out = out + stats[a]
    return out


def _batches(n_sets, per_set_bytes, budget=_BUDGET * 4):
    step = max(1, int(budget // max(per_set_bytes, 1)))
    for s in range(0, n_sets, step):
        yield range(s, min(n_sets, s + step))


# --------------------------------------------------------------------------- #
# Gaussian naive Bayes
# --------------------------------------------------------------------------- #
# GaussianNB's joint log-likelihood of a test sample x for class c in a sphere s:
#   logp_c - 0.5 sum_v log(2 pi (var_cv + eps_s)) - 0.5 sum_v (x_v - theta_cv)^2 / (var_cv + eps_s)
# with eps_s = var_smoothing * max_{v in s} var_v (variance over the training set).
# Only eps_s couples the voxels of a sphere.  With e = eps_s / var_cv (about 1e-8 for
# real voxels), 1/(var + eps) = (1 - e + e^2 - ...) / var and
# log(var + eps) = log(var) + e - e^2/2 + ..., so every sum becomes a sparse product
# A @ (per-voxel columns).  Spheres with max e > _GNB_E_MAX (near-constant voxels, large
# var_smoothing) take the exact per-sphere path; the others keep the first-order terms
# (second order for the log), so the remainder is <= e^2 <= 1e-14 relative.  A global
# bound skips the per-sphere check when no sphere can exceed it.  With two classes the
# sparse products act on class-1 minus class-0 columns (the decision needs only that).
_GNB_E_MAX = 1e-7
_VCHUNK = 4096


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


def _gnb_fold(X, mu, XteT, A, tr, te, ytr, s1, s2, cnt, ef, K, vs, need_dec, pred_out, dec_out):
    """Predictions (and P(class 1)) of every sphere for one fold and label set.

    s1, s2: (V, K) class sums of centred values and squares over the training set.
    """
    V, n_te = XteT.shape
    th = s1 / cnt
    var = s2 / cnt - th * th
    np.maximum(var, 0.0, out=var)
    gv = max(float(var.max()), np.finfo(float).tiny)
    badvox = ~(var > 1e-30 * gv).all(axis=1)
    safe = np.where(badvox[:, None], 1.0, var)
    inv = gv / safe
    inv[badvox] = 0.0
    es = ef / gv
    imax = inv.max(axis=1)
    if es.max() * imax.max() <= _GNB_E_MAX:  # global bound: no sphere needs the exact path
        bad = np.zeros(len(es), dtype=bool)
    else:
        bad = ~(es * _row_max(A, imax) <= _GNB_E_MAX)
    if badvox.any():
        bad |= _row_max(A, badvox.astype(np.float64)) > 0
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
    R = A @ M  # (n_sph, cols)
    lognorm = (
        R[:, b2 : b2 + G]
        + es[:, None] * R[:, b2 + G : b2 + 2 * G]
        - 0.5 * (es * es)[:, None] * R[:, b2 + 2 * G :]
    )  # (n_sph, G)
    quad = R[:, base:b2]
    quad *= -es[:, None]
    quad += R[:, :base]
    jll = quad.reshape(-1, G, n_te)
    jll *= -0.5
    logp = np.log(cnt / cnt.sum())
    lp = logp[1:] - logp[:1] if K == 2 else logp
    jll += (lp[None, :] - 0.5 * lognorm)[:, :, None]
    rows = np.flatnonzero(bad)
    if K == 2:
        d = jll[:, 0]
        if len(rows):
            ex = _gnb_exact(X, mu, tr, te, ytr, K, vs, A, rows)
            d[rows] = ex[:, 1] - ex[:, 0]
        pred_out[:] = d > 0
        if need_dec:
            dec_out[:] = expit(d)
        return
    if len(rows):
        jll[rows] = _gnb_exact(X, mu, tr, te, ytr, K, vs, A, rows)
    pred_out[:] = np.argmax(jll, axis=1)
    if need_dec:
        dec_out[:] = np.exp(jll[:, 1] - logsumexp(jll, axis=1))


def _gnb(est, X, A, labels, folds, n_classes, need_dec, consume, n_jobs, progress):
    vs = float(est.var_smoothing)
    Af = A.astype(np.float64)
    n_sph, K, V = A.shape[0], n_classes, X.shape[1]
    n = len(X)
    mu = X.mean(axis=0)  # GaussianNB is shift-invariant; centring keeps the sums exact
    atom, n_atoms, train_atoms = _atoms(folds, n)
    test_atoms = [np.setdiff1d(np.arange(n_atoms), ta) for ta in train_atoms]
    offs = np.r_[0, np.cumsum([len(te) for _, te in folds])]
    XteT = [np.ascontiguousarray((X[te] - mu).T) for _, te in folds]
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
    eps = []
    for (tr, _), ta in zip(folds, train_atoms, strict=True):
        m = T1[:, ta].sum(axis=1) / len(tr)
        eps.append(vs * _row_max(A, np.maximum(T2[:, ta].sum(axis=1) / len(tr) - m * m, 0.0)))
    del T1, T2
    pred = np.empty((n_sph, offs[-1]), dtype=np.int8 if K < 128 else np.intp)
    dec = np.empty((n_sph, offs[-1])) if need_dec else None
    per_set = n_atoms * K * V * 8 * 2
    for batch in _batches(len(labels), per_set, budget=_BUDGET * 2):
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
                    X, mu, XteT[f], Af, tr, te, y[tr], s1, s2, cnt, eps[f], K, vs, need_dec, po, do
                )
                pred[:, sl] = po
                if need_dec:
                    dec[:, sl] = do

            thread_map(task, range(len(folds)), n_jobs)
            consume(s, slice(None), pred, dec)
            progress(n_sph)


# --------------------------------------------------------------------------- #
# Haxby correlation classifier
# --------------------------------------------------------------------------- #
def _correlation(est, X, A, labels, folds, n_classes, need_dec, consume, n_jobs, progress):
    Af = A.astype(np.float64)
    n_sph, K = A.shape[0], n_classes
    k = np.diff(A.indptr).astype(float)[:, None]
    Xs = X - X.mean(axis=1, keepdims=True)  # Pearson r is blind to a per-pattern shift
    S = _spmm(Af, np.concatenate([Xs.T, (Xs**2).T], axis=1), n_jobs)
    Sx, Sxx = S[:, : len(X)], S[:, len(X) :]
    vx = Sxx - Sx**2 / k
    vx[vx <= 1e-13 * Sxx] = 0.0
    n_te = [len(te) for _, te in folds]
    offs = np.r_[0, np.cumsum(n_te)]
    for s in range(len(labels)):
        y = labels[s]
        r_all = np.empty((n_sph, offs[-1], K))
        for f, (tr, te) in enumerate(folds):
            ytr = y[tr]
            M = np.stack([Xs[tr][ytr == c].mean(axis=0) for c in range(K)])  # (K, V)
            P = _spmm(
                Af,
                np.concatenate(
                    [M.T, (M**2).T, (Xs[te][None] * M[:, None, :]).reshape(-1, X.shape[1]).T],
                    axis=1,
                ),
                n_jobs,
            )
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
        dec = r_all[..., 1] - r_all[..., 0] if need_dec else None
        consume(s, slice(None), pred, dec)
        progress(n_sph)


# --------------------------------------------------------------------------- #
# Linear discriminant analysis (lsqr, optional Ledoit-Wolf shrinkage)
# --------------------------------------------------------------------------- #
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
    coef = _solve(cov, means.transpose(0, 2, 1)).transpose(0, 2, 1)  # (B, K, k)
    intercept = -0.5 * np.einsum("bck,bck->bc", means, coef) + np.log(priors)[None, :]
    return coef, intercept


def _solve(M, R):
    try:
        return np.linalg.solve(M, R)
    except np.linalg.LinAlgError:
        out = np.empty(M.shape[:2] + R.shape[2:])
        for i in range(len(M)):
            out[i] = np.linalg.lstsq(M[i], R[i], rcond=None)[0]
        return out


def _lda(est, X, A, labels, folds, n_classes, need_dec, consume, n_jobs, progress):
    shrinkage = est.shrinkage
    X = X - X.mean(axis=0)
    K = n_classes
    n_te = [len(te) for _, te in folds]
    offs = np.r_[0, np.cumsum(n_te)]
    atom, n_atoms, train_atoms = _atoms(folds, len(X))

    def chunk(job):
        k, rows, cols = job
        Xg = _gather(X, cols)  # (B, n, k)
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
                s1 = _sum_atoms(S1, ta, n_atoms, S1tot)
                s2 = _sum_atoms(S2, ta, n_atoms, S2tot)
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

    jobs = []
    for k, rows, cols in _size_groups(A):
        step = max(1, _BUDGET // (len(X) * k * k * 8 * 2))
        for c0 in range(0, len(rows), step):
            jobs.append((k, rows[c0 : c0 + step], cols[c0 : c0 + step]))
    for rows, out in thread_imap(chunk, jobs, n_jobs):
        for s, pred, dec in out:
            consume(s, rows, pred, dec)
            progress(len(rows))


# --------------------------------------------------------------------------- #
# Ridge classifier
# --------------------------------------------------------------------------- #
def _ridge(est, X, A, labels, folds, n_classes, need_dec, consume, n_jobs, progress):
    alpha = float(est.alpha)
    K = n_classes
    T = 1 if K == 2 else K
    Y = -np.ones((K, T))  # label-binarised targets in {-1, 1}
    if K == 2:
        Y[1, 0] = 1.0
    else:
        Y[np.arange(K), np.arange(K)] = 1.0
    n_te = [len(te) for _, te in folds]
    offs = np.r_[0, np.cumsum(n_te)]
    atom, n_atoms, train_atoms = _atoms(folds, len(X))
    test_atoms = [np.setdiff1d(np.arange(n_atoms), ta) for ta in train_atoms]
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
            w = _solve(G, rhs)  # (B, k, L*T)
            b = ybar[None] - np.matmul(m[:, None, :], w)[:, 0]  # (B, L*T)
            d = np.matmul(Xt[:, :, te].transpose(0, 2, 1), w) + b[:, None, :]
            dec_all[:, :, offs[f] : offs[f + 1]] = d.reshape(B, len(te), L, T).transpose(
                2, 0, 1, 3
            )
        return rows, dec_all

    jobs = []
    for k, rows, cols in _size_groups(A):
        step = max(1, _BUDGET // (len(X) * k * 8 * 2 + n_atoms * k * (k + 1 + L * T) * 8 * 2))
        for c0 in range(0, len(rows), step):
            jobs.append((k, rows[c0 : c0 + step], cols[c0 : c0 + step]))
    for rows, dec_all in thread_imap(chunk, jobs, n_jobs):
        for s in range(L):
            if K == 2:
                dd = dec_all[s, ..., 0]
                pred = (dd > 0).astype(np.int8)
                dec = dd if need_dec else None
            else:
                pred = np.argmax(dec_all[s], axis=-1)
                dec = None
            consume(s, rows, pred, dec)
            progress(len(rows))


# --------------------------------------------------------------------------- #
# LinearSVC / LogisticRegression (batched Newton)
# --------------------------------------------------------------------------- #
def _newton_engine(kind):
    def engine(est, X, A, labels, folds, n_classes, need_dec, consume, n_jobs, progress):
        C = float(est.C)
        if kind == "svc":
            bias = float(est.intercept_scaling)
            Xw = X
        else:
            bias = 1.0
            Xw = X - X.mean(axis=0)  # shift-invariant with a free intercept
        n_te = [len(te) for _, te in folds]
        offs = np.r_[0, np.cumsum(n_te)]
        for k, rows, cols in _size_groups(A):
            step = max(1, _BUDGET // (len(X) * (k + 1) * 8 * 4 + (k + 1) ** 2 * 8 * 4))
            for c0 in range(0, len(rows), step):
                sel = slice(c0, c0 + step)
                Xg = _gather(Xw, cols[sel])
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
                    consume(s, rows[sel], pred, dec_all if need_dec else None)
                    progress(B)

    return engine


# --------------------------------------------------------------------------- #
# Generic: any estimator, per sphere and fold, in parallel
# --------------------------------------------------------------------------- #
def _generic_chunk(est, X, A_rows_idx, labels, folds, need_dec):
    import warnings

    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning

    n_test_all = sum(len(te) for _, te in folds)
    n_sph = len(A_rows_idx)
    pred = np.empty((len(labels), n_sph, n_test_all), dtype=np.intp)
    dec = np.empty((len(labels), n_sph, n_test_all)) if need_dec else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i, cols in enumerate(A_rows_idx):
            Xs = X[:, cols]
            for s in range(len(labels)):
                y = labels[s]
                start = 0
                for tr, te in folds:
                    e = clone(est)
                    e.fit(Xs[tr], y[tr])
                    p = e.predict(Xs[te])
                    sl = slice(start, start + len(te))
                    pred[s, i, sl] = p
                    if need_dec:
                        if hasattr(e, "decision_function"):
                            d = e.decision_function(Xs[te])
                        else:
                            d = e.predict_proba(Xs[te])[:, 1]
                        dec[s, i, sl] = d
                    start += len(te)
    return pred, dec


def _generic(est, X, A, labels, folds, n_classes, need_dec, consume, n_jobs, progress):
    from joblib import Parallel, delayed

    n_sph = A.shape[0]
    rows_idx = [A.indices[A.indptr[i] : A.indptr[i + 1]] for i in range(n_sph)]
    chunk = int(np.clip(n_sph // (8 * n_jobs), 1, 200))
    bounds = list(range(0, n_sph, chunk)) + [n_sph]
    tasks = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    if n_jobs == 1:
        results = (
            _generic_chunk(est, X, rows_idx[a:b], labels, folds, need_dec) for a, b in tasks
        )
    else:
        results = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_generic_chunk)(est, X, rows_idx[a:b], labels, folds, need_dec)
            for a, b in tasks
        )
    for (a, b), (pred, dec) in zip(tasks, results, strict=True):
        for s in range(len(labels)):
            consume(s, np.arange(a, b), pred[s], None if dec is None else dec[s])
        progress((b - a) * len(labels))


ENGINES = {
    "gnb": _gnb,
    "correlation": _correlation,
    "lda": _lda,
    "ridge": _ridge,
    "svc": _newton_engine("svc"),
    "logistic": _newton_engine("logistic"),
    "generic": _generic,
}


def run_engine(name, est, X, A, labels, folds, n_classes, need_dec, consume, n_jobs, progress):
    """Run engine ``name`` (see module docstring), limiting BLAS threads to n_jobs."""
    engine = ENGINES[name]
    limit = 1 if (name == "generic" and n_jobs > 1) else n_jobs
    with threadpool_limits(limits=limit, user_api="blas"), np.errstate(all="ignore"):
        return engine(est, X, A, labels, folds, n_classes, need_dec, consume, n_jobs, progress)

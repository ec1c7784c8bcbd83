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
from scipy.special import logsumexp
from threadpoolctl import threadpool_limits

from ._sl_linear import logistic_newton, svc_newton

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
    for f, (tr, _) in enumerate(folds):
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
def _gnb(est, X, A, labels, folds, n_classes, need_dec, consume, n_jobs, progress):
    vs = float(est.var_smoothing)
    Af = A.astype(np.float64)
    n_sph, K = A.shape[0], n_classes
    n_te = [len(te) for _, te in folds]
    offs = np.r_[0, np.cumsum(n_te)]
    n_test_all = offs[-1]
    # label-independent: GaussianNB's epsilon = var_smoothing * max feature variance
    eps = np.empty((len(folds), n_sph))
    for f, (tr, _) in enumerate(folds):
        eps[f] = vs * _row_max(A, np.var(X[tr], axis=0))

    for batch in _batches(len(labels), n_sph * n_test_all * K * 8 * 3):
        jll = np.empty((len(batch), n_sph, n_test_all, K))
        for f, (tr, te) in enumerate(folds):
            Xtr, Xte = X[tr], X[te]
            th = np.empty((len(batch), K, X.shape[1]))
            var = np.empty_like(th)
            logp = np.empty((len(batch), K))
            for b, s in enumerate(batch):
                ytr = labels[s][tr]
                for c in range(K):
                    Xc = Xtr[ytr == c]
                    th[b, c] = np.mean(Xc, axis=0)
                    var[b, c] = np.var(Xc, axis=0)
                    logp[b, c] = np.log(len(Xc) / len(ytr))
            ef = eps[f]
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = 1.0 / var
            # largest relative epsilon per sphere decides the series order
            emax = np.zeros(n_sph)
            for b in range(len(batch)):
                for c in range(K):
                    emax = np.maximum(emax, ef * _row_max(A, inv[b, c]))
            bad = ~(emax <= 1e-3)  # includes inf / nan (zero variances)
            e = emax[~bad].max() if (~bad).any() else 0.0
            nterm = 1 if e == 0 else int(min(6, max(1, np.ceil(np.log(1e-17) / np.log(e)))))
            # columns: [log(2 pi var), 1/var, 1/var^2 ...] and (x - theta)^2 / var^(j+1)
            logcols = [np.log(2.0 * np.pi * var)] + [inv**j for j in range(1, nterm + 1)]
            L = _spmm(Af, np.stack(logcols, axis=-2).reshape(-1, X.shape[1]).T, n_jobs)
            L = L.reshape(n_sph, len(batch), K, nterm + 1)
            D = (Xte[None, None] - th[:, :, None, :]) ** 2  # (B, K, n_te, V)
            Qs = [D * inv[:, :, None, :] ** (j + 1) for j in range(nterm)]
            Q = _spmm(Af, np.stack(Qs, axis=-2).reshape(-1, X.shape[1]).T, n_jobs)
            Q = Q.reshape(n_sph, len(batch), K, len(te), nterm)
            lognorm = L[..., 0].copy()
            quad = Q[..., 0].copy()
            for j in range(1, nterm + 1):
                lognorm += (-1.0) ** (j + 1) * (ef[:, None, None] ** j) / j * L[..., j]
            for j in range(1, nterm):
                quad += ((-ef) ** j)[:, None, None, None] * Q[..., j]
            J = logp[None, :, :, None] - 0.5 * lognorm[..., None] - 0.5 * quad
            jll[:, :, offs[f] : offs[f + 1], :] = J.transpose(1, 0, 3, 2)
            # exact path for spheres with (near-)constant voxels
            for sph in np.flatnonzero(bad):
                cols = A.indices[A.indptr[sph] : A.indptr[sph + 1]]
                v = var[:, :, cols] + ef[sph]
                n_ij = -0.5 * np.sum(np.log(2.0 * np.pi * v), axis=-1)  # (B, K)
                q = np.sum(
                    (Xte[None, None][:, :, :, cols] - th[:, :, None, cols]) ** 2
                    / v[:, :, None, :],
                    axis=-1,
                )  # (B, K, n_te)
                J = logp[:, :, None] + n_ij[:, :, None] - 0.5 * q
                jll[:, sph, offs[f] : offs[f + 1], :] = J.transpose(0, 2, 1)
        for b, s in enumerate(batch):
            pred = np.argmax(jll[b], axis=-1)
            dec = None
            if need_dec:
                dec = np.exp(jll[b][..., 1] - logsumexp(jll[b], axis=-1))
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
    for k, rows, cols in _size_groups(A):
        step = max(1, _BUDGET // (len(X) * k * k * 8 * 2))
        for c0 in range(0, len(rows), step):
            sel = slice(c0, c0 + step)
            Xg = _gather(X, cols[sel])  # (B, n, k)
            B = Xg.shape[0]
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
                consume(s, rows[sel], pred, dec)
                progress(B)


# --------------------------------------------------------------------------- #
# Ridge classifier
# --------------------------------------------------------------------------- #
def _ridge(est, X, A, labels, folds, n_classes, need_dec, consume, n_jobs, progress):
    alpha = float(est.alpha)
    X = X - X.mean(axis=0)
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
    L = len(labels)
    for k, rows, cols in _size_groups(A):
        step = max(1, _BUDGET // (len(X) * k * 8 + n_atoms * k * k * 8))
        for c0 in range(0, len(rows), step):
            sel = slice(c0, c0 + step)
            Xg = _gather(X, cols[sel])
            B = Xg.shape[0]
            S2 = np.stack(
                [
                    np.matmul(Xg[:, atom == a].transpose(0, 2, 1), Xg[:, atom == a])
                    for a in range(n_atoms)
                ]
            )  # (n_atoms, B, k, k)
            S2tot = S2.sum(axis=0)
            dec_all = np.empty((L, B, offs[-1], T))
            for f, (tr, te) in enumerate(folds):
                ta = train_atoms[f]
                s2 = _sum_atoms(S2, ta, n_atoms, S2tot)
                n = len(tr)
                m = Xg[:, tr].mean(axis=1)  # (B, k)
                G = s2 - n * m[:, :, None] * m[:, None, :]
                G[:, np.arange(k), np.arange(k)] += alpha
                rhs = np.empty((B, k, L, T))
                ybar = np.empty((L, T))
                for s in range(L):
                    yt = Y[labels[s][tr]]  # (n, T)
                    ybar[s] = yt.mean(axis=0)
                    rhs[:, :, s, :] = np.matmul(
                        Xg[:, tr].transpose(0, 2, 1), yt - ybar[s]
                    )
                w = _solve(G, rhs.reshape(B, k, L * T)).reshape(B, k, L, T)
                b = ybar[None] - np.matmul(m[:, None, :], w.reshape(B, k, L * T)).reshape(B, L, T)
                d = np.matmul(Xg[:, te], w.reshape(B, k, L * T)).reshape(B, len(te), L, T)
                d = d.transpose(2, 0, 1, 3) + b.transpose(1, 0, 2)[:, :, None]
                dec_all[:, :, offs[f] : offs[f + 1]] = d
            for s in range(L):
                if K == 2:
                    dd = dec_all[s, ..., 0]
                    pred = (dd > 0).astype(np.intp)
                    dec = dd if need_dec else None
                else:
                    pred = np.argmax(dec_all[s], axis=-1)
                    dec = None
                consume(s, rows[sel], pred, dec)
                progress(B)


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

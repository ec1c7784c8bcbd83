"""LinearSVC and LogisticRegression: one batched Newton loop for both convex problems.

For a batch of independent problems (one per sphere of a given size) the engine solves,
for every fold and label set, the same strictly convex problems as scikit-learn:

* LinearSVC (liblinear, L2 penalty, squared hinge, the intercept an extra feature equal
  to ``intercept_scaling`` and penalised like the weights)::

      min_w 0.5 ||w||^2 + C sum_i max(0, 1 - y_i w.z_i)^2

* LogisticRegression (L2 penalty, free intercept)::

      min_{w,b} 0.5 ||w||^2 + C sum_i log(1 + exp(-y_i (w.x_i + b)))

:func:`newton` is the loop both share: exact gradients, a Newton direction given by the
loss, Armijo backtracking on the exact objective, and a per-problem stop when the gradient
falls below ``TOL`` times its value at zero, or at the optimum to machine precision (no
step decreases the objective, or the full Newton step fails once the gradient is below
``_FLOOR`` times its value at zero: the objective's changes are then rounding noise).
The optimum is unique, so the answer is liblinear's / lbfgs's answer up to *their*
stopping tolerance. The folds and label sets of a sphere are the columns of one block of
problems: their decision values and gradients are one matrix product per sphere and
iteration, and no fold copies its training rows (a 0/1 weight per sample selects them).

Directions
    *Squared hinge*: the generalised Hessian ``I + 2C Z_A^T Z_A`` involves only the margin
    violators ``A`` of the training set, so a Hessian differs from a reference one
    ``H_ref = I + 2C Z_ref^T Z_ref`` by the rows entering or leaving the active set, and its
    Newton direction follows from the Woodbury identity with a system the size of those
    rows, gathered from one factor of ``H_ref^-1`` (:class:`_SvcFactors`). Each label
    set's all-samples problem is solved first, from zero, with the Hessian over *all*
    samples as the reference (its changes are the rows beyond the margin). Its folds then
    start at that optimum ``w*``, with the Hessian at ``w*``'s active set as the reference:
    a fold's active set differs from it by the left-out rows and the rows that cross the
    margin on the way (typically 50 instead of 100-120 features at 100-120 voxels per
    sphere, and no Hessian formed or factored per fold). Problems whose changes reach the
    number of features, spheres whose reference Hessian is too ill-conditioned for the
    identity (very uncentred data), and problems whose line search fails far from the
    optimum use the direct Hessian, so the iterates stay Newton iterates.
    *Logistic*: the Hessian ``C Z^T D Z`` (D = p(1-p)) changes at every iteration. Each
    label set's all-samples problem is solved first with exact Hessians (formed in float32
    far from the optimum, where only the direction is approximate; the first one, at
    D = 1/4, is the shared Gram). Its folds then start at that optimum and iterate with the
    fold's Hessian *there* (the all-samples Hessian downdated by the left-out rows, kept in
    Woodbury form): chord steps costing matrix-vector products, not a Hessian each
    (:class:`_LogisticChord`), with exact Newton for any problem where they slow down.

Every problem's arithmetic depends only on its own data and state (array shapes included),
never on the other problems of its batch, so any subset of centres gives bit-identical
results.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from ..._parallel import thread_imap
from ._context import column_mean, gather, sample_rows, size_batches

TOL = 1e-10
MAX_ITER = 100
#: below this relative gradient a rejected full Newton step means rounding, not distance
_FLOOR = 1e-8
_TS = 0.5 ** np.arange(30)  # backtracking step sizes
#: the step sizes the line search tries together: the full step first, then a few, then all
_STEP_GROUPS = ((0, 1), (1, 4), (4, None))
#: sizes the Woodbury systems are padded to (per problem, so shapes never depend on the batch)
_RUNGS = np.array([8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536])
#: Hessians more ill-conditioned than this (Frobenius estimate) skip the Woodbury identity
_MAX_COND = 1e8
#: logistic Hessians are formed in float32 while the gradient is above this (relative)
_F32_UNTIL = 1e-3
#: problems (folds x label sets) solved together per sphere
_MAX_COLUMNS = 96
#: a logistic fold leaves chord iterations when its gradient falls by less than this
_CHORD_RATE = 0.8


def _matvec(M, v):
    """Batched ``M @ v`` for (P, a, b) and (P, b)."""
    return np.matmul(M, v[..., None])[..., 0]


def _rmatvec(M, v):
    """Batched ``M^T @ v`` for (P, a, b) and (P, a)."""
    return np.matmul(v[:, None, :], M)[:, 0]


def _first_armijo(f, f0, gp, steps):
    """Index of the first step size meeting Armijo's condition (-1 if none).

    ``f(T, i)`` evaluates the objective at step sizes ``T`` for problems ``i``. The full
    step is tried first for every problem, then the next three, then the others, each
    group only by the problems that rejected every longer step (the answer is the same as
    trying them all).
    """
    first = np.full(len(f0), -1)
    rest = np.arange(len(f0))
    for lo, hi in _STEP_GROUPS:
        if not len(rest) or lo >= len(steps):
            break
        s = steps[lo:hi]
        ok = f(s, rest) <= f0[rest][None] + 1e-4 * s[:, None] * gp[rest][None]
        hit = ok.any(axis=0)
        first[rest[hit]] = lo + np.argmax(ok[:, hit], axis=0)
        rest = rest[~hit]
    return first


class SquaredHinge:
    """LinearSVC's loss ``max(0, 1 - m)^2`` of the margins ``m``; every weight penalised."""

    def __init__(self, C, d):
        self.C = C
        self.pen = np.ones(d)

    @staticmethod
    def value(m, v):
        """Sum over samples of ``v * loss(m)``."""
        return np.sum(v * np.square(np.maximum(0.0, 1.0 - m)), axis=-1)

    @staticmethod
    def slope(m):
        """d loss / d m."""
        return -2.0 * np.maximum(0.0, 1.0 - m)


class Logistic:
    """LogisticRegression's loss ``log(1 + exp(-m))``; the intercept (last) not penalised."""

    def __init__(self, C, d):
        self.C = C
        self.pen = np.ones(d)
        self.pen[-1] = 0.0

    @staticmethod
    def value(m, v):
        """Sum over samples of ``v * loss(m)``."""
        return np.sum(v * np.logaddexp(0.0, -m), axis=-1)

    @staticmethod
    def slope(m):
        """d loss / d m."""
        return -expit(-m)


def newton(Z, Y, V, loss, direction, W0=None, tol=TOL, max_iter=MAX_ITER, steps=_TS):
    """Minimise ``0.5 w.pen.w + C sum_i V_qi loss(Y_qi z_i.w)`` for spheres x columns.

    Parameters
    ----------
    Z : ndarray of shape (B, n, d)
        Features of every sample of every sphere (intercept column included).
    Y : ndarray of shape (Q, n)
        Labels in {-1, +1} of every column (a fold of a label set).
    V : ndarray of shape (Q, n)
        1 for the training samples of the column's fold, 0 for the others (which then
        cost nothing: no fold copies its rows).
    loss : SquaredHinge or Logistic
        The loss, its ``C`` and penalty vector ``pen``.
    direction : object
        ``direction.restrict(spheres)`` is told which spheres are still iterating;
        ``direction(it, live, M, G, rel)`` returns the Newton directions (Bl, Q, d) of
        those spheres' problems where ``live`` (Bl, Q) is True, from their margins ``M``
        (Bl, Q, n), gradients ``G`` (Bl, Q, d) and gradient norms relative to zero
        ``rel`` (Bl, Q). With a method ``fallback(b, q)``
        (returning which of those problems switched to a safer direction), problems whose
        line search fails far from the optimum retry.
    W0 : ndarray of shape (B, Q, d), optional
        Starting points (default: zero). The stopping rule is relative to the gradient at
        zero whatever the start, so a start changes the path, never the answer.
    tol : float
        Stop a problem when ``||grad|| <= tol * ||grad at 0||``.
    max_iter : int
    steps : ndarray
        Step sizes tried by the line search, largest first.

    Returns
    -------
    W : ndarray of shape (B, Q, d)
        Solutions.
    ZW : ndarray of shape (B, Q, n)
        Their decision values on every sample.
    """
    B, n, d = Z.shape
    Q = len(Y)
    C, pen = loss.C, loss.pen
    if W0 is None:
        W, ZW = np.zeros((B, Q, d)), np.zeros((B, Q, n))
    else:
        W = np.array(W0, dtype=np.float64)
        ZW = np.matmul(W, Z.transpose(0, 2, 1))
    VY = V * Y
    g0 = np.linalg.norm(C * np.matmul(VY * loss.slope(np.zeros(n)), Z), axis=2)
    fallback = getattr(direction, "fallback", None)
    live = g0 > 0
    spheres, Zl = np.arange(B), Z
    direction.restrict(spheres)
    for it in range(max_iter):
        busy = live[spheres].any(axis=1)
        if not busy.all():
            spheres = spheres[busy]
            Zl = Z[spheres]
            direction.restrict(spheres)
        if len(spheres) == 0:
            break
        Wl, ZWl, L = W[spheres], ZW[spheres], live[spheres]
        M = Y * ZWl
        G = pen * Wl + C * np.matmul(VY * loss.slope(M), Zl)
        gn = np.linalg.norm(G, axis=2)
        L &= gn > tol * g0[spheres]
        live[spheres] = L
        if not L.any():
            continue
        P = direction(it, L, M, G, gn / np.maximum(g0[spheres], 1e-300))
        ZP = np.matmul(P, Zl.transpose(0, 2, 1))
        bi, qi = np.nonzero(L)
        w, p, zw, zp, g = Wl[bi, qi], P[bi, qi], ZWl[bi, qi], ZP[bi, qi], G[bi, qi]
        y, v = Y[qi], V[qi]
        ww = 0.5 * np.sum(pen * w * w, axis=1)
        f0 = ww + C * loss.value(y * zw, v)
        gp = np.sum(g * p, axis=1)
        wp, pp = np.sum(pen * w * p, axis=1), np.sum(pen * p * p, axis=1)

        def line(T, i, ww=ww, wp=wp, pp=pp, zw=zw, zp=zp, y=y, v=v):
            t = T[:, None]
            quad = ww[i][None] + t * wp[i][None] + 0.5 * t * t * pp[i][None]
            return quad + C * loss.value(y[i] * (zw[i][None] + t[..., None] * zp[i][None]), v[i])

        first = _first_armijo(line, f0, gp, steps)
        moved = first >= 0
        t = steps[first[moved]][:, None]
        sb, sq = spheres[bi[moved]], qi[moved]
        W[sb, sq] = w[moved] + t * p[moved]
        ZW[sb, sq] = zw[moved] + t * zp[moved]
        # the optimum to machine precision: no step decreases the objective, or the full
        # Newton step fails once the gradient is tiny (the objective is rounding noise)
        near = gn[bi, qi] <= _FLOOR * g0[spheres[bi], qi]
        stay = moved & ~(near & (first != 0))
        if fallback is not None and not moved.all():
            # no decrease far from the optimum: an inaccurate direction, not the end
            far = np.flatnonzero(~moved & ~near)
            if len(far):
                stay[far[fallback(bi[far], qi[far])]] = True
        live[spheres[bi[~stay]], qi[~stay]] = False
    return W, ZW


def _rung(r):
    """Padded size of Woodbury systems of r rows (0 when beyond the largest rung)."""
    i = np.searchsorted(_RUNGS, r)
    return np.where(i < len(_RUNGS), _RUNGS[np.minimum(i, len(_RUNGS) - 1)], 0)


class _SvcFactors:
    """A factor of the squared hinge's Hessian at a reference active set, per sphere and
    label set, that the Newton directions of every fold of the label set share.

    For reference rows ``ref`` (B, S, n) of every sphere and label set: ``R`` (lower
    triangular, B x S x d x d) with ``R R^T = (I + 2C Z_ref^T Z_ref)^-1`` and
    ``F = Z_ext R`` (the samples and a zero padding row). A problem whose active rows
    differ from the reference by the rows ``U`` (added ones weighted ``+2C``, removed ones
    ``-2C``) has the Woodbury system ``diag(-+1 / 2C) - F_U F_U^T`` (:class:`_SvcDirection`).
    Without ``ref`` the reference is every sample (S = 1): the Hessian at zero. ``woodbury``
    is False where the Hessian is too ill-conditioned (very uncentred data) for the
    identity to give accurate directions; those problems use the direct Hessian.
    """

    def __init__(self, Z_ext, C, ref=None):
        B, n1, d = Z_ext.shape
        Z = Z_ext[:, :-1]
        if ref is None:
            ref = np.ones((B, 1, n1 - 1), dtype=bool)
            H = (2.0 * C * np.matmul(Z.transpose(0, 2, 1), Z))[:, None]
        else:
            Za = Z[:, None] * ref[..., None]  # (B, S, n, d): rows outside the reference zeroed
            H = 2.0 * C * np.matmul(Za.transpose(0, 1, 3, 2), Za)
        S = H.shape[1]
        H[..., np.arange(d), np.arange(d)] += 1.0
        Hinv = np.linalg.inv(H)
        cond = np.linalg.norm(H, axis=(2, 3)) * np.linalg.norm(Hinv, axis=(2, 3))
        self.woodbury = cond <= _MAX_COND
        try:
            self.R = np.linalg.cholesky(Hinv)
        except np.linalg.LinAlgError:  # one problem at a time, so each decides for itself
            self.R = np.zeros_like(Hinv)
            for i in range(B):
                for j in range(S):
                    try:
                        self.R[i, j] = np.linalg.cholesky(Hinv[i, j])
                    except np.linalg.LinAlgError:
                        self.woodbury[i, j] = False
        self.F = np.matmul(Z_ext[:, None], self.R)  # (B, S, n + 1, d)
        self.ref = np.concatenate([ref, np.zeros((B, S, 1), dtype=bool)], axis=2)
        self.Z_ext, self.C = Z_ext, C


class _SvcDirection:
    """Newton directions of the squared hinge (see the module docstring).

    Column ``q`` of the problems uses reference ``q // (Q / S)`` of the factor ``fac``
    (the columns are grouped by label set, S groups of equal size).
    """

    def __init__(self, fac, V):
        self.fac, self.train = fac, V > 0
        Q, S = len(V), fac.R.shape[1]
        self.group = Q // S
        self.set_of = np.arange(Q) // self.group
        self.direct = ~fac.woodbury[:, self.set_of]  # (B, Q): direct Hessian

    def restrict(self, spheres):
        self.spheres = spheres
        full = len(spheres) == len(self.fac.R)
        self.R = self.fac.R if full else self.fac.R[spheres]
        self.ref = self.fac.ref if full else self.fac.ref[spheres]

    def fallback(self, b, q):
        new = ~self.direct[self.spheres[b], q]
        self.direct[self.spheres[b], q] = True
        return new

    def __call__(self, it, live, M, G, rel):
        F, C, sp = self.fac.F, self.fac.C, self.spheres
        Bl, Q, d = G.shape
        n = F.shape[2] - 1
        S = self.R.shape[1]
        act = self.train[None] & (M < 1.0)  # the training samples inside the margin
        ref = self.ref[:, self.set_of]  # (Bl, Q, n + 1), the padding row never in it
        changed = ref[..., :n] != act  # rows entering or leaving the reference Hessian
        r = changed.sum(axis=2)
        rung = _rung(r)
        use = live & ~self.direct[sp] & (rung > 0) & (rung < d)
        A = np.matmul(G.reshape(Bl, S, self.group, d), self.R).reshape(Bl, Q, d)  # R^T g
        for u in np.unique(rung[use]):
            bi, qi = np.nonzero(use & (rung == u))
            idx = np.argsort(~changed[bi, qi], axis=1, kind="stable")[:, :u]  # changed first
            idx[np.arange(u)[None, :] >= r[bi, qi][:, None]] = n  # padding: the zero row
            si = self.set_of[qi][:, None]
            Fu = F[sp[bi][:, None], si, idx]  # (s, u, d)
            S_ = -np.matmul(Fu, Fu.transpose(0, 2, 1))
            # removed rows (and the padding) +1/2C, added rows -1/2C
            removed = ref[bi[:, None], qi[:, None], idx] | (idx == n)
            S_[:, np.arange(u), np.arange(u)] += np.where(removed, 0.5 / C, -0.5 / C)
            a = A[bi, qi]
            q = np.linalg.solve(S_, _matvec(Fu, a)[..., None])[..., 0]
            A[bi, qi] = a + _rmatvec(Fu, q)
        Rt = self.R.transpose(0, 1, 3, 2)
        P = -np.matmul(A.reshape(Bl, S, self.group, d), Rt).reshape(Bl, Q, d)  # -R (a + F_u^T q)
        bi, qi = np.nonzero(live & ~use)
        if len(bi):
            Za = self.fac.Z_ext[sp[bi], :n] * act[bi, qi][..., None]
            H = 2.0 * C * np.matmul(Za.transpose(0, 2, 1), Za)
            H[:, np.arange(d), np.arange(d)] += 1.0
            P[bi, qi] = -np.linalg.solve(H, G[bi, qi][..., None])[..., 0]
        P[~live] = 0.0
        return P


class _LogisticDirection:
    """Newton directions of the logistic loss.

    The Hessian ``C Z^T diag(v p(1-p)) Z`` is formed and solved per problem. At zero (all
    weights 1/4) it is the shared Gram downdated by the samples outside the fold's training
    set, one factorisation serving every label set. Far from the optimum (gradient above
    ``_F32_UNTIL`` times its value at zero) the product is formed in float32, twice as fast:
    only the direction is approximate there, never the gradient or the objective, and the
    last iterations use float64 Hessians, so convergence stays quadratic.
    """

    def __init__(self, Z, Z32, Gram, V, fold_of, C, pen):
        self.Z, self.Z32, self.Gram, self.V = Z, Z32, Gram, V
        self.fold_of, self.C, self.pen = fold_of, C, pen

    def restrict(self, spheres):
        self.spheres = spheres

    def _hessians(self, Z, b, w):
        Zs = Z[self.spheres[b]]
        Zs *= np.sqrt(w).astype(Z.dtype)[..., None]
        return self.C * np.matmul(Zs.transpose(0, 2, 1), Zs).astype(np.float64)

    def __call__(self, it, live, M, G, rel):
        d = G.shape[2]
        diag = np.arange(d)
        P = np.zeros_like(G)
        if it == 0:
            for f in np.unique(self.fold_of):
                cols = np.flatnonzero(self.fold_of == f)
                Zo = sample_rows(self.Z[self.spheres], self.V[cols[0]] == 0)
                H = self.Gram[self.spheres] - np.matmul(Zo.transpose(0, 2, 1), Zo)
                H *= 0.25 * self.C
                H[:, diag, diag] += self.pen + 1e-300
                P[:, cols] = -np.linalg.solve(H, G[:, cols].transpose(0, 2, 1)).transpose(0, 2, 1)
            P[~live] = 0.0
            return P
        bi, qi = np.nonzero(live)
        s = expit(-M[bi, qi])
        w = self.V[qi] * s * (1.0 - s)
        early = rel[bi, qi] > _F32_UNTIL
        H = np.empty((len(bi), d, d))
        for sel, Z in ((np.flatnonzero(early), self.Z32), (np.flatnonzero(~early), self.Z)):
            if len(sel):
                H[sel] = self._hessians(Z, bi[sel], w[sel])
        H[:, diag, diag] += self.pen + 1e-300
        P[bi, qi] = -np.linalg.solve(H, G[bi, qi][..., None])[..., 0]
        return P


class _LogisticChord:
    """Chord directions of the folds, started at the all-samples optimum ``w*``.

    A fold leaves out a few samples, so its optimum is close to ``w*`` and its Hessian
    close to the all-samples Hessian at ``w*`` minus the left-out rows ``U``:
    ``H_f = H* - U^T U`` with ``H* = pen + C Z^T D* Z`` and ``U = sqrt(C D*_out) Z_out``.
    That matrix is kept for every iteration, in Woodbury form: ``H*^-1`` (one per sphere
    and label set, applied to all its folds' gradients in one product) plus, per fold,
    ``K = U H*^-1`` and ``S^-1 = (I - K U^T)^-1`` (systems the size of the left-out rows),
    so an iteration costs a few matrix-vector products instead of forming and solving a
    Hessian. When the left-out rows outnumber the features, every fold keeps its own
    inverse instead. Convergence is linear with a small rate (the curvature changes little
    between ``w*`` and the fold's optimum); a problem whose gradient stops falling fast
    (ratio above ``_CHORD_RATE``), or whose line search fails, switches to exact Newton
    directions (``direct``), so every problem reaches its optimum to the same tolerance.
    """

    def __init__(self, base, K, Sinv, direct):
        self.base, self.K, self.Sinv, self.direct_dir = base, K, Sinv, direct
        B, Q = K.shape[:2]
        self.ids = np.arange(B)
        self.direct = np.zeros((B, Q), dtype=bool)
        self.prev = np.full((B, Q), np.inf)

    def restrict(self, spheres):
        if len(spheres) != len(self.ids):  # keep only the spheres still iterating
            keep = np.searchsorted(self.ids, spheres)
            self.base, self.K, self.Sinv = self.base[keep], self.K[keep], self.Sinv[keep]
            self.ids = spheres
        self.direct_dir.restrict(spheres)

    def fallback(self, b, q):
        new = ~self.direct[self.ids[b], q]
        self.direct[self.ids[b], q] = True
        return new

    def __call__(self, it, live, M, G, rel):
        sp = self.ids
        slow = live & (rel > _CHORD_RATE * self.prev[sp])
        self.direct[sp] = self.direct[sp] | slow
        self.prev[sp] = np.where(live, rel, self.prev[sp])
        Bl, Q, d = G.shape
        nb = self.base.shape[1]
        A = np.matmul(G.reshape(Bl, nb, Q // nb, d), self.base).reshape(Bl, Q, d)
        if self.K.shape[2]:
            q = _matvec(self.Sinv, _matvec(self.K, G))
            Kf = self.K.reshape(Bl * Q, *self.K.shape[2:])
            A += _rmatvec(Kf, q.reshape(Bl * Q, -1)).reshape(Bl, Q, d)
        P = -A
        exact = live & self.direct[sp]
        if exact.any():
            P[exact] = self.direct_dir(max(it, 1), exact, M, G, rel)[exact]
        P[~live] = 0.0
        return P


def _fold_chords(Z, Ys, ZWs, V, F, C, pen):
    """The chord Hessians of every column, in the Woodbury form of :class:`_LogisticChord`.

    ``Ys``/``ZWs``: labels and all-samples decision values of the S label sets, (S, n) and
    (B, S, n); column ``q`` is fold ``q % F`` of label set ``q // F``, and ``V[q] == 0``
    marks its left-out rows. Returns (base, K, Sinv): ``base`` (B, S, d, d) with
    ``K`` (B, Q, u, d) and ``Sinv`` (B, Q, u, u), the left-out rows padded to ``u`` with
    zero rows (which change nothing); or ``base`` (B, Q, d, d) and empty corrections when
    a fold leaves out as many rows as there are features.
    """
    B, n, d = Z.shape
    Q = len(V)
    diag = np.arange(d)
    p = expit(-Ys[None] * ZWs)
    Zd = Z[:, None] * np.sqrt(C * p * (1.0 - p))[..., None]  # (B, S, n, d)
    H = np.matmul(Zd.transpose(0, 1, 3, 2), Zd)
    H[..., diag, diag] += pen
    out = [np.flatnonzero(V[f] == 0) for f in range(F)]
    u = max(len(o) for o in out)
    if u >= d:
        base = np.empty((B, Q, d, d))
        for q in range(Q):
            U = np.ascontiguousarray(Zd[:, q // F][:, out[q % F]])
            base[:, q] = np.linalg.inv(H[:, q // F] - np.matmul(U.transpose(0, 2, 1), U))
        return base, np.zeros((B, Q, 0, d)), np.zeros((B, Q, 0, 0))
    base = np.linalg.inv(H)
    K = np.zeros((B, Q, u, d))
    Sinv = np.empty((B, Q, u, u))
    for q in range(Q):
        s, o = q // F, out[q % F]
        U = np.zeros((B, u, d))
        U[:, : len(o)] = Zd[:, s][:, o]
        K[:, q] = np.matmul(U, base[:, s])
        Sm = -np.matmul(K[:, q], U.transpose(0, 2, 1))
        Sm[:, np.arange(u), np.arange(u)] += 1.0
        Sinv[:, q] = np.linalg.inv(Sm)
    return base, K, Sinv


def _solve_logistic(Z, Z32, Gram, Y, V, F, n_sets, loss):
    """Logistic decision values of every column: each label set's all-samples problem
    first (exact Newton), then its folds from that optimum by chord iterations."""
    n = Z.shape[1]
    Ys = Y[::F]
    Vs = np.ones((n_sets, n))
    zero = np.zeros(n_sets, dtype=np.intp)
    full = _LogisticDirection(Z, Z32, Gram, Vs, zero, loss.C, loss.pen)
    Ws, ZWs = newton(Z, Ys, Vs, loss, full)
    fold_of = np.tile(np.arange(F), n_sets)
    chord = _LogisticChord(
        *_fold_chords(Z, Ys, ZWs, V, F, loss.C, loss.pen),
        _LogisticDirection(Z, Z32, Gram, V, fold_of, loss.C, loss.pen),
    )
    return newton(Z, Y, V, loss, chord, W0=np.repeat(Ws, F, axis=1))[1]


def _solve_svc(Z_ext, Y, V, F, n_sets, loss, fac):
    """Squared-hinge decision values of every column: each label set's all-samples
    problem first (from zero, Woodbury downdates of the Hessian at zero), then its folds
    from that optimum, with the Hessian at its active set as the reference."""
    n = Z_ext.shape[1] - 1
    Z = Z_ext[:, :n]
    Ys, Vs = Y[::F], np.ones((n_sets, n))
    Ws, ZWs = newton(Z, Ys, Vs, loss, _SvcDirection(fac, Vs))
    ref = _SvcFactors(Z_ext, loss.C, Ys[None] * ZWs < 1.0)
    return newton(Z, Y, V, loss, _SvcDirection(ref, V), W0=np.repeat(Ws, F, axis=1))[1]


def _solve_batch(kind, Xg, bias, labels, folds, C, offs):
    """Decision values (n_sets, B, n_test_all) of one batch of spheres (Xg: (B, n, k))."""
    B, n, k = Xg.shape
    d = k + 1
    Z_ext = np.zeros((B, n + 1, d))
    Z_ext[:, :n, :k] = Xg
    Z_ext[:, :n, k] = bias
    Z = Z_ext[:, :n]
    F = len(folds)
    Vf = np.zeros((F, n))
    for f, (tr, _) in enumerate(folds):
        Vf[f, tr] = 1.0
    if kind == "svc":
        loss, fac = SquaredHinge(C, d), _SvcFactors(Z_ext, C)
    else:
        loss, Gram = Logistic(C, d), np.matmul(Z.transpose(0, 2, 1), Z)
        Z32 = Z.astype(np.float32)
    dec = np.empty((len(labels), B, offs[-1]))
    per = max(1, _MAX_COLUMNS // F)  # label sets per block of columns
    for s0 in range(0, len(labels), per):
        sets = range(s0, min(len(labels), s0 + per))
        Y = np.concatenate([np.broadcast_to(np.where(labels[s] == 1, 1.0, -1.0), (F, n))
                            for s in sets])  # fmt: skip
        V = np.tile(Vf, (len(sets), 1))
        if kind == "svc":
            ZW = _solve_svc(Z_ext, Y, V, F, len(sets), loss, fac)
        else:
            ZW = _solve_logistic(Z, Z32, Gram, Y, V, F, len(sets), loss)
        for j, s in enumerate(sets):
            for f, (_, te) in enumerate(folds):
                dec[s, :, offs[f] : offs[f + 1]] = ZW[:, j * F + f, te]
    return dec


def _run(ctx, kind):
    est, X = ctx.estimator, ctx.X
    C = float(est.C)
    shift = None
    if kind == "svc":
        bias = float(est.intercept_scaling)
    else:
        bias = 1.0
        shift = column_mean(X)  # shift-invariant with a free intercept; centred per sphere
    offs = ctx.test_offsets
    n = len(X)
    Q = min(_MAX_COLUMNS, len(ctx.folds) * ctx.n_sets)

    def per_sphere(k):
        d = k + 1
        # samples (gathered and with the intercept), R and F, the problems' states, and
        # for logistic the chord inverses of every problem
        chord = 2 * Q * (n * d + d * d) // len(ctx.folds) + 2 * Q * 32 * d
        # for svc, the reference factors (R, F and their temporaries) of every label set
        refs = max(1, Q // len(ctx.folds)) * (2 * (n + 1) * d + 3 * d * d)
        own = chord if kind == "logistic" else refs
        return 8 * (3 * (n + 1) * d + 3 * d * d + 6 * Q * (n + d) + own)

    def chunk(job):
        k, rows, cols = job
        Xg = gather(X, cols, shift)
        return rows, _solve_batch(kind, Xg, bias, ctx.labels, ctx.folds, C, offs)

    for rows, dec in thread_imap(chunk, size_batches(ctx.A, per_sphere), ctx.n_jobs):
        for s in range(ctx.n_sets):
            pred = (dec[s] > 0).astype(np.intp)
            ctx.consume(s, rows, pred, dec[s] if ctx.need_dec else None)
            ctx.progress(len(rows))


def run_svc(ctx):
    """LinearSVC (squared hinge, L2, penalised intercept) in every sphere and fold."""
    return _run(ctx, "svc")


def run_logistic(ctx):
    """LogisticRegression (L2, free intercept) in every sphere and fold."""
    return _run(ctx, "logistic")

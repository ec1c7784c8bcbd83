"""The squared-hinge Newton engine: directions against the direct Newton direction, and
optima against a converged scikit-learn LinearSVC, in the degenerate cases."""

import warnings

import numpy as np
import pytest
from sklearn.svm import LinearSVC

from mvpa_flows.core.searchlight.engines import newton


def _z_ext(Xg, bias):
    B, n, k = Xg.shape
    Z_ext = np.zeros((B, n + 1, k + 1))
    Z_ext[:, :n, :k] = Xg
    Z_ext[:, :n, k] = bias
    return Z_ext


def _margins(act, rng):
    """Margins whose rows inside the margin (m < 1) are exactly ``act``."""
    return np.where(act, rng.uniform(-2.0, 0.99, act.shape), rng.uniform(1.0, 3.0, act.shape))


@pytest.mark.parametrize("case", ["mixed", "unchanged", "all_removed", "all_added", "many"])
def test_svc_directions_equal_the_direct_newton_direction(case):
    """Woodbury directions from a reference active set (rows added and removed, none,
    every active row removed, every row added to an empty reference; beyond the number of
    features: the direct Hessian) equal ``-(I + 2C Z_A^T Z_A)^-1 g``."""
    rng = np.random.default_rng(3)
    B, n, k, C, S, F = 3, 40, 14, 0.7, 2, 4
    d, Q = k + 1, S * F
    Z_ext = _z_ext(rng.standard_normal((B, n, k)), 1.0)
    V = np.ones((Q, n))
    for q in range(Q):
        V[q, (q % F) * 8 : (q % F) * 8 + 8] = 0.0  # four folds of 8 left-out rows, 32: always in
    train = V > 0
    ref = np.zeros((B, S, n), dtype=bool)
    act = np.zeros((B, Q, n), dtype=bool)
    if case == "mixed":  # ~6 rows change per problem (the left-out ones included)
        ref[...] = rng.random((B, S, n)) < 0.5
        act = ref[:, np.arange(Q) // F] & train
        flip = rng.random(act.shape) < 0.05
        act ^= flip & train
    elif case == "unchanged":  # the reference is every fold's active set: padding only
        ref[:, :, 33:37] = True
        act[:, :, 33:37] = True
    elif case == "all_removed":  # H = I: every reference row leaves
        ref[:, :, 12:20] = True
    elif case == "all_added":  # empty reference (H_ref = I): every active row enters
        act[:, :, 30:38] = train[None, :, 30:38]
    else:  # more changes than features: direct Hessians
        ref[...] = rng.random((B, S, n)) < 0.5
        act = ~ref[:, np.arange(Q) // F] & train
    fac = newton._SvcFactors(Z_ext, C, ref)
    assert fac.woodbury.all()
    direction = newton._SvcDirection(fac, V)
    direction.restrict(np.arange(B))
    M = _margins(act, rng)
    G = rng.standard_normal((B, Q, d))
    changed = (ref[:, np.arange(Q) // F] != act).sum(axis=2)
    if case != "many":
        assert changed.max() < d
        # the Woodbury path only: the direct Hessian would be NaN
        fac.Z_ext = np.full_like(Z_ext, np.nan)
    else:
        assert np.all(newton._rung(changed) >= d)
    live = np.ones((B, Q), dtype=bool)
    live[0, 1] = False
    P = direction(1, live, M, G, np.ones((B, Q)))
    assert np.all(P[0, 1] == 0.0)
    for b in range(B):
        for q in range(Q):
            if not live[b, q]:
                continue
            Za = Z_ext[b, :n][act[b, q]]
            H = np.eye(d) + 2.0 * C * Za.T @ Za
            np.testing.assert_allclose(
                P[b, q], -np.linalg.solve(H, G[b, q]), rtol=1e-9, atol=1e-12
            )


def _tight_svc(X, y, C, bias):
    svc = LinearSVC(C=C, intercept_scaling=bias, dual=False, tol=1e-13, max_iter=100000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return svc.fit(X, y)


def _check_against_sklearn(Xg, y, folds, C, bias, atol=1e-6):
    labels = (y > 0).astype(int)[None]
    offs = np.r_[0, np.cumsum([len(te) for _, te in folds])]
    dec = newton._solve_batch("svc", Xg, bias, labels, folds, C, offs)[0]
    for b in range(len(Xg)):
        ref = np.concatenate(
            [
                _tight_svc(Xg[b, tr], y[tr], C, bias).decision_function(Xg[b, te])
                for tr, te in folds
            ]
        )
        np.testing.assert_allclose(dec[b], ref, rtol=1e-6, atol=atol)
    return dec


def _near_separable(seed, n=48, k=30, B=4, signal=1.0):
    rng = np.random.default_rng(seed)
    y = np.tile([-1.0, 1.0], n // 2)
    Xg = rng.standard_normal((B, n, k))
    Xg[:, y > 0, : k // 3] += signal
    folds = [(np.flatnonzero(np.arange(n) % 6 != f), np.flatnonzero(np.arange(n) % 6 == f))
             for f in range(6)]  # fmt: skip
    return Xg, y, folds


@pytest.mark.parametrize("C", [1.0, 100.0])
def test_svc_reaches_the_sklearn_optimum_on_near_separable_data(C):
    """30 voxels, 40 training samples: the fold optima are far from the all-samples one
    (many rows cross the margin), and at C = 100 nearly every row is beyond it."""
    Xg, y, folds = _near_separable(0)
    _check_against_sklearn(Xg, y, folds, C, 1.0)


def test_svc_reaches_the_sklearn_optimum_when_every_row_is_active():
    """A tiny C: every training row stays inside the margin at every optimum, so the folds'
    changes from the reference are exactly their left-out rows."""
    Xg, y, folds = _near_separable(1, signal=0.2)
    C = 1e-4
    dec = _check_against_sklearn(Xg, y, folds, C, 1.0, atol=1e-9)
    # every optimum indeed keeps every row inside the margin
    for tr, _ in folds[:2]:
        svc = _tight_svc(Xg[0, tr], y[tr], C, 1.0)
        assert np.all(y[tr] * svc.decision_function(Xg[0, tr]) < 1.0)
    assert np.isfinite(dec).all()


def test_svc_reaches_the_sklearn_optimum_with_ties_and_tiny_spheres():
    """Duplicated samples (with equal and with opposite labels), a constant voxel, and
    one-voxel spheres (two features: the changes outnumber them, direct Hessians)."""
    Xg, y, folds = _near_separable(2, k=12)
    Xg[:, 1::8] = Xg[:, 0::8]  # pairs of identical samples with opposite labels
    Xg[:, 2::8] = Xg[:, 4::8]  # pairs of identical samples with equal labels
    Xg[:, :, 5] = 0.3  # a constant voxel
    _check_against_sklearn(Xg, y, folds, 1.0, 2.0)
    _check_against_sklearn(Xg[:, :, :1], y, folds, 1.0, 1.0)


def test_svc_reaches_the_sklearn_optimum_on_uncentred_data():
    """Far from zero the reference Hessians are too ill-conditioned for the Woodbury
    identity: those problems take direct Newton directions, to the same optimum."""
    Xg, y, folds = _near_separable(4, k=10, B=2, signal=0.5)
    Xg = Xg + 1e4
    Z_ext = _z_ext(Xg, 1.0)
    assert not newton._SvcFactors(Z_ext, 1.0).woodbury.any()
    labels = (y > 0).astype(int)[None]
    offs = np.r_[0, np.cumsum([len(te) for _, te in folds])]
    dec = newton._solve_batch("svc", Xg, 1.0, labels, folds, 1.0, offs)[0]
    for b in range(len(Xg)):
        ref = np.concatenate(
            [_tight_svc(Xg[b, tr], y[tr], 1.0, 1.0).decision_function(Xg[b, te])
             for tr, te in folds]
        )  # fmt: skip
        scale = np.abs(ref).max()
        np.testing.assert_allclose(dec[b], ref, atol=1e-5 * scale)

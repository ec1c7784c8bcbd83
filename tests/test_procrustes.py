"""Procrustes: agreement with SciPy and PyMVPA, thin route, robustness."""

import time
import warnings

import numpy as np
import pytest
from pymvpa_reference import ProcrusteanMapper
from scipy.linalg import orthogonal_procrustes

from mvpa_flows.core.alignment.procrustes import (
    UnderdeterminedRotationWarning,
    procrustes,
    zscore_columns,
)
from mvpa_flows.core.errors import InputValidationError


def _pair(n, v, seed=0, noise=0.1, v_target=None):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, v))
    Q = np.linalg.qr(rng.standard_normal((v, v_target or v)))[0]
    B = 2.5 * A @ Q + noise * rng.standard_normal((n, (v_target or v))) + 3.0
    return A, B


def test_matches_scipy_orthogonal_procrustes():
    A, B = _pair(200, 40)
    R, s = orthogonal_procrustes(A, B)
    m = procrustes(A, B, scaling=False, demean=False)
    np.testing.assert_allclose(m.rotation, R, atol=1e-10)
    assert m.scale == 1.0
    # scaled: least-squares scale = sum of singular values / ||A||^2
    m = procrustes(A, B, scaling=True, demean=False)
    np.testing.assert_allclose(m.scale, s / np.sum(A**2), rtol=1e-12)
    np.testing.assert_allclose(m.rotation, R, atol=1e-10)


def test_matches_pymvpa_mapper_with_demean_and_scaling():
    A, B = _pair(150, 30, seed=1)
    ref = ProcrusteanMapper(scaling=True).train(A, B)
    m = procrustes(A, B)
    np.testing.assert_allclose(np.asarray(m), ref.proj, atol=1e-10)
    np.testing.assert_allclose(m.transform(A), ref.forward(A), atol=1e-9)
    assert m.scale == pytest.approx(2.5, rel=0.01)


@pytest.mark.parametrize("v_src,v_tgt", [(20, 30), (30, 20)])
def test_different_voxel_counts_match_pymvpa_zero_padding(v_src, v_tgt):
    rng = np.random.default_rng(2)
    A = rng.standard_normal((100, v_src))
    B = rng.standard_normal((100, v_tgt))
    ref = ProcrusteanMapper().train(A, B)
    m = procrustes(A, B)
    assert m.shape == (v_src, v_tgt)
    np.testing.assert_allclose(np.asarray(m), ref.proj, atol=1e-10)


def test_thin_route_agrees_with_direct_and_scipy_on_the_data_span():
    A, B = _pair(60, 200, seed=3)
    R, _ = orthogonal_procrustes(A, B)
    with pytest.warns(UnderdeterminedRotationWarning, match="determined only"):
        thin = procrustes(A, B, scaling=False, demean=False)
    assert thin.is_factored and thin.rank == 60
    direct = procrustes(
        A, B, scaling=False, demean=False, method="direct", warn_underdetermined=False
    )
    np.testing.assert_allclose(A @ thin.rotation, A @ R, atol=1e-9)
    np.testing.assert_allclose(thin.rotation, direct.rotation, atol=1e-9)
    # demeaned data have rank n - 1; scaled map reproduces PyMVPA's projection of A
    ref = ProcrusteanMapper().train(A, B)
    m = procrustes(A, B, warn_underdetermined=False)
    np.testing.assert_allclose(m.transform(A), ref.forward(A), atol=1e-8)
    # partial isometry: singular values 1 (rank) and 0
    sv = np.linalg.svd(thin.rotation, compute_uv=False)
    np.testing.assert_allclose(sv[:60], 1, atol=1e-9)
    np.testing.assert_allclose(sv[60:], 0, atol=1e-9)


def test_reflection_false_gives_proper_rotation():
    rng = np.random.default_rng(4)
    A = rng.standard_normal((100, 5))
    F = np.diag([1, 1, 1, 1, -1.0])  # a pure reflection
    B = A @ F + 0.01 * rng.standard_normal((100, 5))
    m_ref = procrustes(A, B, reflection=True, scaling=False)
    assert np.linalg.det(m_ref.rotation) == pytest.approx(-1)
    m = procrustes(A, B, reflection=False, scaling=False)
    assert np.linalg.det(m.rotation) == pytest.approx(1)
    # Kabsch solution from a full SVD
    U, s, Vt = np.linalg.svd((A - A.mean(0)).T @ (B - B.mean(0)))
    D = np.diag([1, 1, 1, 1, np.sign(np.linalg.det(U @ Vt))])
    np.testing.assert_allclose(m.rotation, U @ D @ Vt, atol=1e-10)


def test_constant_voxels_are_handled():
    A, B = _pair(80, 20, seed=5)
    A[:, 3] = 7.0  # constant voxel in the source
    B[:, 5] = -1.0  # and in the target
    with pytest.warns(UnderdeterminedRotationWarning):
        m = procrustes(A, B)
    R = m.rotation
    assert np.isfinite(R).all()
    np.testing.assert_allclose(R[3], 0, atol=1e-12)
    np.testing.assert_allclose(R[:, 5], 0, atol=1e-12)
    assert m.rank == 19
    z = zscore_columns(A)
    np.testing.assert_array_equal(z[:, 3], 0)


def test_errors():
    A, B = _pair(50, 10)
    with pytest.raises(InputValidationError, match="same samples"):
        procrustes(A, B[:-1])
    with pytest.raises(InputValidationError, match="constant"):
        procrustes(np.ones((50, 10)), B)
    C = A.copy()
    C[0, 0] = np.nan
    with pytest.raises(InputValidationError, match="finite"):
        procrustes(C, B)
    with pytest.raises(InputValidationError, match="2-D"):
        procrustes(A[:, 0], B)


def test_inverse_and_matmul():
    A, B = _pair(100, 15, seed=6)
    m = procrustes(A, B)
    np.testing.assert_allclose(m.inverse_transform(m.transform(A)), A, atol=1e-10)
    np.testing.assert_allclose(A @ m, A @ np.asarray(m), atol=1e-12)
    with pytest.raises(InputValidationError, match="voxels"):
        m.transform(A[:, :5])


def test_thin_route_is_fast():
    rng = np.random.default_rng(7)
    A = rng.standard_normal((300, 3000))
    B = rng.standard_normal((300, 3000))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderdeterminedRotationWarning)
        m = procrustes(A, B)
        m.transform(A)
    assert time.perf_counter() - t0 < 5.0  # a full 3000 x 3000 SVD alone takes ~10 s here


def test_thin_route_with_low_rank_target_is_optimal():
    # the one-sided thin route hands over to the two-sided SVD route here
    rng = np.random.default_rng(8)
    A = rng.standard_normal((40, 60))
    B = rng.standard_normal((40, 5)) @ rng.standard_normal((5, 70))
    with pytest.warns(UnderdeterminedRotationWarning):
        m = procrustes(A, B, scaling=False, demean=False)
    assert m.rank == 5 and m.shape == (60, 70)
    R = m.rotation
    M = A.T @ B
    # trace(R' M) reaches the nuclear norm of M: the Procrustes optimum
    np.testing.assert_allclose(
        np.trace(R.T @ M), np.linalg.svd(M, compute_uv=False).sum(), rtol=1e-10
    )
    sv = np.linalg.svd(R, compute_uv=False)
    np.testing.assert_allclose(sv[:5], 1, atol=1e-10)
    np.testing.assert_allclose(sv[5:], 0, atol=1e-10)


def test_one_sided_thin_route_is_optimal():
    rng = np.random.default_rng(9)
    A, B = rng.standard_normal((50, 80)), rng.standard_normal((50, 90))
    with pytest.warns(UnderdeterminedRotationWarning):
        m = procrustes(A, B, scaling=False, demean=False)
    M = A.T @ B
    np.testing.assert_allclose(
        np.trace(m.rotation.T @ M), np.linalg.svd(M, compute_uv=False).sum(), rtol=1e-10
    )
    np.testing.assert_allclose(
        m.rotation.T @ m.rotation @ m.rotation.T, m.rotation.T, atol=1e-10
    )  # partial isometry

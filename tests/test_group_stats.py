"""Group searchlight statistics against nilearn's permuted_ols and brute force."""

import warnings

import numpy as np
import pytest
from scipy import stats

from mvpa_flows.core.errors import InputValidationError
from mvpa_flows.core.stats.group import group_searchlight_stats, one_sample_t


def _maps(n_subjects=12, n_voxels=300, effect=0.15, seed=0):
    rng = np.random.default_rng(seed)
    maps = 0.5 + 0.05 * rng.standard_normal((n_subjects, n_voxels))
    maps[:, :20] += effect  # 20 informative voxels
    return maps


def test_t_matches_scipy_and_nilearn():
    from nilearn.mass_univariate import permuted_ols

    maps = _maps()
    res = group_searchlight_stats(maps, chance=0.5, n_perm=2000, random_state=1)
    np.testing.assert_allclose(res["t"], stats.ttest_1samp(maps - 0.5, 0).statistic, rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nl = permuted_ols(
            np.ones((maps.shape[0], 1)),
            maps - 0.5,
            model_intercept=False,
            two_sided_test=False,
            n_perm=2000,
            random_state=1,
        )
    np.testing.assert_allclose(res["t"], nl["t"][0], rtol=1e-8)
    p_nl = 10 ** -nl["logp_max_t"][0]
    # both are Monte Carlo estimates of the same FWE p-values (2000 random flips each)
    assert np.max(np.abs(res["p_fwe"] - p_nl)) < 0.05
    assert (
        np.array_equal(res["p_fwe"] < 0.05, p_nl < 0.05)
        or np.mean((res["p_fwe"] < 0.05) != (p_nl < 0.05)) < 0.02
    )
    assert res["p_fwe"][:20].max() < 0.05 and res["p_fwe"][20:].min() > 0.05
    assert res["p_fwe"].min() >= 1 / 2001
    np.testing.assert_allclose(res["mean"], maps.mean(axis=0))


def test_exact_enumeration_matches_brute_force():
    maps = _maps(n_subjects=6, n_voxels=50, effect=0.05, seed=2)
    res = group_searchlight_stats(maps, chance=0.5, n_perm=10000)
    assert res["exact"] and res["n_perm"] == 64
    d = maps - 0.5
    t_obs = one_sample_t(d)
    h0 = []
    for code in range(64):
        signs = np.array([-1.0 if (code >> k) & 1 else 1.0 for k in range(6)])
        h0.append(one_sample_t(signs[:, None] * d).max())
    h0 = np.array(h0)
    p = np.array([(h0 >= t).mean() for t in t_obs])
    np.testing.assert_allclose(res["p_fwe"], p)
    np.testing.assert_allclose(np.sort(res["h0_max_t"]), np.sort(h0))


def test_two_sided_and_chance_vector():
    maps = _maps(n_subjects=10, n_voxels=40, seed=3)
    maps[:, 30:] -= 0.1
    res = group_searchlight_stats(
        maps, chance=np.full(40, 0.5), n_perm=500, two_sided=True, random_state=0
    )
    assert res["p_fwe"][30:].max() < 0.05  # below chance is detected two-sided
    one = group_searchlight_stats(maps, chance=0.5, n_perm=500, random_state=0)
    assert one["p_fwe"][30:].min() > 0.5


def test_null_fwe_rate_is_controlled():
    rng = np.random.default_rng(4)
    hits = 0
    for _ in range(40):
        maps = 0.5 + 0.05 * rng.standard_normal((8, 100))
        hits += group_searchlight_stats(maps, 0.5, n_perm=256)["p_fwe"].min() <= 0.05
    assert hits / 40 <= 0.15  # nominal 0.05; 40 repetitions


def test_constant_voxels_and_errors():
    maps = _maps(n_subjects=8, n_voxels=10)
    maps[:, 0] = 0.5
    res = group_searchlight_stats(maps, 0.5, n_perm=100, random_state=0)
    assert res["t"][0] == 0 and np.isfinite(res["t"]).all()
    with pytest.raises(InputValidationError, match="at least 2 subjects"):
        group_searchlight_stats(maps[:1], 0.5)
    with pytest.raises(InputValidationError, match="n_subjects, n_voxels"):
        group_searchlight_stats(maps[0], 0.5)
    with pytest.raises(InputValidationError, match="chance"):
        group_searchlight_stats(maps, np.ones(3))
    bad = maps.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputValidationError, match="NaN"):
        group_searchlight_stats(bad, 0.5)

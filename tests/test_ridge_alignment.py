"""Ridge alignment: agreement with scikit-learn, blocked cross-validation, errors."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from mvpa_flows.core.alignment.ridge import DEFAULT_ALPHAS, contiguous_blocks, ridge_map
from mvpa_flows.core.errors import InputValidationError
from mvpa_flows.hyperalignment import Hyperalignment, RidgeMap


def _pair(n, v, d, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, v)) + rng.normal(size=v)
    B = rng.standard_normal((v, d)) / np.sqrt(v)
    return X, X @ B + noise * rng.standard_normal((n, d)) + 2.0


@pytest.mark.parametrize("shape", [(80, 20, 15), (30, 50, 12)], ids=["primal", "dual"])
def test_fixed_penalty_matches_sklearn_ridge(shape):
    X, Y = _pair(*shape)
    m = ridge_map(X, Y, alphas=[7.0])
    ref = Ridge(alpha=7.0, fit_intercept=True, solver="svd").fit(X, Y)
    np.testing.assert_allclose(m.rotation, ref.coef_.T, atol=1e-10)
    Xn = np.random.default_rng(9).standard_normal((5, shape[1]))
    np.testing.assert_allclose(m.transform(Xn), ref.predict(Xn), atol=1e-10)
    assert isinstance(m, RidgeMap) and m.info["alpha"] == 7.0


@pytest.mark.parametrize("shape", [(90, 12, 10), (45, 60, 8)], ids=["primal", "dual"])
def test_penalty_is_the_blocked_cv_minimum_of_sklearn_fits(shape):
    X, Y = _pair(*shape, seed=2, noise=3.0)
    alphas = [0.1, 1.0, 10.0, 100.0, 1000.0]
    m = ridge_map(X, Y, alphas=alphas, cv_blocks=4)
    errors = np.zeros(len(alphas))
    for start, stop in contiguous_blocks(X.shape[0], 4):
        train = np.r_[0:start, stop : X.shape[0]]
        for a, alpha in enumerate(alphas):
            fit = Ridge(alpha=alpha, solver="svd").fit(X[train], Y[train])
            errors[a] += np.sum((fit.predict(X[start:stop]) - Y[start:stop]) ** 2)
    np.testing.assert_allclose(m.info["cv_error"], errors, rtol=1e-8)
    assert m.info["alpha"] == alphas[int(np.argmin(errors))]
    ref = Ridge(alpha=m.info["alpha"], solver="svd").fit(X, Y)
    np.testing.assert_allclose(m.rotation, ref.coef_.T, atol=1e-9)


def test_contiguous_blocks_and_errors():
    assert contiguous_blocks(10, 3) == [(0, 3), (3, 7), (7, 10)]
    with pytest.raises(InputValidationError, match="cv_blocks' must be an integer >= 3"):
        contiguous_blocks(100, 2)
    with pytest.raises(InputValidationError, match="at least 3 contiguous training blocks"):
        contiguous_blocks(5, 3)
    X, Y = _pair(40, 5, 5)
    with pytest.raises(InputValidationError, match="alphas"):
        ridge_map(X, Y, alphas=[1.0, -2.0])
    assert min(DEFAULT_ALPHAS) == 0.1 and max(DEFAULT_ALPHAS) == 1e6
    with pytest.raises(InputValidationError, match="cv_blocks"):
        Hyperalignment(method="ridge", cv_blocks=2).fit([X, X + 1])
    with pytest.raises(InputValidationError, match="template"):
        Hyperalignment(method="ridge", template="mean").fit([X, X + 1])
    with pytest.raises(InputValidationError, match="method"):
        Hyperalignment(method="srm").fit([X, X + 1])


@pytest.mark.parametrize("template", ["procrustes", "pca"])
def test_ridge_hyperalignment_aligns_and_maps_new_subjects(template):
    rng = np.random.default_rng(4)
    n, v = 300, 25
    shared = rng.standard_normal((n, v))
    dss = [
        shared @ np.linalg.qr(rng.standard_normal((v, v)))[0] + 0.5 * rng.standard_normal((n, v))
        for _ in range(5)
    ]
    ha = Hyperalignment(method="ridge", template=template).fit(dss[:4])
    assert ha.model_.method == "ridge" and len(ha.alphas_) == 4
    assert ha.template_.shape == (n, v)
    Z = ha.transform(dss[:4])
    r = [np.corrcoef(Z[0].ravel(), z.ravel())[0, 1] for z in Z[1:]]
    assert min(r) > 0.8
    new = ha.fit_subject(dss[4])
    assert isinstance(new, RidgeMap)
    z_new = new.transform(dss[4])
    assert np.corrcoef(z_new.ravel(), ha.template_.ravel())[0, 1] > 0.8
    # an in-fit subject gets back its own map
    again = ha.fit_subject(dss[1])
    np.testing.assert_allclose(again.rotation, ha.transforms_[1].rotation, atol=1e-10)
    with pytest.raises(InputValidationError, match="not an isometry"):
        ha.inverse_transform(Z)

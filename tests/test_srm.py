"""Shared response model: agreement with a step-by-step transcription of BrainIAK's
updates (and with BrainIAK itself, slow), new subjects, errors."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mvpa_flows.core.errors import InputValidationError
from mvpa_flows.hyperalignment import SharedResponseModel

# ---------------------------------------------------------------------------------------
# Reference: BrainIAK 0.12's DetSRM._srm and SRM._srm (brainiak/funcalign/srm.py) written
# out step by step in BrainIAK's own layout (voxels x samples), with plain inverses and
# full SVDs. Every subject's data are centred first and ||X_i||^2 is taken on the
# centred data (BrainIAK takes it on the raw data: identical on centred data).
# ---------------------------------------------------------------------------------------


def _initial_w(data, k, seed):
    master = np.random.RandomState(seed)
    states = [np.random.RandomState(master.randint(2**32)) for _ in data]
    return [
        np.linalg.qr(st.random_sample((x.shape[0], k)))[0]
        for st, x in zip(states, data, strict=True)
    ]


def _svd_basis(a):
    a = a.copy()
    a[np.arange(min(a.shape)), np.arange(min(a.shape))] += 0.001
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    return u @ vt


def reference_det_srm(data, k, n_iter, seed):
    x = [d - d.mean(axis=1, keepdims=True) for d in data]
    w = _initial_w(x, k, seed)
    s = sum(wi.T @ xi for wi, xi in zip(w, x, strict=True)) / len(x)
    for _ in range(n_iter):
        w = [_svd_basis(xi @ s.T) for xi in x]
        s = sum(wi.T @ xi for wi, xi in zip(w, x, strict=True)) / len(x)
    return w, s


def reference_prob_srm(data, k, n_iter, seed):
    x = [d - d.mean(axis=1, keepdims=True) for d in data]
    n = x[0].shape[1]
    voxels = np.array([xi.shape[0] for xi in x])
    trace_xtx = np.array([np.sum(xi**2) for xi in x])
    w = _initial_w(x, k, seed)
    rho2 = np.ones(len(x))
    sigma_s = np.eye(k)
    s = np.zeros((k, n))
    for _ in range(n_iter):
        rho0 = np.sum(1 / rho2)
        inv_sigma_s = np.linalg.inv(sigma_s)
        inv_sigma_s_rhos = np.linalg.inv(inv_sigma_s + rho0 * np.eye(k))
        wt_invpsi_x = sum(wi.T @ xi / r for wi, xi, r in zip(w, x, rho2, strict=True))
        s = sigma_s @ (np.eye(k) - rho0 * inv_sigma_s_rhos) @ wt_invpsi_x
        sigma_s = inv_sigma_s_rhos + s @ s.T / n
        trace_sigma_s = n * np.trace(sigma_s)
        for i, xi in enumerate(x):
            a = xi @ s.T
            w[i] = _svd_basis(a)
            rho2[i] = (trace_xtx[i] - 2 * np.sum(w[i] * a) + trace_sigma_s) / (n * voxels[i])
    return w, s, sigma_s, rho2


def _subjects(n_subjects=4, n_samples=90, voxels=(30, 26, 34, 30), k=6, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n_samples, k))
    out = []
    for v in voxels[:n_subjects]:
        w = np.linalg.qr(rng.standard_normal((v, k)))[0]
        out.append(shared @ w.T * 3 + noise * rng.standard_normal((n_samples, v)) + 5)
    return shared, out


@pytest.mark.parametrize("method", ["deterministic", "probabilistic"])
def test_agrees_with_step_by_step_brainiak(method):
    _, dss = _subjects()
    srm = SharedResponseModel(n_components=5, method=method, n_iter=7, random_state=3).fit(dss)
    data = [X.T for X in dss]
    if method == "deterministic":
        w, s = reference_det_srm(data, 5, 7, 3)
    else:
        w, s, sigma_s, rho2 = reference_prob_srm(data, 5, 7, 3)
        np.testing.assert_allclose(srm.sigma_s_, sigma_s, atol=1e-9)
        np.testing.assert_allclose(srm.rho2_, rho2, rtol=1e-9)
    np.testing.assert_allclose(srm.shared_response_, s.T, atol=1e-9)
    for m, wi in zip(srm.maps_, w, strict=True):
        np.testing.assert_allclose(m.rotation, wi, atol=1e-9)
    # transform: the training mean removed, then W.T
    for z, X, wi in zip(srm.transform(dss), dss, w, strict=True):
        np.testing.assert_allclose(z, (X - X.mean(axis=0)) @ wi, atol=1e-9)
    # different seeds, different starts
    other = SharedResponseModel(5, method=method, n_iter=1, random_state=4).fit(dss)
    assert not np.allclose(other.shared_response_, srm.shared_response_)


def test_recovers_the_shared_response_and_maps_new_subjects():
    shared, dss = _subjects(n_subjects=4, n_samples=200, noise=0.3, seed=1)
    srm = SharedResponseModel(n_components=6, n_iter=10).fit(dss[:3])
    # the shared response spans the planted one
    shared = shared - shared.mean(axis=0)
    coef = np.linalg.lstsq(shared, srm.shared_response_, rcond=None)[0]
    resid = srm.shared_response_ - shared @ coef
    assert np.linalg.norm(resid) / np.linalg.norm(srm.shared_response_) < 0.15
    # a new subject (BrainIAK transform_subject: the polar factor of X0.T S)
    m = srm.fit_subject(dss[3])
    X0 = dss[3] - dss[3].mean(axis=0)
    u, _, vt = np.linalg.svd(X0.T @ srm.shared_response_, full_matrices=False)
    np.testing.assert_allclose(m.rotation, u @ vt, atol=1e-9)
    r = np.corrcoef(m.transform(dss[3]).ravel(), srm.shared_response_.ravel())[0, 1]
    assert r > 0.9
    back = srm.inverse_transform(srm.transform(dss[:3]))
    assert all(
        np.corrcoef(b.ravel(), d.ravel())[0, 1] > 0.9 for b, d in zip(back, dss[:3], strict=True)
    )


def test_estimator_conventions_and_errors():
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    _, dss = _subjects(n_subjects=3, voxels=(30, 30, 30))
    srm = SharedResponseModel(4, method="deterministic")
    assert clone(srm).get_params() == srm.get_params()
    assert "get_params" not in vars(SharedResponseModel)
    with pytest.raises(NotFittedError):
        srm.transform(dss)
    srm.fit(dss)
    assert srm.n_features_in_ == 30 and srm.n_features_per_subject_ == [30, 30, 30]
    _, short = _subjects(n_subjects=3, n_samples=20, voxels=(30, 30, 30))
    with pytest.raises(InputValidationError, match=r"n_components'=25 exceeds the 20 training"):
        SharedResponseModel(25).fit(short)
    _, small = _subjects(n_subjects=3, voxels=(30, 8, 30))
    with pytest.raises(InputValidationError, match=r"exceeds the 8 voxels \(subject 1\)"):
        SharedResponseModel(10).fit(small)
    with pytest.raises(InputValidationError, match="method"):
        SharedResponseModel(4, method="bayesian").fit(dss)
    with pytest.raises(InputValidationError, match="80 training samples but the model .* on 90"):
        srm.fit_subject(dss[0][:80])
    with pytest.raises(InputValidationError, match="20 voxels but the model's subjects have 30"):
        srm.fit_subject(dss[0][:, :20])


PEER = Path("/work/peers/brainiak/bin/python")
BRAINIAK_SCRIPT = r"""
import json, sys
import numpy as np
from brainiak.funcalign.srm import SRM, DetSRM
from brainiak.isc import isc
d = np.load(sys.argv[1])
data = [d[k].T for k in sorted(d.files)]
out = {}
for name, cls in (("deterministic", DetSRM), ("probabilistic", SRM)):
    m = cls(n_iter=10, features=8, rand_seed=5).fit(data)
    out[name] = {"w": [w.tolist() for w in m.w_], "s": m.s_.tolist()}
out["isc"] = isc(np.stack([x.T for x in data], axis=2)).tolist()
json.dump(out, open(sys.argv[2], "w"))
"""


@pytest.mark.slow
@pytest.mark.skipif(not PEER.exists(), reason=f"BrainIAK peer environment {PEER} absent")
def test_agrees_with_brainiak_itself(tmp_path):
    from mvpa_flows.hyperalignment import isc

    _, dss = _subjects(n_subjects=4, n_samples=120, voxels=(30,) * 4, noise=0.8, seed=7)
    dss = [(X - X.mean(axis=0)) / X.std(axis=0) for X in dss]  # z-scored, as in tutorials
    np.savez(tmp_path / "data.npz", **{f"s{i}": X for i, X in enumerate(dss)})
    (tmp_path / "run.py").write_text(BRAINIAK_SCRIPT)
    subprocess.run(
        [str(PEER), str(tmp_path / "run.py"), str(tmp_path / "data.npz"), str(tmp_path / "o")],
        check=True,
    )
    ref = json.loads((tmp_path / "o").read_text())
    for method in ("deterministic", "probabilistic"):
        srm = SharedResponseModel(8, method=method, n_iter=10, random_state=5).fit(dss)
        np.testing.assert_allclose(srm.shared_response_, np.array(ref[method]["s"]).T, atol=1e-7)
        for m, w in zip(srm.maps_, ref[method]["w"], strict=True):
            np.testing.assert_allclose(m.rotation, np.array(w), atol=1e-7)
    np.testing.assert_allclose(isc(dss), np.array(ref["isc"]), atol=1e-10)

"""Searchlight hyperalignment: agreement with a PyMVPA transcription, chunks, I/O, errors."""

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pymvpa_searchlight_reference as ref
import pytest
from pymvpa_reference import ProcrusteanMapper
from sklearn.base import clone

from mvpa_flows.core.alignment.model import AlignmentModel, load_model
from mvpa_flows.core.alignment.procrustes import UnderdeterminedRotationWarning
from mvpa_flows.core.alignment.ridge import DEFAULT_ALPHAS
from mvpa_flows.core.alignment.searchlight import (
    SearchlightHyperalignment,
    SearchlightModel,
    SparseTransform,
    _polar,
    load_partial,
    load_transform,
    save_partial,
    save_transform,
    scatter_centres,
)
from mvpa_flows.core.errors import InputValidationError
from mvpa_flows.hyperalignment import SearchlightHyperalignment as PublicSearchlightHyperalignment

VOXEL = 2.0  # mm; the reference counts radii in voxels


def _data(shape=(5, 6, 5), n_subjects=4, n_samples=80, seed=0, hole=True):
    """Z-scored subjects sharing a response, each with its own voxel mixing and noise."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, 1:-1] = True
    if hole:
        mask[2, 2, 2] = False
    V = int(mask.sum())
    shared = rng.standard_normal((n_samples, V))
    dss = []
    for _ in range(n_subjects):
        Q = np.linalg.qr(rng.standard_normal((V, V)))[0]
        X = shared @ (np.eye(V) + 0.3 * Q) + 0.5 * rng.standard_normal((n_samples, V))
        dss.append(ref.zscore(X))
    affine = np.diag([VOXEL, VOXEL, VOXEL, 1.0])
    return nib.Nifti1Image(mask.astype(np.uint8), affine), mask, dss


def _dense(m):
    return np.asarray(m.todense())


CASES = [
    {},
    {"sparse_radius": 2},
    {"featsel": 0.7},
    {"featsel": 0.7, "use_same_features": True},
    {"featsel": 20},
    {"exclude_from_model": [2]},
    {"ref_ds": 1},
    {"combine_neighbormappers": False},
    {"combine_neighbormappers": False, "featsel": 0.6},
    {"zscore_common": False},
    {"level2_n_iter": 2},
    {"level2_n_iter": 0},
    {"scaling": False},
]


@pytest.mark.parametrize("params", CASES, ids=[str(c) or "defaults" for c in CASES])
def test_agrees_with_step_by_step_pymvpa(params):
    img, mask, dss = _data()
    voxel_indices = np.stack(np.where(mask), axis=1)
    ref_kw = dict(params)
    ha_kw = {}
    for key in ("zscore_common", "scaling"):
        if key in ref_kw:
            ha_kw[key] = ref_kw.pop(key)
    if "level2_n_iter" in ref_kw:
        ha_kw["level2_niter"] = ref_kw.pop("level2_n_iter")
    expected = ref.searchlight_hyperalignment(
        dss, voxel_indices, radius=2, dtype="float64", **ref_kw, **ha_kw
    )
    ours = dict(params)
    if "sparse_radius" in ours:
        ours["sparse_radius"] *= VOXEL
    sl = SearchlightHyperalignment(img, radius=2 * VOXEL, dtype="float64", **ours).fit(dss)
    for t, e in zip(sl.transforms_, expected, strict=True):
        np.testing.assert_allclose(_dense(t.matrix), _dense(e), rtol=0, atol=1e-8)
        # PyMVPA's forward: X @ proj, no offsets
        np.testing.assert_allclose(t.transform(dss[0]), dss[0] @ e, atol=1e-8)


def test_float32_default_is_pymvpas_float32_sum():
    img, mask, dss = _data(seed=3)
    expected = ref.searchlight_hyperalignment(dss, np.stack(np.where(mask), axis=1), radius=2)
    sl = SearchlightHyperalignment(img, radius=2 * VOXEL).fit(dss)
    for t, e in zip(sl.transforms_, expected, strict=True):
        assert t.matrix.dtype == np.float32 and e.dtype == np.float32
        # PyMVPA rounds every local map to float32 before adding; we round the sum once
        np.testing.assert_allclose(_dense(t.matrix), _dense(e), rtol=0, atol=2e-6)


def test_sparse_centres_are_pymvpas_scatter():
    rng = np.random.default_rng(0)
    mask = rng.random((9, 8, 7)) < 0.6
    coords = np.stack(np.where(mask), axis=1)
    for r in (1, 2, 3):
        expected = sorted(ref.scatter_neighborhoods(coords, r))
        got = scatter_centres(mask, np.diag([3.0, 3.0, 3.0, 1.0]), 3.0 * r)
        assert got.tolist() == expected
    # restricted to candidates (PyMVPA's mask_node_ids, in mask order)
    cand = np.flatnonzero(rng.random(len(coords)) < 0.5)
    expected = sorted(cand[ref.scatter_neighborhoods(coords[cand], 2)])
    got = scatter_centres(mask, np.diag([3.0, 3.0, 3.0, 1.0]), 6.0, candidates=cand)
    assert got.tolist() == expected


def test_batched_polar_matches_procrustes_polar():
    from mvpa_flows.core.alignment.procrustes import _polar as polar_one

    rng = np.random.default_rng(1)
    mats = [rng.standard_normal((7, 7)) for _ in range(3)]
    U, _, Vt = np.linalg.svd(rng.standard_normal((7, 7)))
    mats.append(U @ np.diag(np.logspace(0, -5, 7)) @ Vt)  # Newton-Schulz branch
    mats.append(U @ np.diag(np.logspace(0, -9, 7)) @ Vt)  # SVD branch
    mats.append(U[:, :4] @ np.diag([3.0, 2.0, 1.0, 0.5]) @ Vt[:4])  # rank 4
    mats.append(np.zeros((7, 7)))
    for reflection in (True, False):
        P, trace, rank = _polar(np.stack(mats), reflection)
        for b, M in enumerate(mats):
            P1, tr1, r1 = polar_one(M, reflection)
            np.testing.assert_allclose(P[b], P1, atol=1e-10)
            assert trace[b] == pytest.approx(tr1, abs=1e-12)
            assert rank[b] == r1


@pytest.mark.parametrize(
    "params",
    [{}, {"method": "ridge", "common_space": "mask", "alphas": [1.0, 10.0, 100.0]}],
    ids=["procrustes", "ridge-mask"],
)
def test_chunks_merge_bit_for_bit_in_any_order_and_n_jobs(params):
    img, _, dss = _data(seed=2)
    sl = SearchlightHyperalignment(img, radius=2 * VOXEL, **params)
    whole = clone(sl).fit(dss)
    parts = [sl.fit_partial(dss, chunk=k, n_chunks=5) for k in range(5)]
    merged = clone(sl).merge_partials(parts[::-1])
    threaded = clone(sl).set_params(n_jobs=2).fit(dss)
    # consume=True releases each partial's sums as they are added: same model, spent partials
    consumed = clone(sl).merge_partials(parts, consume=True)
    assert all(v is None for q in parts for v in q.values)
    with pytest.raises(InputValidationError, match="already merged with consume=True"):
        clone(sl).merge_partials(parts)
    for other in (merged, threaded, consumed):
        for a, b in zip(whole.transforms_, other.transforms_, strict=True):
            assert np.array_equal(a.matrix.indptr, b.matrix.indptr)
            assert np.array_equal(a.matrix.indices, b.matrix.indices)
            assert np.array_equal(a.matrix.data, b.matrix.data)
        assert np.array_equal(whole.template_, other.template_)


def test_partials_round_trip_hdf5_and_refuse_gaps(tmp_path):
    img, _, dss = _data(seed=4)
    sl = SearchlightHyperalignment(img, radius=2 * VOXEL, sparse_radius=2 * VOXEL)
    paths = [
        save_partial(tmp_path / f"chunk-{k}.h5", sl.fit_partial(dss, chunk=k, n_chunks=3))
        for k in range(3)
    ]
    merged = clone(sl).merge_partials([load_partial(p) for p in paths])
    whole = clone(sl).fit(dss)
    for a, b in zip(whole.transforms_, merged.transforms_, strict=True):
        assert np.array_equal(a.matrix.data, b.matrix.data)
    with pytest.raises(InputValidationError, match="cover"):
        clone(sl).merge_partials([load_partial(p) for p in paths[:2]])
    other = sl.fit_partial([X[::-1].copy() for X in dss], chunk=2, n_chunks=3)
    with pytest.raises(InputValidationError, match="other data"):
        clone(sl).merge_partials([load_partial(p) for p in paths[:2]] + [other])
    with pytest.raises(InputValidationError, match="other parameters"):
        clone(sl).set_params(radius=3 * VOXEL).merge_partials([load_partial(p) for p in paths])
    with pytest.raises(InputValidationError, match="chunk"):
        sl.fit_partial(dss, chunk=3, n_chunks=3)


def test_transform_inverse_and_zscoring():
    img, mask, dss = _data(seed=5)
    sl = SearchlightHyperalignment(img, radius=2 * VOXEL, dtype="float64").fit(dss)
    rng = np.random.default_rng(0)
    new = [rng.standard_normal((30, d.shape[1])) for d in dss]
    for t, X, Y in zip(sl.transforms_, new, sl.transform(new), strict=True):
        np.testing.assert_allclose(Y, X @ t.matrix.toarray(), atol=1e-12)
    back = sl.inverse_transform(sl.transform(new))
    for t, X, B in zip(sl.transforms_, new, back, strict=True):
        T = t.matrix.toarray()
        np.testing.assert_allclose(B, X @ T @ T.T, atol=1e-10)  # PyMVPA's recon: proj.T
    # zscore_output: every mapped voxel z-scored over samples
    z = clone(sl).set_params(zscore_output=True).fit(dss).transform(new)
    np.testing.assert_allclose(z[0], ref.zscore(sl.transform(new)[0]), atol=1e-10)
    # zscore_all: fitting raw data equals fitting the z-scored data; transform z-scores
    raw = [d * rng.uniform(0.5, 3, d.shape[1]) + rng.normal(size=d.shape[1]) for d in dss]
    with pytest.warns(UserWarning, match="not z-scored"):
        SearchlightHyperalignment(img, radius=2 * VOXEL).fit(raw)
    za = SearchlightHyperalignment(img, radius=2 * VOXEL, dtype="float64", zscore_all=True)
    za.fit(raw)
    for a, b in zip(za.transforms_, sl.transforms_, strict=True):
        np.testing.assert_allclose(a.matrix.toarray(), b.matrix.toarray(), atol=1e-8)
    np.testing.assert_allclose(za.transform(raw)[1], sl.transform(dss)[1], atol=1e-8)


def _reference_level3(datasets_sub, template, mask, radius_vox, centres=None):
    """Per-sphere Procrustes of one subject onto template columns, summed (reference)."""
    vi = np.stack(np.where(mask), axis=1)
    qe = ref.IndexQueryEngine(vi, radius_vox)
    V = len(vi)
    T = np.zeros((V, V))
    for c in range(V) if centres is None else centres:
        ids = qe[c]
        m = ProcrusteanMapper().train(datasets_sub[:, ids], template[:, ids])
        T[np.ix_(ids, ids)] += m.proj
    return T


def test_fit_subject_maps_a_new_subject_onto_the_template():
    img, mask, dss = _data(n_subjects=5, seed=6)
    sl = SearchlightHyperalignment(img, radius=2 * VOXEL, dtype="float64").fit(dss[:4])
    # the template: each voxel's mean over the local common spaces, z-scored
    assert sl.template_.shape == dss[0].shape
    np.testing.assert_allclose(sl.template_.std(axis=0), 1.0)
    t = sl.fit_subject(dss[4])
    assert isinstance(t, SparseTransform)
    expected = _reference_level3(dss[4], sl.template_, mask, 2)
    np.testing.assert_allclose(t.matrix.toarray(), expected, atol=1e-8)
    # the new subject lands closer to the training subjects than without alignment
    common = np.mean(sl.transform(dss[:4]), axis=0)
    r_new = np.corrcoef(t.transform(dss[4]).ravel(), common.ravel())[0, 1]
    r_anat = np.corrcoef(dss[4].ravel(), common.ravel())[0, 1]
    assert r_new > r_anat
    with pytest.raises(InputValidationError, match="same training samples"):
        sl.fit_subject(dss[4][:50])
    flat = dss[4].copy()
    flat[:, :-1] = 0.0
    with pytest.raises(InputValidationError, match=r"new subject \(X\) has .* constant"):
        sl.fit_subject(flat)


def test_mask_common_space_is_roi_template_then_local_level3():
    img, mask, dss = _data(seed=7)
    sl = SearchlightHyperalignment(
        img, radius=2 * VOXEL, common_space="mask", dtype="float64"
    ).fit(dss)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderdeterminedRotationWarning)
        template = ref.hyperalignment_train(dss, 0)
    np.testing.assert_allclose(sl.template_, template, atol=1e-8)
    for t, X in zip(sl.transforms_, dss, strict=True):
        np.testing.assert_allclose(
            t.matrix.toarray(), _reference_level3(X, template, mask, 2), atol=1e-8
        )


def _reference_ridge(dss, mask, alphas):
    """Per sphere: PyMVPA's local common space, then per subject a ridge map, summed."""
    qe = ref.IndexQueryEngine(np.stack(np.where(mask), axis=1), 2)
    V = int(mask.sum())
    out = [np.zeros((V, V)) for _ in dss]
    for c in range(V):
        ids = qe[c]
        common = ref.hyperalignment_train([d[:, ids] for d in dss], 0)
        C0 = common - common.mean(axis=0)
        for k, d in enumerate(dss):
            A0 = d[:, ids] - d[:, ids].mean(axis=0)
            W = np.linalg.solve(A0.T @ A0 + alphas[k] * np.eye(len(ids)), A0.T @ C0)
            out[k][np.ix_(ids, ids)] += W
    return out


def test_ridge_level3_against_explicit_solve():
    img, mask, dss = _data(seed=8, n_samples=40)
    sl = SearchlightHyperalignment(
        img, radius=2 * VOXEL, method="ridge", alphas=[5.0], dtype="float64"
    ).fit(dss)
    expected = _reference_ridge(dss, mask, [5.0] * len(dss))
    for t, e in zip(sl.transforms_, expected, strict=True):
        np.testing.assert_allclose(t.matrix.toarray(), e, atol=1e-8)


def test_ridge_penalty_chosen_per_subject_by_blocked_cross_validation():
    img, mask, dss = _data(seed=12, n_samples=60)
    alphas = (0.3, 3.0, 30.0, 300.0)
    sl = SearchlightHyperalignment(
        img, radius=2 * VOXEL, method="ridge", alphas=alphas, dtype="float64"
    ).fit(dss)
    # reference: every sphere (fewer than 256), every subject, 5 contiguous blocks
    qe = ref.IndexQueryEngine(np.stack(np.where(mask), axis=1), 2)
    err = np.zeros((len(dss), len(alphas)))
    edges = [0, 12, 24, 36, 48, 60]
    for c in range(int(mask.sum())):
        ids = qe[c]
        common = ref.hyperalignment_train([d[:, ids] for d in dss], 0)
        for k, d in enumerate(dss):
            for a0, b0 in zip(edges[:-1], edges[1:], strict=True):
                block = np.arange(a0, b0)
                train = np.setdiff1d(np.arange(60), block)
                X, C = d[:, ids], common
                mx, mc = X[train].mean(axis=0), C[train].mean(axis=0)
                Xtr, Ctr = X[train] - mx, C[train] - mc
                Xte, Cte = X[block] - mx, C[block] - mc
                for j, a in enumerate(alphas):
                    W = np.linalg.solve(Xtr.T @ Xtr + a * np.eye(len(ids)), Xtr.T @ Ctr)
                    err[k, j] += np.sum((Cte - Xte @ W) ** 2)
    np.testing.assert_allclose(sl.cv_errors_, err, rtol=1e-9)
    chosen = np.asarray(alphas)[np.argmin(err, axis=1)]
    np.testing.assert_array_equal(sl.alpha_, chosen)
    expected = _reference_ridge(dss, mask, chosen)
    for t, e in zip(sl.transforms_, expected, strict=True):
        np.testing.assert_allclose(t.matrix.toarray(), e, atol=1e-8)


def test_save_load_transform_and_model(tmp_path):
    img, mask, dss = _data(seed=9)
    sl = SearchlightHyperalignment(img, radius=2 * VOXEL, zscore_all=True).fit(dss)
    ridge = SearchlightHyperalignment(
        img, radius=2 * VOXEL, method="ridge", alphas=[1.0, 10.0], common_space="mask"
    ).fit(dss)
    ridge.model_.metadata.update(task="movie", space="MNI152NLin6Asym")
    ridge.model_.subjects = ["01", "02", "03", "04"]
    path = ridge.model_.save(tmp_path / "ridge.h5")
    loaded = load_model(path, task="movie", space="MNI152NLin6Asym")
    assert isinstance(loaded, SearchlightModel) and loaded.method == "searchlight"
    assert loaded.metadata == {"task": "movie", "space": "MNI152NLin6Asym"}
    assert loaded.subjects == ["01", "02", "03", "04"]
    assert loaded.info["alpha"] == ridge.alpha_.tolist()
    assert loaded.params == ridge.model_.params and loaded.params["method"] == "ridge"
    assert [t.info["alpha"] for t in loaded.maps] == ridge.alpha_.tolist()
    np.testing.assert_array_equal(loaded.mask, mask)
    loaded.roi = mask.astype(np.uint8)  # as the app sets it: the model still works
    np.testing.assert_array_equal(loaded.transform(dss)[3], ridge.transform(dss)[3])
    np.testing.assert_array_equal(
        loaded.fit_subject(dss[1]).matrix.toarray(), ridge.fit_subject(dss[1]).matrix.toarray()
    )
    with pytest.raises(InputValidationError, match="model of task 'movie', not of task 'rest'"):
        load_model(path, task="rest")
    path = save_transform(
        tmp_path / "sub-01_xfm.h5", sl.transforms_[0], mask, img.affine, {"radius": 4.0}
    )
    t, info = load_transform(path)
    assert info["params"]["radius"] == 4.0 and np.array_equal(info["mask"], mask)
    np.testing.assert_array_equal(t.transform(dss[0]), sl.transforms_[0].transform(dss[0]))
    # the ROI transform writer takes sparse transforms too (the app's one call)
    from mvpa_flows.core.alignment import xfm

    path = xfm.save_transform(
        tmp_path / "sub-02_xfm.h5", ridge.transforms_[1], roi=mask, params={"subject": "02"}
    )
    t, info = xfm.load_transform(path)
    assert isinstance(t, SparseTransform) and info["affine"] is None
    assert info["params"]["subject"] == "02" and info["params"]["method"] == "ridge"
    assert info["params"]["sparse_radius"] is None and t.info == ridge.transforms_[1].info
    np.testing.assert_array_equal(info["voxel_indices"], np.flatnonzero(mask))
    np.testing.assert_array_equal(t.transform(dss[1]), ridge.transforms_[1].transform(dss[1]))
    with pytest.raises(InputValidationError, match="pass `roi`"):
        xfm.save_transform(tmp_path / "x_xfm.h5", ridge.transforms_[1])
    mpath = sl.model_.save(tmp_path / "model.h5")
    loaded = load_model(mpath)
    assert loaded.params["radius"] == sl.radius and loaded.params["zscore_all"] is True
    for a, b in zip(loaded.transform(dss), sl.transform(dss), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        loaded.fit_subject(dss[2]).matrix.toarray(), sl.fit_subject(dss[2]).matrix.toarray()
    )
    with pytest.raises(InputValidationError, match="not an mvpa_flows file"):
        load_transform(mpath)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.h5",
        "ridge.h5",
        "sub-01_xfm.h5",
        "sub-02_xfm.h5",
    ]


def test_model_follows_the_alignment_model_contract():
    """model_ is an AlignmentModel: evaluation fits once and scores the sparse maps."""
    from mvpa_flows.core.alignment.bsc import between_subject_classification
    from mvpa_flows.core.alignment.evaluate import evaluate_new_subjects, hyperalign_and_evaluate

    img, mask, dss = _data(n_subjects=5, n_samples=120, seed=12)
    train, test = [ref.zscore(X[:80]) for X in dss], [ref.zscore(X[80:]) for X in dss]
    sl = SearchlightHyperalignment(img, radius=2 * VOXEL, dtype="float64")
    fitted = clone(sl).fit(train[:4])
    model = fitted.model_
    assert isinstance(model, AlignmentModel) and model.n_subjects == 4
    assert model.n_samples == 80 and model.n_components == dss[0].shape[1]
    assert model.info["ref_ds"] == 0 and model.info["n_centres"] == int(mask.sum())
    np.testing.assert_array_equal(model.voxel_indices, np.flatnonzero(mask))
    # the estimator is fitted once inside the evaluation and scores its own transform
    scores = between_subject_classification(
        train[:4], test[:4], tr=2.0, segment_length=8.0, alignment=sl
    )
    expected = _segment_accuracy(fitted.transform(test[:4]), 4)
    np.testing.assert_allclose(scores.hyperaligned.to_numpy(), expected)
    out = hyperalign_and_evaluate(
        train[:4], test[:4], ["a", "b", "c", "d"], tr=2.0, segment_length=8.0, alignment=sl
    )
    assert out["model"].subjects == ["a", "b", "c", "d"] and out["fit"]["method"] == "searchlight"
    # ISC maps: the common space is the mask's voxels, so aligned ISC is voxel-wise there
    from mvpa_flows.core.alignment.isc import isc, isc_maps

    aligned = fitted.transform(test[:4])
    maps = isc_maps(fitted, test[:4], aligned)
    assert maps["aligned_space"] == "common"
    np.testing.assert_allclose(maps["aligned"], isc(aligned))
    # a new subject through the evaluation of new subjects
    new = evaluate_new_subjects(
        fitted, [train[4]], [test[4]], test[:4], tr=2.0, segment_length=8.0
    )
    assert isinstance(new["maps"][0], SparseTransform)
    np.testing.assert_array_equal(
        new["maps"][0].matrix.toarray(), fitted.fit_subject(train[4]).matrix.toarray()
    )
    with pytest.raises(InputValidationError, match="80 training samples.*has 50|has 50.*80"):
        fitted.fit_subject(train[4][:50])
    with pytest.raises(InputValidationError, match="34 voxels but the model's subjects have 35"):
        fitted.fit_subject(train[4][:, :34])


def test_evaluation_inputs_are_checked_before_the_fit(monkeypatch):
    img, _, dss = _data(seed=13)
    sl = SearchlightHyperalignment(img, radius=2 * VOXEL)

    def no_fit(*args, **kwargs):
        raise AssertionError("the fit ran before the inputs were checked")

    monkeypatch.setattr(SearchlightHyperalignment, "fit_partial", no_fit)
    from mvpa_flows.core.alignment.bsc import between_subject_classification

    test = [X[::-1].copy() for X in dss]
    with pytest.raises(InputValidationError, match="segment_length"):
        between_subject_classification(dss, test, tr=2.0, segment_length=1000.0, alignment=sl)
    with pytest.raises(InputValidationError, match="circular"):
        between_subject_classification(
            dss, test, tr=2.0, segment_length=8.0, alignment=sl, train_runs=[1], test_runs=[1]
        )
    with pytest.raises(InputValidationError, match="circular"):
        between_subject_classification(dss, dss, tr=2.0, segment_length=8.0, alignment=sl)


def test_sklearn_conventions_and_public_export():
    img, _, dss = _data(seed=10)
    assert PublicSearchlightHyperalignment is SearchlightHyperalignment
    sl = SearchlightHyperalignment(img, radius=4.0, sparse_radius=4.0)
    assert clone(sl).get_params()["sparse_radius"] == 4.0
    assert not hasattr(sl, "transforms_")
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        sl.transform(dss)
    out = sl.fit_transform(dss)
    assert len(out) == len(dss) and out[0].shape == dss[0].shape
    assert len(sl.centres_) < dss[0].shape[1]


def test_bad_input(tmp_path):
    img, mask, dss = _data(seed=11)
    other = mask.copy()
    other[1, 1, 1] = False
    other_img = nib.Nifti1Image(other.astype(np.uint8), img.affine)
    with pytest.raises(InputValidationError, match=r"masks differ.*intersection has 34 voxels"):
        SearchlightHyperalignment([img, img, other_img, img], radius=4.0).fit(dss)
    with pytest.raises(InputValidationError, match="35 voxels but mask_img has 34"):
        SearchlightHyperalignment(other_img, radius=4.0).fit(dss)
    with pytest.raises(InputValidationError, match="single voxel.*at least 2 voxels"):
        SearchlightHyperalignment(img, radius=1.5).fit(dss)
    with pytest.raises(InputValidationError, match="alpha=0.*more training samples than"):
        SearchlightHyperalignment(img, radius=4.0, method="ridge", alphas=[0]).fit(
            [d[:5] for d in dss]
        )
    with pytest.raises(InputValidationError, match="'alphas'.*positive finite penalties"):
        SearchlightHyperalignment(img, radius=4.0, method="ridge", alphas=[0, 1]).fit(dss)
    with pytest.raises(InputValidationError, match="'cv_blocks'.*>= 3"):
        SearchlightHyperalignment(img, radius=4.0, method="ridge", cv_blocks=2).fit(dss)
    with pytest.raises(InputValidationError, match="3 contiguous training blocks"):
        SearchlightHyperalignment(img, radius=4.0, method="ridge").fit([d[:8] for d in dss])
    with pytest.raises(InputValidationError, match="'ref_ds'.*exclude_from_model"):
        SearchlightHyperalignment(img, radius=4.0, exclude_from_model=[0]).fit(dss)
    with pytest.raises(InputValidationError, match="'radius'"):
        SearchlightHyperalignment(img, radius=-2).fit(dss)
    with pytest.raises(InputValidationError, match="'featsel'"):
        SearchlightHyperalignment(img, radius=4.0, featsel=1.5).fit(dss)
    with pytest.raises(InputValidationError, match="'featsel' applies to method='procrustes'"):
        SearchlightHyperalignment(img, radius=4.0, method="ridge", featsel=0.5).fit(dss)
    with pytest.raises(InputValidationError, match="'method'"):
        SearchlightHyperalignment(img, radius=4.0, method="srm").fit(dss)
    with pytest.raises(InputValidationError, match="same samples"):
        SearchlightHyperalignment(img, radius=4.0).fit([dss[0], dss[1][:50]])
    dead = [d.copy() for d in dss]
    dead[3][:, :-1] = 0.0  # only the last voxel varies
    with pytest.raises(InputValidationError, match="Subject 3 has .* constant"):
        SearchlightHyperalignment(img, radius=2.0 * VOXEL).fit(dead)
    nan = [d.copy() for d in dss]
    nan[1][3, 5] = np.nan
    with pytest.raises(InputValidationError, match=r"datasets\[1\].*NaN"):
        SearchlightHyperalignment(img, radius=4.0).fit(nan)
    with pytest.raises(InputValidationError, match="no file"):
        SearchlightHyperalignment(tmp_path / "missing.nii.gz", radius=4.0).fit(dss)


SHERLOCK = Path(__file__).parents[2] / "shared" / "data" / "sherlock-pmc"


def _load_sherlock(run, mask):
    out = []
    for sub in range(1, 7):
        func = SHERLOCK / "derivatives" / "fmriprep" / f"sub-{sub:02d}" / "func"
        stem = f"sub-{sub:02d}_task-sherlock_run-{run}_space-MNI152NLin6Asym"
        bold = nib.load(func / f"{stem}_desc-preproc_bold.nii.gz").get_fdata(dtype=np.float32)
        out.append(bold[mask].T.astype(np.float64))
    return out


def _segment_accuracy(aligned, seg_len):
    from mvpa_flows.core.alignment.bsc import (
        segment_classification_accuracy,
        segment_patterns,
    )

    segs = [segment_patterns(X, seg_len) for X in aligned]
    total = np.sum(segs, axis=0)
    n = len(segs)
    return np.array(
        [segment_classification_accuracy(segs[s], (total - segs[s]) / (n - 1)) for s in range(n)]
    )


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(not SHERLOCK.exists(), reason=f"shared Sherlock data not found at {SHERLOCK}")
def test_sherlock_searchlight_ridge_at_least_roi_hyperalignment():
    """Train run 1, test run 2, 18 s segments (12 volumes), radius 9 mm, 6 subjects; every
    estimator goes through the same evaluation (fitted once on run 1, scored on run 2)."""
    from mvpa_flows.core.alignment.bsc import between_subject_classification
    from mvpa_flows.hyperalignment import Hyperalignment

    mask_img = nib.load(SHERLOCK / "space-MNI152NLin6Asym_label-PMC_mask.nii.gz")
    mask = mask_img.get_fdata() > 0
    train, test = _load_sherlock(1, mask), _load_sherlock(2, mask)
    kw = {"tr": 1.5, "segment_length": 18.0, "train_runs": [1], "test_runs": [2]}

    def accuracy(alignment):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnderdeterminedRotationWarning)
            return between_subject_classification(train, test, alignment=alignment, **kw)

    roi = accuracy(Hyperalignment())
    roi_ridge = accuracy(Hyperalignment(method="ridge"))
    # PyMVPA's algorithm (local rotations, every voxel a centre): above anatomy, below
    # the ROI rotation in this 481-voxel region, as PyMVPA's own example reports
    sl = SearchlightHyperalignment(mask_img, radius=9.0, zscore_output=True, n_jobs=2)
    pymvpa = accuracy(sl)
    # ridge maps onto the whole-mask common space, penalties from run 1 alone
    ridge = accuracy(clone(sl).set_params(method="ridge", common_space="mask"))
    print(
        f"anatomical {roi.anatomical.mean():.3f}, ROI hyperalignment "
        f"{roi.hyperaligned.mean():.3f}, ROI ridge {roi_ridge.hyperaligned.mean():.3f}, "
        f"searchlight (PyMVPA) {pymvpa.hyperaligned.mean():.3f}, searchlight ridge "
        f"{ridge.hyperaligned.mean():.3f}"
    )
    # measured: anatomical 0.143, ROI 0.237, ROI ridge 0.288, searchlight PyMVPA 0.190,
    # searchlight ridge 0.275
    assert pymvpa.hyperaligned.mean() > roi.anatomical.mean() + 0.03
    assert ridge.hyperaligned.mean() >= roi.hyperaligned.mean()


def test_app_core_builds_checks_and_records_the_searchlight_estimator():
    """alignment_estimator/check_alignment/alignment_parameters, with no data read."""
    from mvpa_flows.core.alignment.evaluate import (
        alignment_estimator,
        alignment_parameters,
        check_alignment,
    )

    img, _, _ = _data(seed=14)
    est = alignment_estimator("ridge", searchlight_radius=4.0, mask_img=img, cv_blocks=4)
    assert isinstance(est, SearchlightHyperalignment)
    assert (est.radius, est.method, est.cv_blocks) == (4.0, "ridge", 4)
    params = alignment_parameters(est)
    assert params["radius"] == 4.0 and params["method"] == "ridge"
    assert params["alphas"] == list(DEFAULT_ALPHAS) and "mask_img" not in params
    assert params["centres"] is None and "n_jobs" not in params
    procrustes = alignment_parameters(alignment_estimator("procrustes", 4.0, mask_img=img))
    assert "alphas" not in procrustes and procrustes["scaling"] is True
    assert check_alignment(est, 100, [35, 35]) is est
    with pytest.raises(InputValidationError, match="have \\[34\\] voxels but mask_img has 35"):
        check_alignment(est, 100, [35, 34])
    with pytest.raises(InputValidationError, match="single voxel"):
        check_alignment(alignment_estimator("procrustes", 1.5, mask_img=img), 100, 35)
    with pytest.raises(InputValidationError, match="alpha=0.*largest sphere has"):
        check_alignment(alignment_estimator("ridge", 4.0, mask_img=img, alphas=[0]), 10, 35)
    with pytest.raises(InputValidationError, match="3 contiguous training blocks"):
        check_alignment(est, 7, 35)
    with pytest.raises(InputValidationError, match="no searchlight form"):
        alignment_estimator("srm", searchlight_radius=4.0, mask_img=img)
    with pytest.raises(InputValidationError, match="needs 'mask_img'"):
        alignment_estimator("procrustes", searchlight_radius=4.0)
    with pytest.raises(InputValidationError, match=r"Unknown parameter\(s\) \['template'\]"):
        alignment_estimator("ridge", searchlight_radius=4.0, mask_img=img, template="pca")


def test_runs_zscored_with_ddof_1_are_zscored_data():
    """The app z-scores each run with ddof=1: no 'not z-scored' warning for such data."""
    import warnings

    img, _, dss = _data(seed=3)
    rng = np.random.default_rng(3)
    runs = []
    for d in dss:
        halves = np.array_split(d * rng.uniform(0.5, 3, d.shape[1]), 2)
        runs.append(np.vstack([(h - h.mean(axis=0)) / h.std(axis=0, ddof=1) for h in halves]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        SearchlightHyperalignment(img, radius=2 * VOXEL).fit(runs)

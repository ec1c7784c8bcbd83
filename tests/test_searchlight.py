"""Searchlight engines against scikit-learn fitted on every sphere, and nilearn."""

import warnings

import nibabel as nib
import numpy as np
import pytest
from scipy import sparse
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import GroupKFold, KFold, LeaveOneGroupOut
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import LinearSVC

from mvpa_flows.core.searchlight import (
    CorrelationClassifier,
    merge_results,
    permuted_labels,
    resolve_cv,
    resolve_estimator,
    search_light,
    select_engine,
)
from mvpa_flows.core.searchlight import base as sl
from mvpa_flows.core.searchlight.engines import EngineContext, run_engine
from mvpa_flows.core.searchlight.engines._context import restrict_columns
from mvpa_flows.core.searchlight.neighbourhoods import sphere_adjacency

AFFINE = np.diag([3.5, 3.75, 3.1, 1.0])


def _data(seed=0, n_runs=4, per_class=6, n_classes=2, shape=(7, 6, 5), offset=0.0):
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) > 0.25  # holes: many spheres cut by the mask edge
    n_vox = int(mask.sum())
    runs = np.repeat(np.arange(n_runs), per_class * n_classes)
    y = np.tile(np.repeat(np.array(["face", "house", "cat"][:n_classes]), per_class), n_runs)
    X = rng.standard_normal((len(y), n_vox)) * rng.uniform(0.5, 3, n_vox) + offset
    X[y == "house", : n_vox // 3] += 0.7
    return X, y, runs, mask


def _folds(runs):
    return [(np.flatnonzero(runs != r), np.flatnonzero(runs == r)) for r in np.unique(runs)]


def _engine_outputs(name, est, X, A, y, folds, source=None):
    classes, codes = np.unique(y, return_inverse=True)
    out = {}

    def consume(s, sph, pred, dec):
        idx = np.arange(A.shape[0])[sph]
        out.setdefault("pred", np.empty((A.shape[0], pred.shape[1]), int))[idx] = pred
        out.setdefault("dec", np.empty((A.shape[0], pred.shape[1])))[idx] = dec

    ctx = EngineContext(est, X, A, codes[None], folds, len(classes), True, 1, consume)
    ctx.source = source
    run_engine(name, ctx)
    return classes, out["pred"], out["dec"]


def _sklearn_outputs(est, X, A, y, folds, proba=False):
    from sklearn.base import clone

    preds, decs = [], []
    for i in range(A.shape[0]):
        cols = A.indices[A.indptr[i] : A.indptr[i + 1]]
        p, d = [], []
        for tr, te in folds:
            e = clone(est).fit(X[tr][:, cols], y[tr])
            p.append(e.predict(X[te][:, cols]))
            d.append(
                e.predict_proba(X[te][:, cols])[:, 1]
                if proba
                else e.decision_function(X[te][:, cols])
            )
        preds.append(np.concatenate(p))
        decs.append(np.concatenate(d))
    return np.array(preds), np.array(decs)


@pytest.mark.parametrize(
    "name, est",
    [
        ("gnb", GaussianNB()),
        ("gnb", GaussianNB(var_smoothing=1e-3)),
        ("lda", LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")),
        ("lda", LinearDiscriminantAnalysis(solver="lsqr")),
        ("lda", LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.3)),
        ("ridge", RidgeClassifier()),
        ("ridge", RidgeClassifier(alpha=10.0)),
        ("correlation", CorrelationClassifier()),
    ],
)
@pytest.mark.parametrize("offset", [0.0, pytest.param(100.0, marks=pytest.mark.slow)])
def test_closed_form_engines_match_sklearn_per_sphere(name, est, offset):
    X, y, runs, mask = _data(offset=offset)
    X[:, 3] = 2.0  # a constant voxel must not break anything
    A = sphere_adjacency(mask, AFFINE, 6.0)
    folds = _folds(runs)
    assert select_engine(est) == name
    classes, pred, dec = _engine_outputs(name, est, X, A, y, folds)
    ref_pred, ref_dec = _sklearn_outputs(est, X, A, y, folds, proba=name == "gnb")
    assert np.array_equal(classes[pred], ref_pred)
    # 1e-9 relative to the scale of each sphere's decision values (values near 0
    # carry the absolute rounding error of the larger terms they are made of)
    scale = np.abs(ref_dec).max(axis=1, keepdims=True)
    assert np.all(np.abs(dec - ref_dec) <= 1e-9 * scale + 1e-12)


@pytest.mark.parametrize("est", [GaussianNB(), CorrelationClassifier()])
def test_offset_data_match_sklearn(est):
    """Data far from zero (offset 100): the engines centre before summing."""
    name = select_engine(est)
    test_closed_form_engines_match_sklearn_per_sphere(name, est, 100.0)


@pytest.mark.slow
def test_gnb_and_lda_multiclass_predictions_match_sklearn():
    X, y, runs, mask = _data(n_classes=3, seed=3)
    A = sphere_adjacency(mask, AFFINE, 6.0)
    for name, est in [
        ("gnb", GaussianNB()),
        ("lda", resolve_estimator("lda")),
        ("ridge", RidgeClassifier()),
        ("correlation", CorrelationClassifier()),
    ]:
        classes, pred, _ = _engine_outputs(name, est, X, A, y, _folds(runs))
        ref_pred, _ = (
            _sklearn_outputs(est, X, A, y, _folds(runs), proba=True)
            if name == "gnb"
            else (_sklearn_outputs(est, X, A, y, _folds(runs)))
        )
        assert np.array_equal(classes[pred], ref_pred), name


@pytest.mark.parametrize(
    "name, est, tight",
    [
        (
            "svc",
            LinearSVC(max_iter=10000, random_state=0),
            LinearSVC(tol=1e-12, max_iter=200000, random_state=0),
        ),
        (
            "svc",
            LinearSVC(C=0.05, intercept_scaling=3.0),
            LinearSVC(C=0.05, intercept_scaling=3.0, dual=False, tol=1e-12, max_iter=200000),
        ),
        pytest.param(
            "logistic",
            LogisticRegression(),
            LogisticRegression(solver="newton-cholesky", tol=1e-12, max_iter=1000),
            marks=pytest.mark.slow,
        ),
    ],
)
def test_newton_engines_reach_the_solver_optimum(name, est, tight):
    X, y, runs, mask = _data(seed=1, shape=(5, 5, 4))
    A = sphere_adjacency(mask, AFFINE, 6.0)
    folds = _folds(runs)
    assert select_engine(est) == name
    classes, pred, dec = _engine_outputs(name, est, X, A, y, folds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_pred, ref_dec = _sklearn_outputs(tight, X, A, y, folds)
        def_pred, _ = _sklearn_outputs(est, X, A, y, folds)
    # same convex optimum: decision values agree to the tight solver's accuracy
    np.testing.assert_allclose(dec, ref_dec, rtol=1e-6, atol=1e-6)
    # default-tolerance predictions agree almost everywhere, and only where |dec| is tiny
    differ = classes[pred] != def_pred
    assert differ.mean() < 0.005
    assert np.all(np.abs(dec[differ]) < 1e-2)


@pytest.mark.parametrize("minority, chord_rate", [(False, None), (True, None), (False, 0.0)])
def test_logistic_folds_reach_the_optimum_from_the_all_samples_one(
    minority, chord_rate, monkeypatch
):
    """Logistic folds start at the all-samples optimum with chord directions (Woodbury
    form; per-fold inverses when a fold leaves out more rows than the features), and switch
    to exact Newton when slow (forced by a zero rate): the tight solver's optimum."""
    from mvpa_flows.core.searchlight.engines import newton

    if chord_rate is not None:
        monkeypatch.setattr(newton, "_CHORD_RATE", chord_rate)
    X, y, runs, mask = _data(seed=4, shape=(5, 4, 4))
    A = sphere_adjacency(mask, AFFINE, 6.0)
    folds = _folds(runs)
    if minority:
        folds = [(te, tr) for tr, te in folds[:2]]
    est = LogisticRegression()
    classes, pred, dec = _engine_outputs("logistic", est, X, A, y, folds)
    tight = LogisticRegression(solver="newton-cholesky", tol=1e-12, max_iter=1000)
    ref_pred, ref_dec = _sklearn_outputs(tight, X, A, y, folds)
    np.testing.assert_allclose(dec, ref_dec, rtol=1e-6, atol=1e-6)
    assert np.array_equal(classes[pred], ref_pred)


def test_multiclass_svc_goes_generic_and_matches():
    X, y, runs, mask = _data(n_classes=3, per_class=3, shape=(4, 4, 3))
    A = sphere_adjacency(mask, AFFINE, 4.0)
    r = search_light(X, y, "svc", A, groups=runs)
    assert r.engine == "generic"


def _nilearn_map(X, mask, y, runs, est, radius, cv):
    from nilearn.decoding import SearchLight

    imgs = np.zeros((*mask.shape, len(y)))
    imgs[mask] = X.T
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sl_ = SearchLight(
            nib.Nifti1Image(mask.astype(np.uint8), AFFINE),
            radius=radius,
            estimator=est,
            cv=cv,
            n_jobs=1,
        ).fit(nib.Nifti1Image(imgs, AFFINE), y, runs)
    return sl_.masked_scores_


@pytest.mark.parametrize("est", [GaussianNB(), resolve_estimator("lda"), RidgeClassifier()])
def test_accuracy_maps_identical_to_nilearn(est):
    X, y, runs, mask = _data(seed=2, shape=(6, 5, 4))
    A = sphere_adjacency(mask, AFFINE, 5.6)
    for cv in (LeaveOneGroupOut(), KFold(4)):
        ours = search_light(X, y, est, A, groups=runs, cv=cv).scores
        ref = _nilearn_map(X, mask, y, runs, est, 5.6, cv)
        np.testing.assert_array_equal(ours, ref)


def test_svc_map_matches_nilearn_on_standardized_data():
    X, y, runs, mask = _data(seed=2, shape=(6, 5, 4))
    A = sphere_adjacency(mask, AFFINE, 5.6)
    ours = search_light(X, y, "svc", A, groups=runs).scores
    ref = _nilearn_map(X, mask, y, runs, "svc", 5.6, LeaveOneGroupOut())
    assert np.mean(np.abs(ours - ref) < 1e-12) >= 0.995


@pytest.mark.slow
def test_generic_engine_matches_nilearn():
    X, y, runs, mask = _data(seed=2, shape=(4, 4, 3))
    A = sphere_adjacency(mask, AFFINE, 5.6)
    est = KNeighborsClassifier(3)
    r = search_light(X, y, est, A, groups=runs, n_jobs=2)
    assert r.engine == "generic"
    np.testing.assert_array_equal(
        r.scores, _nilearn_map(X, mask, y, runs, est, 5.6, LeaveOneGroupOut())
    )


@pytest.mark.parametrize("scoring", ["balanced_accuracy", "roc_auc"])
@pytest.mark.parametrize("est", ["gnb", "lda", "ridge", "correlation", "svc"])
def test_scorings_match_generic(scoring, est, monkeypatch):
    X, y, runs, mask = _data(seed=4, shape=(5, 4, 3))
    y = y.copy()
    y[[0, 13, 30]] = "house"  # unbalanced folds
    A = sphere_adjacency(mask, AFFINE, 6.0)
    fast = search_light(X, y, est, A, groups=runs, scoring=scoring)
    monkeypatch.setattr(sl, "select_engine", lambda e, n=2: "generic")
    slow = search_light(X, y, est, A, groups=runs, scoring=scoring)
    assert fast.engine != "generic" and slow.engine == "generic"
    np.testing.assert_allclose(fast.scores, slow.scores, atol=1e-12)


def test_fold_scores_mean_and_metadata():
    X, y, runs, mask = _data()
    A = sphere_adjacency(mask, AFFINE, 6.0)
    r = search_light(X, y, "gnb", A, groups=runs, return_fold_scores=True)
    assert r.fold_scores.shape == (4, A.shape[0])
    np.testing.assert_allclose(r.fold_scores.mean(axis=0), r.scores)
    assert r.engine == "gnb" and r.n_folds == 4 and r.chance_level == 0.5
    assert list(r.classes) == ["face", "house"] and r.scoring == "accuracy"
    np.testing.assert_array_equal(r.sphere_sizes, np.diff(A.indptr))
    assert "LeaveOneGroupOut" in r.cv


@pytest.mark.parametrize(
    "est",
    [
        "gnb",
        "ridge",
        "lda",
        "svc",
        "logistic",
        "correlation",
        pytest.param(KNeighborsClassifier(3), marks=pytest.mark.slow),
    ],
)
def test_chunks_merge_bit_for_bit_with_permutations(est):
    shape = (3, 3, 3) if isinstance(est, KNeighborsClassifier) else (5, 4, 4)
    X, y, runs, mask = _data(seed=5, shape=shape)
    A = sphere_adjacency(mask, AFFINE, 6.0)
    kw = dict(groups=runs, n_permutations=5, random_state=7, return_fold_scores=True)
    full = search_light(X, y, est, A, **kw)
    parts = [
        search_light(X, y, est, A, centres=c, **kw)
        for c in np.array_split(np.arange(A.shape[0]), 3)
    ]
    merged = merge_results(parts)
    for name in ("scores", "fold_scores", "null_scores", "pvalues", "sphere_sizes"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(full, name))


@pytest.mark.parametrize("est", ["gnb", "lda", "ridge", "correlation", "svc", "logistic"])
def test_scattered_centres_equal_the_whole_run_bit_for_bit(est):
    """Engines see only the voxels the requested spheres touch; answers do not change."""
    X, y, runs, mask = _data(seed=8, shape=(6, 5, 5))
    rng = np.random.default_rng(8)
    X = X * 10.0 ** rng.uniform(-0.5, 0.5, X.shape[1]) + 50.0  # voxel variances differ
    A = sphere_adjacency(mask, AFFINE, 4.0)
    kw = dict(groups=runs, return_fold_scores=True, n_permutations=2, random_state=3)
    full = search_light(X, y, est, A, **kw)
    some = np.sort(rng.choice(A.shape[0], 9, replace=False))
    part = search_light(X, y, est, A, centres=some, **kw)
    assert len(np.unique(A[some].indices)) < X.shape[1]  # the run was restricted
    np.testing.assert_array_equal(part.fold_scores, full.fold_scores[:, some])
    np.testing.assert_array_equal(part.null_scores, full.null_scores[:, some])
    # decision values, bit for bit: the engine on the touched voxels only
    est_ = resolve_estimator(est)
    _, _, dec = _engine_outputs(select_engine(est_), est_, X, A, y, _folds(runs))
    cols, X_used, A_used = restrict_columns(A[some], X)
    _, _, dec_part = _engine_outputs(
        select_engine(est_), est_, X_used, A_used, y, _folds(runs), source=X
    )
    np.testing.assert_array_equal(dec_part, dec[some])


@pytest.mark.parametrize(
    "name, est",
    [
        ("lda", LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")),
        ("lda", LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.2)),
        ("ridge", RidgeClassifier()),
        ("gnb", GaussianNB()),
    ],
)
def test_folds_training_on_a_minority_match_sklearn(name, est):
    """Folds whose training set is the smaller part (statistics formed directly rather
    than downdated from all samples)."""
    X, y, runs, mask = _data(seed=9, n_runs=4, per_class=5)
    A = sphere_adjacency(mask, AFFINE, 6.0)
    folds = [(np.flatnonzero(runs == r), np.flatnonzero(runs != r)) for r in range(3)]
    classes, pred, dec = _engine_outputs(name, est, X, A, y, folds)
    ref_pred, ref_dec = _sklearn_outputs(est, X, A, y, folds, proba=name == "gnb")
    assert np.array_equal(classes[pred], ref_pred)
    scale = np.abs(ref_dec).max(axis=1, keepdims=True)
    assert np.all(np.abs(dec - ref_dec) <= 1e-9 * scale + 1e-12)


def test_solve_spd_matches_solve_and_handles_singular_systems():
    from mvpa_flows.core.searchlight.engines._context import solve, solve_spd

    rng = np.random.default_rng(0)
    M = rng.standard_normal((4, 30, 6))
    S = np.matmul(M.transpose(0, 2, 1), M)
    S[2] = np.outer(M[2, 0], M[2, 0])  # rank one: Cholesky fails, least squares answers
    R = rng.standard_normal((4, 6, 2))
    out = solve_spd(S, R)
    for i in (0, 1, 3):
        np.testing.assert_allclose(out[i], np.linalg.solve(S[i], R[i]), rtol=1e-10)
    np.testing.assert_allclose(out[2], solve(S[2:3], R[2:3])[0], rtol=1e-10)


def test_correlation_blocks_of_centres_equal_one_block(monkeypatch):
    import mvpa_flows.core.searchlight.engines.correlation as corr

    X, y, runs, mask = _data(seed=10)
    A = sphere_adjacency(mask, AFFINE, 6.0)
    one = search_light(X, y, "correlation", A, groups=runs, return_fold_scores=True)
    monkeypatch.setattr(corr, "_BUDGET", 8 * 2 * len(y) * 7)  # blocks of 7 centres
    blocks = search_light(X, y, "correlation", A, groups=runs, return_fold_scores=True)
    np.testing.assert_array_equal(blocks.fold_scores, one.fold_scores)


def test_permutations_within_runs_and_pvalues():
    X, y, runs, mask = _data(seed=6)
    codes = np.unique(y, return_inverse=True)[1]
    perms = permuted_labels(codes, runs, 20, 0)
    np.testing.assert_array_equal(perms, permuted_labels(codes, runs, 20, 0))
    for r in np.unique(runs):
        assert np.all(np.sort(perms[:, runs == r], axis=1) == np.sort(codes[runs == r]))
    A = sphere_adjacency(mask, AFFINE, 6.0)
    res = search_light(X, y, "gnb", A, groups=runs, n_permutations=20, random_state=0)
    expected = (1 + (res.null_scores >= res.scores).sum(axis=0)) / 21
    np.testing.assert_array_equal(res.pvalues, expected)
    assert res.null_scores.shape == (20, A.shape[0])
    # the permutation null of every engine is the engine applied to permuted labels
    one = search_light(X, y, "ridge", A, groups=runs, n_permutations=3, random_state=1)
    for p, yp in enumerate(permuted_labels(codes, runs, 3, 1)):
        direct = search_light(X, np.asarray(["face", "house"])[yp], "ridge", A, groups=runs)
        np.testing.assert_array_equal(one.null_scores[p], direct.scores)


def test_progress_callback_and_verbose(capsys):
    X, y, runs, mask = _data()
    A = sphere_adjacency(mask, AFFINE, 6.0)
    calls = []
    search_light(
        X,
        y,
        "lda",
        A,
        groups=runs,
        progress=lambda d, t: calls.append((d, t)),
        verbose=1,
        n_permutations=2,
    )
    assert calls[-1] == (3 * A.shape[0], 3 * A.shape[0])
    assert "spheres" in capsys.readouterr().err


def test_resolve_cv_strings():
    runs = np.repeat(np.arange(3), 4)
    assert type(resolve_cv("loro", runs, 12)).__name__ == "LeaveOneGroupOut"
    assert type(resolve_cv(None, runs, 12)).__name__ == "LeaveOneGroupOut"
    assert type(resolve_cv(None, None, 12)).__name__ == "StratifiedKFold"
    k = resolve_cv("kfold:4", None, 12)
    assert type(k).__name__ == "KFold" and k.n_splits == 4
    with pytest.raises(ValueError, match="'loro'.*needs 'groups'"):
        resolve_cv("loro", None, 12)
    with pytest.raises(ValueError, match="'kfold:N' with an integer N >= 2"):
        resolve_cv("kfold:x", None, 12)


# ----------------------------------------------------------------- bad input
def test_single_class_error():
    X, y, runs, mask = _data()
    A = sphere_adjacency(mask, AFFINE, 6.0)
    with pytest.raises(ValueError, match="'y' must hold at least 2 classes"):
        search_light(X, np.full(len(y), "face"), "gnb", A, groups=runs, cv=KFold(3))


def test_class_absent_from_training_fold():
    X, y, runs, mask = _data()
    y = y.copy()
    y[:] = "face"
    y[runs == 0] = "house"
    A = sphere_adjacency(mask, AFFINE, 6.0)
    with pytest.raises(ValueError, match="training set of fold 0 has no sample of class"):
        search_light(X, y, "gnb", A, groups=runs)


def test_fewer_runs_than_folds():
    X, y, runs, mask = _data(n_runs=2)
    A = sphere_adjacency(mask, AFFINE, 6.0)
    with pytest.raises(ValueError, match="Use fewer folds than runs"):
        search_light(X, y, "gnb", A, groups=runs, cv=GroupKFold(5))
    with pytest.raises(ValueError, match="Use fewer folds than runs|at least 2 runs"):
        search_light(X, y, "gnb", A, groups=np.zeros(len(y)), cv="loro")


def test_bad_estimators():
    X, y, runs, mask = _data()
    A = sphere_adjacency(mask, AFFINE, 6.0)

    class NoPredict:
        def fit(self, X, y):
            return self

    class Uncloneable:
        def __init__(self, a):
            self.b = a

        def fit(self, X, y):
            return self

        def predict(self, X):
            return X[:, 0]

        def get_params(self, deep=True):
            return {"a": object()}  # a new object each time: clone's check fails

    with pytest.raises(TypeError, match="must implement fit\\(X, y\\) and predict\\(X\\)"):
        search_light(X, y, NoPredict(), A, groups=runs)
    with pytest.raises(TypeError, match="cannot be cloned"):
        search_light(X, y, Uncloneable(1), A, groups=runs)
    with pytest.raises(TypeError, match="estimator \\*instance\\*"):
        search_light(X, y, GaussianNB, A, groups=runs)
    with pytest.raises(ValueError, match="'estimator' must be one of"):
        search_light(X, y, "forest", A, groups=runs)


def test_regressors_and_single_fold_cv_are_refused():
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.linear_model import LinearRegression

    X, y, runs, mask = _data()
    A = sphere_adjacency(mask, AFFINE, 6.0)
    with pytest.raises(TypeError, match="must be a classifier.*LinearRegression, a regressor"):
        search_light(X, y, LinearRegression(), A, groups=runs)
    one_fold = [(np.flatnonzero(runs > 0), np.flatnonzero(runs == 0))]
    with pytest.raises(ValueError, match=r"gives 1 fold\(s\) \(4 run\(s\) in 'groups'\)"):
        search_light(X, y, "gnb", A, groups=runs, cv=one_fold)

    class PredictOnly(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            self.classes_ = np.unique(y)
            return self

        def predict(self, X):
            return np.full(len(X), self.classes_[0])

    with pytest.raises(TypeError, match="'roc_auc' needs continuous decisions.*PredictOnly"):
        search_light(X, y, PredictOnly(), A, groups=runs, scoring="roc_auc")
    assert search_light(X, y, PredictOnly(), A[:3], groups=runs).engine == "generic"


def test_constant_voxels_no_nan():
    X, y, runs, mask = _data()
    X[:, :] = 1.0
    X[:, -5:] += np.random.default_rng(0).standard_normal((len(y), 5))
    A = sphere_adjacency(mask, AFFINE, 6.0)
    for est in ["gnb", "lda", "ridge", "correlation", "svc", "logistic"]:
        r = search_light(X, y, est, A, groups=runs)
        assert np.all(np.isfinite(r.scores)), est


def test_input_validation_messages():
    X, y, runs, mask = _data()
    A = sphere_adjacency(mask, AFFINE, 6.0)
    with pytest.raises(ValueError, match="'A' has .* columns but 'X' has"):
        search_light(X[:, :-1], y, "gnb", A, groups=runs)
    with pytest.raises(ValueError, match="'scoring' must be one of"):
        search_light(X, y, "gnb", A, groups=runs, scoring="f1")
    with pytest.raises(ValueError, match="'roc_auc' needs 2 classes"):
        X3, y3, r3, m3 = _data(n_classes=3)
        search_light(
            X3, y3, "gnb", sphere_adjacency(m3, AFFINE, 6.0), groups=r3, scoring="roc_auc"
        )
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="'X' contains 1 NaN or infinite value"):
        search_light(Xn, y, "gnb", A, groups=runs)


@pytest.mark.parametrize("missing", [np.nan, None])
def test_missing_labels_are_refused_not_a_class(missing):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 6))
    y = np.array(["a", "b"] * 6, dtype=object)
    y[3] = missing
    A = sparse.identity(6, format="csr")
    with pytest.raises(
        ValueError, match=r"Parameter 'y' has 1 missing label\(s\).*sample\(s\) \[3\]"
    ):
        search_light(X, y, "gnb", A, groups=np.repeat(np.arange(3), 4))


@pytest.mark.parametrize("est", ["gnb", "lda", "ridge", "svc", "logistic"])
def test_float32_samples_are_kept_and_give_the_float64_answers(est, monkeypatch):
    """float32 samples are not copied to float64; the engines upcast what they compute on,
    so scores and decision values equal those of the float64 copy bit for bit."""
    X, y, runs, mask = _data(seed=5, shape=(6, 5, 5))
    X32 = (X * 30.0 + 500.0).astype(np.float32)  # an offset: the centring is exercised
    A = sphere_adjacency(mask, AFFINE, 4.0)
    dtypes = []
    real = sl.run_engine

    def spy(name, ctx):
        dtypes.append(ctx.X.dtype)
        return real(name, ctx)

    monkeypatch.setattr(sl, "run_engine", spy)
    for scoring in ("accuracy", "roc_auc"):
        kw = dict(groups=runs, scoring=scoring, return_fold_scores=True)
        r32 = search_light(X32, y, est, A, **kw)
        r64 = search_light(X32.astype(np.float64), y, est, A, **kw)
        np.testing.assert_array_equal(r32.fold_scores, r64.fold_scores)
    assert dtypes == [np.float32, np.float64] * 2
    est_ = resolve_estimator(est)
    _, p32, d32 = _engine_outputs(select_engine(est_), est_, X32, A, y, _folds(runs))
    _, p64, d64 = _engine_outputs(
        select_engine(est_), est_, X32.astype(np.float64), A, y, _folds(runs)
    )
    np.testing.assert_array_equal(d32, d64)
    np.testing.assert_array_equal(p32, p64)


def test_column_mean_is_the_float64_mean_bit_for_bit():
    from mvpa_flows.core.searchlight.engines._context import column_mean

    rng = np.random.default_rng(0)
    X = rng.standard_normal((37, 1000)) * rng.uniform(0.1, 1e4, 1000) + 1e5
    for A in (X.astype(np.float32), X):
        np.testing.assert_array_equal(column_mean(A, chunk=64), A.astype(np.float64).mean(axis=0))


def test_gnb_blocks_of_spheres_equal_one_block(monkeypatch):
    """GaussianNB's sparse products run over blocks of spheres: the answers do not depend
    on the block size."""
    from mvpa_flows.core.searchlight.engines import gnb

    X, y, runs, mask = _data(seed=6, shape=(6, 5, 5))
    A = sphere_adjacency(mask, AFFINE, 4.0)
    kw = dict(groups=runs, scoring="roc_auc", return_fold_scores=True)
    one = search_light(X, y, "gnb", A, **kw)
    monkeypatch.setattr(gnb, "_NNZ_BLOCK", 7)
    many = search_light(X, y, "gnb", A, **kw)
    np.testing.assert_array_equal(many.fold_scores, one.fold_scores)


def test_lda_fold_solve_equals_solve_spd_singular_systems_included():
    """LDA forms and factorises each fold system in place; the answers are solve_spd's on
    the same systems formed as a batch (to rounding), also where a system is singular
    (LU / least squares)."""
    from mvpa_flows.core.searchlight.engines._context import solve_spd
    from mvpa_flows.core.searchlight.engines.lda import _fold_solve

    rng = np.random.default_rng(0)
    Z = rng.standard_normal((2, 4, 30, 8))
    Z[:, 1, :, 3] = 0.0  # an exactly singular system
    A = [np.matmul(z.transpose(0, 2, 1), z) for z in Z]
    alpha = [rng.uniform(0.5, 1.0, 4), rng.uniform(0.5, 1.0, 4)]
    E = rng.standard_normal((4, 3, 8)) * 0.1
    E[1, :, 3] = 0.0
    diag_add = rng.uniform(0.0, 1.0, (4, 8))
    diag_add[1] = 0.0
    R = rng.standard_normal((4, 8, 2))
    M = alpha[0][:, None, None] * A[0] + alpha[1][:, None, None] * A[1]
    M -= np.matmul(E.transpose(0, 2, 1), E)
    M[:, np.arange(8), np.arange(8)] += diag_add
    ref = solve_spd(M, R)
    np.testing.assert_allclose(_fold_solve(A, alpha, E, diag_add, R), ref, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(ref[0], np.linalg.solve(M[0], R[0]), rtol=1e-10)
    np.testing.assert_allclose(ref[1], np.linalg.lstsq(M[1], R[1], rcond=None)[0], atol=1e-10)

"""mvpa_flows.decoding.SearchLight: a drop-in for nilearn.decoding.SearchLight."""

import inspect
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.decoding import SearchLight as NilearnSearchLight
from sklearn.cluster import KMeans
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import LeaveOneGroupOut
from sklearn.naive_bayes import GaussianNB
from sklearn.preprocessing import StandardScaler

from mvpa_flows.core.searchlight.neighbourhoods import sphere_adjacency
from mvpa_flows.decoding import SearchLight

HAXBY = Path(__file__).resolve().parents[2] / "shared" / "data" / "haxby2001-slice"
TR = 2.5
RADIUS = 5.6


def _haxby_face_house():
    """4D image of the face and house volumes, labels, runs and the brain mask."""
    if not HAXBY.is_dir():
        pytest.skip(f"real data {HAXBY} is absent (../shared/data beside the checkout)")
    func = HAXBY / "derivatives" / "fmriprep" / "sub-1" / "func"
    bolds = sorted(func.glob("*_desc-preproc_bold.nii.gz"))
    assert len(bolds) == 12
    vols, labels, runs, mask = [], [], [], None
    for r, bold in enumerate(bolds):
        stem = bold.name.split("_desc-")[0]
        events = pd.read_csv(HAXBY / "sub-1" / "func" / f"{stem}_events.tsv", sep="\t")
        img = nib.load(bold)
        m = np.asarray(nib.load(func / f"{stem}_desc-brain_mask.nii.gz").dataobj) > 0
        mask = m if mask is None else mask & m
        data = np.asarray(img.dataobj, dtype=np.float32)
        t = np.arange(img.shape[3]) * TR
        for _, ev in events[events.trial_type.isin(["face", "house"])].iterrows():
            sel = np.flatnonzero((t >= ev.onset) & (t < ev.onset + ev.duration))
            vols.append(data[..., sel])
            labels += [ev.trial_type] * len(sel)
            runs += [r] * len(sel)
    imgs = nib.Nifti1Image(np.concatenate(vols, axis=3), img.affine)
    return (
        imgs,
        np.array(labels),
        np.array(runs),
        nib.Nifti1Image(mask.astype(np.uint8), img.affine),
    )


@pytest.fixture(scope="module")
def haxby():
    return _haxby_face_house()


@pytest.fixture(scope="module")
def nilearn_gnb(haxby):
    """One nilearn reference fit (GaussianNB, leave-one-run-out), reused by the tests."""
    imgs, y, runs, mask = haxby
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NilearnSearchLight(
            mask, radius=RADIUS, estimator=GaussianNB(), cv=LeaveOneGroupOut(), n_jobs=1
        ).fit(imgs, y, runs)


@pytest.fixture(scope="module")
def ours_gnb(haxby):
    imgs, y, runs, mask = haxby
    return SearchLight(mask, radius=RADIUS, estimator="gnb", cv=LeaveOneGroupOut()).fit(
        imgs, y, runs
    )


def test_constructor_is_nilearns():
    ours = inspect.signature(SearchLight.__init__).parameters
    theirs = inspect.signature(NilearnSearchLight.__init__).parameters
    # nilearn's parameters, in nilearn's order, with nilearn's defaults
    assert list(ours)[: len(theirs)] == list(theirs)
    for name, par in theirs.items():
        assert ours[name].default == par.default, name
    sl = SearchLight(radius=3.0, estimator="lda")
    assert sl.get_params()["radius"] == 3.0 and sl.get_params()["estimator"] == "lda"
    assert not hasattr(sl, "scores_")  # __init__ only stores parameters


def test_gnb_map_equals_nilearn_voxel_for_voxel(haxby, nilearn_gnb, ours_gnb):
    _, y, _, mask = haxby
    assert len(y) == 216 and set(y) == {"face", "house"}
    assert ours_gnb.engine_ == "gnb"
    np.testing.assert_array_equal(ours_gnb.scores_, nilearn_gnb.scores_)
    np.testing.assert_array_equal(ours_gnb.process_mask_, nilearn_gnb.process_mask_)
    assert ours_gnb.n_elements_ == np.asarray(mask.dataobj).astype(bool).sum() == 530
    assert ours_gnb.scores_[ours_gnb.process_mask_].max() > 0.8  # faces vs houses decodes


def test_scores_img_geometry(nilearn_gnb, ours_gnb):
    ours, theirs = ours_gnb.scores_img_, nilearn_gnb.scores_img_
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours.affine, theirs.affine)
    np.testing.assert_array_equal(ours.get_fdata(), theirs.get_fdata())


def test_process_mask_restricts_centres(haxby, ours_gnb):
    imgs, y, runs, mask = haxby
    m = np.asarray(mask.dataobj) > 0
    proc = m.copy()
    proc[: m.shape[0] // 2] = False
    sl = SearchLight(
        mask,
        process_mask_img=nib.Nifti1Image(proc.astype(np.uint8), mask.affine),
        radius=RADIUS,
        estimator="gnb",
        cv=LeaveOneGroupOut(),
    ).fit(imgs, y, runs)
    assert sl.n_elements_ == proc.sum() < m.sum()
    assert np.all(sl.scores_[~proc] == 0)
    # spheres still draw on the whole mask: same scores as the full run at those centres
    np.testing.assert_array_equal(sl.scores_[proc], ours_gnb.scores_[proc])


def test_estimator_args_are_set(haxby):
    imgs, y, runs, mask = haxby
    sl = SearchLight(mask, radius=RADIUS, estimator="gnb", estimator_args={"var_smoothing": 1e-3})
    res = sl.fit(imgs, y, runs).result_
    assert res.engine == "gnb"
    with pytest.raises(ValueError, match="'estimator_args' does not fit GaussianNB"):
        SearchLight(mask, estimator="gnb", estimator_args={"C": 1.0}).fit(imgs, y, runs)


def test_bad_input_errors(haxby):
    imgs, y, runs, mask = haxby
    with pytest.raises(ValueError, match="'y' must have one label per volume"):
        SearchLight(mask, radius=RADIUS, estimator="gnb").fit(imgs, y[:-1], runs[:-1])
    lab = (np.asarray(mask.dataobj) > 0).astype(np.int16)
    lab[lab > 0] = np.arange(lab.sum()) % 3 + 1
    labelled = nib.Nifti1Image(lab, mask.affine)
    with pytest.raises(ValueError, match="'mask_img' must be a binary mask"):
        SearchLight(labelled, radius=RADIUS, estimator="gnb").fit(imgs, y, runs)
    outside = nib.Nifti1Image((np.asarray(mask.dataobj) == 0).astype(np.uint8), mask.affine)
    with pytest.raises(ValueError, match="'process_mask' lies entirely outside 'mask'"):
        SearchLight(mask, process_mask_img=outside, radius=RADIUS, estimator="gnb").fit(
            imgs, y, runs
        )
    with pytest.raises(ValueError, match=r"'radius' must be a finite number > 0 \(mm\)"):
        SearchLight(mask, radius=-1.0, estimator="gnb").fit(imgs, y, runs)
    with pytest.raises(ValueError, match="'estimator' must be one of"):
        SearchLight(mask, radius=RADIUS, estimator="forest").fit(imgs, y, runs)
    with pytest.raises(ValueError, match="'y' must hold at least 2 classes"):
        SearchLight(mask, radius=RADIUS, estimator="gnb", cv=3).fit(
            imgs, np.full(len(y), "face"), runs
        )
    with pytest.raises(NotFittedError):
        _ = SearchLight(mask).scores_img_


def _tiny_image(seed=0):
    """A 4x4x3 image of 24 volumes (2 classes, 4 runs) and its labels and runs."""
    rng = np.random.default_rng(seed)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    y = np.tile(np.repeat(np.array(["face", "house"]), 3), 4)
    runs = np.repeat(np.arange(4), 6)
    return nib.Nifti1Image(rng.standard_normal((4, 4, 3, len(y))), affine), y, runs


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Fail if SearchLight.fit gets as far as building spheres: checks must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("sphere construction reached before the parameter checks")

    monkeypatch.setattr("mvpa_flows.decoding.sphere_adjacency", forbidden)


@pytest.mark.parametrize(
    "estimator, message",
    [
        (LinearRegression(), r"must be a classifier.*got LinearRegression, a regressor"),
        (KMeans(2), r"must be a classifier.*got KMeans, a clusterer"),
        (StandardScaler(), r"must implement fit\(X, y\) and predict\(X\); got "
         r"StandardScaler, which lacks predict"),
    ],
)  # fmt: skip
def test_non_classifiers_are_refused_before_any_work(no_heavy_work, estimator, message):
    imgs, y, runs = _tiny_image()
    with pytest.raises(TypeError, match=message):
        SearchLight(radius=4.0, estimator=estimator).fit(imgs, y, runs)


@pytest.mark.parametrize("missing", [np.nan, None])
def test_missing_labels_are_refused_before_any_work(no_heavy_work, missing):
    imgs, y, runs = _tiny_image()
    y = y.astype(object)
    y[[2, 7]] = missing
    with pytest.raises(ValueError, match=r"'y' has 2 missing label\(s\).*sample\(s\) \[2, 7\]"):
        SearchLight(radius=4.0, estimator="gnb").fit(imgs, y, runs)


@pytest.mark.parametrize("radius", [np.nan, np.inf, 0.0, -3.0, "6"])
def test_bad_radius_is_refused_before_any_work(no_heavy_work, radius):
    imgs, y, runs = _tiny_image()
    with pytest.raises(ValueError, match=r"'radius' must be a finite number > 0 \(mm\); got"):
        SearchLight(radius=radius, estimator="gnb").fit(imgs, y, runs)


def test_single_fold_cv_is_refused_before_any_work(no_heavy_work):
    imgs, y, runs = _tiny_image()
    one_fold = [(np.flatnonzero(runs > 0), np.flatnonzero(runs == 0))]
    with pytest.raises(ValueError, match=r"gives 1 fold\(s\).*needs at least 2 folds"):
        SearchLight(radius=4.0, estimator="gnb", cv=one_fold).fit(imgs, y, runs)
    with pytest.raises(ValueError, match=r"'kfold:N' with an integer N >= 2; got 'kfold:1'"):
        SearchLight(radius=4.0, estimator="gnb", cv="kfold:1").fit(imgs, y, runs)
    with pytest.raises(ValueError, match=r"'cv'.*could not split.*1 run\(s\) in 'groups'"):
        SearchLight(radius=4.0, estimator="gnb", cv="loro").fit(imgs, y, np.zeros(len(y)))


def _logistic_objective(est, X, y):
    """sklearn's LogisticRegression objective 0.5 ||w||^2 + C sum log(1 + exp(-y f(x)))."""
    ypm = np.where(y == est.classes_[1], 1.0, -1.0)
    margin = ypm * est.decision_function(X)
    return 0.5 * est.coef_.ravel() @ est.coef_.ravel() + est.C * np.logaddexp(0, -margin).sum()


def test_logistic_map_is_the_optimum_that_nilearn_reaches_with_a_tight_solver(haxby):
    """LogisticRegression on raw Haxby BOLD (uncentred, offsets of ~1,000): our engine finds
    the exact optimum. nilearn with the default solver (lbfgs, tol=1e-4, max_iter=100, on
    the image's float32 data) stops short of it on almost every sphere, so its map differs
    nearly everywhere. Run on the voxel-centred images (the same optimum: the intercept
    absorbs the shift) with a tight solver, nilearn gives our map. Every sphere where the
    default differs has a fold whose lbfgs predictions differ from the optimum's and whose
    objective is above the optimum: the solver stopped early, not a different answer."""
    imgs, y, runs, mask = haxby
    m = np.asarray(mask.dataobj) > 0
    rng = np.random.default_rng(0)
    proc = np.zeros_like(m)
    proc[tuple(np.argwhere(m)[rng.choice(m.sum(), 60, replace=False)].T)] = True
    proc_img = nib.Nifti1Image(proc.astype(np.uint8), mask.affine)
    data = np.asarray(imgs.dataobj, dtype=np.float64)
    centred = nib.Nifti1Image(data - data.mean(axis=3, keepdims=True), imgs.affine)
    kw = dict(process_mask_img=proc_img, radius=RADIUS, cv=LeaveOneGroupOut())

    ours = SearchLight(mask, estimator=LogisticRegression(), **kw).fit(imgs, y, runs)
    assert ours.engine_ == "logistic"
    tight = LogisticRegression(solver="newton-cholesky", tol=1e-12, max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = NilearnSearchLight(mask, estimator=tight, n_jobs=1, **kw).fit(centred, y, runs)
        default = NilearnSearchLight(mask, estimator=LogisticRegression(), n_jobs=1, **kw).fit(
            imgs, y, runs
        )
    same = np.abs(ours.scores_[proc] - ref.scores_[proc]) < 1e-12
    assert same.mean() >= 0.995

    # every difference from the default solver: lbfgs stopped above the optimum
    differ = np.flatnonzero(np.abs(ours.scores_[proc] - default.scores_[proc]) > 1e-12)
    assert len(differ) > 0
    A = sphere_adjacency(m, mask.affine, RADIUS)
    centre_rows = np.flatnonzero(proc[m])[differ]
    Xm, Xc = data[m].T, centred.get_fdata()[m].T
    X32 = np.asarray(imgs.dataobj)[m].T  # nilearn hands sklearn the image's float32
    assert X32.dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row in centre_rows:
            cols = A.indices[A.indptr[row] : A.indptr[row + 1]]
            explained = False
            for tr, te in LeaveOneGroupOut().split(Xm, y, runs):
                lbfgs = LogisticRegression().fit(X32[tr][:, cols], y[tr])
                best = LogisticRegression(**tight.get_params()).fit(Xc[tr][:, cols], y[tr])
                if np.array_equal(lbfgs.predict(X32[te][:, cols]), best.predict(Xc[te][:, cols])):
                    continue
                # the objective does not depend on the centring (the intercept absorbs it)
                gap = _logistic_objective(lbfgs, Xm[tr][:, cols], y[tr])
                gap -= _logistic_objective(best, Xc[tr][:, cols], y[tr])
                explained = gap > 1e-8
                break
            assert explained, f"sphere {row} differs from nilearn's default fit without cause"


@pytest.mark.parametrize(
    "dtype, engine, stored",
    [
        (np.float32, "gnb", np.float32),
        (np.int16, "lda", np.float32),
        (np.float64, "gnb", np.float64),
        (np.float32, "correlation", np.float64),
    ],
)
def test_samples_are_read_in_the_precision_the_engine_keeps(dtype, engine, stored):
    """SearchLight reads the masked samples volume by volume, in float32 when the image's
    values fit it exactly and the engine upcasts what it computes on (no float64 copy of
    the data; float64 at once otherwise); the map equals the one computed on float64
    samples."""
    from mvpa_flows.core.searchlight import search_light
    from mvpa_flows.decoding import _masked_samples

    imgs, y, runs = _tiny_image(3)
    data = (np.asarray(imgs.dataobj) * 300 + 40).astype(dtype)
    imgs = nib.Nifti1Image(data, imgs.affine)
    mask = np.ones(data.shape[:3], dtype=bool)
    mask[0, 0] = False
    X = _masked_samples(imgs, mask, engine)
    assert X.dtype == stored and X.flags.c_contiguous
    np.testing.assert_array_equal(X, data[mask].T)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), imgs.affine)
    A = sphere_adjacency(mask, imgs.affine, 4.0)
    ours = SearchLight(mask_img, radius=4.0, estimator=engine).fit(imgs, y, runs)
    ref = search_light(data[mask].T.astype(np.float64), y, engine, A, groups=runs)
    np.testing.assert_array_equal(ours.masked_scores_, ref.scores)

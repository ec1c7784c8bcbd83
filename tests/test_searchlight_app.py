"""Searchlight in the BIDS-App: outputs, chunked == unchunked, agreement with nilearn."""

import json

import nibabel as nb
import numpy as np
import pytest

from mvpa_flows.cli.run import main
from mvpa_flows.workflows.searchlight import init_searchlight_wf


def _run(bids, out, *args):
    return main(
        [
            str(bids),
            str(out),
            "participant",
            "-w",
            str(out.parent / "work"),
            "--analyses",
            "searchlight",
            "--conditions",
            "face",
            "house",
            *args,
        ]
    )


def test_searchlight_wf_maps_chunks():
    wf = init_searchlight_wf(n_chunks=3, estimator="gnb", radius=6.0)
    chunks = wf.get_node("searchlight_chunks")
    assert chunks.inputs.chunk_index == [0, 1, 2]
    assert chunks.inputs.n_chunks == 3 and chunks.iterfield == ["chunk_index"]


def test_chunked_equals_unchunked_bit_for_bit_with_multiproc(synthetic_bids, tmp_path):
    args = (
        "--participant-label",
        "01",
        "--estimator",
        "gnb",
        "--radius",
        "7",
        "--n-permutations",
        "9",
        "--random-seed",
        "4",
        "--hrf-delay",
        "4",
    )
    one, three = tmp_path / "one" / "out", tmp_path / "three" / "out"
    assert _run(synthetic_bids, one, *args, "--nprocs", "1") == 0
    assert _run(synthetic_bids, three, *args, "--nprocs", "2", "--searchlight-chunks", "3") == 0
    stem = "sub-01/func/sub-01_task-objects_contrast-faceVsHouse_stat-{}_desc-searchlight_statmap"
    for stat in ("accuracy", "p"):
        a = np.asarray(nb.load(one / (stem.format(stat) + ".nii.gz")).dataobj)
        b = np.asarray(nb.load(three / (stem.format(stat) + ".nii.gz")).dataobj)
        assert np.array_equal(a, b), stat
    meta = json.loads((one / (stem.format("accuracy") + ".json")).read_text())
    assert meta["Radius"] == 7.0 and meta["Engine"] and meta["NumberOfFolds"] == 3
    assert meta["NumberOfPermutations"] == 9 and meta["RandomSeed"] == 4
    assert meta["ChanceLevel"] == 0.5 and meta["LabelCounts"]["face"] > 0
    assert meta["SphereSize"]["Min"] >= 1 and meta["Conditions"] == ["face", "house"]
    # the planted multivariate patch decodes well above chance
    acc = np.asarray(nb.load(one / (stem.format("accuracy") + ".nii.gz")).dataobj)
    assert acc.max() > 0.8


@pytest.mark.shared_data
def test_haxby_searchlight_equals_nilearn_on_the_same_samples(haxby_dir, tmp_path):
    from nilearn.decoding import SearchLight
    from sklearn.model_selection import LeaveOneGroupOut
    from sklearn.naive_bayes import GaussianNB

    from mvpa_flows.core.data.dataset import load_samples

    out = tmp_path / "out"
    assert _run(haxby_dir, out, "--estimator", "gnb", "--nprocs", "1") == 0
    func = haxby_dir / "derivatives" / "fmriprep" / "sub-1" / "func"
    stems = [f"sub-1_task-objectviewing_run-{r:02d}" for r in range(1, 13)]
    X, table, mask, _ = load_samples(
        [func / f"{s}_desc-preproc_bold.nii.gz" for s in stems],
        [func / f"{s}_desc-brain_mask.nii.gz" for s in stems],
        [haxby_dir / "sub-1" / "func" / f"{s}_events.tsv" for s in stems],
        [func / f"{s}_desc-confounds_timeseries.tsv" for s in stems],
        conditions=["face", "house"],
    )
    from nilearn.masking import unmask

    imgs = unmask(X.astype(np.float64), mask)
    reference = SearchLight(
        mask, radius=5.6, estimator=GaussianNB(), cv=LeaveOneGroupOut(), n_jobs=1
    )
    reference.fit(imgs, table["label"].to_numpy(), groups=table["run"].to_numpy())
    ours = np.asarray(nb.load(next(out.rglob("*stat-accuracy_desc-searchlight*.nii.gz"))).dataobj)
    inside = np.asarray(mask.dataobj) > 0
    np.testing.assert_allclose(ours[inside], reference.scores_[inside], atol=1e-6)

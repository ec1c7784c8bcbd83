"""Group searchlight hyperalignment in the app: chunks over a MapNode, flags, warnings."""

import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from conftest import run_app

from mvpa_flows.core.alignment.model import load_model
from mvpa_flows.core.alignment.xfm import load_transform
from mvpa_flows.core.errors import InputValidationError

BASE = (
    "--analyses hyperalignment --ha-train-runs 1 2 --ha-test-runs 3 --segment-length 8 "
    "--ha-searchlight-radius 6"
)
GROUP = "task-objects_desc-{}"


def _outputs(out):
    """Every output of a group hyperalignment run: name -> comparable content."""
    found = {}
    for path in sorted(out.rglob("*")):
        if not path.is_file() or "figures" in path.parts or path.suffix == ".html":
            continue
        rel = path.relative_to(out).as_posix()
        if rel.startswith("logs/"):
            continue
        if path.name.endswith("_xfm.h5"):
            transform, info = load_transform(path)
            found[rel] = (transform.matrix.toarray(), info["voxel_indices"])
        elif path.name.endswith("_model.h5"):
            model = load_model(path)
            found[rel] = (model.template, [m.matrix.toarray() for m in model.maps])
        elif path.name.endswith(".nii.gz"):
            found[rel] = np.asarray(nb.load(path).dataobj)
        else:
            found[rel] = path.read_bytes()
    return found


def test_searchlight_chunks_give_the_unchunked_outputs(synthetic_bids, tmp_path):
    """--searchlight-chunks spreads the centres over a MapNode; the merge node's model
    gives every output (transforms, model, ISC maps, scores, sidecars) bit for bit."""
    one, three = tmp_path / "one", tmp_path / "three"
    assert run_app(synthetic_bids, one, "group", BASE, work=tmp_path / "w1") == 0
    assert (
        run_app(
            synthetic_bids, three, "group", f"{BASE} --searchlight-chunks 3", work=tmp_path / "w3"
        )
        == 0
    )
    partials = sorted((tmp_path / "w3").rglob("searchlight_alignment_chunk*.h5"))
    assert [p.name for p in partials] == [
        f"searchlight_alignment_chunk{i:04d}.h5" for i in range(3)
    ]
    assert not list((tmp_path / "w1").rglob("searchlight_alignment_chunk*.h5"))
    a, b = _outputs(one), _outputs(three)
    assert sorted(a) == sorted(b)
    names = set(a)
    assert any(n.endswith("desc-searchlight_xfm.h5") for n in names)
    assert any(n.endswith("desc-common_model.h5") for n in names)
    assert any("desc-iscaligned" in n for n in names)
    assert f"{GROUP.format('bsc')}_scores.tsv" in names
    for name in a:
        if isinstance(a[name], tuple):
            for x, y in zip(a[name], b[name], strict=True):
                if isinstance(x, list):
                    assert all(np.array_equal(u, v) for u, v in zip(x, y, strict=True)), name
                else:
                    assert np.array_equal(x, y), name
        elif isinstance(a[name], np.ndarray):
            assert np.array_equal(a[name], b[name]), name
        else:
            assert a[name] == b[name], name
    scores = pd.read_csv(three / f"{GROUP.format('bsc')}_scores.tsv", sep="\t")
    assert scores["hyperaligned"].notna().all()
    meta = json.loads((three / f"{GROUP.format('bsc')}_scores.json").read_text())
    assert not any("chunk" in key.lower() for key in meta)


def test_merge_refuses_missing_and_foreign_chunks(synthetic_bids, tmp_path):
    """The merge node needs every chunk of one split exactly once, of the same data."""
    from mvpa_flows.core.alignment.evaluate import alignment_estimator
    from mvpa_flows.core.alignment.searchlight import save_partial
    from mvpa_flows.interfaces.group import MergeSearchlightAlignment

    rng = np.random.default_rng(0)
    mask = np.zeros((6, 6, 4), dtype=bool)
    mask[1:5, 1:5, 1:3] = True
    img = nb.Nifti1Image(mask.astype(np.uint8), np.diag([3.0, 3.0, 3.0, 1.0]))
    mask_file = tmp_path / "mask.nii.gz"
    img.to_filename(mask_file)
    shared = rng.standard_normal((40, int(mask.sum())))
    data = [shared + 0.5 * rng.standard_normal(shared.shape) for _ in range(3)]
    data = [(d - d.mean(0)) / d.std(0) for d in data]
    params = {"searchlight_radius": 4.0, "mask_img": str(mask_file)}
    est = alignment_estimator("procrustes", **params)

    def partials(datasets, n_chunks, tag):
        files = []
        for k in range(n_chunks):
            path = tmp_path / f"{tag}_chunk{k}.h5"
            save_partial(path, est.fit_partial(datasets, chunk=k, n_chunks=n_chunks))
            files.append(str(path))
        return files

    three = partials(data, 3, "three")
    two = partials(data, 2, "two")
    other = partials([d[::-1] for d in data], 3, "other")

    def merge(files, n_chunks=3):
        node = MergeSearchlightAlignment(
            partial_files=files, method="procrustes", alignment_params=params, n_chunks=n_chunks
        )
        (tmp_path / "merge").mkdir(exist_ok=True)
        return node.run(cwd=str(tmp_path / "merge"))

    result = merge(three)
    model = load_model(result.outputs.model_file)
    fitted = alignment_estimator("procrustes", **params).fit(data).model_
    assert np.array_equal(model.template, fitted.template)
    for m, f in zip(model.maps, fitted.maps, strict=True):
        assert (m.matrix != f.matrix).nnz == 0
    with pytest.raises(InputValidationError, match=r"Chunk\(s\) \[2\] of 3 are missing"):
        merge([three[0], three[2]])
    with pytest.raises(InputValidationError, match="both chunk 1 of 3"):
        merge([three[0], three[0], three[2]])
    with pytest.raises(InputValidationError, match="two_chunk0.h5 is chunk 1 of a split into 2"):
        merge([two[0], three[1], three[2]])
    with pytest.raises(InputValidationError, match="other data or parameters"):
        merge([three[0], other[1], three[2]])


def test_searchlight_chunks_beyond_the_centres_are_refused(synthetic_bids, tmp_path, capsys):
    out = tmp_path / "out"
    code = run_app(synthetic_bids, out, "group", f"{BASE} --searchlight-chunks 100000")
    # data-dependent (the mask's centres), like the other checks against the data: 16
    assert code == 16
    err = capsys.readouterr().err.replace("\n", " ")
    assert "Option --searchlight-chunks (100000) exceeds the" in err
    assert not (tmp_path / "work" / "mvpa_flows_group_wf").exists()


def test_searchlight_flags_reach_the_model_sidecars_and_methods(synthetic_bids, tmp_path):
    """--ha-common-space and --ha-zscore-output: defaults (auto, on) and the other
    choices end in the estimator, the transforms, the sidecars and the methods text."""
    runs = {
        "default": "--ha-common-space mask",
        "pymvpa": "--ha-common-space searchlight --no-ha-zscore-output",
    }
    for name, options in runs.items():
        out = tmp_path / name
        code = run_app(
            synthetic_bids, out, "group", f"{BASE} {options}", work=tmp_path / f"w{name}"
        )
        assert code == 0
        meta = json.loads((out / f"{GROUP.format('bsc')}_scores.json").read_text())
        params = meta["AlignmentParameters"]
        default = name == "default"
        assert params["common_space"] == ("mask" if default else "searchlight")
        assert params["zscore_output"] is default
        model = load_model(out / "tpl-objectsHA/tpl-objectsHA_task-objects_desc-common_model.h5")
        assert model.params["common_space"] == params["common_space"]
        assert all(m.zscore_output is default for m in model.maps)
        text = (out / "logs" / "CITATION_group.md").read_text().replace("\n", " ")
        assert ("one hyperalignment of the whole mask" in text) is default
        assert ("local common spaces built by levels 1 and 2" in text) is not default
        assert ("every voxel of the mapped data was z-scored" in text) is default
        # the ISC sentence describes the searchlight common space, not the ROI model's
        assert "in the searchlight common space, whose dimensions are the mask voxels" in text
        assert "ROI voxels of the reference subject" not in text


def test_auto_common_space_follows_whether_the_samples_determine_a_whole_mask_map():
    from mvpa_flows.cli.group import searchlight_common_space

    assert searchlight_common_space("auto", 946, 481) == "mask"
    assert searchlight_common_space("auto", 481, 481) == "mask"
    assert searchlight_common_space("auto", 480, 481) == "searchlight"
    assert searchlight_common_space("auto", 1000, 230_000) == "searchlight"
    assert searchlight_common_space("searchlight", 946, 481) == "searchlight"
    assert searchlight_common_space("mask", 100, 481) == "mask"


def test_auto_common_space_is_resolved_and_recorded(synthetic_bids, tmp_path, caplog):
    """Without --ha-common-space the app decides from the training samples and the mask
    voxels, and the sidecars and the model record the space it used, not 'auto'."""
    import logging

    out = tmp_path / "auto"
    with caplog.at_level(logging.INFO, logger="mvpa_flows"):
        code = run_app(synthetic_bids, out, "group", BASE, work=tmp_path / "w")
    assert code == 0
    meta = json.loads((out / f"{GROUP.format('bsc')}_scores.json").read_text())
    chosen = meta["AlignmentParameters"]["common_space"]
    mask = nb.load(next(out.glob("tpl-objectsHA/*_mask.nii.gz")))
    n_voxels = int(np.count_nonzero(np.asarray(mask.dataobj)))
    model = load_model(out / "tpl-objectsHA/tpl-objectsHA_task-objects_desc-common_model.h5")
    assert model.params["common_space"] == chosen
    assert chosen == ("mask" if model.n_samples >= n_voxels else "searchlight")
    assert f"common space '{chosen}' ({model.n_samples} training samples, {n_voxels} mask" in (
        caplog.text
    )


OPTION_CONFLICTS = {
    "alphas with procrustes": (
        ["--ha-alphas", "10"],
        "--ha-alphas applies to --ha-method ridge only; with --ha-method procrustes it "
        "would be ignored",
    ),
    "srm options with ridge": (
        ["--ha-method", "ridge", "--ha-n-components", "5", "--ha-n-iter", "3"],
        "--ha-n-components, --ha-n-iter apply to --ha-method srm only; with --ha-method "
        "ridge they would be ignored",
    ),
    "cv blocks with srm": (
        ["--ha-method", "srm", "--ha-cv-blocks", "4"],
        "--ha-cv-blocks applies to --ha-method ridge only",
    ),
    "common space without radius": (
        ["--ha-common-space", "searchlight"],
        "--ha-common-space set(s) searchlight hyperalignment; give the sphere radius with "
        "--ha-searchlight-radius MM",
    ),
    "zscore output without radius": (
        ["--no-ha-zscore-output"],
        "--ha-zscore-output set(s) searchlight hyperalignment",
    ),
    "options with a model": (
        ["--ha-model", "somewhere", "--ha-alphas", "10"],
        "--ha-alphas with --ha-model: new subjects are mapped with the model's own method "
        "and parameters",
    ),
}


@pytest.mark.parametrize("case", sorted(OPTION_CONFLICTS))
def test_options_of_another_method_are_usage_errors(case, synthetic_bids, tmp_path, capsys):
    args, message = OPTION_CONFLICTS[case]
    out = tmp_path / "out"
    code = run_app(synthetic_bids, out, "group", "--analyses hyperalignment " + " ".join(args))
    assert code == 64
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "work" / "mvpa_flows_group_wf").exists()


def test_mapped_subjects_cite_the_model_roi_with_a_bids_uri(tmp_path):
    """--ha-model in another derivatives folder: the sidecars cite the model's ROI as
    ``bids:hamodel:...``, a dataset linked in dataset_description.json (no absolute path)."""
    from mvpa_flows.datasets import make_synthetic_dataset

    bids = tmp_path / "bids"
    make_synthetic_dataset(bids, n_subjects=3, n_runs=3, shape=(8, 9, 5), seed=4)
    base = "--analyses hyperalignment --ha-train-runs 1 2 --ha-test-runs 3 --segment-length 8"
    fitted, mapped = tmp_path / "fitted", tmp_path / "mapped"
    assert (
        run_app(bids, fitted, "group", f"{base} --participant-label 01 02", work=tmp_path / "w1")
        == 0
    )
    model_dir = fitted / "tpl-objectsHA"
    assert (
        run_app(
            bids,
            mapped,
            "group",
            f"--analyses hyperalignment --participant-label 03 --ha-model {model_dir}",
            work=tmp_path / "w2",
        )
        == 0
    )
    xfm = mapped / (
        "sub-03/func/sub-03_task-objects_from-boldref_to-objectsHA_mode-image_"
        "desc-procrustes_xfm.json"
    )
    meta = json.loads(xfm.read_text())
    assert (
        meta["ROIMask"]
        == "bids:hamodel:tpl-objectsHA/tpl-objectsHA_task-objects_desc-roi_mask.nii.gz"
    )
    description = json.loads((mapped / "dataset_description.json").read_text())
    assert description["DatasetLinks"]["hamodel"] == fitted.absolute().as_uri()
    for path in mapped.rglob("*.json"):
        assert str(tmp_path) not in json.dumps(
            {k: v for k, v in json.loads(path.read_text()).items() if k != "DatasetLinks"}
        ), path
    # a model inside the output folder is cited from the output dataset itself
    assert (
        run_app(
            bids,
            fitted,
            "group",
            f"--analyses hyperalignment --participant-label 03 --ha-model {model_dir}",
            work=tmp_path / "w3",
        )
        == 0
    )
    meta = json.loads((fitted / xfm.relative_to(mapped)).read_text())
    assert meta["ROIMask"].startswith("bids::tpl-objectsHA/")
    assert (
        "hamodel"
        not in json.loads((fitted / "dataset_description.json").read_text())["DatasetLinks"]
    )


def test_evaluate_alignment_keeps_float32_training_data():
    """No float64 copy of the training data before the fit: the estimator gets the
    caller's float32 arrays, and every result equals the float64 run."""
    from mvpa_flows.core.alignment.bsc import evaluate_alignment
    from mvpa_flows.core.alignment.hyperalignment import Hyperalignment
    from mvpa_flows.core.alignment.searchlight import SearchlightHyperalignment

    seen = []

    class Spy(SearchlightHyperalignment):
        def fit(self, datasets, y=None):
            seen.append(list(datasets))
            return super().fit(datasets)

    rng = np.random.default_rng(5)
    mask = np.zeros((5, 5, 4), dtype=bool)
    mask[1:4, 1:4, :] = True
    img = nb.Nifti1Image(mask.astype(np.uint8), np.diag([3.0, 3.0, 3.0, 1.0]))
    V = int(mask.sum())
    shared = rng.standard_normal((90, V))
    data = [shared + rng.standard_normal((90, V)) for _ in range(3)]
    train32 = [((d - d.mean(0)) / d.std(0)).astype(np.float32) for d in (x[:60] for x in data)]
    test = [d[60:] for d in data]
    kw = dict(mode="segments", segment_length=10.0, tr=2.0)
    for make in (lambda: Spy(img, radius=4.0), lambda: Hyperalignment()):
        scores32, model32 = evaluate_alignment(train32, test, alignment=make(), **kw)
        if len(seen) == 1:  # the searchlight estimator ran on the caller's arrays
            assert all(a is b for a, b in zip(seen[0], train32, strict=True))
        train64 = [d.astype(np.float64) for d in train32]
        scores64, model64 = evaluate_alignment(train64, test, alignment=make(), **kw)
        pd.testing.assert_frame_equal(scores32, scores64)
        assert np.array_equal(model32.template, model64.template)
        for a, b in zip(model32.transform(test), model64.transform(test), strict=True):
            assert np.array_equal(a, b)
    assert len(seen) == 2
    with pytest.raises(InputValidationError, match=r"`train_datasets\[1\]` contains NaN"):
        bad = [d.copy() for d in train32]
        bad[1][3, 2] = np.nan
        evaluate_alignment(bad, test, alignment=Hyperalignment(), **kw)
    with pytest.raises(InputValidationError, match=r"`train_datasets\[2\]` has no voxel that"):
        bad = [d.copy() for d in train32]
        bad[2][:] = 1.0
        evaluate_alignment(bad, test, alignment=Hyperalignment(), **kw)

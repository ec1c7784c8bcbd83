"""Betas as Nipype: the BetaSeries/BetaSamples interfaces and init_betas_wf with its outputs."""

import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from mvpa_flows.core.data.beta_samples import load_beta_samples
from mvpa_flows.core.data.betas import run_betaseries
from mvpa_flows.core.errors import InputValidationError
from mvpa_flows.datasets import make_event_related_dataset
from mvpa_flows.interfaces.betas import BetaSeries
from mvpa_flows.workflows.betas import SAMPLE_OUTPUTS, init_betas_wf
from mvpa_flows.workflows.prepare import init_prepare_wf


@pytest.fixture(scope="module")
def rapid_bids(tmp_path_factory):
    root = tmp_path_factory.mktemp("rapid")
    info = make_event_related_dataset(root / "bids", n_runs=2, n_volumes=70, shape=(5, 6, 4))
    func = info["fmriprep_dir"] / "sub-01" / "func"
    files = {
        "bold_file": sorted(str(p) for p in func.glob("*preproc_bold.nii.gz")),
        "bold_mask": sorted(str(p) for p in func.glob("*brain_mask.nii.gz")),
        "confounds_file": sorted(str(p) for p in func.glob("*confounds_timeseries.tsv")),
        "events_file": sorted(
            str(p) for p in (root / "bids" / "sub-01" / "func").glob("*events.tsv")
        ),
    }
    return root, info, files


def test_outputs_match_the_volume_samples_workflow():
    prepare = init_prepare_wf().get_node("outputnode").inputs.copyable_trait_names()
    assert set(SAMPLE_OUTPUTS) == set(prepare)
    wf = init_betas_wf()
    assert set(wf.get_node("inputnode").inputs.copyable_trait_names()) == {
        "bold_file", "bold_mask", "confounds_file", "events_file", "tr", "runs", "sessions"
    }  # fmt:skip
    assert not any(name.startswith("ds_") for name in wf.list_node_names())
    sinks = init_betas_wf(output_dir="/tmp/out").list_node_names()
    assert {"ds_betaseries", "ds_trials"} <= set(sinks)


def test_betas_wf_writes_named_betaseries_and_samples(rapid_bids, tmp_path):
    root, info, files = rapid_bids
    out = tmp_path / "out"
    links = {"raw": str(root / "bids"), "fmriprep": str(info["fmriprep_dir"])}
    wf = init_betas_wf(output_dir=str(out), dataset_links=links, method="lsa")
    wf.base_dir = str(tmp_path / "work")
    for field, value in files.items():
        setattr(wf.inputs.inputnode, field, value)
    wf.inputs.inputnode.runs = [1, 2]
    result = wf.run()
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [
        f"sub-01/func/sub-01_task-rapid_run-{r}_desc-lsa_betaseries.{ext}"
        for r in (1, 2)
        for ext in ("json", "nii.gz", "tsv")
    ]
    stem = out / "sub-01" / "func" / "sub-01_task-rapid_run-2_desc-lsa_betaseries"
    sidecar = json.loads(stem.with_suffix(".json").read_text())
    assert sidecar["Sources"] == [
        "bids:fmriprep:sub-01/func/sub-01_task-rapid_run-2_desc-preproc_bold.nii.gz",
        "bids:fmriprep:sub-01/func/sub-01_task-rapid_run-2_desc-brain_mask.nii.gz",
        "bids:raw:sub-01/func/sub-01_task-rapid_run-2_events.tsv",
        "bids:fmriprep:sub-01/func/sub-01_task-rapid_run-2_desc-confounds_timeseries.tsv",
    ]
    for key, value in {"Method": "LSA", "HRFModel": "glover", "DriftModel": "cosine",
                       "HighPass": 0.01, "NoiseModel": "ols", "SliceTimeRef": 0.0,
                       "RepetitionTime": 2.0, "NumberOfVolumes": 70, "SignalScaling": False,
                       "MinOnset": -24.0, "Oversampling": 50}.items():  # fmt:skip
        assert sidecar[key] == value, key
    assert sidecar["Confounds"] == ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    trials = pd.read_csv(stem.with_suffix(".tsv"), sep="\t")
    events = pd.read_csv(files["events_file"][1], sep="\t")
    pd.testing.assert_frame_equal(trials, events)
    img = nb.load(stem.with_suffix(".nii.gz"))
    direct = run_betaseries(
        files["bold_file"][1], files["bold_mask"][1], files["events_file"][1],
        confounds_file=files["confounds_file"][1], method="lsa",
    )  # fmt:skip
    assert img.shape[3] == len(events)
    np.testing.assert_array_equal(img.get_fdata(), direct.img.get_fdata())

    samples = next(n for n in result.nodes() if n.name == "beta_samples").result.outputs
    X = np.load(samples.data_file)
    table = pd.read_csv(samples.samples_file, sep="\t")
    X_ref, table_ref, _, info_ref = load_beta_samples(
        files["bold_file"], files["bold_mask"], files["events_file"], files["confounds_file"],
        runs=[1, 2], method="lsa",
    )  # fmt:skip
    pd.testing.assert_frame_equal(table, table_ref)
    np.testing.assert_allclose(X, X_ref, atol=1e-4)  # the written betas are float32
    assert samples.contrast == "faceVsHouse"
    assert samples.info["Design"] == info_ref["Design"]
    assert samples.info["Samples"] == "lsa" and samples.info["Confounds"] == info_ref["Confounds"]


def test_betas_wf_without_optional_inputs_reads_the_sidecar_tr(rapid_bids, tmp_path):
    _, _, files = rapid_bids
    wf = init_betas_wf(confounds=["none"], conditions=["face", "house"])
    wf.base_dir = str(tmp_path / "work")
    for field in ("bold_file", "bold_mask", "events_file"):
        setattr(wf.inputs.inputnode, field, files[field][:1])
    result = wf.run()
    node = next(n for n in result.nodes() if n.name == "betaseries")
    meta = node.result.outputs.metadata[0]
    assert meta["RepetitionTime"] == 2.0 and meta["Confounds"] == []
    assert meta["Conditions"] == ["face", "house"]


def test_betaseries_interface_reports_bad_events(rapid_bids, tmp_path):
    _, _, files = rapid_bids
    events = tmp_path / "sub-01_task-rapid_run-1_events.tsv"
    pd.DataFrame({"onset": [4.0, 9.0, 400.0], "duration": 1.0, "trial_type": "a"}).to_csv(
        events, sep="\t", index=False
    )
    node = BetaSeries(bold_file=files["bold_file"][0], bold_mask=files["bold_mask"][0],
                      events_file=str(events), tr=2.0)  # fmt:skip
    with pytest.raises(InputValidationError, match=r"run-1_events.tsv: event\(s\) \[2\]"):
        node.run(cwd=str(tmp_path))

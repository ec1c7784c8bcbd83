"""Build-only tests of the group alignment workflow: one graph per method and mode."""

import pytest

from mvpa_flows.workflows.group import (
    ALIGNMENT_METHODS,
    ISC_MAPPED_METHODS,
    ISC_METHODS,
    NEW_SUBJECTS_METHODS,
    init_group_hyperalignment_wf,
)
from mvpa_flows.workflows.reports import methods_of

BASE = dict(
    subjects=["01", "02", "03"],
    task="movie",
    space="MNI152NLin6Asym",
    train_runs=[1],
    test_runs=[2],
    repetition_time=1.5,
)


@pytest.mark.parametrize("method", ["procrustes", "ridge", "srm"])
def test_fit_graph_carries_its_method(method, tmp_path):
    wf = init_group_hyperalignment_wf(
        output_dir=str(tmp_path), method=method, alignment_params={}, **BASE
    )
    fit = wf.get_node("hyperalign")
    assert fit.inputs.method == method
    assert fit.inputs.model_metadata["task"] == "movie"
    assert fit.inputs.model_metadata["space"] == "MNI152NLin6Asym"
    assert wf.get_node("ds_transforms").inputs.entities["desc"] == method
    assert wf.get_node("ds_model") is not None
    assert {
        wf.get_node(f"ds_isc_{k}").inputs.entities["desc"] for k in ("anatomical", "aligned")
    } == {
        "iscanatomical",
        "iscaligned",
    }
    texts = methods_of(wf)
    assert ALIGNMENT_METHODS[method] in texts and ISC_METHODS in texts
    assert not [t for t in NEW_SUBJECTS_METHODS.values() if t in texts]


def test_conditions_mode_has_no_isc(tmp_path):
    wf = init_group_hyperalignment_wf(output_dir=str(tmp_path), mode="conditions", **BASE)
    assert wf.get_node("ds_isc_anatomical") is None
    assert ISC_METHODS not in methods_of(wf)


def test_mapping_graph_writes_only_the_new_subjects(tmp_path):
    (tmp_path / "model.h5").touch()
    wf = init_group_hyperalignment_wf(
        output_dir=str(tmp_path),
        model_file=str(tmp_path / "model.h5"),
        new_subjects=["03"],
        method="ridge",
        **BASE,
    )
    node = wf.get_node("map_new_subjects")
    assert node.inputs.new_subjects == ["03"] and node.inputs.subjects == ["01", "02", "03"]
    assert wf.get_node("hyperalign") is None and wf.get_node("ds_model") is None
    assert [e["subject"] for e in wf.get_node("ds_transforms").inputs.base_entities] == ["03"]
    assert wf.get_node("ds_bsc_scores").inputs.entities["desc"] == "bscmapped"
    assert wf.get_node("ds_isc_aligned").inputs.entities["desc"] == "iscalignedmapped"
    texts = methods_of(wf)
    assert NEW_SUBJECTS_METHODS["ridge"] in texts and ISC_MAPPED_METHODS in texts
    assert ALIGNMENT_METHODS["ridge"] not in texts

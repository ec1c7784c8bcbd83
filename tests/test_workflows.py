"""Build-only workflow tests: graphs, node names and the fMRIPrep-facing fields."""

import pytest

from mvpa_flows.workflows.base import init_mvpa_flows_wf, init_single_subject_wf
from mvpa_flows.workflows.ftest import init_ftest_wf
from mvpa_flows.workflows.participant import init_mvpa_wf
from mvpa_flows.workflows.prepare import init_prepare_wf


def _fields(workflow, node="inputnode"):
    return set(workflow.get_node(node).inputs.copyable_trait_names())


def test_prepare_wf_speaks_fmriprep_vocabulary():
    wf = init_prepare_wf(conditions=["face", "house"])
    assert {"bold_file", "bold_mask", "confounds_file", "events_file"} <= _fields(wf)
    assert wf.get_node("prepare_samples").inputs.conditions == ["face", "house"]


def test_ftest_wf_outputs():
    wf = init_ftest_wf()
    assert _fields(wf, "outputnode") == {"f_map", "p_map", "metadata"}


def test_mvpa_wf_accepts_fmriprep_names_and_sinks_outputs(tmp_path):
    wf = init_mvpa_wf(output_dir=str(tmp_path), analyses=["ftest"])
    assert {
        "bold_file",
        "bold_std",
        "bold_mask",
        "bold_mask_std",
        "confounds_file",
        "confounds",
        "events_file",
        "source_file",
    } <= _fields(wf)
    nodes = set(wf.list_node_names())
    assert {
        "ds_mask",
        "ds_samples",
        "ds_ftest_f",
        "ds_ftest_p",
        "ftest_wf.ftest",
        "prepare_wf.prepare_samples",
    } <= nodes
    assert wf.get_node("ds_ftest_f").inputs.entities == {
        "stat": "F",
        "desc": "anova",
        "suffix": "statmap",
    }
    wf._create_flat_graph()  # all connections resolve


def test_mvpa_wf_rejects_unknown_analyses(tmp_path):
    with pytest.raises(ValueError, match=r"analyses \['mystery'\]"):
        init_mvpa_wf(output_dir=str(tmp_path), analyses=["mystery"])


def test_single_subject_and_top_level(tmp_path):
    from mvpa_flows.cli.config import RunConfig

    data = {
        "bold": ["b1.nii.gz"],
        "mask": ["m1.nii.gz"],
        "events": ["e1.tsv"],
        "confounds": [None],
        "runs": [1],
        "bold_metadata": [{"RepetitionTime": 2.0}],
    }
    wf = init_single_subject_wf(subject_id="01", subject_data=data, output_dir=str(tmp_path))
    assert wf.name == "single_subject_01_wf"
    assert wf.get_node("bidssrc").inputs.repetition_time == [2.0]
    config = RunConfig(
        bids_dir=tmp_path,
        output_dir=tmp_path / "out",
        analysis_level="participant",
        fmriprep_dir=tmp_path,
        work_dir=tmp_path / "work",
        subject_data={"01": data, "02": data},
    )
    top = init_mvpa_flows_wf(config)
    assert top.list_node_names()
    assert {n.split(".")[0] for n in top.list_node_names()} == {
        "single_subject_01_wf",
        "single_subject_02_wf",
    }


def test_per_session_units_make_one_mvpa_wf_per_session(tmp_path):
    unit = {
        "bold": ["b1.nii.gz"],
        "mask": ["m1.nii.gz"],
        "events": ["e1.tsv"],
        "confounds": [None],
        "runs": [1],
        "sessions": ["1"],
        "bold_metadata": [{"RepetitionTime": 2.0}],
    }
    units = [
        {**unit, "label": s, "entities": {"subject": "01", "session": s, "task": "t"}}
        for s in ("1", "2")
    ]
    wf = init_single_subject_wf(subject_id="01", subject_data=units, output_dir=str(tmp_path))
    names = {n.split(".")[0] for n in wf.list_node_names()}
    assert {"mvpa_ses_1_wf", "mvpa_ses_2_wf", "bidssrc_ses_1", "bidssrc_ses_2"} <= names
    sink = wf.get_node("mvpa_ses_2_wf").get_node("ds_mask")
    assert sink.inputs.base_entities == {"subject": "01", "session": "2", "task": "t"}
    assert sink.inputs.metadata["Type"] == "Brain"


def test_sink_rewrites_a_deleted_output_when_rerun_with_the_same_work_dir(tmp_path):
    """A sink's cached result does not stand in for an output that was deleted since."""
    import json

    from nipype.pipeline import engine as pe

    from mvpa_flows.interfaces.bids import DerivativesDataSink

    source = (
        tmp_path / "in" / "sub-01_task-x_run-1_space-MNI152NLin2009cAsym_desc-preproc_bold.tsv"
    )
    source.parent.mkdir()
    source.write_text("a\tb\n1\t2\n")
    out = tmp_path / "out"
    out.mkdir()
    wf = pe.Workflow(name="sink_wf", base_dir=str(tmp_path / "work"))
    sink = pe.Node(
        DerivativesDataSink(
            base_directory=str(out),
            in_file=str(source),
            source_files=[str(source)],
            dataset_links={"raw": str(tmp_path / "in")},
            entities={"desc": "mvpa", "suffix": "samples"},
        ),
        name="ds_samples",
    )
    wf.add_nodes([sink])
    wf.run()
    (written,) = (out / "sub-01").rglob("*_samples.tsv")
    sidecar = written.with_suffix(".json")
    assert json.loads(sidecar.read_text())["Sources"] == ["bids:raw:" + source.name]
    written.unlink()
    sidecar.unlink()
    wf.run()
    assert written.read_text() == source.read_text()
    assert sidecar.is_file()

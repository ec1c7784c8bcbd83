"""Attaching the participant workflow to a user's own Nipype graph after fMRIPrep."""

import json

import nibabel as nb
import numpy as np
import pytest
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mvpa_flows.workflows.participant import init_mvpa_wf


@pytest.mark.shared_data
def test_mvpa_wf_after_a_node_with_fmriprep_output_names(haxby_dir, tmp_path):
    func = haxby_dir / "derivatives" / "fmriprep" / "sub-1" / "func"
    stems = [f"sub-1_task-objectviewing_run-{r:02d}" for r in range(1, 13)]
    # stands for fMRIPrep's outputnode (bold_std, bold_mask_std, confounds)
    fmriprep_like = pe.Node(
        niu.IdentityInterface(fields=["bold_std", "bold_mask_std", "confounds"]),
        name="fmriprep_outputs",
    )
    fmriprep_like.inputs.bold_std = [str(func / f"{s}_desc-preproc_bold.nii.gz") for s in stems]
    fmriprep_like.inputs.bold_mask_std = [str(func / f"{s}_desc-brain_mask.nii.gz") for s in stems]
    fmriprep_like.inputs.confounds = [
        str(func / f"{s}_desc-confounds_timeseries.tsv") for s in stems
    ]
    out = tmp_path / "out"
    mvpa = init_mvpa_wf(
        output_dir=str(out),
        conditions=["face", "house"],
        dataset_links={"raw": str(haxby_dir), "fmriprep": str(haxby_dir / "derivatives/fmriprep")},
    )
    mvpa.inputs.inputnode.events_file = [
        str(haxby_dir / "sub-1" / "func" / f"{s}_events.tsv") for s in stems
    ]
    graph = pe.Workflow(name="user_graph", base_dir=str(tmp_path / "work"))
    graph.connect([
        (fmriprep_like, mvpa, [("bold_std", "inputnode.bold_std"),
                               ("bold_mask_std", "inputnode.bold_mask_std"),
                               ("confounds", "inputnode.confounds")]),
    ])  # fmt:skip
    graph.run(plugin="Linear")
    stem = out / "sub-1" / "func" / "sub-1_task-objectviewing"
    f_map = nb.load(f"{stem}_contrast-faceVsHouse_stat-F_desc-anova_statmap.nii.gz")
    meta = json.loads(open(f"{stem}_contrast-faceVsHouse_stat-F_desc-anova_statmap.json").read())
    assert meta["NumberOfSamples"] == 216 and len(meta["Confounds"]) == 6
    assert meta["Runs"] == list(range(1, 13))
    assert np.nanmax(f_map.get_fdata()) > 40

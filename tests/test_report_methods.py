"""Methods text, captions, tables and figures of the reports, on tiny synthetic inputs."""

import json
import logging
import re

import nibabel as nb
import numpy as np
import pytest

from mvpa_flows.reports import assembler, figures, methods, reportlets
from mvpa_flows.reports.methods import MethodsText, render


def _files(*sidecars, suffix="statmap"):
    return [
        {"path": f"sub-{s}.nii.gz", "entities": {"subject": s, "suffix": suffix}, "metadata": m}
        for s, m in sidecars
    ]


def test_fields_are_filled_in_words_and_rounded():
    text, cites = render(
        "{EstimatorDefinition}, {CrossValidation}, {Radius}, {MeanScore}, {Scoring} "
        "[@searchlight; @sklearn].",
        {
            "01": {
                "EstimatorDefinition": "LinearSVC(max_iter=10000, random_state=0)",
                "CrossValidation": "LeaveOneGroupOut()",
                "Radius": 6.0,
                "MeanScore": 26.043956043956044,
                "Scoring": "balanced_accuracy",
            }
        },
    )
    assert text == (
        "LinearSVC (max_iter=10000), leave-one-run-out, 6 mm, 26, balanced accuracy "
        "[searchlight, sklearn]."
    )
    assert cites == ["searchlight", "sklearn"]
    assert methods.cv_words("KFold(n_splits=4, random_state=None, shuffle=False)") == "4-fold"
    assert methods.estimator_words("GaussianNB()") == "GaussianNB"
    assert methods.estimator_words("SVC(kernel='rbf')") == "SVC (kernel='rbf')"
    assert methods.number(0.0476190476) == "0.0476" and methods.number(10000) == "10,000"


def test_optional_parts_drop_when_they_say_nothing():
    template = "Cleaned: {Confounds}[[, {Detrend}]][[; {NumberOfPermutations} permutations]]."
    sidecar = {"Confounds": [], "Detrend": False, "NumberOfPermutations": 0}
    assert render(template, {"01": sidecar})[0] == "Cleaned: no confound regression."
    sidecar = {"Confounds": ["global_signal"], "Detrend": True, "NumberOfPermutations": 100}
    assert render(template, {"01": sidecar})[0] == (
        "Cleaned: regression of the confound global_signal, linear detrending; 100 permutations."
    )


def test_motion_is_claimed_only_when_regressed():
    assert methods.confounds_words([]) == "no confound regression"
    motion = ["rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z"]
    assert "six head-motion" in methods.confounds_words(motion)
    assert "motion" not in methods.confounds_words(["global_signal"])
    mixed = methods.confounds_words({"01": motion, "02": []})
    assert "six head-motion parameters (sub-01)" in mixed
    assert "no confound regression (sub-02)" in mixed


def test_mixed_settings_across_subjects_are_stated():
    sidecars = {"01": {"Radius": 6.0}, "02": {"Radius": 6.0}, "03": {"Radius": 4.0}}
    text = render("spheres of {Radius}", sidecars)[0]
    assert text == "spheres of mixed across subjects: 6 mm (sub-01 and sub-02); 4 mm (sub-03)"


def test_methods_leave_out_what_did_not_run_and_refuse_unknown_references():
    ran = MethodsText("Radius {Radius} [@searchlight].", describes={"suffix": "statmap"})
    absent = MethodsText("F-test [@sklearn].", describes={"suffix": "ftest"})
    paragraphs, cites = methods.methods([ran, absent], _files(("01", {"Radius": 5.6})))
    assert paragraphs == ["Radius 5.6 mm [searchlight]."] and cites == ["searchlight"]
    with pytest.raises(KeyError, match="unknown references"):
        methods.methods([MethodsText("x [@nobody]", {})], _files(("01", {})))


def test_selection_by_entities():
    ents = {"subject": "01", "desc": "searchlight", "stat": "accuracy", "suffix": "figure"}
    assert methods.matches(ents, {"desc": "searchlight", "stat": ["accuracy", "auc"]})
    assert not methods.matches(ents, {"stat": "p"})
    assert not methods.matches(ents, {"subject": None})
    assert methods.matches({"suffix": "scores"}, {"subject": None, "suffix": ["scores"]})


def test_parameter_table_reads_like_prose_not_json():
    sidecar = {
        "EstimatorDefinition": "GaussianNB()",
        "Estimator": "gnb",
        "CrossValidation": "LeaveOneGroupOut()",
        "SphereSize": {"Mean": 26.043956043956044, "Min": 4, "Max": 33},
        "LabelCounts": {"face": 108, "house": 108},
        "Detrend": True,
        "MinimumAttainableP": 0.125,
    }
    rows = dict(
        methods.parameter_rows(
            {"01": sidecar},
            ["EstimatorDefinition", "CrossValidation", "SphereSize", "LabelCounts", "Detrend"],
        )
    )
    assert rows == {
        "Estimator": "GaussianNB",
        "Cross-validation": "leave-one-run-out",
        "Sphere size": "26 voxels on average, from 4 to 33",
        "Samples per condition": "face 108, house 108",
        "Detrending": "linear, per run",
    }
    assert not any('"' in v or "{" in v for v in rows.values())


def test_minimum_attainable_p_is_stated_when_above_005():
    assert reportlets.minimum_p({"NumberOfPermutations": 8, "ExactPermutation": True}) == 0.125
    assert reportlets.minimum_p({"NumberOfPermutations": 999}) == 0.001
    assert reportlets.minimum_p({"NumberOfPermutations": 0}) is None
    assert "0.125, above 0.05" in methods.minimum_p_words(0.125)
    assert methods.minimum_p_words(0.001) == ""


def test_isc_figure_draws_the_same_voxels_before_and_after_including_zero_correlations(
    tmp_path,
):
    affine = np.eye(4)
    anatomical = np.zeros((4, 4, 1), dtype=np.float32)
    aligned = np.zeros_like(anatomical)
    anatomical[:2, :, 0] = [[0.1, 0.0, 0.3, -0.2], [0.2, 0.1, 0.0, 0.4]]
    aligned[:2, :, 0] = [[0.5, 0.2, 0.0, 0.1], [0.6, 0.3, 0.2, 0.7]]
    files = []
    for name, data in (("anatomical", anatomical), ("aligned", aligned)):
        files.append(tmp_path / f"{name}.nii.gz")
        nb.Nifti1Image(data, affine).to_filename(files[-1])
    facts = reportlets.isc_distributions(*files, tmp_path / "isc.svg")
    # 8 voxels carry a value in either map (the other 8 are outside the mask); the
    # exact zeros inside are correlations, drawn in both distributions.
    assert facts["NumberOfVoxelsDrawn"] == 8
    inside = anatomical[:2, :, 0].ravel()
    assert facts["MedianShown"]["anatomical"] == pytest.approx(float(np.median(inside)))
    assert facts["MedianShown"]["aligned"] == pytest.approx(
        float(np.median(aligned[:2, :, 0].ravel()))
    )
    assert (tmp_path / "isc.svg").stat().st_size > 0


def test_tables_show_na_as_na(tmp_path):
    tsv = tmp_path / "task-x_desc-bsc_scores.tsv"
    tsv.write_text("subject\tanatomical\twithin_subject\n01\t0.14285714\tn/a\n02\t0.5\tn/a\n")
    html = assembler.tsv_html({"path": tsv}, {})
    assert "<td>n/a</td>" in html and "nan" not in html.lower()
    assert "<td>01</td>" in html and "<td>0.143</td>" in html


def _volume(tmp_path, shape=(12, 12, 10), blob_z=(6, 8)):
    data = np.zeros(shape, dtype=np.float32)
    data[3:9, 3:9, blob_z[0] : blob_z[1]] = 0.9
    img = nb.Nifti1Image(data, np.diag([3.0, 3.0, 3.5, 1.0]))
    return img


def test_cuts_are_where_the_values_are(tmp_path):
    img = _volume(tmp_path)
    mode, cuts = figures.choose_cuts(img, threshold=0.5, n_cuts=5)
    assert mode == "z" and len(cuts) == 2
    assert cuts == [6 * 3.5, 7 * 3.5]  # exactly the two slices holding values
    empty = nb.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    assert len(figures.choose_cuts(empty, threshold=0.5)[1]) == 4


def test_one_slice_images_are_drawn_large_along_their_thin_axis(tmp_path):
    img = nb.Nifti1Image(
        np.random.default_rng(0).random((40, 20, 1)).astype(np.float32),
        np.diag([3.1, 3.75, 3.75, 1.0]),
    )
    mode, cuts = figures.choose_cuts(img)
    assert mode == "z" and len(cuts) == 1
    assert figures._figure_size(img, mode, 1)[0] >= 8
    facts = figures.plot_slices(img, img, tmp_path / "one.svg", "One slice", threshold=0.5)
    assert facts["DisplayMode"] == "z" and len(facts["CutCoords"]) == 1
    width = float(
        re.search(r'<svg[^>]* width="([\d.]+)pt"', (tmp_path / "one.svg").read_text())[1]
    )
    assert width > 500  # points: the slice is not a thumbnail


def test_glass_brain_only_for_mni_maps(tmp_path):
    assert figures.shows_on_glass_brain("MNI152NLin2009cAsym")
    assert not figures.shows_on_glass_brain(None) and not figures.shows_on_glass_brain("T1w")
    from mvpa_flows.interfaces.reports import _on_glass_brain

    assert _on_glass_brain("/d/sub-01_task-a_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz")
    assert not _on_glass_brain("/d/sub-01_task-a_desc-preproc_bold.nii.gz")
    img = _volume(tmp_path)
    figures.plot_slices(img, img, tmp_path / "native.svg", "t", threshold=0.5)
    figures.plot_slices(img, img, tmp_path / "mni.svg", "t", threshold=0.5, glass_brain=True)
    native, mni = ((tmp_path / f).read_text() for f in ("native.svg", "mni.svg"))
    assert native.count("<path") * 3 < mni.count("<path")  # brain outlines only on MNI


def test_titles_and_legends_stay_clear(tmp_path):
    out = tmp_path / "bars.svg"
    figures.plot_bars(["1", "2", "3"], [0.6, 0.7, 0.9], out, "accuracy", "Per fold", chance=0.5)
    text = out.read_text()
    assert "<text" in text and "Per fold" in text  # titles are text, not glyph paths
    figure, axis = figures._chart(4, 3)
    axis.bar([0, 1], [1, 2], label="bars")
    figures._legend_outside(axis)
    figure.canvas.draw()
    legend = axis.get_legend().get_window_extent()
    assert legend.x0 >= axis.get_window_extent().x1  # the legend never covers the data


def test_searchlight_heartbeat_logs_spheres_and_time_left(caplog):
    from mvpa_flows.interfaces.searchlight import Heartbeat

    beat = Heartbeat("searchlight sub-01", interval=0.0)
    with caplog.at_level(logging.INFO, logger="mvpa_flows.progress"):
        beat(250, 1000)
        beat(1000, 1000)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("searchlight sub-01: 250 of 1,000 spheres (25%)")
    assert "about" in lines[0] and "left" in lines[0] and len(lines) == 2


def test_long_nodes_get_a_heartbeat(caplog):
    import time
    from types import SimpleNamespace

    from mvpa_flows.cli.execution import NodeStatus

    status = NodeStatus(after=0.0, every=0.05)
    node = SimpleNamespace(name="fit", fullname="mvpa_flows_wf.group_wf.fit")
    with caplog.at_level(logging.INFO, logger="mvpa_flows.progress"):
        status(node, "start")
        time.sleep(0.3)
        status(node, "end")
        status.close()
    assert any("still running: group_wf.fit" in r.getMessage() for r in caplog.records)


def test_report_spec_cites_only_known_fields():
    spec = assembler.load_spec("participant")
    assert [s["name"] for s in spec["sections"]][-3:] == ["Methods", "Warnings", "Errors"]
    for level in ("participant", "group"):
        for section in assembler.load_spec(level)["sections"]:
            for reportlet in section["reportlets"]:
                for key in ("subtitle", "caption"):
                    assert "[@" not in reportlet.get(key, ""), "captions cite nothing"
    json.dumps(spec)  # plain data


def test_nothing_to_describe_gives_no_row():
    assert methods.parameter_rows({}, ["Radius"]) == []
    assert methods.field_words("Radius", {}) is None


def test_workflow_factories_carry_their_methods_text():
    from mvpa_flows.workflows import ftest, group, participant, prepare, searchlight
    from mvpa_flows.workflows.reports import methods_of

    wf = participant.init_mvpa_wf(output_dir=".", analyses=["ftest", "searchlight"])
    texts = methods_of(wf)
    assert texts[:2] == [participant.METHODS, prepare.METHODS]
    assert sorted(texts[2:], key=str) == sorted([ftest.METHODS, searchlight.METHODS], key=str)
    group_wf = group.init_group_searchlight_wf(
        output_dir=".", task="t", space=None, contrast="aVsB", stat="accuracy", chance=0.5
    )
    assert methods_of(group_wf) == [group.GROUP_METHODS, group.GROUP_SEARCHLIGHT_METHODS]
    for text in texts + methods_of(group_wf):
        fields = re.findall(r"\{(\w+)\}", text.template)
        assert fields and text.describes, text

"""Options refused before any work, the help text, and classifiers given by import path."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from mvpa_flows.cli.parser import build_parser
from mvpa_flows.cli.run import main
from mvpa_flows.core.searchlight import select_engine
from mvpa_flows.core.searchlight.spec import estimator_from_spec


def _run(bids, tmp_path, *args):
    """Exit code of the app (argparse's usage errors included) and the output folder."""
    out = tmp_path / "out"
    try:
        code = main([str(bids), str(out), "participant", "-w", str(tmp_path / "w"), *args])
    except SystemExit as stop:
        code = stop.code
    return code, out


GUARDS = {
    "radius nan": (["--radius", "nan"], r"argument --radius: .*finite number > 0.*'nan'"),
    "radius inf": (["--radius", "inf"], r"argument --radius: .*'inf'"),
    "radius zero": (["--radius", "0"], r"argument --radius: .*'0'"),
    "one fold": (["--cv", "kfold:1"], r"argument --cv: .*N >= 2 folds; got 'kfold:1'"),
    "regressor": (
        ["--estimator", "sklearn.linear_model.LinearRegression"],
        r"--estimator: sklearn.linear_model.LinearRegression is not a classifier",
    ),
    "unknown class": (["--estimator", "sklearn.svm.SVX"], r"--estimator: cannot import"),
    "unknown parameter": (
        ["--estimator", "sklearn.svm.SVC", "--estimator-params", "kernal=rbf"],
        r"--estimator: SVC does not take the parameters \{'kernal': 'rbf'\}",
    ),
    "bad parameter value": (
        ["--estimator", "sklearn.svm.SVC", "--estimator-params", "kernel=rbff"],
        r"--estimator: .*'kernel' parameter of SVC must be",
    ),
    "parameters of a name": (
        ["--estimator", "gnb", "--estimator-params", "var_smoothing=1"],
        r"--estimator-params applies to an --estimator given as a class path",
    ),
}


@pytest.mark.parametrize("case", sorted(GUARDS))
def test_options_are_refused_before_any_work(case, tmp_path, capsys):
    args, message = GUARDS[case]
    assert _run(tmp_path / "absent", tmp_path, *args)[0] == 64
    err = capsys.readouterr().err.replace("\n", " ")
    assert re.search(message, err), err
    assert not (tmp_path / "w").exists() and not (tmp_path / "out").exists()


def test_spec_numbers_must_be_finite(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text('{"radius": NaN, "cv": "loro"}')
    code, _ = _run(tmp_path / "absent", tmp_path, "--spec", str(spec))
    assert code == 64
    assert re.search(r"radius must be a finite number", capsys.readouterr().err)
    spec.write_text('{"cv": "kfold:1"}')
    assert _run(tmp_path / "absent", tmp_path, "--spec", str(spec))[0] == 64
    assert "cv: 'kfold:1' does not match" in capsys.readouterr().err


def test_help_shows_each_default_once():
    text = build_parser().format_help()
    blocks = re.split(r"\n  (?=-)", text)
    repeated = [b.split()[0] for b in blocks if len(re.findall(r"\(default", b)) > 1]
    assert not repeated, repeated
    assert "(default: None)" not in text and "(default: 5.6)" in text
    assert "(default: svc)" in text and "(default: 1)" in text


def test_a_classifier_goes_to_the_fast_engine_only_when_it_reproduces_it():
    fast = estimator_from_spec({"class": "sklearn.naive_bayes.GaussianNB"})
    assert select_engine(fast) == "gnb"
    rbf = estimator_from_spec({"class": "sklearn.svm.SVC", "params": {"kernel": "rbf"}})
    assert select_engine(rbf) == "generic" and rbf.get_params()["kernel"] == "rbf"
    seeded = estimator_from_spec({"class": "sklearn.svm.LinearSVC"}, random_state=7)
    assert seeded.get_params()["random_state"] == 7


def test_classifier_by_import_path_end_to_end(synthetic_bids, tmp_path):
    """SVC(kernel='rbf') from the command line: generic engine, scikit-learn's scores."""
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_score
    from sklearn.svm import SVC

    from mvpa_flows.core.data.dataset import load_samples
    from mvpa_flows.core.searchlight.maps import load_adjacency

    code, out = _run(
        synthetic_bids, tmp_path, "--participant-label", "01", "--nprocs", "1",
        "--analyses", "searchlight", "--conditions", "face", "house", "--hrf-delay", "4",
        "--estimator", "sklearn.svm.SVC", "--estimator-params", "kernel=rbf", "C=2",
    )  # fmt:skip
    assert code == 0
    score_file = next(out.rglob("*stat-accuracy_desc-searchlight_statmap.nii.gz"))
    meta = json.loads(
        score_file.with_name(score_file.name.replace(".nii.gz", ".json")).read_text()
    )
    assert meta["Engine"] == "generic"
    assert meta["Estimator"] == {"class": "sklearn.svm.SVC", "params": {"kernel": "rbf", "C": 2}}
    assert "the SVC (C=2) classifier" in (out / "logs" / "CITATION.md").read_text()

    fp = synthetic_bids / "derivatives" / "fmriprep" / "sub-01" / "func"
    runs = [f"sub-01_task-objects_run-{r}" for r in (1, 2, 3)]
    X, table, mask, _ = load_samples(
        [fp / f"{r}_desc-preproc_bold.nii.gz" for r in runs],
        [fp / f"{r}_desc-brain_mask.nii.gz" for r in runs],
        [synthetic_bids / "sub-01" / "func" / f"{r}_events.tsv" for r in runs],
        [fp / f"{r}_desc-confounds_timeseries.tsv" for r in runs],
        conditions=["face", "house"],
        hrf_delay=4.0,
    )
    mask_file = next(out.rglob("*desc-analysis_mask.nii.gz"))
    A = load_adjacency(mask_file, 5.6)
    scores = np.asarray(__import__("nibabel").load(score_file).dataobj)[
        np.asarray(mask.dataobj) > 0
    ]
    for centre in (0, A.shape[0] // 2):
        cols = A[centre].indices
        expected = cross_val_score(
            SVC(kernel="rbf", C=2), X[:, cols], table["label"], groups=table["run"],
            cv=LeaveOneGroupOut(),
        ).mean()  # fmt:skip
        assert scores[centre] == pytest.approx(expected, abs=1e-6)
    assert pd.read_csv(next(out.rglob("*_samples.tsv")), sep="\t").shape[0] == X.shape[0]


def test_spec_file_takes_a_classifier_by_import_path(tmp_path):
    from mvpa_flows.cli.config import build_config

    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps({"estimator": {"class": "sklearn.svm.SVC", "params": {"kernel": "rbf"}}})
    )
    args = build_parser().parse_args(
        [str(tmp_path), str(tmp_path / "o"), "participant", "--spec", str(spec)]
    )
    config = build_config(args)
    assert config.estimator == {"class": "sklearn.svm.SVC", "params": {"kernel": "rbf"}}
    args = build_parser().parse_args(
        [str(tmp_path), str(tmp_path / "o"), "participant", "--spec", str(spec),
         "--estimator-params", "C=10"]
    )  # fmt:skip
    assert build_config(args).estimator["params"] == {"kernel": "rbf", "C": 10}


def test_core_method_parameter_is_spelled_as_the_flag_of_its_level():
    """``method`` is --samples at the participant level and --ha-method at the group level."""
    from mvpa_flows.cli.parser import cli_message

    assert cli_message("Use method='lss'.", "participant") == "Use --samples lss."
    text = "Parameter 'searchlight_radius' applies to method='procrustes' or 'ridge'."
    assert "--ha-method procrustes" in cli_message(text, "group")
    assert cli_message("Use method='lss'.") == "Use method='lss'."

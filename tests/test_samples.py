"""Events -> labelled samples."""

import numpy as np
import pandas as pd
import pytest

from mvpa_flows.core.data.samples import build_sample_table, contrast_label, label_volumes
from mvpa_flows.core.errors import InputValidationError


def _events(rows):
    return pd.DataFrame(rows, columns=["onset", "duration", "trial_type"])


def test_contrast_label_is_camel_case_joined_by_vs():
    assert contrast_label(["face", "house"]) == "faceVsHouse"
    assert contrast_label(["scrambled_pix", "face", "cat"]) == "scrambledPixVsFaceVsCat"
    with pytest.raises(InputValidationError, match="--contrast-label"):
        contrast_label(["face", "__"])


def test_volume_belongs_to_event_on_half_open_interval():
    ev = _events([(15.0, 22.5, "face"), (52.5, 22.5, "house")])
    labels = label_volumes(ev, 40, 2.5, ["face", "house"])
    assert np.flatnonzero(labels == "face").tolist() == list(range(6, 15))  # 15 s .. 35 s
    assert np.flatnonzero(labels == "house").tolist() == list(range(21, 30))
    delayed = label_volumes(ev, 40, 2.5, ["face", "house"], hrf_delay=5.0)
    assert np.flatnonzero(delayed == "face").tolist() == list(range(8, 17))


def test_overlapping_conditions_are_dropped():
    ev = _events([(0.0, 10.0, "a"), (5.0, 10.0, "b")])
    labels = label_volumes(ev, 20, 1.0, ["a", "b"])
    assert labels.tolist() == ["a"] * 5 + [""] * 5 + ["b"] * 5 + [""] * 5


def test_sample_table_keeps_only_chosen_conditions_with_runs_as_groups():
    ev = _events([(0, 4, "a"), (6, 4, "b"), (12, 4, "c")])
    table = build_sample_table([ev, ev], [20, 20], [2.0, 2.0], [1, 2], ["a", "b"])
    assert list(table.columns) == ["run", "volume", "onset", "label"]
    assert table.groupby("run").size().tolist() == [4, 4]
    assert set(table["label"]) == {"a", "b"}
    assert table["onset"].tolist()[:2] == [0.0, 2.0]


def test_sample_table_errors_name_the_problem():
    ev = _events([(0, 4, "a"), (6, 4, "b")])
    with pytest.raises(InputValidationError, match=r"at least two conditions.*\['a'\]"):
        build_sample_table([ev], [20], [2.0], [1], ["a"])
    with pytest.raises(InputValidationError, match=r"\['z'\] do not occur.*\['a', 'b'\]"):
        build_sample_table([ev], [20], [2.0], [1], ["a", "z"])
    short = _events([(0, 4, "a"), (6, 2, "b")])
    with pytest.raises(InputValidationError, match=r"run-2_events.tsv.*\['b'\] cover a single"):
        build_sample_table(
            [ev, short],
            [20, 20],
            [2.0, 2.0],
            [1, 2],
            ["a", "b"],
            events_files=["run-1_events.tsv", "run-2_events.tsv"],
        )


def test_sessions_make_session_x_run_groups():
    from mvpa_flows.core.data.samples import run_keys, sample_groups

    ev = _events([(0, 4, "a"), (6, 4, "b")])
    table = build_sample_table(
        [ev, ev, ev], [12, 12, 12], [2.0] * 3, [1, 2, 1], ["a", "b"], sessions=["1", "1", "2"]
    )
    assert list(table.columns) == ["session", "run", "volume", "onset", "label"]
    assert sorted(set(sample_groups(table))) == ["ses-1_run-1", "ses-1_run-2", "ses-2_run-1"]
    assert run_keys([1, 2], None) == [1, 2]
    no_sessions = build_sample_table([ev], [12], [2.0], [1], ["a", "b"])
    assert sample_groups(no_sessions).tolist() == [1, 1, 1, 1]


def test_events_outside_the_run_and_with_na_are_counted(tmp_path):
    from mvpa_flows.core.data.samples import read_events

    path = tmp_path / "run-1_events.tsv"
    path.write_text(
        "onset\tduration\ttrial_type\n0\t4\ta\n6\t4\tb\nn/a\t4\ta\n8\tn/a\tb\n"
        "30\t4\ta\n18\t10\tb\n"
    )
    events = read_events(path)
    assert events.attrs["n_dropped"] == 2 and len(events) == 4
    with pytest.warns(UserWarning) as record:
        build_sample_table([events], [12], [2.0], [1], ["a", "b"], events_files=[path.name])
    message = str(record[0].message)
    assert message.startswith("run-1_events.tsv: 2 event(s) with n/a onset")
    assert "1 event(s) of ['a', 'b'] outside the run (12 volumes x 2 s = 24 s" in message
    assert "1 event(s) run past the end of the run" in message


def test_a_run_without_samples_is_named():
    ev = _events([(0, 4, "a"), (6, 4, "b")])
    late = _events([(100, 4, "a"), (120, 4, "b")])
    with (
        pytest.warns(UserWarning, match="2 event"),
        pytest.raises(InputValidationError, match=r"No volume of \['r2.tsv'\] falls inside"),
    ):
        build_sample_table(
            [ev, late], [12, 12], [2.0, 2.0], [1, 2], ["a", "b"], events_files=["r1", "r2.tsv"]
        )


def test_censored_volumes_leave_the_table():
    ev = _events([(0, 6, "a"), (8, 6, "b")])
    with pytest.warns(UserWarning, match="1 labelled volume"):
        table = build_sample_table(
            [ev], [12], [2.0], [1], ["a", "b"], sample_masks=[np.setdiff1d(np.arange(12), [1])]
        )
    assert 1 not in table["volume"].tolist() and len(table) == 5

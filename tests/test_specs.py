"""bids_specs: every file loads through importlib.resources and is consistent."""

import json
from importlib import resources

import jsonschema
import pytest

from mvpa_flows import bids_specs
from mvpa_flows.interfaces.bids import output_path


def _spec_files():
    root = resources.files("mvpa_flows.bids_specs")
    files = [p for p in root.iterdir() if p.name.endswith(".json")]
    files += [p for p in root.joinpath("examples").iterdir() if p.name.endswith(".json")]
    return files


def test_every_spec_file_loads_through_importlib_resources():
    names = {p.name for p in _spec_files()}
    assert set(bids_specs.SPEC_FILES) <= names
    for path in _spec_files():
        assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict), path.name
    for name in bids_specs.SPEC_FILES:
        assert bids_specs.load(name)


def test_load_rejects_unknown_names():
    with pytest.raises(ValueError, match="Unknown spec file 'nope.json'"):
        bids_specs.load("nope.json")


def test_schema_is_valid_and_examples_follow_it():
    schema = bids_specs.load("analysis.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    examples = [p for p in _spec_files() if p.parent.name == "examples"]
    assert examples
    for path in examples:
        jsonschema.validate(json.loads(path.read_text()), schema)


def test_io_spec_queries_name_their_dataset():
    spec = bids_specs.load("io_spec.json")
    assert set(spec["required"]) | set(spec["optional"]) == set(spec["queries"])
    assert {q["dataset"] for q in spec["queries"].values()} == {"raw", "fmriprep"}


@pytest.mark.parametrize(
    ("entities", "expected"),
    [
        (
            dict(
                subject="01",
                task="faces",
                run=1,
                space="MNI152NLin2009cAsym",
                contrast="faceVsHouse",
                stat="accuracy",
                desc="searchlight",
                suffix="statmap",
            ),
            "sub-01/func/sub-01_task-faces_run-1_space-MNI152NLin2009cAsym_contrast-faceVsHouse"
            "_stat-accuracy_desc-searchlight_statmap.nii.gz",
        ),
        (
            dict(
                subject="01",
                task="faces",
                contrast="faceVsHouse",
                stat="F",
                desc="anova",
                suffix="statmap",
                extension=".json",
            ),
            "sub-01/func/sub-01_task-faces_contrast-faceVsHouse_stat-F_desc-anova_statmap.json",
        ),
        (
            dict(
                subject="01",
                task="movie",
                **{"from": "MNI152NLin6Asym", "to": "sherlock"},
                desc="procrustes",
                suffix="xfm",
            ),
            "sub-01/func/sub-01_task-movie_from-MNI152NLin6Asym_to-sherlock_mode-image"
            "_desc-procrustes_xfm.h5",
        ),
        (
            dict(
                task="faces",
                space="MNI",
                contrast="faceVsHouse",
                stat="t",
                desc="searchlightgroup",
                suffix="statmap",
            ),
            "task-faces_space-MNI_contrast-faceVsHouse_stat-t_desc-searchlightgroup_statmap.nii.gz",
        ),
        (
            dict(subject="01", task="faces", suffix="samples"),
            "sub-01/func/sub-01_task-faces_samples.tsv",
        ),
    ],
)
def test_output_patterns_give_the_design_names(entities, expected):
    assert output_path(entities) == expected


def test_unknown_entity_combination_is_an_error():
    with pytest.raises(ValueError, match="No mvpa_flows path pattern accepts"):
        output_path({"subject": "01", "suffix": "bold"})


def test_names_keep_session_resolution_density_and_cohort():
    from mvpa_flows.interfaces.bids import parse_entities

    entities = dict(subject="01", session="2", task="faces", space="MNIInfant", cohort="1",
                    res="2", contrast="faceVsHouse", stat="accuracy", desc="searchlight",
                    suffix="statmap")  # fmt:skip
    path = output_path(entities)
    assert path == (
        "sub-01/ses-2/func/sub-01_ses-2_task-faces_space-MNIInfant_cohort-1_res-2"
        "_contrast-faceVsHouse_stat-accuracy_desc-searchlight_statmap.nii.gz"
    )
    parsed = parse_entities(path)
    assert {k: parsed[k] for k in entities} == entities
    group_entities = dict(session="2", task="faces", space="MNI152NLin2009cAsym", res="2",
                          contrast="c", stat="t", desc="searchlightgroup",
                          suffix="statmap")  # fmt:skip
    group = output_path(group_entities)
    assert group == (
        "ses-2_task-faces_space-MNI152NLin2009cAsym_res-2_contrast-c_stat-t"
        "_desc-searchlightgroup_statmap.nii.gz"
    )


def test_space_spelling_is_fmripreps():
    from mvpa_flows.interfaces.bids import parse_space, space_label, spatial_reference

    assert parse_space("MNI152NLin2009cAsym:res-2") == {
        "space": "MNI152NLin2009cAsym", "cohort": None, "res": "2", "den": None
    }  # fmt:skip
    assert parse_space("MNIInfant:cohort-1:res-1")["cohort"] == "1"
    assert space_label(parse_space("MNIInfant:res-1:cohort-1")) == "MNIInfant:cohort-1:res-1"
    with pytest.raises(ValueError, match="not res-<label>, cohort-<label> or den-<label>"):
        parse_space("MNI152NLin2009cAsym:2mm")
    assert spatial_reference(parse_space("MNI152NLin2009cAsym:res-2")) == (
        "https://templateflow.s3.amazonaws.com/tpl-MNI152NLin2009cAsym/"
        "tpl-MNI152NLin2009cAsym_res-02_T1w.nii.gz"
    )
    links = {"fmriprep": "/d/fmriprep"}
    assert spatial_reference(
        {"space": "T1w"}, anat_file="/d/fmriprep/sub-01/anat/sub-01_desc-preproc_T1w.nii.gz",
        dataset_links=links,
    ) == "bids:fmriprep:sub-01/anat/sub-01_desc-preproc_T1w.nii.gz"  # fmt:skip


def test_group_statistics_refuse_subject_spaces():
    from mvpa_flows.cli.group import check_group_space
    from mvpa_flows.core.errors import InputValidationError

    for space in (None, "T1w", "fsnative"):
        with pytest.raises(InputValidationError, match="--allow-subject-space"):
            check_group_space({"space": space})
        check_group_space({"space": space}, allow_subject_space=True)
    check_group_space({"space": "MNI152NLin6Asym", "res": "2"})


def test_bidsignore_lists_only_what_bids_lacks():
    ignore = bids_specs.load("mvpa_flows.json")["bidsignore"]
    assert "tpl-*/" not in ignore and "*/figures/" not in ignore
    assert {"*_statmap.*", "*_xfm.*", "*_boldref.*", "figures"} <= set(ignore)

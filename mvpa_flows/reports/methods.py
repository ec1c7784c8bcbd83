"""Methods text, captions and parameter tables written from the sidecars of what ran.

A text is a template whose fields name sidecar keys:

``{Radius}``
    the value of ``Radius`` in the sidecars, in words (``6 mm``); when the described
    files disagree (subjects run with different settings) every value is given with
    the subjects it applies to;
``[[ ... ]]``
    an optional part, left out when a field inside it is absent or says nothing
    (no permutations, no detrending, ...);
``[@key]``
    a reference, listed at the end from :data:`CITATIONS`.

Numbers are rounded for reading; the exact values stay in the JSON sidecars.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

CITATIONS = {
    "mvpa_flows": "mvpa_flows: multivariate pattern analysis of fMRIPrep outputs as a "
                  "BIDS-App and Nipype workflows. https://github.com/mvpa-flows/mvpa_flows",
    "nipype": "Gorgolewski K. et al. (2011). Nipype: a flexible, lightweight and extensible "
              "neuroimaging data processing framework in Python. Front. Neuroinform. 5:13. "
              "doi:10.3389/fninf.2011.00013",
    "nilearn": "Abraham A. et al. (2014). Machine learning for neuroimaging with "
               "scikit-learn. Front. Neuroinform. 8:14. doi:10.3389/fninf.2014.00014",
    "sklearn": "Pedregosa F. et al. (2011). Scikit-learn: Machine learning in Python. "
               "JMLR 12:2825-2830.",
    "pybids": "Yarkoni T. et al. (2019). PyBIDS: Python tools for BIDS datasets. JOSS 4(40):1294. "
              "doi:10.21105/joss.01294",
    "fmriprep": "Esteban O. et al. (2019). fMRIPrep: a robust preprocessing pipeline for "
                "functional MRI. Nat. Methods 16:111-116. doi:10.1038/s41592-018-0235-4",
    "searchlight": "Kriegeskorte N., Goebel R., Bandettini P. (2006). Information-based "
                   "functional brain mapping. PNAS 103(10):3863-3868. "
                   "doi:10.1073/pnas.0600244103",
    "haxby2001": "Haxby J.V. et al. (2001). Distributed and overlapping representations of "
                 "faces and objects in ventral temporal cortex. Science 293:2425-2430. "
                 "doi:10.1126/science.1063736",
    "haxby2011": "Haxby J.V. et al. (2011). A common, high-dimensional model of the "
                 "representational space in human ventral temporal cortex. Neuron "
                 "72(2):404-416. doi:10.1016/j.neuron.2011.08.026",
    "guntupalli2016": "Guntupalli J.S. et al. (2016). A model of representational spaces in "
                      "human cortex. Cereb. Cortex 26(6):2919-2934. doi:10.1093/cercor/bhw068",
    "pymvpa": "Hanke M. et al. (2009). PyMVPA: a Python toolbox for multivariate pattern "
              "analysis of fMRI data. Neuroinformatics 7:37-53. doi:10.1007/s12021-008-9041-y",
    "chen2015": "Chen P.-H. et al. (2015). A reduced-dimension fMRI shared response model. "
                "Advances in Neural Information Processing Systems 28:460-468.",
    "bazeille2021": "Bazeille T. et al. (2021). An empirical evaluation of functional "
                    "alignment using inter-subject decoding. NeuroImage 245:118683. "
                    "doi:10.1016/j.neuroimage.2021.118683",
    "hasson2004": "Hasson U. et al. (2004). Intersubject synchronization of cortical activity "
                  "during natural vision. Science 303:1634-1640. doi:10.1126/science.1089506",
    "nastase2019": "Nastase S.A. et al. (2019). Measuring shared responses across subjects "
                   "using intersubject correlation. Soc. Cogn. Affect. Neurosci. 14(6):667-685. "
                   "doi:10.1093/scan/nsz037",
    "nichols": "Nichols T.E., Holmes A.P. (2002). Nonparametric permutation tests for "
               "functional neuroimaging: a primer with examples. Hum. Brain Mapp. 15:1-25. "
               "doi:10.1002/hbm.1058",
    "mumford2012": "Mumford J.A., Turner B.O., Ashby F.G., Poldrack R.A. (2012). Deconvolving "
                   "BOLD activation in event-related designs for multivoxel pattern "
                   "classification analyses. NeuroImage 59(3):2636-2643. "
                   "doi:10.1016/j.neuroimage.2011.08.076",
}  # fmt:skip


@dataclass(frozen=True)
class MethodsText:
    """The methods text a workflow carries (its ``__desc__``).

    Parameters
    ----------
    template : str
        Text with ``{Key}`` fields, ``[[optional parts]]`` and ``[@references]``.
    describes : dict
        BIDS entities of the derivatives the text describes; their sidecars fill the
        fields (see :func:`matches`).
    """

    template: str
    describes: dict = field(default_factory=dict)

    def __str__(self):
        return self.template


# ---------------------------------------------------------------------------- words


def number(value):
    """A number for reading: integers as they are, others to 3 significant digits."""
    if isinstance(value, bool) or value is None:
        return str(value)
    value = float(value)
    if not math.isfinite(value):
        return "n/a"
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{round(value):,}"
    text = f"{value:.3g}"
    return text if "e" not in text else f"{value:.2e}"


def join_words(items):
    """``a``, ``a and b``, ``a, b and c``."""
    items = [str(i) for i in items]
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]


_MOTION = {"trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"}
_CV_WORDS = {
    "LeaveOneGroupOut": "leave-one-run-out",
    "KFold": "{n}-fold",
    "StratifiedKFold": "stratified {n}-fold",
    "GroupKFold": "{n}-fold grouped by run",
}
_SCORING = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "roc_auc": "area under the ROC curve",
}


def estimator_words(definition):
    """``GaussianNB()`` -> ``GaussianNB``; ``SVC(kernel='rbf')`` -> ``SVC (kernel='rbf')``."""
    match = re.fullmatch(r"\s*([A-Za-z_][\w.]*)\((.*)\)\s*", str(definition), flags=re.S)
    if not match:
        return str(definition)
    params = [p.strip() for p in re.split(r",\s*(?=\w+=)", match[2]) if p.strip()]
    params = [p for p in params if not p.startswith("random_state=")]
    return match[1] + (f" ({', '.join(params)})" if params else "")


def cv_words(description):
    """``LeaveOneGroupOut()`` -> ``leave-one-run-out``; ``KFold(n_splits=4)`` -> ``4-fold``."""
    match = re.fullmatch(r"\s*(\w+)\((.*)\)\s*", str(description))
    if not match or match[1] not in _CV_WORDS:
        return str(description)
    n = re.search(r"n_splits=(\d+)", match[2])
    return _CV_WORDS[match[1]].format(n=n[1] if n else "k")


def confounds_words(names):
    """What was regressed out, in words (an empty list says none was)."""
    if isinstance(names, dict):
        grouped = {}
        for subject, columns in names.items():
            grouped.setdefault(confounds_words(columns), []).append(f"sub-{subject}")
        return "; ".join(f"{text} ({join_words(subs)})" for text, subs in grouped.items())
    names = list(names or [])
    if not names:
        return "no confound regression"
    if set(names) == _MOTION:
        return "regression of the six head-motion parameters"
    return f"regression of the confound{'s' if len(names) > 1 else ''} {join_words(names)}"


def minimum_p_words(value):
    """A sentence when no test can reach p < 0.05 (too few permutations or sign flips)."""
    if value is None or float(value) <= 0.05:
        return ""
    return (
        f"The smallest attainable p-value is {number(value)}, above 0.05: no voxel can "
        "reach significance with this number of permutations."
    )


_BETA_MODELS = {
    "LSS": "one general linear model (GLM) per trial, holding that trial's regressor and one "
    "regressor per condition for the run's other trials (least-squares-separate "
    "[@mumford2012])",
    "LSA": "one general linear model (GLM) per run with one regressor per trial "
    "(least-squares-all)",
}
_DRIFT_WORDS = {
    "cosine": "a cosine drift basis",
    "polynomial": "a polynomial drift",
    "none": "a constant only (no drift model)",
}

WORDS = {
    "Method": lambda v: _BETA_MODELS.get(str(v).upper(), str(v)),
    "HRFModel": lambda v: f"the {v} HRF",
    "DriftModel": lambda v: _DRIFT_WORDS.get(str(v), str(v)),
    "HighPass": lambda v: f"{number(v)} Hz",
    "GLMConfounds": lambda v: (
        "the six head-motion parameters"
        if set(v or []) == _MOTION
        else (f"the confounds {join_words(v)}" if v else "none")
    ),
    "EstimatorDefinition": estimator_words,
    "CrossValidation": cv_words,
    "Scoring": lambda v: _SCORING.get(v, str(v)),
    "Radius": lambda v: f"{number(v)} mm",
    "HRFDelay": lambda v: f"{number(v)} s",
    "SegmentLength": lambda v: f"{number(v)} s",
    "RepetitionTime": lambda v: join_words(f"{number(t)} s" for t in dict.fromkeys(_list(v))),
    "Confounds": confounds_words,
    "TrainingRuns": lambda v: ("run " if len(_list(v)) == 1 else "runs ") + join_words(_list(v)),
    "TestRuns": lambda v: ("run " if len(_list(v)) == 1 else "runs ") + join_words(_list(v)),
    "Detrend": lambda v: "linear detrending" if v else "",
    "Standardize": lambda v: (
        "z-scoring of every voxel within each run" if v == "zscore_run" else ""
    ),
    "NumberOfPermutations": lambda v: number(v) if v else "",
    "MinimumAttainableP": minimum_p_words,
    "BSCMode": lambda v: {"segments": "movie segments", "conditions": "condition labels"}.get(
        v, str(v)
    ),
    "GeneratedBy": lambda v: (v or {}).get("Version", "n/a") if isinstance(v, dict) else str(v),
    "Engine": lambda v: (
        "scikit-learn, fitted on every sphere and fold"
        if v == "generic"
        else f"the closed-form {v} engine, which reproduces scikit-learn's fit"
    ),
    "ExactPermutation": lambda v: "every possible sign flip" if v else "random sign flips",
    "SphereSize": lambda v: (
        f"{number(v['Mean'])} voxels on average, from {number(v['Min'])} to {number(v['Max'])}"
        if isinstance(v, dict)
        else str(v)
    ),
    "common_space": lambda v: {
        "mask": "the common space of one hyperalignment of the whole mask (PyMVPA's levels "
        "1 and 2, as for the ROI models)",
        "searchlight": "local common spaces built by levels 1 and 2 of hyperalignment in "
        "every sphere",
    }.get(v, str(v)),
    "zscore_output": lambda v: "every voxel of the mapped data was z-scored" if v else "",
    "ChosenPenalties": lambda v: join_words(number(a) for a in dict.fromkeys(_list(v))),
    "NewSubjects": lambda v: join_words(_subject(s) for s in _list(v)),
    "ModelSubjects": lambda v: join_words(_subject(s) for s in _list(v)),
    "LabelCounts": lambda v: (
        ", ".join(f"{k} {number(c)}" for k, c in v.items()) if isinstance(v, dict) else str(v)
    ),
}


def _list(value):
    return value if isinstance(value, (list, tuple)) else [value]


def words(key, value):
    """A sidecar value in words (``n/a`` for a missing one)."""
    if value is None:
        return "n/a"
    if key in WORDS:
        return WORDS[key](value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return number(value)
    if isinstance(value, (list, tuple)):
        return join_words(words(key + "[]", v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {words(k, v)}" for k, v in value.items())
    return str(value)


def lookup(sidecar, key):
    """``sidecar[key]`` with dotted keys into nested dictionaries; None when absent."""
    value = sidecar
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


# ------------------------------------------------------------------------- rendering

_FIELD = re.compile(r"\{([A-Za-z][\w.]*)\}")
_OPTIONAL = re.compile(r"\[\[(.*?)\]\](?!\])", flags=re.S)
_CITE = re.compile(r"\[@([\w-]+(?:;\s*@[\w-]+)*)\]")


def field_words(key, sidecars, to_words=None):
    """The field ``key`` over the described files: one value, or each with its subjects.

    None when no sidecar has the key.
    """
    to_words = to_words or (lambda v: words(key.rsplit(".", 1)[-1], v))
    by_value = {}
    for label, sidecar in sidecars.items():
        value = lookup(sidecar, key)
        by_value.setdefault(None if value is None else to_words(value), []).append(label)
    if not by_value or set(by_value) == {None}:
        return None
    if len(by_value) == 1:
        return next(iter(by_value))
    parts = [
        f"{text if text is not None else 'n/a'} ({join_words(_subject(s) for s in labels)})"
        for text, labels in by_value.items()
    ]
    return "mixed across subjects: " + "; ".join(parts)


def _subject(label):
    return f"sub-{label}" if label and not str(label).startswith(("sub-", "group")) else label


def render(template, sidecars):
    """Fill ``template`` from ``sidecars`` (label -> sidecar dict).

    Returns
    -------
    text : str
        The text, optional parts kept only where all their fields say something.
    cites : list of str
        Reference keys, in order of appearance.
    """

    def fill(text, optional):
        missing = False

        def one(match):
            nonlocal missing
            value = field_words(match[1], sidecars)
            if not value:
                missing = True
                return "n/a"
            return value

        out = _FIELD.sub(one, text)
        return "" if (missing and optional) else out

    text = _OPTIONAL.sub(lambda m: fill(m[1], optional=True), template)
    text = fill(text, optional=False)
    cites = [c.strip().lstrip("@") for m in _CITE.finditer(text) for c in m[1].split(";")]
    text = _CITE.sub(
        lambda m: "[" + ", ".join(c.strip().lstrip("@") for c in m[1].split(";")) + "]", text
    )
    text = re.sub(r"\s+([,.;])", r"\1", re.sub(r"[ \t]+", " ", text)).strip()
    return text, list(dict.fromkeys(cites))


# --------------------------------------------------------------------------- selection


def matches(entities, query):
    """Whether a file's ``entities`` satisfy ``query``.

    A query value is a string (equal), a list (one of), ``None`` (entity absent) or
    ``"*"`` (entity present).
    """
    for key, wanted in (query or {}).items():
        have = entities.get(key)
        if wanted is None:
            if have is not None:
                return False
        elif wanted == "*":
            if have is None:
                return False
        elif isinstance(wanted, (list, tuple)):
            if str(have) not in [str(w) for w in wanted]:
                return False
        elif str(have) != str(wanted):
            return False
    return True


def sidecars_by_subject(files, query):
    """Merged sidecars of the files matching ``query``, one per subject (``group`` if none)."""
    merged = {}
    for item in files:
        if matches(item["entities"], query):
            label = item["entities"].get("subject") or "group"
            merged.setdefault(label, {}).update(item.get("metadata") or {})
    return merged


def methods(texts, files):
    """Paragraphs and references for ``texts`` (:class:`MethodsText`) over ``files``.

    ``files`` are dicts with ``entities`` and ``metadata`` (the sidecar). A text whose
    described files are absent (its analysis did not run or failed) is left out.
    """
    paragraphs, cites = [], []
    for text in texts:
        sidecars = sidecars_by_subject(files, text.describes)
        if not sidecars:
            continue
        paragraph, refs = render(text.template, sidecars)
        if paragraph and paragraph not in paragraphs:
            paragraphs.append(paragraph)
            cites += refs
    unknown = [c for c in cites if c not in CITATIONS]
    if unknown:
        raise KeyError(f"Methods text cites unknown references {unknown}; add them to CITATIONS.")
    return paragraphs, list(dict.fromkeys(cites))


def citation_markdown(paragraphs, cites, title="Methods"):
    """``CITATION.md`` text: the paragraphs and their references."""
    refs = "\n".join(f"- [{key}] {CITATIONS[key]}" for key in cites)
    body = "\n\n".join(paragraphs)
    return f"# {title}\n\n{body}\n\n## References\n\n{refs}\n"


#: Row labels of the parameter tables.
LABELS = {
    "EstimatorDefinition": "Estimator",
    "Engine": "Computed by",
    "CrossValidation": "Cross-validation",
    "NumberOfFolds": "Folds",
    "Scoring": "Score",
    "Radius": "Sphere radius",
    "SphereSize": "Sphere size",
    "NumberOfSpheres": "Spheres",
    "ChanceLevel": "Chance level",
    "LabelCounts": "Samples per condition",
    "NumberOfPermutations": "Permutations",
    "RandomSeed": "Random seed",
    "MeanScore": "Mean score",
    "MaxScore": "Maximum score",
    "Runs": "Runs",
    "VolumesPerRun": "Volumes per run",
    "RepetitionTime": "Repetition time",
    "NumberOfVoxels": "Voxels in the mask",
    "Conditions": "Conditions",
    "SampleCounts": "Samples per condition",
    "Confounds": "Confound regression",
    "Detrend": "Detrending",
    "Standardize": "Scaling",
    "HRFDelay": "Delay added to onsets",
    "DegreesOfFreedom": "Degrees of freedom",
    "NumberOfSamples": "Samples",
    "ConstantVoxels": "Constant voxels (no F)",
    "NumberOfSubjects": "Subjects",
    "ExactPermutation": "Sign flips",
    "MinimumAttainableP": "Smallest attainable p",
    "TrainingRuns": "Training runs",
    "TestRuns": "Test runs",
    "BSCMode": "Classified",
    "SegmentLength": "Segment length",
    "ReferenceSubject": "Reference subject",
    "NumberOfFeatures": "Voxels in the ROI",
    "TrainingSamples": "Training samples",
    "AlignmentMethod": "Alignment method",
    "AlignmentParameters": "Alignment parameters",
    "ModelDimensions": "Common space dimensions",
    "ChosenPenalties": "Ridge penalty chosen (per subject)",
    "ModelSubjects": "Model subjects",
    "NewSubjects": "New subjects mapped",
    "Samples": "Sample type",
    "TrialsPerRun": "Trials per run",
    "Method": "Trial-wise method",
    "HRFModel": "HRF model",
    "DriftModel": "Drift model",
    "HighPass": "High-pass cut-off",
    "DriftOrder": "Polynomial drift order",
    "SliceTimeRef": "Reference slice (fraction of TR)",
    "NoiseModel": "Noise model",
    "NumberOfVolumes": "Volumes",
    "NumberOfTrials": "Trials",
    "NeighbourCorrelationMax": "Largest neighbouring-trial correlation",
    "DesignSoftware": "Design matrix",
}

_TABLE_WORDS = {
    "Detrend": lambda v: "linear, per run" if v else "none",
    "Standardize": lambda v: "z-score per run" if v == "zscore_run" else "none",
    "MinimumAttainableP": number,
    "Samples": lambda v: {"lss": "trial-wise betas (LSS)", "lsa": "trial-wise betas (LSA)"}.get(
        v, str(v)
    ),
    "Method": str,
    "HRFModel": str,
    "DriftModel": str,
}


def parameter_rows(sidecars, keys):
    """(label, value in words) for each key present in the sidecars."""
    rows = []
    for key in keys:
        value = field_words(key, sidecars, _TABLE_WORDS.get(key))
        if value is not None:
            rows.append((LABELS.get(key, key), value))
    return rows

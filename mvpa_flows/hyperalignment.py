"""Functional alignment: a common model space for many subjects' voxels.

Scikit-learn-style estimators over :mod:`mvpa_flows.core.alignment`::

    from mvpa_flows.hyperalignment import Hyperalignment, SharedResponseModel, isc
    ha = Hyperalignment().fit(movie_run1)          # list of (n_timepoints, n_voxels)
    common = ha.transform(movie_run2)              # same subjects, new data
    new_map = ha.fit_subject(new_subject_run1)     # a new subject into the same space
    new_map.transform(new_subject_run2)
    ha.model_.save("model.h5")                     # load_model("model.h5", task=..., space=...)

``Hyperalignment(method="procrustes")`` is PyMVPA's three-level algorithm (same results);
``Hyperalignment(method="ridge")`` maps subjects with ridge regression, its penalty chosen
by blocked cross-validation on the training samples; ``SharedResponseModel`` is BrainIAK's
deterministic or probabilistic SRM. :func:`isc` is the leave-one-out inter-subject
correlation of every voxel (or common-space dimension); :func:`isc_maps` gives it before
and after alignment, voxel by voxel, whatever the method. :func:`hyperalign_and_evaluate`
fits once and scores between-subject classification; :func:`evaluate_new_subjects` maps
new subjects into a fitted model and scores them against the model's subjects.
"""

from __future__ import annotations

from mvpa_flows.core.alignment.evaluate import evaluate_new_subjects, hyperalign_and_evaluate
from mvpa_flows.core.alignment.hyperalignment import Hyperalignment
from mvpa_flows.core.alignment.isc import isc, isc_maps, mean_isc
from mvpa_flows.core.alignment.maps import LinearMap, ProcrustesMap, RidgeMap, SRMMap
from mvpa_flows.core.alignment.model import AlignmentModel, load_model
from mvpa_flows.core.alignment.procrustes import procrustes
from mvpa_flows.core.alignment.searchlight import SearchlightHyperalignment
from mvpa_flows.core.alignment.srm import SharedResponseModel

__all__ = [
    "AlignmentModel",
    "Hyperalignment",
    "LinearMap",
    "ProcrustesMap",
    "RidgeMap",
    "SRMMap",
    "SearchlightHyperalignment",
    "SharedResponseModel",
    "evaluate_new_subjects",
    "hyperalign_and_evaluate",
    "isc",
    "isc_maps",
    "load_model",
    "mean_isc",
    "procrustes",
]

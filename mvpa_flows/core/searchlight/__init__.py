"""Searchlight decoding on arrays: the contract (:func:`search_light`), cross-validation
(:mod:`.cv`), scoring (:mod:`.scoring`), estimators (:mod:`.estimators`), sphere
neighbourhoods (:mod:`.neighbourhoods`), output maps (:mod:`.maps`) and the engines behind
them (:mod:`.engines`)."""

from .base import (
    DecodingSetup,
    SearchlightResult,
    check_decoding,
    merge_results,
    search_light,
)
from .cv import permuted_labels, resolve_cv
from .estimators import CorrelationClassifier, check_classifier, resolve_estimator, select_engine

__all__ = [
    "CorrelationClassifier",
    "DecodingSetup",
    "SearchlightResult",
    "check_classifier",
    "check_decoding",
    "merge_results",
    "permuted_labels",
    "resolve_cv",
    "resolve_estimator",
    "search_light",
    "select_engine",
]

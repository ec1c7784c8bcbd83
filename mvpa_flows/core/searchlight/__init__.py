"""Searchlight decoding on arrays: the contract (:func:`search_light`), cross-validation,
scoring, sphere neighbourhoods, output maps and the engines behind them."""

from .base import (
    CorrelationClassifier,
    SearchlightResult,
    merge_results,
    permuted_labels,
    resolve_cv,
    resolve_estimator,
    search_light,
    select_engine,
)

__all__ = [
    "CorrelationClassifier",
    "SearchlightResult",
    "merge_results",
    "permuted_labels",
    "resolve_cv",
    "resolve_estimator",
    "search_light",
    "select_engine",
]

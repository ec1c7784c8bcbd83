"""Estimators written as data: a name, or a scikit-learn class path with parameters.

Analysis specs and the command line name the searchlight classifier either by one of
:data:`~mvpa_flows.core.searchlight.base.ESTIMATOR_STRINGS` or as
``{"class": "sklearn.svm.SVC", "params": {"kernel": "rbf"}}``; :func:`estimator_from_spec`
turns both into an unfitted estimator, refusing before any work what cannot decode.
"""

from __future__ import annotations

import importlib

from .estimators import resolve_estimator

__all__ = ["estimator_from_spec", "estimator_label"]


def _import_class(path):
    module_name, _, name = str(path).rpartition(".")
    if not module_name:
        raise ValueError(
            f"Parameter 'estimator': {path!r} is not an import path; give the full path of a "
            "scikit-learn classifier, e.g. 'sklearn.svm.SVC'."
        )
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"Parameter 'estimator': cannot import {path!r} ({exc}). Give the full import "
            "path of an installed classifier, e.g. 'sklearn.svm.SVC'."
        ) from None
    if not isinstance(cls, type):
        raise ValueError(f"Parameter 'estimator': {path!r} is not a class.")
    return cls


def estimator_from_spec(spec, random_state=None):
    """An unfitted estimator from its spec.

    Parameters
    ----------
    spec : str or dict
        A name (``'svc'``, ``'gnb'``, ...; see
        :func:`~mvpa_flows.core.searchlight.resolve_estimator`) or ``{"class":
        "<module>.<Class>", "params": {...}}``.
    random_state : int or None
        Seed given to the estimator when it takes one and the spec does not set it.

    Returns
    -------
    estimator
        A scikit-learn classifier (the searchlight engine is chosen from its type and
        parameters by :func:`~mvpa_flows.core.searchlight.select_engine`).

    Raises
    ------
    ValueError
        Unknown name, a path that does not import, parameters the class does not take
        or does not accept, or an estimator that is not a classifier.
    """
    from sklearn.base import is_classifier

    if isinstance(spec, str):
        return resolve_estimator(spec, random_state=0 if random_state is None else random_state)
    if not isinstance(spec, dict) or "class" not in spec:
        raise ValueError(
            "Parameter 'estimator' must be a name or {'class': '<module>.<Class>', 'params': "
            f"{{...}}}}; got {spec!r}."
        )
    cls, params = _import_class(spec["class"]), dict(spec.get("params") or {})
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise ValueError(
            f"Parameter 'estimator': {cls.__name__} does not take the parameters {params} "
            f"({exc}). See its documentation for the parameter names."
        ) from None
    if not is_classifier(estimator):
        raise ValueError(
            f"Parameter 'estimator': {spec['class']} is not a classifier; searchlight "
            "decoding scores predicted classes. Choose a classifier, e.g. "
            "'sklearn.svm.SVC' or 'sklearn.linear_model.LogisticRegression'."
        )
    if random_state is not None and "random_state" not in params:
        if "random_state" in estimator.get_params(deep=False):
            estimator.set_params(random_state=random_state)
    validate = getattr(estimator, "_validate_params", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise ValueError(f"Parameter 'estimator' ({spec['class']}): {exc}") from None
    return resolve_estimator(estimator)


def estimator_label(spec):
    """Short text naming an estimator spec (``gnb``; ``sklearn.svm.SVC(kernel='rbf')``)."""
    if isinstance(spec, str):
        return spec
    params = ", ".join(f"{k}={v!r}" for k, v in (spec.get("params") or {}).items())
    return f"{spec['class']}({params})"

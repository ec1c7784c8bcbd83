"""Declarative BIDS specifications, installed as ``mvpa_flows.bids_specs``.

Spec files are data: load them with :func:`load`, which goes through
:mod:`importlib.resources` so wheels and editable installs behave the same.
"""

import json
from functools import cache
from importlib import resources

SPEC_FILES = ("io_spec.json", "mvpa_flows.json", "analysis.schema.json")


@cache
def _load_cached(name):
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    return json.loads(text)


def load(name):
    """Return the parsed JSON spec ``name`` (a copy, safe to modify)."""
    if name not in SPEC_FILES and not name.startswith("examples/"):
        raise ValueError(f"Unknown spec file {name!r}; expected one of {', '.join(SPEC_FILES)}.")
    return json.loads(json.dumps(_load_cached(name)))

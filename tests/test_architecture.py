"""Project rules that hold across modules: layering and interface specs."""

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from nipype.interfaces.base import BaseInterface

import mvpa_flows

PACKAGE = Path(mvpa_flows.__file__).parent
#: layer -> modules it must not import (layers: core -> reports -> interfaces -> workflows -> cli)
FORBIDDEN = {
    "core": (
        "mvpa_flows.reports",
        "mvpa_flows.interfaces",
        "mvpa_flows.workflows",
        "mvpa_flows.cli",
        "nipype",
        "bids",
        "matplotlib",
        "nilearn.plotting",
    ),
    "reports": (
        "mvpa_flows.interfaces",
        "mvpa_flows.workflows",
        "mvpa_flows.cli",
        "nipype",
        "bids",
    ),
    "interfaces": ("mvpa_flows.workflows", "mvpa_flows.cli"),
    "workflows": ("mvpa_flows.cli", "mvpa_flows.core", "mvpa_flows.reports"),
}
#: modules whose functions stay short (a long function is split, not grown)
SHORT_FUNCTIONS = ("reports", "interfaces/reports.py", "workflows/reports.py", "cli/log.py")


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(layer):
    offenders = []
    for path in (PACKAGE / layer).rglob("*.py"):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not offenders, offenders


def _interfaces():
    found = []
    for info in pkgutil.iter_modules([str(PACKAGE / "interfaces")]):
        module = importlib.import_module(f"mvpa_flows.interfaces.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseInterface) and cls.__module__ == module.__name__:
                found.append(cls)
    return found


def test_interfaces_are_discovered():
    names = {cls.__name__ for cls in _interfaces()}
    assert {"DerivativesDataSink", "PrepareSamples", "FTest"} <= names


@pytest.mark.parametrize("interface", _interfaces(), ids=lambda c: c.__name__)
def test_interface_specs_describe_every_trait(interface):
    assert interface.__doc__, f"{interface.__name__} has no docstring"
    assert interface.input_spec.__name__ == f"_{interface.__name__}InputSpec"
    assert interface.output_spec.__name__ == f"_{interface.__name__}OutputSpec"
    for spec in (interface.input_spec, interface.output_spec):
        for name, trait in spec().traits(transient=None).items():
            if name in ("trait_added", "trait_modified"):
                continue
            assert trait.desc, f"{spec.__name__}.{name} has no desc="
            assert trait.mandatory is not False, f"{spec.__name__}.{name}: mandatory=False"


def test_every_subpackage_is_packaged():
    """A non-editable install (the container) ships only the packages setup.cfg lists."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(PACKAGE.parent / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {
        "mvpa_flows." + ".".join(p.parent.relative_to(PACKAGE).parts)
        for p in PACKAGE.rglob("__init__.py")
        if p.parent != PACKAGE
    } | {"mvpa_flows"}
    assert found - listed == set(), f"add to setup.cfg [options] packages: {found - listed}"


def _functions(path):
    """(name, lines of code) of every function: its length without the docstring."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = node.body[0]
            skip = (
                doc.end_lineno - doc.lineno + 1
                if isinstance(doc, ast.Expr)
                and isinstance(getattr(doc, "value", None), ast.Constant)
                else 0
            )
            yield node.name, node.end_lineno - node.lineno + 1 - skip


def test_report_code_has_no_long_function():
    long = []
    for place in SHORT_FUNCTIONS:
        for path in (
            [PACKAGE / place] if place.endswith(".py") else (PACKAGE / place).rglob("*.py")
        ):
            long += [f"{path.name}:{name} ({n} lines)" for name, n in _functions(path) if n > 80]
    assert not long, long


def test_no_backend_is_chosen_at_import():
    """Importing the package never selects a matplotlib backend (no matplotlib.use)."""
    calls = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "use"
                and getattr(node.func.value, "id", "") in ("matplotlib", "mpl")
            ):
                calls.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not calls, calls

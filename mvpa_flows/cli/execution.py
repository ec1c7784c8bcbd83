"""Running a Nipype graph with the run's plugin settings and reporting failures."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

logger = logging.getLogger("mvpa_flows")


def plugin_settings(config):
    """Nipype plugin and arguments from ``--use-plugin`` or ``--nprocs``/``--mem``."""
    if config.plugin:
        settings = {
            "plugin": config.plugin["plugin"],
            "plugin_args": dict(config.plugin.get("plugin_args") or {}),
        }
    elif config.nprocs > 1:
        settings = {"plugin": "MultiProc", "plugin_args": {"n_procs": config.nprocs}}
        if config.mem_gb:
            settings["plugin_args"]["memory_gb"] = config.mem_gb
    else:
        settings = {"plugin": "Linear", "plugin_args": {}}
    if getattr(config, "show_progress", False) and settings["plugin"] in ("MultiProc", "Linear"):
        settings["plugin_args"].setdefault("status_callback", _NodeStatus())
    if settings["plugin"] == "MultiProc":
        settings["plugin_args"].setdefault("raise_insufficient", False)
    return settings


class _NodeStatus:
    """Nipype status callback: one terminal line when a processing node starts or ends."""

    def __init__(self):
        self.started = {}

    def __call__(self, node, status):
        import time

        if node.name.startswith("ds_") or node.name in ("inputnode", "outputnode", "bidssrc"):
            return
        name = node.fullname.replace("mvpa_flows_wf.", "")
        if status == "start":
            self.started[name] = time.perf_counter()
            print(f"[mvpa-flows] running  {name}", file=sys.stderr, flush=True)
        elif status in ("end", "exception"):
            took = time.perf_counter() - self.started.pop(name, time.perf_counter())
            word = "done   " if status == "end" else "FAILED "
            print(f"[mvpa-flows] {word} {name} ({took:.1f} s)", file=sys.stderr, flush=True)


def configure_nipype(workflow, config, crash_dir):
    """Point crash files to ``crash_dir`` and set execution options on ``workflow``."""
    workflow.config["execution"].update(
        {
            "crashdump_dir": str(crash_dir),
            "crashfile_format": "txt",
            "stop_on_first_crash": str(bool(config.stop_on_first_crash)).lower(),
            "remove_unnecessary_outputs": "false",
        }
    )
    workflow.config["monitoring"] = {"enabled": "false"}


def run_workflow(workflow, config, crash_dir):
    """Run ``workflow``; return 0, or 1 after printing each failed node's error."""
    from threadpoolctl import threadpool_limits

    configure_nipype(workflow, config, crash_dir)
    if config.write_graph:
        try:
            workflow.write_graph(graph2use="colored", format="svg", simple_form=True)
        except OSError as err:  # graphviz's dot is missing: keep the .dot file
            logger.warning("Wrote the graph as .dot only (%s); install graphviz for SVG.", err)
    before = set(Path(crash_dir).glob("crash-*.txt")) if Path(crash_dir).exists() else set()
    try:
        with threadpool_limits(limits=config.omp_nthreads):
            workflow.run(**plugin_settings(config))
    except Exception as err:  # noqa: BLE001 - Nipype raises RuntimeError or node errors
        from mvpa_flows.interfaces.reports import crash_reports

        crashes = [c for c in crash_reports(crash_dir) if c[2] not in before]
        print("mvpa-flows: the workflow did not finish.", file=sys.stderr)
        for node, message, path in crashes:
            print(f"  node {node}: {message}\n    (details: {path})", file=sys.stderr)
        if not crashes:
            print(f"  {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0

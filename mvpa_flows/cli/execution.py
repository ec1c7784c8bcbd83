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
    if settings["plugin"] == "MultiProc":
        settings["plugin_args"].setdefault("raise_insufficient", False)
    return settings


class NodeStatus:
    """Nipype status callback: node start/end lines, and a heartbeat for long nodes.

    With ``show`` (an interactive terminal or ``-v``) each processing node prints a line
    when it starts and ends. Whatever ``show``, a node running longer than ``after``
    seconds gets a "still running" line in the log every ``every`` seconds.
    """

    def __init__(self, show=False, after=60.0, every=30.0):
        import threading

        self.show, self.after, self.every = show, after, every
        self.started = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def __call__(self, node, status):
        import time

        if node.name.startswith("ds_") or node.name in ("inputnode", "outputnode", "bidssrc"):
            return
        name = node.fullname.replace("mvpa_flows_wf.", "")
        if status == "start":
            self.started[name] = time.perf_counter()
            if self.show:
                print(f"[mvpa-flows] running  {name}", file=sys.stderr, flush=True)
        elif status in ("end", "exception"):
            took = time.perf_counter() - self.started.pop(name, time.perf_counter())
            word = "done   " if status == "end" else "FAILED "
            if self.show:
                print(f"[mvpa-flows] {word} {name} ({took:.1f} s)", file=sys.stderr, flush=True)

    def _beat(self):
        import time

        while not self._stop.wait(self.every):
            now = time.perf_counter()
            for name, start in list(self.started.items()):
                if now - start >= self.after:
                    logging.getLogger("mvpa_flows.progress").info(
                        "still running: %s (%.0f min %02.0f s)", name, *divmod(now - start, 60)
                    )

    def close(self):
        """Stop the heartbeat thread."""
        self._stop.set()

    def __getstate__(self):
        # Nipype pickles the plugin settings with MapNodes: copies keep no thread.
        return {"show": self.show, "after": self.after, "every": self.every}

    def __setstate__(self, state):
        import threading

        self.__dict__.update(state, started={}, _stop=threading.Event(), _thread=None)


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
    _set_logname()
    settings = plugin_settings(config)
    if settings["plugin"] in ("MultiProc", "Linear"):
        settings["plugin_args"].setdefault(
            "status_callback", NodeStatus(show=config.show_progress)
        )
    tag = _tag_graph_jobs(settings)
    try:
        with threadpool_limits(limits=config.omp_nthreads):
            graph = workflow.run(**_with_job_crash_reports(settings))
        if tag:  # the graph was submitted as jobs: wait for them, then check every node
            _wait_for_jobs(tag)
            _check_results(graph)
    except Exception as err:  # noqa: BLE001 - Nipype raises RuntimeError or node errors
        from mvpa_flows.interfaces.reports import crash_reports

        crashes = [c for c in crash_reports(crash_dir) if c[2] not in before]
        print("mvpa-flows: the workflow did not finish.", file=sys.stderr)
        for node, message, path in crashes:
            print(f"  node {node}: {message}\n    (details: {path})", file=sys.stderr)
        if not crashes:
            print(f"  {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        status = settings["plugin_args"].get("status_callback")
        if hasattr(status, "close"):
            status.close()
    return 0


def _set_logname():
    """Nipype's batch plugins (SLURM, SGE, PBS, ...) name jobs after ``$LOGNAME``.

    Batch jobs, cron and containers often run without it; Nipype then fails with
    ``KeyError: 'LOGNAME'`` before submitting anything.
    """
    import getpass
    import os

    if not os.environ.get("LOGNAME"):
        try:
            os.environ["LOGNAME"] = getpass.getuser()
        except (KeyError, OSError):  # a uid without a passwd entry (containers)
            os.environ["LOGNAME"] = str(os.getuid())


def _tag_graph_jobs(settings):
    """Tag SLURMGraph's jobs so the run can wait for them; return the tag or None.

    SLURMGraph submits the whole graph with job dependencies and returns at once. Every
    job gets ``--comment=<tag>``, and ``--kill-on-invalid-dep=yes`` so that the jobs
    after a failed one leave the queue instead of waiting forever.
    """
    if settings["plugin"] != "SLURMGraph":
        return None
    import uuid

    tag = f"mvpa_flows-{uuid.uuid4().hex[:16]}"
    args = settings["plugin_args"]
    extra = f"--comment={tag} --kill-on-invalid-dep=yes"
    args["sbatch_args"] = f"{args.get('sbatch_args') or ''} {extra}".strip()
    return tag


def _wait_for_jobs(tag, poll=2.0):
    """Wait until no SLURM job carrying ``tag`` is pending or running."""
    import subprocess
    import time

    logger.info("Waiting for the SLURM jobs of this run (comment %s) to finish.", tag)
    failures = 0
    while True:
        result = subprocess.run(
            ["squeue", "-h", "-o", "%k"], capture_output=True, text=True, check=False
        )
        if result.returncode:
            failures += 1  # the controller may be busy: retry for a while
            if failures > 30:
                raise RuntimeError(f"squeue failed: {result.stderr.strip()}")
        elif tag not in result.stdout.split():
            return
        else:
            failures = 0
        time.sleep(poll)


def _check_results(graph):
    """Raise RuntimeError naming the nodes of ``graph`` that left no result file."""
    missing = [
        node.fullname
        for node in graph.nodes()
        if not (Path(node.output_dir()) / f"result_{node.name}.pklz").exists()
    ]
    if missing:
        raise RuntimeError(
            f"{len(missing)} node(s) ended without a result (failed, cancelled, or killed "
            f"by the scheduler; see the job logs in the work directory's batch folder): "
            f"{', '.join(missing)}"
        )


class _JobCrashReports:
    """Crash files for batch jobs that left no result (cancelled, out of time or memory).

    Nipype's batch plugins (SLURM, SGE, PBS, LSF, ...) give such a job's traceback as one
    string, and its crash report then fails with ``TypeError: can only concatenate str``,
    which ends the whole run without naming the node. Giving the lines instead lets the
    run go on, report the node and finish the other jobs.
    """

    def _report_crash(self, node, result=None):
        if result is not None and isinstance(result.get("traceback"), str):
            result = {**result, "traceback": result["traceback"].splitlines(keepends=True)}
        return super()._report_crash(node, result=result)


def _with_job_crash_reports(settings):
    """``workflow.run`` arguments; batch plugins become an instance with crash reports."""
    from nipype.pipeline import plugins
    from nipype.pipeline.plugins.base import SGELikeBatchManagerBase

    cls = getattr(plugins, f"{settings['plugin']}Plugin", None)
    if not (isinstance(cls, type) and issubclass(cls, SGELikeBatchManagerBase)):
        return settings
    patched = type(cls.__name__, (_JobCrashReports, cls), {})  # keeps the name Nipype reads
    return {"plugin": patched(plugin_args=settings["plugin_args"])}

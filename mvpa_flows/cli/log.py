"""The run's log file: messages, progress heartbeats and library warnings.

``OUTPUT_DIR/logs/<level>_<time>_<pid>.log`` receives every mvpa_flows and Nipype
message and every Python warning raised during the run (numpy, nilearn, ...), each
stamped with the node that raised it (the Nipype work folder it ran in). Warnings are
kept out of the terminal in normal runs (``-v`` shows them) and listed in the reports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

#: Loggers whose records go to the run's log file.
LOGGERS = ("mvpa_flows", "py.warnings", "nipype.workflow", "nipype.interface")
FORMAT = "%(asctime)s | %(levelname)s | %(where)s | %(message)s"


class NodeLocation(logging.Filter):
    """Stamp records with the node they come from: the work-folder path of the cwd."""

    def __init__(self, work_dir):
        super().__init__()
        self.work_dir = Path(work_dir).absolute()

    def filter(self, record):
        cwd = Path(os.getcwd())
        inside = cwd == self.work_dir or self.work_dir in cwd.parents
        record.where = ".".join(cwd.relative_to(self.work_dir).parts) if inside else "main"
        return True


class _NotProgress(logging.Filter):
    def filter(self, record):
        return not record.name.startswith("mvpa_flows.progress")


@contextlib.contextmanager
def run_log(config):
    """Record the run in ``OUTPUT_DIR/logs``; sets ``config.log_file`` while it lasts."""
    logs = Path(config.output_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    config.log_file = logs / f"{config.analysis_level}_{stamp}_{os.getpid()}.log"
    handler = logging.FileHandler(config.log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
    handler.addFilter(NodeLocation(config.work_dir))
    handler.setLevel(logging.DEBUG if config.verbose > 1 else logging.INFO)
    warnings_logger = logging.getLogger("py.warnings")
    saved = warnings_logger.propagate, warnings_logger.level
    console = logging.StreamHandler(sys.stderr) if config.verbose > 0 else None
    warnings_logger.propagate = False
    warnings_logger.setLevel(logging.WARNING)
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
    if console is not None:
        warnings_logger.addHandler(console)
    quiet_progress = _NotProgress() if config.show_progress else None
    mvpa_handlers = list(logging.getLogger("mvpa_flows").handlers)
    for other in mvpa_handlers if quiet_progress else []:
        if other is not handler:
            other.addFilter(quiet_progress)
    logging.captureWarnings(True)
    try:
        yield config.log_file
    finally:
        logging.captureWarnings(False)
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        if console is not None:
            warnings_logger.removeHandler(console)
        for other in mvpa_handlers if quiet_progress else []:
            other.removeFilter(quiet_progress)
        warnings_logger.propagate, warnings_logger.level = saved
        handler.close()


def count_warnings(log_file):
    """Number of warnings recorded in ``log_file``."""
    if not log_file or not Path(log_file).is_file():
        return 0
    return sum(" | WARNING | " in line for line in Path(log_file).read_text().splitlines())


def note_warnings(log_file):
    """One terminal line saying how many warnings the log holds (none: nothing)."""
    n = count_warnings(log_file)
    if n:
        print(
            f"mvpa-flows: {n} warning{'s' if n > 1 else ''} recorded in {log_file} (listed "
            "in the reports' Warnings section).",
            file=sys.stderr,
        )

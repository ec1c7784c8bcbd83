"""Entry point of the ``mvpa-flows`` BIDS-App."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mvpa_flows.cli.parser import EXIT_USAGE, UsageError, build_parser, cli_message
from mvpa_flows.core.errors import InputValidationError, NoInputFilesError

#: BIDS-Apps execution draft exit codes.
EXIT_OK, EXIT_FAILURE, EXIT_VALIDATION, EXIT_LEVEL, EXIT_NO_FILES = 0, 1, 16, 17, 18

logger = logging.getLogger("mvpa_flows")


def _inside(path, root):
    path, root = Path(path).resolve(), Path(root).resolve()
    return path == root or root in path.parents


def check_paths(config):
    """Validate the analysis level and the folders before any work.

    Refuses (usage error) an output or work directory that is, or is inside, the raw
    dataset (outside its ``derivatives/``) or any input derivatives folder, and one
    that cannot be written.
    """
    from mvpa_flows.cli.config import LEVELS

    if config.analysis_level not in LEVELS:
        raise _LevelError(
            f"Unknown analysis level {config.analysis_level!r}; choose 'participant' "
            "(per-subject maps) or 'group' (hyperalignment, group statistics)."
        )
    if not config.bids_dir.is_dir():
        raise InputValidationError(
            f"BIDS_DIR {config.bids_dir} does not exist or is not a folder; give the raw "
            "BIDS dataset (where the _events.tsv files live)."
        )
    if not config.fmriprep_dir.is_dir():
        raise NoInputFilesError(
            f"The fMRIPrep derivatives folder {config.fmriprep_dir} does not exist; point "
            "to it with -d fmriprep=PATH (default BIDS_DIR/derivatives/fmriprep)."
        )
    for what, folder in (("OUTPUT_DIR", config.output_dir), ("-w/--work-dir", config.work_dir)):
        _refuse_inside_inputs(what, folder, config.input_dirs)
    from mvpa_flows.cli.config import GROUP_ANALYSES, PARTICIPANT_ANALYSES

    allowed = PARTICIPANT_ANALYSES if config.analysis_level == "participant" else GROUP_ANALYSES
    wrong = [a for a in config.analyses if a not in allowed]
    if wrong:
        raise UsageError(
            f"--analyses {wrong} cannot run at the {config.analysis_level} level; "
            f"choose from {list(allowed)}."
        )
    if (
        config.per_session
        and config.analysis_level == "group"
        and ("hyperalignment" in config.analyses)
    ):
        raise UsageError(
            "--per-session applies to the participant level and group searchlight "
            "statistics; hyperalignment pools sessions (name runs SESSION:RUN in "
            "--ha-train-runs/--ha-test-runs, or choose one with --session-label)."
        )
    for what, folder in (("OUTPUT_DIR", config.output_dir), ("-w/--work-dir", config.work_dir)):
        _check_writable(what, folder)


def _refuse_inside_inputs(what, folder, input_dirs):
    """Inputs are never written: refuse ``folder`` inside an input dataset."""
    folder = Path(folder).resolve()
    for name, root in input_dirs.items():
        root = Path(root).resolve()
        if name == "raw":
            derivatives = root / "derivatives"
            if not _inside(folder, root) or (
                _inside(folder, derivatives) and folder != derivatives
            ):
                continue
            where = "BIDS_DIR" if folder == root else "inside BIDS_DIR"
            fix = (
                f"write derivatives elsewhere, or under {derivatives}/mvpa_flows"
                if what == "OUTPUT_DIR"
                else "keep the work directory outside the dataset (e.g. -w /scratch/work)"
            )
            raise UsageError(
                f"{what} {folder} is {where} ({root}); inputs are never written: {fix}."
            )
        if _inside(folder, root):
            where = "the" if folder == root else "inside the"
            raise UsageError(
                f"{what} {folder} is {where} input derivatives folder {root} ({name}); inputs "
                f"are never written. Choose a folder outside it, e.g. {root.parent}/mvpa_flows."
            )


def _check_writable(what, folder):
    import tempfile

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mvpa_flows-write-test-"):
            pass
    except OSError as err:
        raise UsageError(
            f"{what} {folder} cannot be written ({err.strerror or err}); choose a folder you "
            "can write to, or fix its permissions."
        ) from None


class WorkDirLock:
    """An exclusive lock on the work directory for the length of a run.

    Two runs sharing one Nipype work directory would overwrite each other's nodes; the
    second one stops at once with a message instead. The lock is released when the run
    ends (or the process dies).
    """

    def __init__(self, work_dir):
        self.path = Path(work_dir) / ".mvpa_flows.lock"
        self.handle = None

    def __enter__(self):
        import fcntl
        import os

        self.handle = open(self.path, "a+")  # noqa: SIM115 - held for the run
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise UsageError(
                f"The work directory {self.path.parent} is in use by another mvpa-flows run "
                f"({holder}). Runs sharing a work directory would overwrite each other's "
                "intermediate files: give each concurrent run its own -w/--work-dir (e.g. "
                "one per subject), or wait for the other run to finish."
            ) from None
        except OSError:  # file systems without flock (some network mounts): no lock
            return self
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()}\n")
        self.handle.flush()
        return self

    def __exit__(self, *exc):
        if self.handle is not None and not self.handle.closed:
            self.handle.close()
        return False


class _LevelError(Exception):
    pass


def _setup_logging(verbose):
    from nipype import config as ncfg
    from nipype import logging as nlogging

    level = {0: "WARNING", 1: "INFO"}.get(verbose, "DEBUG")
    ncfg.set("logging", "workflow_level", level)
    ncfg.set("logging", "interface_level", level)
    ncfg.set("logging", "utils_level", {0: "ERROR", 1: "WARNING"}.get(verbose, "DEBUG"))
    nlogging.update_logging(ncfg)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s | %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO if verbose == 0 else logging.DEBUG)


def main(argv=None):
    """Run the BIDS-App; return a BIDS-Apps exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors (64), --help and --version (0)
        return stop.code
    level = getattr(args, "analysis_level", None)
    try:
        from mvpa_flows.cli.config import build_config

        config = build_config(args, ["mvpa-flows", *argv])
        check_paths(config)
        _setup_logging(config.verbose)
        if not config.work_dir_given:
            logger.info("Work directory: %s", config.work_dir)
        from mvpa_flows.cli.log import note_warnings, run_log

        with WorkDirLock(config.work_dir), run_log(config):
            if config.analysis_level == "participant":
                from mvpa_flows.cli.participant import run_participant as run_level
            else:
                from mvpa_flows.cli.group import run_group as run_level
            code = run_level(config)
            note_warnings(config.log_file)
            return code
    except UsageError as err:
        print(f"mvpa-flows: error: {cli_message(err, level)}", file=sys.stderr)
        return EXIT_USAGE
    except _LevelError as err:
        print(f"mvpa-flows: error: {err}", file=sys.stderr)
        return EXIT_LEVEL
    except NoInputFilesError as err:
        print(f"mvpa-flows: no input files: {cli_message(err, level)}", file=sys.stderr)
        return EXIT_NO_FILES
    except InputValidationError as err:
        print(f"mvpa-flows: invalid input: {cli_message(err, level)}", file=sys.stderr)
        return EXIT_VALIDATION


if __name__ == "__main__":
    sys.exit(main())

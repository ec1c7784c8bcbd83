"""Entry point of the ``mvpa-flows`` BIDS-App."""

from __future__ import annotations

import logging
import sys

from mvpa_flows.cli.parser import EXIT_USAGE, UsageError, build_parser
from mvpa_flows.core.errors import InputValidationError, NoInputFilesError

#: BIDS-Apps execution draft exit codes.
EXIT_OK, EXIT_FAILURE, EXIT_VALIDATION, EXIT_LEVEL, EXIT_NO_FILES = 0, 1, 16, 17, 18

logger = logging.getLogger("mvpa_flows")


def check_paths(config):
    """Validate the analysis level and the folders before any work."""
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
    out, raw = config.output_dir.resolve(), config.bids_dir.resolve()
    if out == raw or (raw in out.parents and (raw / "derivatives") not in out.parents):
        raise UsageError(
            f"OUTPUT_DIR {config.output_dir} is {'BIDS_DIR' if out == raw else 'inside BIDS_DIR'}"
            f" ({config.bids_dir}); write derivatives elsewhere, or under "
            f"{config.bids_dir / 'derivatives'}/mvpa_flows."
        )
    from mvpa_flows.cli.config import GROUP_ANALYSES, PARTICIPANT_ANALYSES

    allowed = PARTICIPANT_ANALYSES if config.analysis_level == "participant" else GROUP_ANALYSES
    wrong = [a for a in config.analyses if a not in allowed]
    if wrong:
        raise UsageError(
            f"--analyses {wrong} cannot run at the {config.analysis_level} level; "
            f"choose from {list(allowed)}."
        )


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
    try:
        from mvpa_flows.cli.config import build_config

        config = build_config(args, ["mvpa-flows", *argv])
        check_paths(config)
        _setup_logging(config.verbose)
        from mvpa_flows.cli.log import note_warnings, run_log

        with run_log(config):
            if config.analysis_level == "participant":
                from mvpa_flows.cli.participant import run_participant as run_level
            else:
                from mvpa_flows.cli.group import run_group as run_level
            code = run_level(config)
            note_warnings(config.log_file)
            return code
    except UsageError as err:
        print(f"mvpa-flows: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except _LevelError as err:
        print(f"mvpa-flows: error: {err}", file=sys.stderr)
        return EXIT_LEVEL
    except NoInputFilesError as err:
        print(f"mvpa-flows: no input files: {err}", file=sys.stderr)
        return EXIT_NO_FILES
    except InputValidationError as err:
        print(f"mvpa-flows: invalid input: {err}", file=sys.stderr)
        return EXIT_VALIDATION


if __name__ == "__main__":
    sys.exit(main())

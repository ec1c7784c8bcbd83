"""The group level."""

from mvpa_flows.cli.parser import UsageError


def run_group(config):
    """Run the group level analyses chosen in ``config.analyses``."""
    raise UsageError(
        f"The group level analyses {config.analyses} are not available in this version; "
        "run the participant level."
    )

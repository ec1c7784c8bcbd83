"""Exceptions shared by every layer.

Messages follow one rule: name the file or parameter, say what was expected and what
was found, and say how to fix it.
"""


class InputValidationError(ValueError):
    """The input data do not meet what an analysis needs (BIDS-Apps exit code 16)."""


class NoInputFilesError(InputValidationError):
    """A query or filter selected no files (BIDS-Apps exit code 18)."""

"""The base of every error a user can fix from its message alone.

It lives at the bottom of the package so that any layer (data, models, certification, utils) can
raise it without importing the console scripts; ``ddsx.cli.errors`` shows it as one clean line with
exit code 2.
"""


class DDSXError(Exception):
    """An error the user can fix from its message alone: shown without traceback, exit code 2."""


class ModelFileError(DDSXError, ValueError):
    """A checkpoint or model folder that is not what ddsx expects (missing parts, wrong architecture,
    a file that fails the safe load). Raised by the code that reads such files, so it is told apart
    from a bug by its type, wherever that code lives."""

"""Errors raised by ddsx data modules when dataset files are missing or malformed.

Both derive from `DatasetError`, so callers can catch one type; they also derive from the builtin that
fits (FileNotFoundError / ValueError) so generic handlers keep working.
"""

from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """Base class of every dataset problem ddsx reports."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset folder or file is missing. The message names the path, the layout and the source."""

    def __init__(
        self, name: str, missing: Path | str, layout: str, source: str, data_dir: Path | str | None = None
    ) -> None:
        self.path = Path(missing)
        if data_dir is not None:  # show the user's own paths in the layout tree
            layout = layout.replace("<data_dir>", str(data_dir))
            source = source.replace("<data_dir>", str(data_dir))
        message = (
            f"{name}: expected data at '{missing}', which does not exist.\n"
            f"ddsx never downloads data. Expected layout:\n{layout.rstrip()}\n"
            f"Where to get it: {source.rstrip()}\n"
            "Point `dataset.data_dir=...` (or the DDSX_DATA environment variable) at the folder that "
            "holds it."
        )
        super().__init__(message)


class DatasetFormatError(DatasetError, ValueError):
    """A dataset file exists but does not have the expected format."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"malformed dataset file '{path}': {problem}")


class DatasetConfigError(DatasetError, TypeError):
    """A dataset config that does not build a datamodule ddsx can use; the message names the config."""

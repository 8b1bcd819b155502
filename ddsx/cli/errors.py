"""Expected errors: one clean message and exit code 2, the traceback only under ``--debug``.

A user who points ddsx at missing data, refuses-to-resume a result file, asks for a GPU the machine
does not have or presses Ctrl-C needs the cause, not 30-120 lines of traceback around it. Every
console script's ``main`` is wrapped:

    @console_script          # --debug, errors before the job starts (config composition)
    @hydra.main(...)
    @expected_errors         # errors inside the job, also written to the run's log file
    def main(cfg): ...

Expected errors are :class:`DDSXError` (subclass it for new ones) and the existing error types that
:func:`expected_message` recognises. Anything else is a bug and keeps its full traceback (exit 1).
``--debug`` on the command line, or ``HYDRA_FULL_ERROR=1``, shows the traceback of expected errors too.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ddsx.cli.config_checks import check_overrides
from ddsx.cli.run_folder import remove_if_only_bookkeeping
from ddsx.errors import DDSXError
from ddsx.sweeps import in_multirun_job
from ddsx.utils.warnings import silence_known_warnings

EXIT_CODE = 2
DEBUG_FLAG = "--debug"
DEBUG_ENV = "DDSX_DEBUG"
DEVICE_HINT = "set trainer.accelerator=cpu (and trainer.devices=<processes>) to run on the CPU"
# Lightning (Trainer and Fabric) refuses an accelerator the machine lacks with these messages.
_DEVICE_MESSAGES = ("No supported gpu backend found", "can not run on your system")


class _ReportedExit(SystemExit):
    """The exit after a message was printed: outer wrappers let it pass unchanged."""


def expected_message(error: BaseException) -> str | None:
    """The message to show for an expected error, or None for an unexpected one (a bug)."""
    # Imported here: the wrapper must work (and --help must stay fast) whatever fails to import.
    from hydra.errors import CompactHydraException, InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    from ddsx.certification.result_file import ResultFileError
    from ddsx.certification.settings import InvalidSettingError
    from ddsx.data.errors import DatasetError

    interrupted = _interrupt_of(error)
    if interrupted is not None:
        detail = str(interrupted).strip()
        return "interrupted (Ctrl-C)" + (f": {detail}" if detail else "")
    if isinstance(error, InstantiationException):
        # A constructor refused what the config gave it: show the constructor's own message.
        cause, key = error.__cause__, _full_key(str(error))
        inner = expected_message(cause) if cause is not None else None
        if inner is not None:
            return f"{inner} (building {key})" if key else inner
        if isinstance(cause, ValueError):
            return f"invalid setting {key}: {cause}" if key else f"invalid setting: {cause}"
        return None
    if isinstance(error, DDSXError | DatasetError | ResultFileError | InvalidSettingError):
        return str(error)
    if isinstance(error, CompactHydraException | OmegaConfBaseException):
        # Hydra appends its config search path to a missing group option: noise to the user.
        return _with_hint(str(error).split("\nConfig search path:")[0].strip())
    if isinstance(error, FileNotFoundError):
        # ddsx's own FileNotFoundErrors name the path and what belongs there; the OS's name the path.
        return str(error) if error.filename is None else f"no such file or folder: {error.filename}"
    if any(m in str(error) for m in _DEVICE_MESSAGES):
        return f"the requested device does not exist on this machine ({str(error).strip()}): {DEVICE_HINT}"
    return None


# Config errors whose cure the message does not say: (words that identify it, what to add).
_HINTS = (
    (
        ("hydra/launcher/", "joblib"),
        "the local and SLURM launchers are an extra: pip install 'ddsx[launchers]'",
    ),
    (
        ("hydra/launcher/", "submitit"),
        "the local and SLURM launchers are an extra: pip install 'ddsx[launchers]'",
    ),
    (("Multiple values for sweep",), "sweep is in ddsx-train's defaults list: write sweep=<name>, without +"),
)


def _with_hint(message: str) -> str:
    """``message`` plus the hint of the first of _HINTS whose words it contains."""
    for words, hint in _HINTS:
        if all(word in message for word in words):
            return f"{message} ({hint})"
    return message


# Hydra's mode flags; it accepts one of them per call (else a ValueError from its internals).
_MODE_FLAGS = {
    "--multirun": "-m",
    "-m": "-m",
    "--cfg": "--cfg",
    "-c": "--cfg",
    "--info": "--info",
    "-i": "--info",
    "--run": "--run",
    "-r": "--run",
    "--shell-completion": "--shell-completion",
    "-sc": "--shell-completion",
}


class CombinedModesError(DDSXError):
    """Two of Hydra's modes (-m, --cfg, --info, ...) on one command line."""


def refuse_combined_hydra_modes(arguments: list[str]) -> None:
    """CombinedModesError naming the flags when the command line asks Hydra for two modes at once."""
    modes = list(dict.fromkeys(_MODE_FLAGS[a] for a in arguments if a in _MODE_FLAGS))
    if len(modes) > 1:
        hint = " (drop -m to see one job's config: the grid's first values, e.g. certify.sigma=0.25)"
        raise CombinedModesError(
            f"{' and '.join(modes)} cannot be combined, Hydra runs one mode per command"
            + (hint if "-m" in modes and "--cfg" in modes else "")
        )


def console_script(function: Callable[..., Any]) -> Callable[..., Any]:
    """Outermost wrapper of an entry point: silence the known harmless warnings, strip ``--debug``,
    turn expected errors into exit code 2.

    Over a Hydra app it also catches what fails before the job starts (a config group that does not
    exist, an override that does not parse): Hydra is told to re-raise, and this wrapper decides.
    """

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        silence_known_warnings()  # the one place every console script passes through first
        saved = {key: os.environ.get(key) for key in ("HYDRA_FULL_ERROR", DEBUG_ENV)}
        if DEBUG_FLAG in sys.argv[1:] or saved["HYDRA_FULL_ERROR"] == "1":
            os.environ[DEBUG_ENV] = "1"  # in the environment: DDP worker processes inherit it
        sys.argv[1:] = [arg for arg in sys.argv[1:] if arg != DEBUG_FLAG]
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            refuse_combined_hydra_modes(sys.argv[1:])
            return function(*args, **kwargs)
        except BrokenPipeError:
            # `ddsx-train --help | head`: the reader left; say nothing more (and nothing at exit).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise _ReportedExit(1) from None
        except (Exception, KeyboardInterrupt, SystemExit) as error:
            _exit_if_expected(error, _prog(function))
            raise
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    return wrapped


def expected_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """Wrapper of a Hydra task function (under ``@hydra.main``): expected errors end the job with
    exit code 2 before Hydra reports a failed job, and their message also goes to the run's log file."""

    @functools.wraps(task)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        silence_known_warnings()  # again: a submitit job runs the task in a process of its own
        try:
            if args and isinstance(args[0], DictConfig):
                check_overrides(args[0])  # unknown +fields and ill-typed values, before any work
            return task(*args, **kwargs)
        except (Exception, KeyboardInterrupt, SystemExit) as error:
            if expected_message(error) is not None:
                remove_if_only_bookkeeping()  # a failed run that wrote nothing leaves no folder
            _exit_if_expected(error, _prog(task), to_log_file=True)
            raise

    return wrapped


def _exit_if_expected(error: BaseException, prog: str, to_log_file: bool = False) -> None:
    """Print the one message and exit 2 for an expected error (unless debugging); return otherwise."""
    if isinstance(error, _ReportedExit) or (isinstance(error, SystemExit) and _interrupt_of(error) is None):
        return  # a deliberate exit (ours included) passes through unchanged
    message = expected_message(error)
    if message is None or os.environ.get(DEBUG_ENV) == "1":
        return
    if to_log_file:
        record = logging.LogRecord(prog, logging.ERROR, __file__, 0, message, None, None)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)
    print(f"{prog}: error: {message} [--debug shows the traceback]", file=sys.stderr, flush=True)
    if to_log_file and in_multirun_job() and _interrupt_of(error) is None:
        # An exit here would end the whole multirun; an exception is recorded as this job's failure
        # and the sweeper goes on with the other jobs (ddsx.sweeps.sweeper).
        raise JobFailedError(message) from error
    raise _ReportedExit(EXIT_CODE)


class JobFailedError(DDSXError):
    """An expected error ended one job of a multirun (its message was printed)."""


def _prog(function: Callable[..., Any]) -> str:
    """``ddsx-train`` for ddsx.cli.train, also when run as ``python -m ddsx.cli.train``."""
    module = function.__module__
    name = Path(sys.argv[0]).stem if module == "__main__" else module.rsplit(".", 1)[-1]
    return "ddsx-" + name


def _interrupt_of(error: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt behind ``error``: itself, or the one Lightning turned into ``sys.exit(1)``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _full_key(message: str) -> str:
    """The ``full_key: <key>`` Hydra appends to instantiation errors, or ''."""
    for line in message.splitlines():
        if line.strip().startswith("full_key:"):
            return line.split(":", 1)[1].strip()
    return ""

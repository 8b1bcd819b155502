"""A sweeper whose multirun survives failing jobs: every job runs, then one summary says which failed.

Hydra's basic sweeper re-raises the first failed job's exception as soon as its batch returns, so
later batches never run and the exit message names one job. This one launches every batch, writes
``multirun_summary.txt`` (job number, status, overrides, error) into the sweep folder, logs one line
per failed job, and ends with :class:`MultirunFailedError` naming them (exit code 2 through
``console_script``) when any failed. Jobs are the union of ``grids`` (see ``ddsx.sweeps.grid``);
``params`` (Hydra's usual single grid) still works.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from ddsx.errors import DDSXError
from ddsx.sweeps.grid import expand_grids

log = logging.getLogger(__name__)
# Tab-separated, but not .tsv: ddsx-report reads .tsv files below a sweep folder as result files.
SUMMARY_FILE = "multirun_summary.txt"


class MultirunFailedError(DDSXError):
    """Some jobs of a multirun failed (the others finished); the message lists the failed ones."""


class IsolatingSweeper(Sweeper):
    """On Hydra's public Sweeper interface (setup, sweep, validate_batch_is_legal) only."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: Mapping[str, str] | None = None,
        grids: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})
        self.grids = [dict(grid) for grid in grids or []]

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def jobs(self, arguments: Sequence[str]) -> list[list[str]]:
        """Every job's overrides: the grids (or ``params`` as one grid) with the command line applied."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        grids = self.grids or [{str(k): str(v) for k, v in self.params.items()}]
        return expand_grids(grids, list(arguments), parser)

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        jobs = self.jobs(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        size = self.max_batch_size if self.max_batch_size and self.max_batch_size > 0 else len(jobs)
        # A sweep prints nothing else until its jobs end (minutes): say where each job's log grows.
        log.info(
            "multirun: %d jobs; each job's log: %s",
            len(jobs),
            sweep_dir / "<job>" / f"{self.config.hydra.job.name}.log",
        )
        returns: list[Sequence[JobReturn]] = []
        for start in range(0, len(jobs), size):
            batch = jobs[start : start + size]
            self.validate_batch_is_legal(batch)  # composition errors before any job of the batch runs
            returns.append(self.launch_isolated(batch, start))
        results = [result for batch in returns for result in batch]
        failed = report_failures(results, jobs, sweep_dir)
        if failed:
            raise MultirunFailedError(
                f"{len(failed)} of {len(results)} jobs failed ({len(results) - len(failed)} finished): "
                + "; ".join(failed)
                + f". Summary: {sweep_dir / SUMMARY_FILE}"
            )
        log.info("multirun: all %d jobs finished (%s)", len(results), sweep_dir / SUMMARY_FILE)
        return returns

    def launch_isolated(self, batch: list[list[str]], start: int) -> list[JobReturn]:
        """The returns of one batch, also when a job's process dies (kill -9, an out-of-memory kill).

        A job that raises is a failed JobReturn, but a dead process makes the launcher itself raise
        for the whole batch (joblib's TerminatedWorkerError, submitit's UncompletedJobError) and the
        batch's returns are lost. Then each job of the batch is launched alone: the living ones run
        (one that had finished runs again; ddsx jobs resume from their own folder) and a job whose
        own launch fails is recorded as failed with the launcher's error, which names the signal.
        """
        try:
            return list(self.launcher.launch(batch, initial_job_idx=start))
        except Exception as error:
            if len(batch) == 1:
                failed = JobReturn(overrides=batch[0], status=JobStatus.FAILED)
                failed.return_value = error
                return [failed]
            log.warning(
                "multirun: jobs #%d-#%d ended with %s (a job's process died?); launching them one at a time",
                start,
                start + len(batch) - 1,
                type(error).__name__,
            )
            return [
                result for i, job in enumerate(batch) for result in self.launch_isolated([job], start + i)
            ]


def job_error(result: JobReturn) -> str:
    """``Type: message`` of a failed job's exception (first line), '' for a finished job."""
    if result.status != JobStatus.FAILED:
        return ""
    error = failure(result)
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    signals = sorted(set(re.findall(r"\bSIG[A-Z]+\b", str(error))) - set(re.findall(r"\bSIG[A-Z]+\b", text)))
    if signals:  # a dead process: joblib names the signal further down its message
        text = f"killed by {', '.join(signals)}: {text}"
    state = re.search(r"has not produced any output \(state: [^)]*\)", str(error))
    if state and state.group(0) not in text:  # submitit: the job's process ended without a result
        text = f"{text} {state.group(0)}"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def failure(result: JobReturn) -> BaseException:
    """A failed job's exception through JobReturn's public ``return_value``, which raises it (and
    writes a line to stderr that the summary and the log already give, so it is swallowed)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            result.return_value  # noqa: B018 - raises the failed job's exception
    except BaseException as error:
        return error
    raise AssertionError(f"job {result.overrides} did not fail")


def report_failures(
    results: Sequence[JobReturn], jobs: Sequence[Sequence[str]], sweep_dir: Path
) -> list[str]:
    """Write the summary file and log the failed jobs; returns one ``#num overrides (error)`` per failure."""
    lines, failed = ["job\tstatus\toverrides\terror\n"], []
    for number, (result, overrides) in enumerate(zip(results, jobs, strict=True)):
        status = "failed" if result.status == JobStatus.FAILED else "finished"
        error = job_error(result).replace("\t", " ")
        lines.append(f"{number}\t{status}\t{' '.join(overrides)}\t{error}\n")
        if error:
            failed.append(f"#{number} ({' '.join(overrides)}): {error}")
            log.error("multirun job #%d failed (%s): %s", number, " ".join(overrides), error)
    (sweep_dir / SUMMARY_FILE).write_text("".join(lines))
    return failed

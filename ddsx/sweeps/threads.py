"""Threads per job in a local multirun, so that jobs running side by side do not oversubscribe cores.

PyTorch starts one intra-op thread per core in every process. With the joblib launcher (n_jobs at once)
or the submitit launchers (cpus_per_task each), every job doing so would ask for n_jobs x cores
threads: each job gets its share instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ddsx.sweeps import in_multirun_job
from ddsx.utils.logging import get_logger

log = get_logger(__name__)


def threads_per_job(launcher: Mapping[str, Any], cores: int) -> int | None:
    """The threads a job of ``launcher`` (its Hydra config) should use; None: no limit to set."""
    cpus = launcher.get("cpus_per_task")
    if isinstance(cpus, int) and cpus > 0:
        return cpus
    jobs = launcher.get("n_jobs")
    if isinstance(jobs, int) and jobs != 0:
        at_once = cores if jobs < 0 else jobs  # joblib: -1 means one job per core
        return max(1, cores // at_once)
    return None


def limit_threads() -> int | None:
    """In a multirun job: set torch's thread count to this job's share of the cores; returns it."""
    import torch
    from hydra.core.hydra_config import HydraConfig

    if not in_multirun_job():
        return None
    threads = threads_per_job(HydraConfig.get().launcher, os.cpu_count() or 1)
    if threads is not None:
        torch.set_num_threads(threads)
        log.info("multirun job: %d thread(s) (its share of %d cores)", threads, os.cpu_count() or 1)
    return threads

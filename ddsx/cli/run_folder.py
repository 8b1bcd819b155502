"""A run that fails with an expected error before writing anything leaves no run folder behind.

Hydra creates ``outputs/<app>/<time>_<task>/`` (with ``.hydra/`` and the log file) before the job
starts, so a missing checkpoint, a missing dataset or a GPU the machine lacks would each leave a
folder with nothing in it but Hydra's own files. After such an error the folder is removed when it
holds only those (and the resolved config ddsx writes first); a folder with anything else in it (a
checkpoint, a result file, logs of a run it resumes) is kept. Multirun jobs keep their folders: the
sweep's summary points to their logs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# What a run folder holds before the job has done anything: Hydra's .hydra/ and log, ddsx's config.
_BOOKKEEPING = {".hydra", "config_resolved.yaml"}  # the name save_resolved_config writes


def remove_if_only_bookkeeping() -> Path | None:
    """Remove the running single-run job's folder if it holds nothing but bookkeeping; returns it then."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return None
    config = HydraConfig.get()
    folder = Path(config.runtime.output_dir)
    log_file = f"{config.job.name}.log"
    if not folder.is_dir() or any(p.name not in _BOOKKEEPING | {log_file} for p in folder.iterdir()):
        return None
    shutil.rmtree(folder, ignore_errors=True)
    if folder.parent.name == config.job.name and folder.parent.parent.name == "outputs":
        for parent in (folder.parent, folder.parent.parent):  # the default outputs/<app>/, when now empty
            try:
                parent.rmdir()
            except OSError:
                break
    return folder

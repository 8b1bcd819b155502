"""A minimal Hydra app for the sweeper's tests: job ``x=kill`` dies of SIGKILL (as an out-of-memory
kill would end it), every other job writes ``done.txt`` in its folder."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig

from ddsx.cli.errors import console_script, expected_errors

# x defaults to null so that ddsx's type check of overrides lets the string "kill" through.
ConfigStore.instance().store(name="kill_app", node={"x": None})


@console_script
@hydra.main(version_base="1.3", config_path=None, config_name="kill_app")
@expected_errors
def main(cfg) -> None:
    if cfg.x == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    Path(HydraConfig.get().runtime.output_dir, "done.txt").write_text(str(cfg.x))


if __name__ == "__main__":
    main()

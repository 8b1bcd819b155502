"""Console scripts: ddsx-train, ddsx-certify, ddsx-denoiser (Hydra apps) and ddsx-report."""

import os
from pathlib import Path

# An absolute path: Hydra resolves a relative config_path against the *calling* module, which for a
# console-script entry point is not this file's folder. The configs live in the repository's conf/,
# so ddsx is installed from a checkout in editable mode (make install); DDSX_CONF_DIR points elsewhere.
CONF_DIR = os.environ.get("DDSX_CONF_DIR", str(Path(__file__).resolve().parents[2] / "conf"))

if not Path(CONF_DIR, "ddsx_train.yaml").is_file():
    raise RuntimeError(
        f"ddsx's Hydra configs were not found in {CONF_DIR}. Install ddsx from its repository in editable "
        "mode (`make install` or `pip install -e .`), or set DDSX_CONF_DIR to the repository's conf/ folder."
    )

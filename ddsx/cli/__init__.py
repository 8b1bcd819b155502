"""Console scripts: ddsx-train, ddsx-certify, ddsx-denoiser (Hydra apps) and ddsx-report."""

from pathlib import Path

# An absolute path: Hydra resolves a relative config_path against the *calling* module, which for a
# console-script entry point is not this file's folder.
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

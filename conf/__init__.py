"""ddsx's Hydra configs. A wheel installs this folder as the package ddsx.conf (see setup.py), which
Hydra reads through pkg://ddsx.conf; this file is what makes it an importable package."""

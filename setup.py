"""Only what pyproject.toml cannot say: the repository's top-level conf/ ships inside the package as
ddsx/conf (read through Hydra's pkg://ddsx.conf), and the DDSX_CONF_DIR search-path plugin; and
setuptools' build folder outside the checkout (`pip install <checkout>` would leave build/ in it)."""

import hashlib
import tempfile
from pathlib import Path

from setuptools import find_namespace_packages, find_packages, setup

# One build folder per checkout (two checkouts building at once must not share one).
CHECKOUT = Path(__file__).resolve().parent
BUILD_BASE = (
    Path(tempfile.gettempdir()) / f"ddsx-build-{hashlib.sha1(str(CHECKOUT).encode()).hexdigest()[:12]}"
)
CONF_GROUPS = [f"ddsx.conf.{name}" for name in find_namespace_packages(where="conf")]

setup(
    packages=[
        *find_packages(include=["ddsx", "ddsx.*"]),
        "ddsx.conf",
        *CONF_GROUPS,
        "hydra_plugins.ddsx_user_conf",
        "hydra_plugins.ddsx_sweeper",
    ],
    package_dir={"ddsx.conf": "conf"},
    package_data={"ddsx.conf": ["*.yaml"], **{group: ["*.yaml"] for group in CONF_GROUPS}},
    options={"build": {"build_base": str(BUILD_BASE)}},
)

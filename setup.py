"""Only what pyproject.toml cannot say: the repository's top-level conf/ ships inside the package as
ddsx/conf (read through Hydra's pkg://ddsx.conf), and the DDSX_CONF_DIR search-path plugin."""

from setuptools import find_namespace_packages, find_packages, setup

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
)

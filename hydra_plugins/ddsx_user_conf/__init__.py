"""Hydra search-path plugin: ``DDSX_CONF_DIR`` names a user config folder searched before ddsx's own
configs, so it can add config groups and options or override ddsx's. Only ddsx's apps are affected."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class DDSXUserConfigDir(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        user_dir = os.environ.get("DDSX_CONF_DIR")
        if not user_dir:
            return
        from ddsx.cli import is_ddsx_config_source

        if not any(is_ddsx_config_source(element.path) for element in search_path.get_path()):
            return  # another Hydra application
        folder = Path(user_dir).expanduser().resolve()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"DDSX_CONF_DIR={user_dir} is not a folder (expected config groups in it)"
            )
        search_path.prepend(provider="ddsx-user (DDSX_CONF_DIR)", path=f"file://{folder}")

"""Shared fixtures: compose the real Hydra configs exactly as the console scripts do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# Two cores shared by the whole suite: one intra-op thread per test keeps runs predictable.
torch.set_num_threads(1)


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """The config the app ``config_name`` would see for ``overrides``, with ``${hydra:...}`` usable."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    # What @hydra.main does at launch: fix the run folder, then make ${hydra:...} resolvable.
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


# A certification small enough for the unit tests: the digits split, a few dozen samples per example.
FAST_CERTIFY = [
    "dataset=digits",
    "certify.n0=4",
    "certify.n=40",
    "certify.batch_size=40",
    "certify.progress=false",
]


@pytest.fixture
def compose_certify(tmp_path: Path) -> Callable[..., DictConfig]:
    def _compose(*overrides: str) -> DictConfig:
        return compose_config(
            "ddsx_certify", [f"paths.root_dir={tmp_path}", *FAST_CERTIFY, *overrides], tmp_path / "run"
        )

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    def _compose(*overrides: str) -> DictConfig:
        return compose_config("ddsx_train", [f"paths.root_dir={tmp_path}", *overrides], tmp_path / "run")

    yield _compose
    GlobalHydra.instance().clear()


def tiny_unet(sample_size: int, seed: int = 0, **overrides):
    """A seeded two-level diffusers UNet2DModel on 1-channel images: a real DDS denoiser in milliseconds.
    ``overrides`` change any of its config fields."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    config = dict(
        sample_size=sample_size,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 8),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    return UNet2DModel(**(config | overrides))

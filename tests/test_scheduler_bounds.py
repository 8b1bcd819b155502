"""A denoiser folder's scheduler_config.json is a hostile file: values out of sane bounds are refused
naming the field and the file, before any schedule is computed (num_train_timesteps 30,000,000 once
took 31 s and 2.3 GB and fed t* = 14.9 M to a UNet trained on 1,000 steps; 1e10 asked for 80 GB)."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest

from ddsx.denoisers.load import load_diffusers_denoiser
from ddsx.denoisers.schedule import (
    MAX_TRAIN_TIMESTEPS,
    SchedulerConfigError,
    alphas_cumprod_from_scheduler_config,
)
from ddsx.errors import DDSXError
from tests import test_denoiser_load

pipeline_dir = test_denoiser_load.pipeline_dir  # a saved tiny DDPM pipeline (fixture)


def _rewrite(folder: Path, **fields) -> Path:
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))
    return path


@pytest.mark.parametrize("steps", [30_000_000, 10**10, MAX_TRAIN_TIMESTEPS + 1, 0, -5, 2.5, True, "1000"])
def test_num_train_timesteps_out_of_bounds_is_refused_fast_naming_field_and_file(pipeline_dir, steps) -> None:
    path = _rewrite(pipeline_dir, num_train_timesteps=steps)
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(SchedulerConfigError, match="num_train_timesteps") as error:
        load_diffusers_denoiser(pipeline_dir, sigma=0.5)
    seconds, (_, peak) = time.perf_counter() - started, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert str(path) in str(error.value) and isinstance(error.value, DDSXError)  # one line, exit 2
    assert seconds < 5 and peak < 50e6


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("beta_start", -0.1),
        ("beta_end", 1.0),
        ("beta_end", 1e308),
        ("beta_start", "0.0001"),
        ("trained_betas", [0.1] * 3 + [1.5]),
        ("trained_betas", [0.1] * (MAX_TRAIN_TIMESTEPS + 1)),
        ("trained_betas", "0.1"),
    ],
)
def test_betas_out_of_bounds_are_refused_naming_the_field(field: str, value) -> None:
    with pytest.raises(SchedulerConfigError, match=field):
        alphas_cumprod_from_scheduler_config({"num_train_timesteps": 1000, field: value})


def test_a_config_that_is_no_json_object_is_refused_and_sane_ones_pass() -> None:
    with pytest.raises(SchedulerConfigError, match="JSON object"):
        alphas_cumprod_from_scheduler_config([1000])
    abar = alphas_cumprod_from_scheduler_config({"num_train_timesteps": MAX_TRAIN_TIMESTEPS})
    assert abar.numel() == MAX_TRAIN_TIMESTEPS
    assert alphas_cumprod_from_scheduler_config({"trained_betas": [0.1, 0.2]}).tolist() == pytest.approx(
        [0.9, 0.72]
    )

"""Noise blocks: what a generator yields must not depend on how it is cut into batches."""

from __future__ import annotations

import pytest
import torch

from ddsx.smoothing import example_generator, gaussian_batches
from ddsx.smoothing import noise as noise_module


@pytest.mark.parametrize("batch_size", [1, 3, 4, 5, 10, 37, 1000])
def test_noise_stream_is_the_same_for_every_batch_size(
    monkeypatch: pytest.MonkeyPatch, batch_size: int
) -> None:
    # Blocks of 4 samples, so batches cut blocks, glue several together, and straddle their ends.
    monkeypatch.setitem(noise_module.NOISE_BLOCK_ELEMENTS, "cpu", 64)
    shape, num = (1, 4, 4), 37
    assert noise_module.noise_block_size(shape) == 4
    generator = example_generator(0, 3)
    reference = torch.cat(
        [torch.randn((min(4, num - s), *shape), generator=generator) for s in range(0, num, 4)]
    )
    batches = list(gaussian_batches(shape, num, batch_size, generator=example_generator(0, 3)))
    assert all(len(b) <= batch_size for b in batches)
    assert torch.equal(torch.cat(batches), reference)


def test_zero_samples_yield_nothing() -> None:
    assert list(gaussian_batches((1, 2, 2), 0, 10)) == []

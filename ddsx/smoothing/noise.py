"""Gaussian noise for smoothing that depends only on (seed, example), never on how work is split.

Two rules make a certificate reproducible whatever the batch size, the process or the order of
work: each example gets its own generator seeded from (seed, idx), and a generator is always asked
for noise in the same fixed-size blocks (``noise_block_size``), which are then cut into or glued
into forward batches. Asking one generator for 1000 samples once or for 10 x 100 gives different
values on CUDA (Philox offsets) and for some sizes on CPU, so the block size must not follow the
batch size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

# Noise elements per generator call, by device type. CPU: 1 MiB of float32, so a block is still in
# cache when it is scaled, shifted and read by the first layer (measured: 2-3% faster than 16 MiB).
# Accelerators: 16 MiB, so that kernel launches stay rare. Streams differ between device types
# anyway (CPU and CUDA generators are different algorithms), so this costs no reproducibility.
NOISE_BLOCK_ELEMENTS = {"cpu": 1 << 18}
DEFAULT_NOISE_BLOCK_ELEMENTS = 1 << 22


# Which of an example's streams: the smoothing noise, or the noise a randomised denoiser draws for
# itself (ddsx.denoisers.vote: DensePure's reverse process, local smoothing's draws).
SMOOTHING_STREAM = 0
DENOISER_STREAM = 1


def example_seed(seed: int, idx: int, stream: int = SMOOTHING_STREAM) -> int:
    """A 63-bit seed for example ``idx`` of a run seeded ``seed``: hash-free, the same on every machine.

    numpy's SeedSequence mixes (seed, idx) so neighbouring examples get unrelated streams. Another
    ``stream`` of the same example is its SeedSequence child ``spawn_key=(stream,)``: independent of the
    smoothing stream (whose seed, without a spawn key, is what it has always been) and of every other.
    """
    if seed < 0 or idx < 0 or stream < 0:
        raise ValueError(f"seed, idx and stream must be >= 0, got seed={seed}, idx={idx}, stream={stream}")
    spawn_key = () if stream == SMOOTHING_STREAM else (int(stream),)
    sequence = np.random.SeedSequence([int(seed), int(idx)], spawn_key=spawn_key)
    state = sequence.generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def example_generator(
    seed: int, idx: int, device: torch.device | str = "cpu", stream: int = SMOOTHING_STREAM
) -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded by :func:`example_seed`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(example_seed(seed, idx, stream))
    return generator


def noise_block_size(sample_shape: tuple[int, ...] | torch.Size, device_type: str = "cpu") -> int:
    """How many noise samples of ``sample_shape`` each generator call draws (shape and device type only)."""
    elements = NOISE_BLOCK_ELEMENTS.get(device_type, DEFAULT_NOISE_BLOCK_ELEMENTS)
    return max(1, elements // max(1, math.prod(sample_shape)))


class GaussianStream:
    """``num`` standard normal samples of ``sample_shape`` from ``generator``, handed out in any sizes.

    The generator is always called with blocks of ``noise_block_size(sample_shape, device type)``
    samples (the last block of the ``num`` shorter), so the concatenation of everything taken is the
    same however it is cut, and nothing past what was taken (rounded up to a block) is drawn: a
    sequential test can stop early and still see a prefix of the fixed-n noise.
    """

    def __init__(
        self,
        sample_shape: tuple[int, ...] | torch.Size,
        num: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if num < 0:
            raise ValueError(f"need num >= 0, got num={num}")
        self.shape = tuple(sample_shape)
        self.num = int(num)
        self.generator, self.device, self.dtype = generator, device, dtype
        self.block = noise_block_size(self.shape, torch.device(device).type)
        self.drawn = 0  # samples taken from the generator so far
        self.taken = 0  # samples handed out so far
        self._pending: torch.Tensor | None = None  # drawn but not yet handed out, (k, *shape)

    @property
    def remaining(self) -> int:
        return self.num - self.taken

    def take(self, size: int) -> torch.Tensor:
        """The next ``size`` samples, (size, *sample_shape); may be a view of a block (callers may modify it)."""
        if not 1 <= size <= self.remaining:
            raise ValueError(f"can take 1..{self.remaining} samples, asked for {size}")
        pending = self._pending
        if pending is not None and len(pending) >= size:
            out, self._pending = pending[:size], (pending[size:] if len(pending) > size else None)
            self.taken += size
            return out
        out = torch.empty((size, *self.shape), device=self.device, dtype=self.dtype)
        filled = 0
        if pending is not None:
            filled = len(pending)
            out[:filled].copy_(pending)
            self._pending = None
        while filled < size:
            k = min(self.block, self.num - self.drawn)
            if filled + k <= size:
                # Draw straight into the batch: same values as a standalone draw of k samples.
                torch.randn((k, *self.shape), generator=self.generator, out=out[filled : filled + k])
                filled += k
            else:
                fresh = torch.randn(
                    (k, *self.shape), generator=self.generator, device=self.device, dtype=self.dtype
                )
                take = size - filled
                out[filled:].copy_(fresh[:take])
                self._pending = fresh[take:]
                filled = size
            self.drawn += k
        self.taken += size
        return out


def gaussian_batches(
    sample_shape: tuple[int, ...] | torch.Size,
    num: int,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Iterator[torch.Tensor]:
    """Yield standard normal tensors (b, *sample_shape) with b <= batch_size, ``num`` samples in all.

    The concatenation of everything yielded is the same for every ``batch_size`` (a
    :class:`GaussianStream` cut into batches). Yielded tensors may be views of a block; callers may
    modify them in place.
    """
    if num < 0 or batch_size < 1:
        raise ValueError(f"need num >= 0 and batch_size >= 1, got num={num}, batch_size={batch_size}")
    stream = GaussianStream(sample_shape, num, generator=generator, device=device, dtype=dtype)
    while stream.remaining:
        yield stream.take(min(batch_size, stream.remaining))

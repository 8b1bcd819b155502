"""The random number generators' state, so that a resumed run continues its noise stream.

Training noise (``torch.randn_like``), data shuffling and augmentation all draw from the global
generators. A checkpoint stores their state for every process; resuming restores each process's
own, so the run draws what an uninterrupted run would have drawn instead of repeating the stream
that ``seed_everything`` restarted. Everything is stored as tensors and plain containers, so the
checkpoint still loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def collect_rng_state() -> dict[str, Any]:
    """This process's generator states: torch (CPU and every CUDA device), numpy, Python's random."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            kind,
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what ``collect_rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(world_size: int) -> list[dict[str, Any]]:
    """Every process's state, indexed by global rank (collective: all processes must call it)."""
    own = collect_rng_state()
    if world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return [own]
    states: list[Any] = [None] * world_size
    dist.all_gather_object(states, own)
    # all_gather_object returns CUDA tensors on the NCCL backend; a checkpoint keeps them on the CPU.
    return [_to_cpu(s) for s in states]


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value

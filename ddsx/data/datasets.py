"""Torch Datasets whose items are (image FloatTensor (C,H,W) in [0,1], label int)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

Transform = Callable[[torch.Tensor], torch.Tensor]


class TensorImageDataset(Dataset):
    """Images kept as integers (uint8 (N,C,H,W)) and scaled to [0,1] per item, to keep memory low.

    Args:
        images: integer tensor (N,C,H,W) with values in [0, max_value].
        labels: int64 tensor (N,).
        max_value: the value that maps to 1.0 (255 for 8-bit images, 16 for sklearn digits).
        transform: optional map applied to the float (C,H,W) image (augmentation).
        indices: optional int array selecting (and numbering) the examples this dataset serves.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        max_value: float = 255.0,
        transform: Transform | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"expected images (N,C,H,W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        self.images, self.labels = images, labels.long()
        self.max_value, self.transform = float(max_value), transform
        self.indices = torch.as_tensor(
            np.arange(len(images)) if indices is None else np.asarray(indices), dtype=torch.long
        )

    def __len__(self) -> int:
        return len(self.indices)

    def label_at(self, i: int) -> int:
        """The label of example i, without scaling its image."""
        return int(self.labels[self.indices[i]])

    def fingerprint(self) -> str:
        """Which stored examples this dataset serves, in order, with their labels (a short hash):
        another split seed or split rule gives another fingerprint."""
        return _fingerprint(self.indices.numpy(), self.labels[self.indices].numpy())

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        x = self.images[j].to(torch.float32) / self.max_value  # (C,H,W) in [0,1]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[j])


class ImageFileDataset(Dataset):
    """Image files on disk with integer labels, decoded with PIL as RGB.

    Args:
        samples: list of (path, label).
        transform: maps a PIL image to a float tensor (3,H,W) in [0,1] (resize/crop/flip + to-tensor).
        source_indices: for a subset of a split, each position's index in the full split; then set as
            the attribute ``source_indices``, which certification numbers its rows (and seeds its noise) by.
    """

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        transform: Callable[[Image.Image], torch.Tensor],
        source_indices: Sequence[int] | None = None,
    ):
        self.samples, self.transform = samples, transform
        if source_indices is not None:
            if len(source_indices) != len(samples):
                raise ValueError(f"{len(source_indices)} source indices for {len(samples)} samples")
            self.source_indices = [int(i) for i in source_indices]

    def __len__(self) -> int:
        return len(self.samples)

    def label_at(self, i: int) -> int:
        """The label of example i, without decoding its image."""
        return int(self.samples[i][1])

    def fingerprint(self) -> str | None:
        """Which image files (class folder and name, wherever the tree lies) this dataset serves, in
        order, with their labels; None for a subset, which may grow between runs (its rows carry their
        idx in the full split, checked against ``source_indices``)."""
        if hasattr(self, "source_indices"):
            return None
        names = "\n".join(f"{Path(p).parent.name}/{Path(p).name}" for p, _ in self.samples)
        labels = np.array([label for _, label in self.samples], dtype=np.int64)
        return _fingerprint(np.frombuffer(names.encode(), dtype=np.uint8), labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        with Image.open(path) as img:
            x = self.transform(img.convert("RGB"))
        return x, label


def _fingerprint(*arrays: np.ndarray) -> str:
    """A short hash of arrays (dtype, shape and bytes of each)."""
    digest = hashlib.blake2b(digest_size=8)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()

"""digits: scikit-learn's 1,797 8x8 handwritten digits (embedded, tiny: for the fastest tests)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ddsx.data.base import ImageDataModule
from ddsx.data.datasets import TensorImageDataset
from ddsx.data.splits import fraction_sizes, split_indices


@lru_cache(maxsize=1)
def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (1797,1,8,8) with values 0..16 and int64 labels (1797,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(np.rint(d.data).astype(np.uint8).reshape(-1, 1, 8, 8))
    return images, torch.from_numpy(np.asarray(d.target, dtype=np.int64))


class DigitsDataModule(ImageDataModule):
    """digits: sklearn load_digits, images (1,8,8) = value / 16 in [0,1], 10 classes.

    Seeded split (independent of the run seed): `test_fraction` and `val_fraction` of the 1,797
    examples (rounded; defaults 20 % / 10 %: 1,258 train / 180 val / 359 test), the rest train.
    """

    name = "digits"
    num_classes = 10
    image_shape = (1, 8, 8)

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
        split_seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
    ) -> None:
        super().__init__(data_dir, batch_size, num_workers, pin_memory)
        self.split_seed = int(split_seed)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        fraction_sizes(1, self.val_fraction, self.test_fraction)  # fail at construction on bad fractions

    def build(self, stage: str | None = None) -> None:
        images, labels = load_digits_tensors()
        sizes = fraction_sizes(len(labels), self.val_fraction, self.test_fraction)
        train, val, test = split_indices(len(labels), list(sizes), self.split_seed)
        self.train_set = TensorImageDataset(images, labels, 16.0, indices=train)
        self.val_set = TensorImageDataset(images, labels, 16.0, indices=val)
        self.test_set = TensorImageDataset(images, labels, 16.0, indices=test)

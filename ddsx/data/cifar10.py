"""cifar10: CIFAR-10 from the standard "python version" pickled batches on disk (never downloaded)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from ddsx.data.base import ImageDataModule
from ddsx.data.datasets import TensorImageDataset
from ddsx.data.errors import DatasetFormatError, DatasetNotFoundError
from ddsx.data.splits import carve_validation

CIFAR_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH, META = "test_batch", "batches.meta"
CIFAR_LAYOUT = """\
    <data_dir>/cifar-10-batches-py/
        data_batch_1 ... data_batch_5    (pickled dicts: b"data" uint8 (10000, 3072), b"labels")
        test_batch
        batches.meta"""
CIFAR_SOURCE = (
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (CIFAR-10 python version); "
    "extract it with `tar -xzf cifar-10-python.tar.gz -C <data_dir>`."
)

# The batches hold numpy arrays; only the callables needed to rebuild those may be unpickled, so a
# tampered file cannot run code.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    *(
        (m, n)
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
        for n in ("_reconstruct", "scalar")
    ),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def load_cifar_pickle(path: Path) -> dict:
    """Unpickle one CIFAR file (keys stay bytes, as written by Python 2). Raises DatasetFormatError."""
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except Exception as e:  # any unpickling failure means a corrupt or foreign file
        raise DatasetFormatError(path, f"not a CIFAR-10 python pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DatasetFormatError(path, f"expected a pickled dict, found {type(obj).__name__}")
    return obj


def read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N,3,32,32) and int64 labels (N,) from one data/test batch.

    The 3072 bytes of a row are the 1024 red, then green, then blue pixels, each plane row-major,
    which is exactly C-order (3,32,32).
    """
    batch = load_cifar_pickle(path)
    if b"data" not in batch or b"labels" not in batch:
        raise DatasetFormatError(path, f'missing b"data" or b"labels" (keys: {sorted(batch)})')
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetFormatError(path, f'b"data" is {data.dtype} {data.shape}, expected uint8 (N, 3072)')
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(path, f'b"labels" has shape {labels.shape}, expected {len(data)} integers')
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetFormatError(path, f"labels outside 0..9 (min {labels.min()}, max {labels.max()})")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def cifar_train_augmentation() -> v2.Compose:
    """Random 32x32 crop of the zero-padded (by 4) image, then a horizontal flip half the time."""
    return v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])


class CIFAR10DataModule(ImageDataModule):
    """cifar10: `data_dir/cifar-10-batches-py/` pickles; images (3,32,32) in [0,1], 10 classes.

    Validation is `val_size` examples (default 5,000) held out of the 50,000 training images by
    `split_seed`; test is the official test_batch. With `augment` (default True) training images get
    random crop (pad 4) + horizontal flip; validation and test images are never augmented.
    After setup, `class_names` holds the names from batches.meta.
    """

    name = "cifar10"
    num_classes = 10
    image_shape = (3, 32, 32)

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
        val_size: int = 5000,
        split_seed: int = 0,
        augment: bool = True,
    ) -> None:
        super().__init__(data_dir, batch_size, num_workers, pin_memory)
        self.val_size, self.split_seed, self.augment = int(val_size), int(split_seed), bool(augment)
        self.class_names: list[str] | None = None

    @property
    def folder(self) -> Path:
        return self.data_dir / CIFAR_FOLDER

    def check_files(self, stage: str | None = None) -> None:
        if not self.folder.is_dir():
            raise DatasetNotFoundError(self.name, self.folder, CIFAR_LAYOUT, CIFAR_SOURCE, self.data_dir)
        for name in [*TRAIN_BATCHES, TEST_BATCH, META]:
            if not (self.folder / name).is_file():
                raise DatasetNotFoundError(
                    self.name, self.folder / name, CIFAR_LAYOUT, CIFAR_SOURCE, self.data_dir
                )

    def build(self, stage: str | None = None) -> None:
        meta = load_cifar_pickle(self.folder / META)
        names = meta.get(b"label_names")
        if names is None or len(names) != self.num_classes:
            raise DatasetFormatError(self.folder / META, 'expected b"label_names" with 10 class names')
        self.class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]

        parts = [read_cifar_batch(self.folder / name) for name in TRAIN_BATCHES]
        train_x, train_y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        test_x, test_y = read_cifar_batch(self.folder / TEST_BATCH)
        train_idx, val_idx = carve_validation(len(train_y), self.val_size, self.split_seed)
        augmentation = cifar_train_augmentation() if self.augment else None
        self.train_set = TensorImageDataset(train_x, train_y, 255.0, augmentation, indices=train_idx)
        self.val_set = TensorImageDataset(train_x, train_y, 255.0, indices=val_idx)
        self.test_set = TensorImageDataset(test_x, test_y, 255.0)

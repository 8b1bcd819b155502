"""mnist: the full MNIST dataset (60,000 train / 10,000 test) from the standard IDX files on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ddsx.data.base import ImageDataModule
from ddsx.data.datasets import TensorImageDataset
from ddsx.data.errors import DatasetFormatError, DatasetNotFoundError
from ddsx.data.idx import read_idx
from ddsx.data.splits import carve_validation

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_LAYOUT = """\
    <data_dir>/mnist/                      (or <data_dir>/MNIST/raw/, as torchvision writes it)
        train-images-idx3-ubyte[.gz]
        train-labels-idx1-ubyte[.gz]
        t10k-images-idx3-ubyte[.gz]
        t10k-labels-idx1-ubyte[.gz]"""
MNIST_SOURCE = (
    "the four IDX files from http://yann.lecun.com/exdb/mnist/ or a mirror "
    "(e.g. https://ossci-datasets.s3.amazonaws.com/mnist/); or, on a machine with internet, "
    "`python -c \"from torchvision.datasets import MNIST; MNIST('<data_dir>', download=True)\"`."
)


def find_mnist_files(data_dir: Path) -> dict[str, Path]:
    """Paths of the four IDX files (plain preferred over .gz) in data_dir/mnist or data_dir/MNIST/raw.

    Raises DatasetNotFoundError naming the first missing file (or the folder if neither exists).
    """
    folders = [data_dir / "mnist", data_dir / "MNIST" / "raw"]
    existing = [f for f in folders if f.is_dir()]
    if not existing:
        raise DatasetNotFoundError("mnist", folders[0], MNIST_LAYOUT, MNIST_SOURCE, data_dir)
    first_missing: Path | None = None
    for folder in existing:
        found: dict[str, Path] = {}
        for key, stem in MNIST_FILES.items():
            candidates = [folder / stem, folder / f"{stem}.gz"]
            hit = next((c for c in candidates if c.is_file()), None)
            if hit is None:
                first_missing = first_missing or candidates[0]
                break
            found[key] = hit
        else:
            return found
    assert first_missing is not None
    raise DatasetNotFoundError("mnist", first_missing, MNIST_LAYOUT, MNIST_SOURCE, data_dir)


def read_mnist_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N,1,28,28) and int64 labels (N,) from one IDX image file and its label file."""
    images, labels = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
    if images.shape[1:] != (28, 28):
        raise DatasetFormatError(images_path, f"images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise DatasetFormatError(
            labels_path, f"{len(labels)} labels for {len(images)} images in {images_path}"
        )
    if labels.size and labels.max() > 9:
        raise DatasetFormatError(labels_path, f"label {int(labels.max())} outside 0..9")
    return (
        torch.from_numpy(images.reshape(-1, 1, 28, 28).copy()),
        torch.from_numpy(labels.astype(np.int64)),
    )


class MNISTDataModule(ImageDataModule):
    """mnist: IDX files from `data_dir/mnist/` or `data_dir/MNIST/raw/` (plain or .gz), never downloaded.

    The validation split is `val_size` examples (default 5,000) held out of the 60,000 training images
    by `split_seed`; test is the official 10,000. Images (1,28,28) in [0,1].
    """

    name = "mnist"
    num_classes = 10
    image_shape = (1, 28, 28)

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
        val_size: int = 5000,
        split_seed: int = 0,
    ) -> None:
        super().__init__(data_dir, batch_size, num_workers, pin_memory)
        self.val_size, self.split_seed = int(val_size), int(split_seed)

    def check_files(self, stage: str | None = None) -> None:
        find_mnist_files(self.data_dir)

    def build(self, stage: str | None = None) -> None:
        files = find_mnist_files(self.data_dir)
        train_x, train_y = read_mnist_pair(files["train_images"], files["train_labels"])
        test_x, test_y = read_mnist_pair(files["test_images"], files["test_labels"])
        train_idx, val_idx = carve_validation(len(train_y), self.val_size, self.split_seed)
        self.train_set = TensorImageDataset(train_x, train_y, 255.0, indices=train_idx)
        self.val_set = TensorImageDataset(train_x, train_y, 255.0, indices=val_idx)
        self.test_set = TensorImageDataset(test_x, test_y, 255.0)

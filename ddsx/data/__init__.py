"""LightningDataModules serving (image FloatTensor (C,H,W) in [0,1], label int); never downloading.

Configs: conf/dataset/<name>.yaml. `num_classes` and `image_shape` are available before `setup()`.
"""

from __future__ import annotations

from ddsx.data.base import ImageDataModule
from ddsx.data.cifar10 import CIFAR10DataModule
from ddsx.data.digits import DigitsDataModule
from ddsx.data.errors import DatasetError, DatasetFormatError, DatasetNotFoundError
from ddsx.data.imagenet import ImageNetDataModule
from ddsx.data.mnist import MNISTDataModule
from ddsx.data.mnist5k import MNIST5kDataModule

DATAMODULES: dict[str, type[ImageDataModule]] = {
    "mnist5k": MNIST5kDataModule,
    "digits": DigitsDataModule,
    "mnist": MNISTDataModule,
    "cifar10": CIFAR10DataModule,
    "imagenet": ImageNetDataModule,
}

__all__ = [
    "DATAMODULES",
    "CIFAR10DataModule",
    "DatasetError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageNetDataModule",
    "MNIST5kDataModule",
    "MNISTDataModule",
]

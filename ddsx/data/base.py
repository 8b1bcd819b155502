"""Shared LightningDataModule for every ddsx dataset: arguments, split bookkeeping, dataloaders.

Subclasses set `num_classes` and `image_shape` (available before `setup`), and implement
`check_files()` (validate that every needed file exists, raising `DatasetNotFoundError`) and
`build(stage)` (create `train_set`, `val_set`, `test_set`). Nothing is ever downloaded or written.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset

from ddsx.utils.logging import get_logger

log = get_logger(__name__)


class ImageDataModule(L.LightningDataModule):
    """Base data module. Items are (image FloatTensor (C,H,W) in [0,1], label int); batches (N,C,H,W).

    Args:
        data_dir: folder holding the dataset folders (e.g. `${paths.data_dir}`); unused by the
            embedded datasets (mnist5k, digits).
        batch_size: examples per batch for every split.
        num_workers: DataLoader worker processes (0 = load in the main process).
        pin_memory: pin host memory for faster host-to-GPU copies.
    """

    name: str = "dataset"
    num_classes: int
    image_shape: tuple[int, int, int]

    def __init__(self, data_dir: str, batch_size: int, num_workers: int = 0, pin_memory: bool = False):
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        if int(num_workers) < 0:
            raise ValueError(f"{self.name}: num_workers must be >= 0, got {num_workers}")
        self.data_dir = Path(str(data_dir)).expanduser()
        self.batch_size, self.num_workers, self.pin_memory = (
            int(batch_size),
            int(num_workers),
            bool(pin_memory),
        )
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._built = False

    # -- subclass hooks -------------------------------------------------------------------------
    def check_files(self, stage: str | None = None) -> None:
        """Raise DatasetNotFoundError if a file needed for `stage` is missing. Default: nothing needed."""

    def build(self, stage: str | None = None) -> None:
        raise NotImplementedError

    # -- Lightning hooks ------------------------------------------------------------------------
    def prepare_data(self) -> None:
        # Runs on rank zero before setup: fail early with the clear message; never download.
        self.check_files(None)

    def setup(self, stage: str | None = None) -> None:
        """Validate the files, then load all splits once (later calls are no-ops)."""
        if self._built:
            return
        self.check_files(stage)
        self.build(stage)
        self._built = True
        sizes = {k: len(v) for k, v in self.splits().items() if v is not None}
        log.info("%s: %s", self.name, ", ".join(f"{k} {n}" for k, n in sizes.items()))

    def splits(self) -> dict[str, Dataset | None]:
        return {"train": self.train_set, "val": self.val_set, "test": self.test_set}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.splits()[split]
        if dataset is None:
            raise RuntimeError(f"{self.name}: the {split} split is not loaded; call setup() first")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            # Keeping workers alive only makes sense when there are workers.
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def split_set(datamodule: L.LightningDataModule, split: str) -> Dataset:
    """The dataset of ``split`` ("test" or "val": ``<split>_set``), set up for it if not yet there."""
    dataset = getattr(datamodule, f"{split}_set", None)
    if dataset is None:
        datamodule.setup("test" if split == "test" else "validate")
        dataset = getattr(datamodule, f"{split}_set", None)
    if dataset is None:
        raise ValueError(f"{type(datamodule).__name__} has no {split}_set after setup()")
    return dataset

"""imagenet: ILSVRC-2012 from class folders on disk (data_dir/imagenet/{train,val}/<wnid>/<image>)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.transforms import v2

from ddsx.data.base import ImageDataModule
from ddsx.data.datasets import ImageFileDataset
from ddsx.data.errors import DatasetFormatError, DatasetNotFoundError
from ddsx.data.folders import scan_class_folders
from ddsx.data.splits import carve_validation
from ddsx.data.subsets import Subset, resolve_subset
from ddsx.utils.logging import get_logger

log = get_logger(__name__)

IMAGENET_LAYOUT = """\
    <data_dir>/imagenet/
        train/n01440764/*.JPEG ... (one folder per class, 1000 wnids; needed only for training)
        val/n01440764/*.JPEG ...   (the 50,000 validation images sorted into the same class folders)"""
IMAGENET_SOURCE = (
    "https://image-net.org/download.php (ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar; needs an "
    "account). Extract the train tar's per-class tars, and sort the flat val images into wnid folders "
    "(e.g. the widely used valprep.sh)."
)


def _to_float() -> list:
    # [0,1] float32 plain tensors (no normalisation: that is the classifier's first layer).
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()]


def imagenet_eval_transform(resize: int, crop: int) -> v2.Compose:
    """Shorter side to `resize`, centre crop `crop` x `crop`: PIL image -> (3,crop,crop) in [0,1]."""
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop), *_to_float()])


def imagenet_train_transform(crop: int) -> v2.Compose:
    """RandomResizedCrop to `crop` and horizontal flip: PIL image -> (3,crop,crop) in [0,1]."""
    return v2.Compose([v2.RandomResizedCrop(crop, antialias=True), v2.RandomHorizontalFlip(), *_to_float()])


class ImageNetDataModule(ImageDataModule):
    """imagenet: class folders under `data_dir/imagenet/`; class index = position of the sorted wnid.

    Splits (ImageNet's test labels are not public, so val/ is the test split that gets certified):
        train_set: train/ minus the held-out validation images, RandomResizedCrop(crop_size) + flip.
            Loaded for stages "fit" and "validate" (train/ required) and for stage None when train/
            exists, so certification needs only val/.
        val_set: `val_size` seeded images held out of train/ (eval transform), never images of val/:
            those are certified later. `val_size: 0` disables validation (then also set
            callbacks.model_checkpoint.monitor=null). None without train/.
        test_set: val/ with the eval transform, restricted to `subset` if given: a list of indices or
            <wnid>/<file> names, or a path (absolute, relative to the working directory, or to
            data_dir/imagenet) of a text file with one index or name per line. `test_indices` (and the
            test set's `source_indices`, which certification numbers its rows by) hold each test
            example's index in the full val/ listing (sorted by class, then file name).
    Eval transform: resize shorter side to `resize_size`, centre crop `crop_size`. Images (3,crop,crop)
    in [0,1], no normalisation.
    """

    name = "imagenet"

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 64,
        num_workers: int = 8,
        pin_memory: bool = False,
        resize_size: int = 256,
        crop_size: int = 224,
        val_size: int = 10000,
        split_seed: int = 0,
        subset: Subset = None,
        num_classes: int = 1000,
    ) -> None:
        super().__init__(data_dir, batch_size, num_workers, pin_memory)
        if not 0 < int(crop_size) <= int(resize_size):
            raise ValueError(f"imagenet: need 0 < crop_size <= resize_size, got {crop_size}, {resize_size}")
        if val_size is None or int(val_size) < 0:
            raise ValueError(
                f"imagenet: val_size is the number of train/ images held out for validation (0 = no "
                f"validation), got {val_size}"
            )
        self.resize_size, self.crop_size = int(resize_size), int(crop_size)
        self.val_size = int(val_size)
        self.split_seed, self.subset, self.num_classes = int(split_seed), subset, int(num_classes)
        self.image_shape = (3, self.crop_size, self.crop_size)
        self.classes: list[str] | None = None
        self.test_indices: list[int] | None = None

    @property
    def root(self) -> Path:
        return self.data_dir / "imagenet"

    def _require_dir(self, path: Path) -> None:
        if not path.is_dir():
            raise DatasetNotFoundError(self.name, path, IMAGENET_LAYOUT, IMAGENET_SOURCE, self.data_dir)

    def check_files(self, stage: str | None = None) -> None:
        self._require_dir(self.root)
        self._require_dir(self.root / "val")
        if stage in ("fit", "validate"):
            self._require_dir(self.root / "train")

    def setup(self, stage: str | None = None) -> None:
        # Unlike the other datasets, train/ may legitimately be absent (certification only), so a
        # later setup("fit") must still load it after an earlier setup("test").
        if self.train_set is None and stage in (None, "fit", "validate"):
            self._built = False
        super().setup(stage)

    def _scan(self, split: str) -> list:
        classes, samples = scan_class_folders(self.root / split)
        if len(classes) != self.num_classes:
            raise DatasetFormatError(
                self.root / split,
                f"found {len(classes)} class folders, expected num_classes={self.num_classes}",
            )
        if self.classes is not None and classes != self.classes:
            raise DatasetFormatError(
                self.root / split, "its class folders differ from those of the other split"
            )
        self.classes = classes
        return samples

    def build(self, stage: str | None = None) -> None:
        eval_tf = imagenet_eval_transform(self.resize_size, self.crop_size)
        if self.test_set is None:
            samples = self._scan("val")
            names = [p.relative_to(self.root / "val").as_posix() for p, _ in samples]
            chosen = resolve_subset(self.subset, names, search_dirs=[self.root])
            self.test_indices = list(range(len(samples))) if chosen is None else chosen
            self.test_set = ImageFileDataset(
                [samples[i] for i in self.test_indices], eval_tf, source_indices=self.test_indices
            )
        if self.train_set is None and stage in (None, "fit", "validate"):
            if (self.root / "train").is_dir():
                samples = self._scan("train")
                train_idx, val_idx = carve_validation(len(samples), self.val_size, self.split_seed)
                self.train_set = ImageFileDataset(
                    [samples[i] for i in train_idx], imagenet_train_transform(self.crop_size)
                )
                if len(val_idx):
                    self.val_set = ImageFileDataset([samples[i] for i in val_idx], eval_tf)
            else:
                log.warning(
                    "imagenet: no %s, so no train or validation split (fine for certification)",
                    self.root / "train",
                )

    def val_dataloader(self):
        # val_size 0: no validation loop at all (Lightning skips an empty list of loaders).
        if self.val_set is None and self.val_size == 0:
            return []
        return super().val_dataloader()

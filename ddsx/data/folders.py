"""Scanning class-per-folder image trees (root/<class>/<image>), the layout of ImageNet train/val."""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets.folder import find_classes, make_dataset

from ddsx.data.errors import DatasetFormatError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scan_class_folders(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes (sorted sub-folder names; class index = position) and (path, label) samples.

    torchvision's ``find_classes`` / ``make_dataset`` (the ImageFolder rules: images anywhere under a
    class folder, by extension) with ddsx's messages. Hidden folders are not classes. Samples are
    sorted by class, then by path, so an example's index is stable across machines. Raises
    DatasetFormatError if ``root`` holds no class folders (e.g. the flat ImageNet val tarball) or no
    images at all.
    """
    try:
        found, _ = find_classes(root)
    except FileNotFoundError:
        found = []
    classes = [c for c in found if not c.startswith(".")]
    if not classes:
        with os.scandir(root) as it:
            loose = sum(1 for e in it if e.is_file() and _is_image(e.name))
        hint = (
            f" It holds {loose} loose images: sort them into one folder per class (wnid), e.g. with the "
            "widely used valprep.sh script for the ImageNet validation set."
            if loose
            else ""
        )
        raise DatasetFormatError(root, "expected one sub-folder per class, found none." + hint)
    class_to_idx = {name: i for i, name in enumerate(classes)}
    samples = make_dataset(
        str(root), class_to_idx, extensions=tuple(sorted(IMAGE_EXTENSIONS)), allow_empty=True
    )
    if not samples:
        raise DatasetFormatError(
            root, f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in its class folders"
        )
    return classes, [(Path(path), label) for path, label in samples]

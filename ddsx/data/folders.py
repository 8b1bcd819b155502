"""Scanning class-per-folder image trees (root/<class>/<image>), the layout of ImageNet train/val."""

from __future__ import annotations

import os
from pathlib import Path

from ddsx.data.errors import DatasetFormatError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scan_class_folders(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes (sorted sub-folder names; class index = position) and (path, label) samples.

    Samples are sorted by class, then by file name, so an example's index is stable across machines.
    Raises DatasetFormatError if `root` holds no class folders (e.g. the flat ImageNet val tarball)
    or no images at all.
    """
    with os.scandir(root) as it:
        entries = list(it)
    classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not classes:
        loose = sum(1 for e in entries if e.is_file() and _is_image(e.name))
        hint = (
            f" It holds {loose} loose images: sort them into one folder per class (wnid), e.g. with the "
            "widely used valprep.sh script for the ImageNet validation set."
            if loose
            else ""
        )
        raise DatasetFormatError(root, "expected one sub-folder per class, found none." + hint)
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        folder = root / name
        with os.scandir(folder) as it:
            files = sorted(e.name for e in it if e.is_file() and _is_image(e.name))
        samples.extend((folder / f, label) for f in files)
    if not samples:
        raise DatasetFormatError(
            root, f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in its class folders"
        )
    return classes, samples

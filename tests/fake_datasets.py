"""Writers of tiny datasets in the real on-disk formats (IDX, CIFAR pickles, ImageNet class folders).

Each writer returns the arrays it wrote so tests can check that loading round-trips them exactly.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write a uint8 array as an IDX file (magic 0x00 0x00 0x08 ndim, big-endian uint32 dims, data)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(str(path) + ".gz") if gz else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + array.tobytes())
    return path


def write_fake_mnist(
    data_dir: Path,
    n_train: int = 12,
    n_test: int = 5,
    gz: bool = False,
    torchvision_layout: bool = False,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random 28x28 uint8 digits in data_dir/mnist/ (or data_dir/MNIST/raw/). Returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder = data_dir / "MNIST" / "raw" if torchvision_layout else data_dir / "mnist"
    names = {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    }
    for key, name in names.items():
        write_idx(folder / name, arrays[key], gz=gz)
    return arrays


CIFAR_NAMES = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # protocol 2, like the files made by Python 2's cPickle


def write_fake_cifar10(
    data_dir: Path, n_per_batch: int = 4, n_test: int = 3, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random CIFAR-10 batches in data_dir/cifar-10-batches-py/. Returns images (N,3,32,32) and labels."""
    rng = np.random.default_rng(seed)
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        _dump(folder / f"data_batch_{i}", {b"batch_label": b"fake", b"labels": labels, b"data": data})
        train_x.append(data)
        train_y += labels
    test_x = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    test_y = rng.integers(0, 10, n_test).tolist()
    _dump(folder / "test_batch", {b"batch_label": b"fake test", b"labels": test_y, b"data": test_x})
    _dump(folder / "batches.meta", {b"label_names": CIFAR_NAMES, b"num_cases_per_batch": n_per_batch})
    return {
        "train_images": np.concatenate(train_x).reshape(-1, 3, 32, 32),
        "train_labels": np.array(train_y),
        "test_images": test_x.reshape(-1, 3, 32, 32),
        "test_labels": np.array(test_y),
    }


def write_fake_imagenet(
    data_dir: Path,
    classes: tuple[str, ...] = ("n02", "n01", "n03"),
    n_train: int = 2,
    n_val: int = 3,
    size: int = 16,
    fmt: str = "PNG",
    splits: tuple[str, ...] = ("train", "val"),
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Random RGB images in data_dir/imagenet/<split>/<class>/img<k>.<ext>.

    Returns {split: {"<class>/<file>": uint8 array (3,size,size)}} (exact for PNG; JPEG is lossy).
    """
    rng = np.random.default_rng(seed)
    ext = {"PNG": "png", "JPEG": "JPEG"}[fmt]
    written: dict[str, dict[str, np.ndarray]] = {}
    for split in splits:
        written[split] = {}
        for cls in classes:
            folder = data_dir / "imagenet" / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n_train if split == "train" else n_val):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"img{k}.{ext}", format=fmt)
                written[split][f"{cls}/img{k}.{ext}"] = pixels.transpose(2, 0, 1)
    return written


def snapshot(folder: Path) -> list[str]:
    """Every path under `folder` (relative, sorted), to prove that nothing was written."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []

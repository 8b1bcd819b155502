"""Reader for the IDX format of the MNIST files (http://yann.lecun.com/exdb/mnist/), plain or gzipped.

Layout: 2 zero bytes, a type byte (0x08 = unsigned byte), a byte with the number of dimensions d,
d big-endian uint32 sizes, then the values in C order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ddsx.data.errors import DatasetFormatError

_UBYTE = 0x08


def read_idx(path: Path | str, ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (".gz" is decompressed). Returns uint8 array of the stored shape.

    Raises DatasetFormatError naming the file if the magic number, dimensions or length are wrong.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; truncated gzip is EOFError
        raise DatasetFormatError(path, f"could not be read ({e})") from e

    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetFormatError(path, "not an IDX file (magic number must start with two zero bytes)")
    if raw[2] != _UBYTE:
        raise DatasetFormatError(path, f"IDX type byte is 0x{raw[2]:02x}, expected 0x08 (unsigned byte)")
    d = raw[3]
    if ndim is not None and d != ndim:
        raise DatasetFormatError(path, f"IDX file has {d} dimensions, expected {ndim}")
    header = 4 + 4 * d
    if len(raw) < header:
        raise DatasetFormatError(path, "file ends inside the IDX header")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=d, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise DatasetFormatError(
            path, f"header says shape {shape} ({expected} bytes) but {len(raw) - header} data bytes follow"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)

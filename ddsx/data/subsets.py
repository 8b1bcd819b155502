"""Selecting examples of an evaluation split by index or by relative file name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

Subset = str | os.PathLike | Sequence[int | str] | None


def read_subset_file(path: Path) -> list[int | str]:
    """Entries of a subset file: one per line, an integer index or a relative file name.

    Blank lines and lines starting with '#' are skipped.
    """
    entries: list[int | str] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entries.append(int(line) if line.lstrip("-").isdigit() else line)
    return entries


def resolve_subset(subset: Subset, names: list[str], search_dirs: Sequence[Path] = ()) -> list[int] | None:
    """Turn a subset spec into indices into `names` (kept in the order given).

    Args:
        subset: None (everything), a list of indices / relative names, or a path to a subset file.
            A relative path is tried as given, then under each of `search_dirs`.
        names: the split's relative file names (posix, e.g. "n01440764/ILSVRC2012_val_00000293.JPEG");
            index i of the split is names[i].
    Raises FileNotFoundError for a missing subset file, ValueError for an unknown name or bad index.
    """
    if subset is None:
        return None
    source = "subset"
    if isinstance(subset, str | os.PathLike):
        given = Path(subset).expanduser()
        tried = [given] + [d / given for d in search_dirs if not given.is_absolute()]
        path = next((p for p in tried if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"subset file not found; tried: {', '.join(map(str, tried))}")
        entries, source = read_subset_file(path), f"subset file '{path}'"
    else:
        entries = list(subset)
    position = {name: i for i, name in enumerate(names)}
    indices: list[int] = []
    for entry in entries:
        if isinstance(entry, int) or (isinstance(entry, str) and entry.lstrip("-").isdigit()):
            i = int(entry)
            if not 0 <= i < len(names):
                raise ValueError(f"{source}: index {i} is outside 0..{len(names) - 1}")
            indices.append(i)
        else:
            key = Path(str(entry)).as_posix()
            if key not in position:
                raise ValueError(
                    f"{source}: '{entry}' is not an image of this split (give it as <class>/<file>)"
                )
            indices.append(position[key])
    if not indices:
        raise ValueError(f"{source}: selects no examples")
    return indices

"""What ddsx-analyze writes: analysis.tsv, one plot per quantity against sigma, image grids per sigma."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from ddsx.analysis.measure import NO_CLASSIFIER, Grid

COLUMNS = ("sigma", "quantity", "classifier", "value", "examples")
LABELS = {
    "misestimation": "noise misestimation (per-pixel MSE at t*)",
    "misestimation_attacked": "noise misestimation under the attacked noise",
    "l2": "||D(x + sigma eps) - x||_2",
    "l2_attacked": "||D(x + sigma (eps + delta*)) - x||_2",
    "ssim": "SSIM(D(x + sigma eps), x)",
    "lpips": "LPIPS(D(x + sigma eps), x)",
    "accuracy_clean": "accuracy on clean x",
    "accuracy_denoised": "accuracy on D(x + sigma eps)",
    "accuracy_attacked": "accuracy on D(x + sigma (eps + delta*))",
    "kl_denoised": "KL(h(x) || h(D(x + sigma eps)))",
    "kl_attacked": "KL(h(x) || h(D(x + sigma (eps + delta*))))",
}

Row = tuple[float, str, str, float, int]


def table_rows(sigma: float, values: Mapping[tuple[str, str], float], examples: int) -> list[Row]:
    """One row per (quantity, classifier) of one sigma, in a stable order."""
    return [(sigma, q, c, v, examples) for (q, c), v in sorted(values.items())]


def write_tsv(rows: Iterable[Row], path: Path) -> Path:
    """analysis.tsv: ``sigma quantity classifier value examples``, floats written exactly (repr)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(COLUMNS)]
    lines += [f"{s!r}\t{q}\t{c}\t{v!r}\t{n}" for s, q, c, v, n in rows]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def read_tsv(path: Path) -> list[Row]:
    """The rows of an analysis.tsv (for tests and later plotting)."""
    lines = Path(path).read_text().splitlines()
    if not lines or tuple(lines[0].split("\t")) != COLUMNS:
        raise ValueError(f"{path} is not an analysis table (header {COLUMNS})")
    rows = []
    for line in lines[1:]:
        s, q, c, v, n = line.split("\t")
        rows.append((float(s), q, c, float(v), int(n)))
    return rows


def plot_quantities(rows: Iterable[Row], folder: Path) -> list[Path]:
    """``<quantity>.png``: the quantity against sigma, one line per classifier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for sigma, quantity, classifier, value, _ in rows:
        series.setdefault(quantity, {}).setdefault(classifier, []).append((sigma, value))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for quantity, lines in sorted(series.items()):
        figure, axes = plt.subplots(figsize=(5.5, 3.5))
        for classifier, points in sorted(lines.items()):
            points = sorted(p for p in points if not math.isnan(p[1]))
            label = "denoiser" if classifier == NO_CLASSIFIER else classifier
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=label)
        axes.set(xlabel="sigma ([0,1] pixel units)", ylabel=quantity, title=LABELS.get(quantity, quantity))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="best")
        figure.tight_layout()
        path = folder / f"{quantity}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(path)
    return paths


def save_grid(grid: Grid, path: Path) -> Path:
    """One image: rows clean / noisy (clipped for display) / denoised / attacked-and-denoised."""
    from torchvision.utils import save_image

    rows = [grid.clean, grid.noisy, grid.denoised] + ([grid.attacked] if grid.attacked is not None else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(rows).clamp(0, 1), path, nrow=grid.clean.shape[0], padding=2, pad_value=1.0)
    return path

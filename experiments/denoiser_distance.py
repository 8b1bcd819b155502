"""How much does a DDS denoiser clean noisy test images? Mean l2 distance to the clean image of the
noisy input x + sigma*eps and of the one-shot denoised input D(x + sigma*eps), with t* and the
achieved noise level, for each sigma.

    python experiments/denoiser_distance.py                       # mnist5k test split, ddsx-trained DDPM
    python experiments/denoiser_distance.py --path checkpoints/denoisers/cifar10_improved_uncond --dataset cifar10 --limit 500
    python experiments/denoiser_distance.py --check               # exit 1 unless every sigma halves the distance
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Subset

from ddsx.denoisers.load import load_diffusers_denoiser

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def test_split(dataset: str, overrides: list[str]):
    """The ``dataset`` config group's data module, set up, and its test split."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("ddsx_denoiser", overrides=[f"dataset={dataset}", *overrides])
    datamodule = instantiate(cfg.dataset)
    datamodule.setup("test")
    return datamodule.test_set


@torch.no_grad()
def distances(denoiser, data, sigma: float, batch_size: int, seed: int) -> tuple[float, float]:
    """(mean ||x_noisy - x||, mean ||D(x_noisy) - x||) over ``data``; noise for example i seeded by (seed, i)."""
    denoiser.set_sigma(sigma)
    noisy_sum = denoised_sum = 0.0
    start = 0
    for x, _ in DataLoader(data, batch_size=batch_size, shuffle=False):
        noise = torch.stack(
            [
                torch.randn(
                    x.shape[1:], generator=torch.Generator().manual_seed(seed * 1_000_003 + start + i)
                )
                for i in range(len(x))
            ]
        )
        noisy = x + sigma * noise
        noisy_sum += (noisy - x).flatten(1).norm(dim=1).sum().item()
        denoised_sum += (denoiser(noisy) - x).flatten(1).norm(dim=1).sum().item()
        start += len(x)
    return noisy_sum / start, denoised_sum / start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--path", default="checkpoints/denoisers/mnist5k_ddpm", help="diffusers folder of the denoiser"
    )
    parser.add_argument("--dataset", default="mnist5k", help="a conf/dataset name; its test split is used")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N test images")
    parser.add_argument("--num-steps", type=int, default=1, help="1 = one-shot DDS; k = k DDIM steps from t*")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 unless denoised/noisy <= 0.5 at every sigma"
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides for the dataset, e.g. paths.data_dir=/data"
    )
    args = parser.parse_args(argv)

    data = test_split(args.dataset, args.overrides)
    if args.limit is not None:
        data = Subset(data, range(min(args.limit, len(data))))
    denoiser = load_diffusers_denoiser(args.path, args.sigmas[0], num_steps=args.num_steps)
    print(f"denoiser {args.path} | {args.dataset} test split, {len(data)} images | {args.num_steps} step(s)")
    print(
        f"{'sigma':>6} {'t*':>5} {'achieved':>9} {'l2 noisy':>9} {'l2 denoised':>12} {'ratio':>6} {'halved':>7} {'sec':>6}"
    )
    ok = True
    for sigma in args.sigmas:
        start = time.time()
        noisy, denoised = distances(denoiser, data, sigma, args.batch_size, args.seed)
        info = denoiser.describe()
        ratio = denoised / noisy
        ok &= ratio <= 0.5
        print(
            f"{sigma:>6.3g} {info['t_star']:>5d} {info['achieved_sigma']:>9.4f} {noisy:>9.3f} {denoised:>12.3f} "
            f"{ratio:>6.3f} {'yes' if ratio <= 0.5 else 'NO':>7} {time.time() - start:>6.1f}"
        )
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())

"""Time one dds_adv training step against one gaussian and one dds_finetune step (batch 128, mnist5k UNet).

Runs whichever ddsx is on the path, with that checkout's own conf/attack/<attack>.yaml, so the same
command measures an old and a new checkout side by side:

    PYTHONPATH=/path/to/old   python experiments/bench/method_step.py
    PYTHONPATH=/path/to/new   python experiments/bench/method_step.py

The denoiser is the mnist5k DDPM folder given by --denoiser (DDSX_CHECKPOINTS/denoisers/mnist5k_ddpm)
when it exists, else the `denoiser_model=small` UNet with seeded random weights (same cost). A step is
the training loss, its backward and an optimiser step; steps of all methods and precisions alternate,
and the median of --repeats is reported with the UNet forward passes counted per step.

``--autocast none,bf16`` (the default) times every step in full precision and under bf16
``torch.autocast`` (what ``trainer.precision=bf16-mixed`` does in ddsx-train) in the same run;
``--checkpointing`` recomputes the denoiser's activations in the backward pass
(``denoiser.checkpointing=true``); ``--device cuda`` runs on a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf


def build_unet_denoiser(folder: Path | None, sigma: float):
    import hydra

    import ddsx
    from ddsx.denoisers.dds import DiffusionDenoiser
    from ddsx.denoisers.load import load_diffusers_denoiser
    from ddsx.denoisers.schedule import alphas_cumprod_from_betas, betas_cosine

    if folder is not None and (folder / "model_index.json").is_file():
        return load_diffusers_denoiser(folder, sigma), f"trained UNet from {folder}"
    conf = Path(ddsx.__file__).resolve().parents[1] / "conf" / "denoiser_model" / "small.yaml"
    torch.manual_seed(0)
    unet = hydra.utils.instantiate(OmegaConf.load(conf), sample_size=28, in_channels=1, out_channels=1)
    # ddsx-denoiser's schedule: 1000-step cosine (squaredcos_cap_v2).
    return DiffusionDenoiser(
        unet, alphas_cumprod_from_betas(betas_cosine(1000)), sigma
    ), f"random {conf.name} UNet"


class ForwardCounter:
    """Counts the UNet's forward calls (a forward pre-hook)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.count = 0
        unet.register_forward_pre_hook(lambda module, args: self._hit())

    def _hit(self) -> None:
        self.count += 1


def main() -> None:
    import ddsx
    from ddsx.methods.dds_adv import DDSAdversarialModule
    from ddsx.methods.dds_finetune import DDSFinetuneModule
    from ddsx.methods.gaussian import GaussianModule
    from ddsx.models.classifiers import lenet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--attack", default="mnist", help="conf/attack/<name>.yaml of the checkout on the path"
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="attack keys to override, e.g. keep_best=true",
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--autocast",
        default="none,bf16",
        help="comma-separated precisions, measured interleaved in this one run: none, bf16, fp16",
    )
    parser.add_argument("--checkpointing", action="store_true", help="denoiser activation checkpointing")
    checkpoints = Path(os.environ.get("DDSX_CHECKPOINTS", "checkpoints"))
    parser.add_argument("--denoiser", type=Path, default=checkpoints / "denoisers" / "mnist5k_ddpm")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = Path(ddsx.__file__).resolve().parents[1]
    attack = OmegaConf.load(root / "conf" / "attack" / f"{args.attack}.yaml")
    attack = dict(OmegaConf.to_container(OmegaConf.merge(attack, OmegaConf.from_dotlist(args.set))))
    device = torch.device(args.device)
    denoiser, what = build_unet_denoiser(args.denoiser, args.sigma)
    denoiser.checkpointing = args.checkpointing
    counter = ForwardCounter(denoiser.unet)
    modules = {
        "gaussian": GaussianModule(lenet(), 10, args.sigma, torch.optim.AdamW),
        "dds_finetune": DDSFinetuneModule(lenet(), 10, args.sigma, torch.optim.AdamW, denoiser=denoiser),
        "dds_adv": DDSAdversarialModule(
            lenet(), 10, args.sigma, torch.optim.AdamW, denoiser=denoiser, attack=attack
        ),
    }
    for module in modules.values():
        module.to(device)
    optimizers = {name: torch.optim.AdamW(m.classifier.parameters(), lr=1e-3) for name, m in modules.items()}
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    precisions = args.autocast.split(",")
    dtypes = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

    def step(name: str, precision: str) -> tuple[float, int]:
        dtype = dtypes[precision]
        module, optimizer = modules[name], optimizers[name]
        before = counter.count
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, _ = module.training_loss(x, y)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, counter.count - before

    combos = [(name, precision) for precision in precisions for name in modules]
    times: dict[tuple[str, str], list[float]] = {combo: [] for combo in combos}
    calls: dict[str, int] = {}
    for combo in combos:
        step(*combo)  # warm-up
    for _ in range(args.repeats):  # interleaved: a busy moment hits every combination alike
        for combo in combos:
            seconds, calls[combo[0]] = step(*combo)
            times[combo].append(seconds)
    print(
        f"ddsx from {root}; {what}; batch {args.batch}; {args.threads} threads; device {device}; "
        f"checkpointing {args.checkpointing}; attack={args.attack}: {attack}; median of {args.repeats}"
    )
    median = {combo: statistics.median(values) for combo, values in times.items()}
    for precision in precisions:
        print(f"autocast {precision}:")
        for name in modules:
            print(f"  {name:<13} {median[name, precision]:.3f} s/step, UNet forwards per step {calls[name]}")
        adv = median["dds_adv", precision]
        print(
            f"  ratio dds_adv / gaussian = {adv / median['gaussian', precision]:.2f}, "
            f"dds_adv / dds_finetune = {adv / median['dds_finetune', precision]:.2f}"
        )
    if len(precisions) > 1:
        first = precisions[0]
        for other in precisions[1:]:
            print(
                f"dds_adv step, autocast {other} vs {first}: "
                f"{median['dds_adv', first] / median['dds_adv', other]:.2f}x faster"
            )


if __name__ == "__main__":
    main()

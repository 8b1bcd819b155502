"""Time certifying several classifiers behind one denoiser: separate runs vs one multi-classifier run.

Certifies the same mnist5k test digits with k LeNets (four by default) behind one DDS denoiser in
three ways, all in this process and on this machine, and prints the wall times side by side with their
ratios:

  A. k separate fixed-n runs (one result file each, the denoiser runs k times per noisy copy);
  B. one multi-classifier fixed-n run (each noisy batch denoised once, classified by all k);
  C. one multi-classifier sequential run (SEQ-CERT, budget n; each classifier stops on its own).

It also checks that B's rows equal A's (timing columns aside).

    python experiments/certify_multi_timing.py --denoiser /work/ckpt/denoisers/mnist5k_ddpm \
        --ckpt dds.ckpt dds_finetune.ckpt dds_adv.ckpt dds_adv_l2.ckpt

Without ``--ckpt`` four stand-in LeNets are trained here in seconds (one epoch on noisy digits,
seeds 0-3): the timing measures the engine, but the sequential run's savings depend on how confident
the classifiers are, so stand-ins are labelled as such in the output.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ddsx.certification import CertifySettings, ClassifierSpec, build_certifier, read_results
from ddsx.certification.metrics import summarize
from ddsx.data.mnist5k import MNIST5kDataModule
from ddsx.denoisers.load import load_diffusers_denoiser
from ddsx.models.checkpoints import load_classifier
from ddsx.models.classifiers import lenet

NAMES = ("dds", "dds_finetune", "dds_adv", "dds_adv_l2")


def stand_in_lenets(datamodule: MNIST5kDataModule, sigma: float) -> list[torch.nn.Module]:
    """Four LeNets, one epoch each on noisy training digits (seeds 0-3): quick stand-ins."""
    images = torch.stack([datamodule.train_set[i][0] for i in range(len(datamodule.train_set))])
    labels = torch.tensor([int(datamodule.train_set[i][1]) for i in range(len(datamodule.train_set))])
    models = []
    for seed in range(4):
        torch.manual_seed(seed)
        model = lenet(num_classes=10, in_channels=1)
        optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
        for batch in torch.randperm(len(images)).split(64):
            x = images[batch] + sigma * torch.randn_like(images[batch])
            loss = F.cross_entropy(model(x), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        models.append(model.eval())
    return models


def certify(
    settings: dict, classifiers, names, denoiser, dataset, out: Path, device: torch.device
) -> tuple[float, list[Path]]:
    s = CertifySettings.from_mapping(settings | {"output": str(out / "certify.tsv")})
    specs = [ClassifierSpec(c, "timing", name=n) for c, n in zip(classifiers, names, strict=True)]
    engine = build_certifier(
        s, specs, denoiser=denoiser, dataset=dataset, dataset_name="mnist5k", num_classes=10, device=device
    )
    start = time.perf_counter()
    paths = engine.run(dataset)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, paths


def timeless(path: Path) -> list[tuple]:
    return [(r.idx, r.predict, r.radius, r.count_a, r.samples) for r in read_results(path)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--denoiser", required=True, help="diffusers folder of the mnist5k DDPM")
    parser.add_argument("--ckpt", nargs="+", help="ddsx-train checkpoints (default: four stand-in LeNets)")
    parser.add_argument("--names", nargs="+", help="a label per --ckpt (default: " + ", ".join(NAMES) + ")")
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--max", type=int, default=100, help="test digits (every --skip-th)")
    parser.add_argument("--skip", type=int, default=10)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--check-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    datamodule = MNIST5kDataModule(data_dir=".", batch_size=64)
    datamodule.setup("fit")
    datamodule.setup("test")
    dataset = datamodule.test_set
    if args.ckpt:
        classifiers = [load_classifier(p)[0].to(device) for p in args.ckpt]
        kind = "checkpoints " + ", ".join(args.ckpt)
    else:
        classifiers = [m.to(device) for m in stand_in_lenets(datamodule, args.sigma)]
        kind = "stand-in LeNets (1 epoch on noisy digits, seeds 0-3), not the trained dds/dds_adv models"
    names = args.names or list(NAMES)
    if len(names) != len(classifiers):
        parser.error(f"{len(names)} names for {len(classifiers)} classifiers")
    denoiser = load_diffusers_denoiser(args.denoiser, sigma=args.sigma).to(device).eval()
    common = {
        "sigma": args.sigma,
        "n0": args.n0,
        "n": args.n,
        "alpha": 0.001,
        "batch_size": args.batch_size,
        "skip": args.skip,
        "max": args.max,
        "progress": False,
    }
    work = Path(tempfile.mkdtemp(prefix="certify_multi_timing_"))
    try:
        separate, separate_paths = 0.0, []
        for classifier, name in zip(classifiers, names, strict=True):
            seconds, [path] = certify(
                common, [classifier], [name], denoiser, dataset, work / f"a_{name}", device
            )
            separate += seconds
            separate_paths.append(path)
        multi, multi_paths = certify(common, classifiers, names, denoiser, dataset, work / "b", device)
        sequential_settings = common | {"mode": "sequential", "check_every": args.check_every}
        seq, seq_paths = certify(
            sequential_settings, classifiers, names, denoiser, dataset, work / "c", device
        )
        identical = all(timeless(a) == timeless(b) for a, b in zip(separate_paths, multi_paths, strict=True))

        print(f"classifiers: {kind}")
        print(
            f"mnist5k, {args.max} test digits, sigma={args.sigma}, n0={args.n0}, n={args.n}, alpha=0.001, "
            f"batch {args.batch_size}, device {device}"
            f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
            f"torch threads {torch.get_num_threads()}, denoiser {args.denoiser}"
        )
        print(f"A  {str(len(names)) + ' separate fixed runs':31s}{separate:9.1f} s   1.00x")
        print(f"B  1 multi-classifier fixed run   {multi:9.1f} s   {separate / multi:.2f}x faster than A")
        print(f"C  1 multi-classifier sequential  {seq:9.1f} s   {separate / seq:.2f}x faster than A")
        print(f"B's rows equal A's: {'yes' if identical else 'NO'}")
        # Noisy copies the denoiser ran on: A once per classifier, B once, C as long as any classifier
        # of the digit still needed copies (the most samples any of them used).
        digits = len(read_results(multi_paths[0]))
        per_digit: dict[int, int] = {}
        for path in seq_paths:
            for row in read_results(path):
                per_digit[row.idx] = max(per_digit.get(row.idx, 0), row.samples)
        print(
            f"denoised copies: A {len(names) * digits * (args.n0 + args.n):,}, B {digits * (args.n0 + args.n):,}, "
            f"C {sum(per_digit.values()):,}"
        )
        print(
            "\nper classifier: certified accuracy at r = 0 / 0.5 / 1.0 (fixed | sequential), mean samples (seq)"
        )
        for name, a, c in zip(names, multi_paths, seq_paths, strict=True):
            fixed_rows, seq_rows = read_results(a), read_results(c)
            f, q = summarize(fixed_rows, [0, 0.5, 1.0]), summarize(seq_rows, [0, 0.5, 1.0])
            mean = sum(r.samples for r in seq_rows) / len(seq_rows)
            print(
                f"  {name:22s} {f['acc@0']:.2f} {f['acc@0.5']:.2f} {f['acc@1']:.2f} | "
                f"{q['acc@0']:.2f} {q['acc@0.5']:.2f} {q['acc@1']:.2f}   {mean:7.1f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

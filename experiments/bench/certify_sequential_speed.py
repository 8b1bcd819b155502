"""Sequential vs fixed certification speed, before (main at 6bc355e) and after an in-flight example
may draw several looks per batch (issue 19).

Rows: 12 classifiers behind the mnist5k DDPM denoiser, and 12 LeNets without one; each certified
multi-classifier (one run, every noisy batch classified by all 12) with fixed n = N, and with
SEQ-CERT at budget N and at a larger budget (default N = 10,000 and 100,000). Per row: wall time,
CPU time, noisy copies drawn (forward-batch images), copies used (per example its n0 selection
copies plus the look at which its last classifier stopped, read from the rows: what is drawn past
that look is wasted), forward batches and host reads (device -> host count reads) per batch. CPU s
is the process's CPU time over the same span: on a machine shared with other jobs wall time mostly
measures the others' load, CPU time the work this process did (on a GPU, wall time is the figure
that counts). Each worker first runs one untimed warm-up certification, so that no row pays for
the first calls into torch. "before" runs this same file in a subprocess with PYTHONPATH pointing
at an extracted copy of 6bc355e (``git archive 6bc355e | tar -x -C DIR``).

The LeNets are untrained (random weights, seeds 0-11): the timing measures the engine, not the
classifiers; a real classifier's savings depend on its confidence.

    python experiments/bench/certify_sequential_speed.py --before /tmp/s6seq_before \
        --denoiser /work/checkpoints/denoisers/mnist5k_ddpm --digits-lenet 2,20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def configs_for(budgets: tuple[int, int]) -> tuple[tuple[str, int], ...]:
    """fixed n = the first budget, sequential at it and at the second."""
    return (("fixed", budgets[0]), ("sequential", budgets[0]), ("sequential", budgets[1]))


class Counting(torch.nn.Module):
    """The denoiser (or the identity), counting forward batches."""

    def __init__(self, inner: torch.nn.Module | None, sigma: float) -> None:
        super().__init__()
        from ddsx.denoisers.base import IdentityDenoiser

        self.inner = inner if inner is not None else IdentityDenoiser(sigma)
        self.sigma = sigma
        self.batches = 0
        self.images = 0

    def forward(self, x):
        self.batches += 1
        self.images += len(x)
        return self.inner(x)

    def describe(self):
        return self.inner.describe() if hasattr(self.inner, "describe") else {"name": "none"}


def measure(denoiser_path: str | None, digits: int, sigma: float, batch_size: int, configs) -> list[dict]:
    """Certify ``digits`` test digits in every configuration with the code on sys.path; one dict each."""
    from ddsx.certification import CertifySettings, ClassifierSpec, build_certifier, read_results
    from ddsx.data.mnist5k import MNIST5kDataModule
    from ddsx.models.classifiers import lenet

    torch.set_num_threads(2)
    datamodule = MNIST5kDataModule(data_dir=".", batch_size=64)
    datamodule.setup("test")
    dataset = [datamodule.test_set[i] for i in range(digits)]
    inner = None
    if denoiser_path:
        from ddsx.denoisers.load import load_diffusers_denoiser

        inner = load_diffusers_denoiser(denoiser_path, sigma=sigma).eval()
    classifiers = []
    for seed in range(12):
        torch.manual_seed(seed)
        classifiers.append(lenet(num_classes=10, in_channels=1).eval())
    reads = {"n": 0}
    original_int, original_cpu = torch.Tensor.__int__, torch.Tensor.cpu

    def counted_int(self):
        reads["n"] += 1
        return original_int(self)

    def counted_cpu(self, *args, **kwargs):
        reads["n"] += 1
        return original_cpu(self, *args, **kwargs)

    out = []
    for mode, n in configs:
        with tempfile.TemporaryDirectory() as folder:
            values = {"sigma": sigma, "n0": 100, "n": n, "alpha": 0.001, "batch_size": batch_size}
            values |= {"progress": False, "mode": mode, "output": str(Path(folder) / "c.tsv")}
            if mode == "sequential":
                values["select"] = "n0"  # the same selection as fixed: a like-for-like comparison
            counting = Counting(inner, sigma)
            specs = [ClassifierSpec(c, "test", name=f"h{i}") for i, c in enumerate(classifiers)]
            engine = build_certifier(
                CertifySettings.from_mapping(values),
                specs,
                denoiser=counting,
                dataset=dataset,
                dataset_name="mnist5k",
                num_classes=10,
            )
            reads["n"] = 0
            torch.Tensor.__int__, torch.Tensor.cpu = counted_int, counted_cpu
            start, cpu_start = time.perf_counter(), time.process_time()
            try:
                paths = engine.run(dataset)
            finally:
                torch.Tensor.__int__, torch.Tensor.cpu = original_int, original_cpu
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            rows = [read_results(p) for p in paths]
            assert all(len(r) == digits for r in rows)  # every classifier's rows are there
            # Per example: its selection copies and the look at which its last classifier stopped.
            used = sum(values["n0"] + max(r.samples for r in per) for per in zip(*rows, strict=True))
            out.append(
                {
                    "mode": mode,
                    "n": n,
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "copies": counting.images,  # noisy copies drawn (each denoised once, all classifiers)
                    "used": used,
                    "batches": counting.batches,
                    "reads": reads["n"],
                }
            )
    return out


def budgets(text: str) -> list[tuple[int, int]]:
    """ "N,LARGE" pairs separated by ";", one per digit count (or one for every count)."""
    pairs = []
    for pair in text.split(";"):
        small, large = (int(v) for v in pair.split(","))
        pairs.append((small, large))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", help="extracted copy of the old code (6bc355e)")
    parser.add_argument("--denoiser", default="/work/checkpoints/denoisers/mnist5k_ddpm")
    parser.add_argument("--digits-denoiser", default="1", help="digits per denoiser row set, comma-separated")
    parser.add_argument("--digits-lenet", default="2,20", help="digits per LeNet row set, comma-separated")
    parser.add_argument(
        "--budgets-denoiser",
        type=budgets,
        default=[(10_000, 100_000)],
        help="N,LARGE[;N,LARGE per digit count]",
    )
    parser.add_argument(
        "--budgets-lenet", type=budgets, default=[(10_000, 100_000)], help="N,LARGE[;N,LARGE per digit count]"
    )
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--setups", default="lenet,denoiser", help="which rows, in order: lenet, denoiser or both"
    )
    parser.add_argument("--worker", choices=["denoiser", "lenet"], help=argparse.SUPPRESS)
    parser.add_argument("--digits", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # one measurement with whatever ddsx is on the path; JSON on stdout
        path = args.denoiser if args.worker == "denoiser" else None
        [pair] = args.budgets_denoiser if args.worker == "denoiser" else args.budgets_lenet
        configs = configs_for(pair)
        measure(path, 1, args.sigma, args.batch_size, configs=(("fixed", 200),))  # warm-up, untimed
        print(json.dumps(measure(path, args.digits, args.sigma, args.batch_size, configs)))
        return
    here = Path(__file__).resolve().parents[2]
    versions = {"after": str(here)} | ({"before": args.before} if args.before else {})
    print(
        f"sigma={args.sigma} batch_size={args.batch_size} alpha=0.001 n0=100, select=n0, 12 untrained classifiers"
    )
    print(
        f"{'setup':<31} {'code':<7} {'mode':<11} {'n':>7} {'wall s':>8} {'CPU s':>8} {'drawn':>9} "
        f"{'used':>9} {'batches':>8} {'reads/batch':>11}"
    )
    labels = {"lenet": "12 LeNets", "denoiser": "mnist5k DDPM + 12 LeNets"}
    for worker in args.setups.split(","):  # in the order given: a timeout keeps the first rows
        label = labels[worker]
        digit_counts = [
            int(d) for d in (args.digits_denoiser if worker == "denoiser" else args.digits_lenet).split(",")
        ]
        pairs = args.budgets_denoiser if worker == "denoiser" else args.budgets_lenet
        pairs = pairs * len(digit_counts) if len(pairs) == 1 else pairs
        if len(pairs) != len(digit_counts):
            parser.error(f"{worker}: one budget pair, or one per digit count ({len(digit_counts)})")
        for digits, pair in zip(digit_counts, pairs, strict=True):
            for version, root in versions.items():
                env = os.environ | {"PYTHONPATH": root}
                command = [sys.executable, __file__, "--worker", worker, "--denoiser", args.denoiser]
                command += ["--digits", str(digits), "--sigma", str(args.sigma)]
                command += ["--batch-size", str(args.batch_size)]
                command += [f"--budgets-{worker}", ",".join(map(str, pair))]
                result = subprocess.run(
                    command, env=env, capture_output=True, text=True, check=False, cwd=root
                )
                if result.returncode:
                    print(f"{label} {version}: failed\n{result.stderr[-2000:]}", flush=True)
                    continue
                for r in json.loads(result.stdout.strip().splitlines()[-1]):
                    per_batch = r["reads"] / max(1, r["batches"])
                    print(
                        f"{label + f' ({digits} digits)':<31} {version:<7} {r['mode']:<11} {r['n']:>7} "
                        f"{r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} {r['copies']:>9} {r['used']:>9} "
                        f"{r['batches']:>8} {per_batch:>11.2f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()

"""ddsx-analyze: the quantities against closed forms, and an end-to-end run with the real configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from ddsx.analysis.measure import NO_CLASSIFIER
from ddsx.analysis.metrics import Accuracy, MeanKLDivergence, MeanL2Distance, NoiseMisestimation
from ddsx.analysis.noise import noise_at_t_star
from ddsx.analysis.outputs import read_tsv
from ddsx.cli.analyze import MissingCheckpointError, MissingDenoiserError, analyze
from ddsx.denoisers.dds import DiffusionDenoiser
from tests.conftest import compose_config
from tests.test_certification_cli import save_tiny_ddpm, write_checkpoint

T = 1000
ABAR = torch.cumprod(1.0 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), dim=0)


class OracleUNet(nn.Module):
    """Returns the noise that truly produced x_t, knowing the clean images y0 on the [-1,1] scale."""

    def __init__(self, clean: torch.Tensor) -> None:
        super().__init__()
        self.y0 = 2.0 * clean - 1.0

    def forward(self, x_t: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        a = ABAR[int(timestep[0])].item()
        return (x_t - a**0.5 * self.y0) / (1.0 - a) ** 0.5


class ZeroUNet(nn.Module):
    def forward(self, x_t: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x_t)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 1, 8, 8, generator=generator, dtype=torch.float64)
    eps = torch.randn(4, 1, 8, 8, generator=generator, dtype=torch.float64)
    return x, eps


def _misestimation(unet: nn.Module, x: torch.Tensor, eps: torch.Tensor, sigma: float) -> float:
    denoiser = DiffusionDenoiser(unet, ABAR, sigma, resolution="native")
    metric = NoiseMisestimation()
    metric.update(*noise_at_t_star(denoiser, x, eps))
    return float(metric.compute())


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0])
def test_misestimation_is_zero_for_a_unet_that_returns_the_true_noise(sigma: float) -> None:
    x, eps = _batch()
    assert _misestimation(OracleUNet(x), x, eps, sigma) < 1e-24


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0])
def test_misestimation_of_a_zero_unet_is_the_mean_square_of_the_true_noise(sigma: float) -> None:
    x, eps = _batch(1)
    denoiser = DiffusionDenoiser(ZeroUNet(), ABAR, sigma, resolution="native")
    a = ABAR[denoiser.t_star].item()
    # x_t = sqrt(a) (2 (x + sigma eps) - 1) = sqrt(a) y0 + sqrt(1 - a) eps_true:
    eps_true = 2.0 * sigma * math.sqrt(a / (1.0 - a)) * eps
    expected = float(eps_true.pow(2).mean())
    assert _misestimation(ZeroUNet(), x, eps, sigma) == pytest.approx(expected, rel=1e-12)
    # t* rounds 2 sigma to the nearest noise level: eps_true is eps up to that rounding.
    assert eps_true.div(eps).mean().item() == pytest.approx(1.0, abs=0.02)


def test_metrics_weight_every_example_equally_across_updates() -> None:
    a, b = torch.randn(3, 1, 4, 4), torch.randn(5, 1, 4, 4)
    split, whole = MeanL2Distance(), MeanL2Distance()
    split.update(a, torch.zeros_like(a))
    split.update(b, torch.zeros_like(b))
    whole.update(torch.cat([a, b]), torch.zeros(8, 1, 4, 4))
    expected = torch.cat([a, b]).flatten(1).norm(dim=1).mean()
    assert float(split.compute()) == pytest.approx(float(expected), rel=1e-6)
    assert float(whole.compute()) == pytest.approx(float(expected), rel=1e-6)
    misestimation = NoiseMisestimation()
    misestimation.update(a, torch.zeros_like(a))
    misestimation.update(b[:, :, :2], torch.zeros_like(b[:, :, :2]))  # fewer pixels: a per-pixel mean
    pixels = torch.cat([a.flatten(), b[:, :, :2].flatten()])
    assert float(misestimation.compute()) == pytest.approx(float(pixels.pow(2).mean()), rel=1e-6)


def test_kl_is_zero_for_identical_outputs_and_matches_the_closed_form() -> None:
    logits = torch.randn(6, 10)
    same = MeanKLDivergence()
    same.update(logits, logits.clone())
    assert float(same.compute()) == 0.0
    # p = (1/2, 1/2), q = (9/10, 1/10): KL(p || q) = 1/2 ln(5/9) + 1/2 ln 5.
    kl = MeanKLDivergence()
    kl.update(
        torch.zeros(1, 2, dtype=torch.float64), torch.tensor([[math.log(9.0), 0.0]], dtype=torch.float64)
    )
    assert float(kl.compute()) == pytest.approx(0.5 * math.log(5 / 9) + 0.5 * math.log(5), rel=1e-12)


def test_accuracy_counts_arg_max_hits() -> None:
    accuracy = Accuracy()
    accuracy.update(torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0]]), torch.tensor([0, 0, 0]))
    assert float(accuracy.compute()) == pytest.approx(2 / 3)


@pytest.fixture
def compose_analyze(tmp_path: Path):
    def _compose(*overrides: str):
        return compose_config(
            "ddsx_analyze",
            [f"paths.root_dir={tmp_path}", "dataset=digits", "batch_size=8", *overrides],
            tmp_path / "run",
        )

    yield _compose
    GlobalHydra.instance().clear()


def test_end_to_end_writes_the_table_plots_and_grids(compose_analyze, tmp_path: Path) -> None:
    save_tiny_ddpm(tmp_path / "ddpm")
    (tmp_path / "lenet_run" / "checkpoints").mkdir(parents=True)
    ckpt = write_checkpoint(tmp_path / "lenet_run" / "checkpoints" / "last.ckpt")
    cfg = compose_analyze(
        "denoiser=diffusers",
        f"denoiser.path={tmp_path / 'ddpm'}",
        f"ckpt_path=[{ckpt}]",
        "max_examples=12",
        "sigmas.num=2",
        "extra_sigmas=[0.25]",
        "grid_examples=3",
    )
    table = analyze(cfg)
    run = tmp_path / "run"
    assert table == run / "analysis.tsv"
    rows = read_tsv(table)
    sigmas = sorted({r[0] for r in rows})
    assert sigmas == [0.05, 0.25, 1.0]
    quantities = {(q, c) for _, q, c, _, _ in rows}
    assert ("misestimation", NO_CLASSIFIER) in quantities and ("ssim", NO_CLASSIFIER) in quantities
    assert ("lpips", NO_CLASSIFIER) not in quantities  # no weight file given: never downloaded
    assert ("kl_attacked", "lenet_run") in quantities and ("accuracy_denoised", "lenet_run") in quantities
    assert len(rows) == 3 * len(quantities) and all(r[4] == 12 for r in rows)
    # One noise draw per sigma: accuracy on clean inputs cannot depend on sigma.
    clean = {r[3] for r in rows if r[1] == "accuracy_clean"}
    assert len(clean) == 1
    for quantity, _ in quantities:
        assert (run / "plots" / f"{quantity}.png").stat().st_size > 0
    from PIL import Image

    grid = Image.open(run / "grids" / "sigma_0.25.png")
    # 4 rows (clean, noisy, denoised, attacked) of 3 images of 8 pixels, 2-pixel padding.
    assert grid.size == (3 * 10 + 2, 4 * 10 + 2)
    assert (run / "config_resolved.yaml").is_file()
    assert not (run / "wandb").exists()


def test_a_missing_denoiser_folder_is_named(compose_analyze, tmp_path: Path) -> None:
    cfg = compose_analyze("denoiser=diffusers", f"denoiser.path={tmp_path / 'nowhere'}", "sigmas.num=1")
    with pytest.raises(MissingDenoiserError, match=str(tmp_path / "nowhere")):
        analyze(cfg)


def test_a_missing_checkpoint_is_named(compose_analyze, tmp_path: Path) -> None:
    save_tiny_ddpm(tmp_path / "ddpm")
    missing = tmp_path / "gone" / "last.ckpt"
    cfg = compose_analyze(
        "denoiser=diffusers", f"denoiser.path={tmp_path / 'ddpm'}", f"ckpt_path={missing}", "sigmas.num=1"
    )
    with pytest.raises(MissingCheckpointError, match=str(missing)):
        analyze(cfg)


def test_without_attack_the_attacked_quantities_equal_the_denoised_ones(
    compose_analyze, tmp_path: Path
) -> None:
    # attack=none: delta* = 0, so the attacked path sees exactly the noise draw of the denoised path.
    save_tiny_ddpm(tmp_path / "ddpm")
    ckpt = write_checkpoint(tmp_path / "last.ckpt")
    cfg = compose_analyze(
        "denoiser=diffusers",
        f"denoiser.path={tmp_path / 'ddpm'}",
        f"ckpt_path={ckpt}",
        "attack=none",
        "max_examples=10",
        "sigmas.num=1",
        "sigmas.start=0.5",
        "grid_examples=0",
    )
    values = {(q, c): v for _, q, c, v, _ in read_tsv(analyze(cfg))}
    [name] = {c for _, c in values if c != NO_CLASSIFIER}
    pairs = [
        (("kl_attacked", name), ("kl_denoised", name)),
        (("accuracy_attacked", name), ("accuracy_denoised", name)),
        (("l2_attacked", name), ("l2", NO_CLASSIFIER)),
        (("misestimation_attacked", name), ("misestimation", NO_CLASSIFIER)),
    ]
    for attacked, plain in pairs:
        assert values[attacked] == pytest.approx(values[plain], rel=1e-6, abs=1e-9), attacked
    assert values[("kl_denoised", name)] > 0


@pytest.mark.slow
def test_lpips_reads_its_backbone_from_the_given_file_only(tmp_path: Path) -> None:
    # A randomly initialised AlexNet saved to disk stands for the real weight file (never downloaded).
    import torchvision

    from ddsx.analysis.metrics import LPIPSDistance

    torch.manual_seed(0)
    backbone = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(backbone.state_dict(), path)
    metric = LPIPSDistance(path, "alex")
    first_conv = metric.net.net.slice1[0].weight
    assert torch.equal(first_conv, backbone.features[0].weight)
    images = torch.rand(2, 1, 28, 28)
    metric.update(images, images)
    assert float(metric.compute()) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        LPIPSDistance(tmp_path / "nowhere.pth")


def _update_one_half(rank: int, port: int, results) -> None:
    """One of two gloo processes: its half of the data, then ``compute`` (which gathers both halves)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        data = torch.arange(24, dtype=torch.float64).view(6, 1, 2, 2)
        metrics = [NoiseMisestimation(), MeanL2Distance(), Accuracy(), MeanKLDivergence()]
        # Rank 0 gets 2 examples, rank 1 gets 4: an unweighted mean of the two halves would be wrong.
        part = data[:2] if rank == 0 else data[2:]
        labels = torch.tensor([0, 1, 1, 0, 1, 0])[:2] if rank == 0 else torch.tensor([0, 1, 1, 0, 1, 0])[2:]
        logits = torch.stack([part.flatten(1).sum(1), 2 * part.flatten(1).mean(1)], dim=1)
        metrics[0].update(part, torch.zeros_like(part))
        metrics[1].update(part, torch.zeros_like(part))
        metrics[2].update(logits, labels)
        metrics[3].update(logits, logits.flip(1))
        results[rank] = [float(m.compute()) for m in metrics]
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_metrics_gather_every_process_under_ddp() -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_update_one_half, args=(port, results), nprocs=2, join=True)
    data = torch.arange(24, dtype=torch.float64).view(6, 1, 2, 2)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    logits = torch.stack([data.flatten(1).sum(1), 2 * data.flatten(1).mean(1)], dim=1)
    whole = [NoiseMisestimation(), MeanL2Distance(), Accuracy(), MeanKLDivergence()]
    whole[0].update(data, torch.zeros_like(data))
    whole[1].update(data, torch.zeros_like(data))
    whole[2].update(logits, labels)
    whole[3].update(logits, logits.flip(1))
    expected = [float(m.compute()) for m in whole]
    assert results[0] == pytest.approx(expected, rel=1e-12)
    assert results[1] == pytest.approx(expected, rel=1e-12)

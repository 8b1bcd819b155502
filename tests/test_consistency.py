"""The one-step consistency denoiser (issue 20): its parametrisation, the distillation step against the
closed-form DDIM step, what distillation learns (the teacher's multi-step ODE solution), the saved folder
and its hostile variants, and `ddsx-denoiser mode=distill` through the app."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest
import torch
from diffusers import DDPMScheduler
from hydra.core.global_hydra import GlobalHydra

from ddsx.cli.denoiser import run
from ddsx.cli.errors import DDSXError
from ddsx.denoisers.consistency import ConsistencyDenoiser, consistency_function
from ddsx.denoisers.consistency_distill import ConsistencyDistillation, distance, timestep_grid
from ddsx.denoisers.consistency_folder import load_consistency_denoiser, save_consistency_folder
from ddsx.denoisers.folder import save_diffusers_folder
from ddsx.denoisers.load import load_diffusers_denoiser
from ddsx.errors import ModelFileError
from tests.conftest import compose_config, tiny_unet

SCHEDULER = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
ABAR = SCHEDULER.alphas_cumprod.double()


def levels() -> torch.Tensor:
    """s_t = sqrt((1 - abar_t) / abar_t), written out here rather than taken from the code under test."""
    return ((1 - ABAR) / ABAR).sqrt()


def distillation(teacher_seed: int = 0, **options) -> ConsistencyDistillation:
    arguments = {"sigma_max": 1.0, "num_intervals": 4, "target_ema_decay": 0.5, "distance": "l2"} | options
    return ConsistencyDistillation(
        tiny_unet(8, teacher_seed),
        ABAR,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
        **arguments,
    )


def train_steps(
    module: ConsistencyDistillation, images: torch.Tensor, steps: int, seed: int = 0
) -> list[float]:
    """Plain distillation steps on ``images`` (random grid index and noise each step), EMA after each."""
    optimizer = module.configure_optimizers()
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        n = torch.randint(0, len(module.grid) - 1, (images.shape[0],), generator=gen)
        loss = module.distillation_loss(2 * images - 1, n, torch.randn(images.shape, generator=gen))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        module.on_train_batch_end(None, None, 0)
        losses.append(float(loss.detach()))
    return losses


def images(count: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# ----- the parametrisation ---------------------------------------------------------------------------


def test_the_boundary_condition_holds_exactly_for_any_weights() -> None:
    unet = tiny_unet(8, seed=3)
    z = torch.randn(4, 1, 8, 8)
    s = levels().float()
    t_min = torch.zeros(4, dtype=torch.long)
    assert torch.equal(
        consistency_function(unet, z, t_min, s, float(s[0])), z
    )  # f(z, t_min) = z, no tolerance
    # Away from the boundary it is z - (s - s_min) eps_theta(z / sqrt(1 + s^2), t), the UNet really called.
    t = torch.tensor([10, 200, 400, 600])
    s_t = s[t].view(-1, 1, 1, 1)
    eps = unet(z / torch.sqrt(1 + s_t**2), t).sample
    expected = z - (s_t - float(s[0])) * eps
    torch.testing.assert_close(consistency_function(unet, z, t, s, float(s[0])), expected)
    assert (expected - z).abs().amax() > 1e-3


def test_the_teacher_step_is_one_ddim_step() -> None:
    """DDIM (eta 0) from t to t' in the DDPM's own coordinates x_t = sqrt(abar) y + sqrt(1 - abar) eps."""
    module = distillation()
    z = torch.randn(3, 1, 8, 8)
    t_from, t_to = torch.tensor([300, 120, 40]), torch.tensor([200, 60, 0])
    a, a_to = ABAR[t_from].float().view(-1, 1, 1, 1), ABAR[t_to].float().view(-1, 1, 1, 1)
    x_t = a.sqrt() * z
    eps = module.teacher(x_t, t_from).sample
    x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
    x_to = a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps
    torch.testing.assert_close(module.teacher_step(z, t_from, t_to), x_to / a_to.sqrt(), rtol=1e-4, atol=1e-5)


def test_the_grid_and_the_distances() -> None:
    assert timestep_grid(0, 100, 4) == [0, 25, 50, 75, 100]
    assert timestep_grid(0, 3, 10) == [0, 1, 2, 3]  # a short range: each timestep once
    a, b = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2) * 3
    assert float(distance(a, b, "l2")) == 9.0
    c = 0.00054 * 2  # 0.00054 sqrt(4)
    torch.testing.assert_close(distance(a, b, "pseudo_huber"), torch.tensor((36 + c * c) ** 0.5 - c))
    with pytest.raises(ValueError, match="distance"):
        distance(a, b, "l1")


# ----- the distillation step -----------------------------------------------------------------------


def test_the_student_starts_as_the_teacher_and_the_loss_decreases_on_a_fixed_batch() -> None:
    module = distillation()
    t_star = int((levels() - 2.0).abs().argmin())  # sigma 1.0 is 2.0 on the [-1, 1] scale
    assert module.t_max == t_star == 701 and module.grid == [0, 175, 350, 526, 701]
    x = 2 * images() - 1
    n = torch.tensor([0, 1, 2, 3] * 4)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    optimizer = module.configure_optimizers()
    losses = []
    for _ in range(40):
        loss = module.distillation_loss(x, n, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        module.on_train_batch_end(None, None, 0)
        losses.append(float(loss.detach()))
    assert losses[0] > 0
    assert losses[-1] < 0.3 * losses[0], losses[::8]
    assert any(p.grad is not None for p in module.student.parameters())
    assert all(not p.requires_grad for p in [*module.teacher.parameters(), *module.target.parameters()])


def test_the_target_is_the_ema_of_the_student() -> None:
    module = distillation(target_ema_decay=0.75)
    before = [p.detach().clone() for p in module.target.parameters()]
    with torch.no_grad():
        for p in module.student.parameters():
            p.add_(1.0)
    module.on_train_batch_end(None, None, 0)
    for old, ema, live in zip(before, module.target.parameters(), module.student.parameters(), strict=True):
        torch.testing.assert_close(ema, 0.75 * old + 0.25 * live)


def euler_solution(module: ConsistencyDistillation, z: torch.Tensor) -> torch.Tensor:
    """The teacher's N-step Euler (DDIM) solution from t_N to t_0 on the module's grid: CD's fixed point."""
    with torch.no_grad():
        for t_from, t_to in zip(module.grid[::-1], module.grid[-2::-1], strict=False):
            z = module.teacher_step(z, torch.full((z.shape[0],), t_from), torch.full((z.shape[0],), t_to))
    return z


MU, TAU = 0.2, 0.5  # Gaussian "images" y ~ N(MU, TAU^2) per pixel, on the [-1, 1] scale


class GaussianEps(torch.nn.Module):
    """The exact posterior-mean noise of Gaussian data, E[eps | z] = s (z - MU) / (TAU^2 + s^2), as a
    DDPM's UNet (x_t, t) -> eps; its copies learn one coefficient per timestep, which can express the
    exact consistency function (z - MU) sqrt((TAU^2 + s_min^2) / (TAU^2 + s^2)) + MU."""

    def __init__(self) -> None:
        super().__init__()
        s = levels().float()
        self.register_buffer("s", s)
        self.coefficient = torch.nn.Parameter(s / (TAU**2 + s**2))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self.s[t].view(-1, 1, 1, 1)
        return self.coefficient[t].view(-1, 1, 1, 1) * (x_t * torch.sqrt(1 + s * s) - MU)


def test_distillation_of_an_exact_gaussian_teacher_reaches_its_ode_solution() -> None:
    """A closed-form case: the teacher is exact for Gaussian data, so its probability-flow ODE ends at
    MU + (z - MU) sqrt((TAU^2 + s_min^2) / (TAU^2 + s^2)). Before training the student is the one-step
    Euler solution, 16% (of ||z - MU||) away from the ODE's end; after 400 steps its one-step output on
    fixed inputs must lie within 0.5% of the teacher's 10-step Euler solution (CD's fixed point, itself
    within 3% of the exact end: the grid's discretisation error)."""
    torch.manual_seed(0)
    module = ConsistencyDistillation(
        GaussianEps(), ABAR, optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        sigma_max=1.0, num_intervals=10, target_ema_decay=0.5, distance="l2",
    )  # fmt: skip
    gen = torch.Generator().manual_seed(4)
    y = MU + TAU * torch.randn(64, 1, 4, 4, generator=gen)
    s_max, s_min = float(levels()[module.t_max]), float(levels()[0])
    z = y + s_max * torch.randn(y.shape, generator=gen)
    exact = MU + (z - MU) * ((TAU**2 + s_min**2) / (TAU**2 + s_max**2)) ** 0.5
    euler = euler_solution(module, z)
    scale = float((z - MU).norm())
    t_max = torch.full((z.shape[0],), module.t_max)

    def gap_to_euler() -> float:
        with torch.no_grad():
            return float((module.f(module.target, z, t_max) - euler).norm()) / scale

    assert float((euler - exact).norm()) / scale < 0.03
    before = gap_to_euler()
    assert before > 0.1, before  # one Euler step over the whole range is far from the ODE's end
    optimizer = module.configure_optimizers()
    for _ in range(400):
        n = torch.randint(0, len(module.grid) - 1, (y.shape[0],), generator=gen)
        loss = module.distillation_loss(y, n, torch.randn(y.shape, generator=gen))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        module.on_train_batch_end(None, None, 0)
    after = gap_to_euler()
    assert after < 0.005, (before, after)


# ----- the denoiser and its folder -------------------------------------------------------------------


def saved_folder(
    tmp_path: Path, module: ConsistencyDistillation | None = None
) -> tuple[Path, ConsistencyDistillation]:
    module = module or distillation()
    train_steps(module, images(), 3)  # the saved weights differ from the teacher's
    folder = save_consistency_folder(
        module.target, dict(SCHEDULER.config), tmp_path / "cm", module.t_min, module.t_max
    )
    return folder, module


def test_the_saved_folder_loads_as_the_in_memory_model(tmp_path: Path) -> None:
    folder, module = saved_folder(tmp_path)
    loaded = load_consistency_denoiser(folder, sigma=0.5)
    in_memory = module.consistency_denoiser(0.5)
    x = images(4, seed=9)
    torch.testing.assert_close(loaded(x), in_memory(x), rtol=0, atol=1e-6)
    # The one-shot rule written out: f(2x - 1, s_t*) on the [-1, 1] scale, clipped, back to [0, 1].
    t_star = loaded.describe()["t_star"]
    s, s_min = levels()[t_star].float(), levels()[0].float()
    z = 2 * x - 1
    with torch.no_grad():
        eps = module.target(z / torch.sqrt(1 + s * s), torch.full((4,), t_star)).sample
    torch.testing.assert_close(loaded(x), ((z - (s - s_min) * eps).clamp(-1, 1) + 1) / 2)
    teacher_dds = load_diffusers_denoiser_from(module)(x)
    assert (loaded(x) - teacher_dds).abs().amax() > 1e-4  # a different function from the teacher's DDS
    info = loaded.describe()
    assert (info["name"], info["t_min"], info["t_max"], info["source"]) == (
        "consistency",
        0,
        701,
        str(folder),
    )
    assert all(not p.requires_grad for p in loaded.parameters()) and not loaded.training
    # Differentiable in its input (dds_adv attacks through it).
    x.requires_grad_(True)
    loaded(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def load_diffusers_denoiser_from(module: ConsistencyDistillation):
    from ddsx.denoisers.dds import DiffusionDenoiser

    return DiffusionDenoiser(module.teacher, ABAR, 0.5)


def test_a_sigma_beyond_the_distilled_range_is_refused(tmp_path: Path) -> None:
    folder, _ = saved_folder(tmp_path, distillation(sigma_max=0.5))
    denoiser = load_consistency_denoiser(folder, sigma=0.25)
    with pytest.raises(ValueError, match="outside the range"):
        denoiser.set_sigma(1.0)
    with pytest.raises(ValueError, match="outside the range"):
        load_consistency_denoiser(folder, sigma=1.0)


def test_the_dds_loader_refuses_a_consistency_folder(tmp_path: Path) -> None:
    folder, _ = saved_folder(tmp_path)
    with pytest.raises(ModelFileError, match="holds a consistency model"):
        load_diffusers_denoiser(folder, sigma=0.5)


def _marker(**changes):
    base = {
        "model": "consistency",
        "format": 1,
        "parametrisation": "f = z - (s - s_min) * eps_theta(z / sqrt(1 + s^2), t)",
        "t_min": 0,
        "t_max": 701,
    }
    return json.dumps({k: v for k, v in (base | changes).items() if v is not None})


HOSTILE_MARKERS = {
    "not json": ("{model: consistency", "is not JSON"),
    "a list": ("[1, 2]", "must hold a JSON object"),
    "another model": (_marker(model="ddpm"), "model='ddpm' is refused"),
    "a future format": (_marker(format=2), "format=2 is refused"),
    "format as text": (_marker(format="1"), "format='1' is refused"),
    "format as a boolean": (_marker(format=True), "format=True is refused"),
    "another formula": (_marker(parametrisation="f = z"), "parametrisation='f = z' is refused"),
    "t_max beyond the schedule": (_marker(t_max=10**9), "t_max=1000000000 is refused"),
    "t_min negative": (_marker(t_min=-1), "t_min=-1 is refused"),
    "t_min a boolean": (_marker(t_min=True), "t_min=True is refused"),
    "t_max a float": (_marker(t_max=701.0), "t_max=701.0 is refused"),
    "t_max missing": (_marker(t_max=None), "t_max=None is refused"),
    "t_min above t_max": (_marker(t_min=800), "t_min=800 must be below t_max=701"),
    "huge": (" " * 70_000 + "{}", "not a consistency marker"),
    "binary": (b"\xff\xfe\x00", "is not JSON"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MARKERS))
def test_a_hostile_marker_is_refused_in_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    folder, _ = saved_folder(tmp_path)
    content, message = HOSTILE_MARKERS[case]
    marker = folder / "consistency.json"
    marker.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ModelFileError) as refusal:
        load_consistency_denoiser(folder, sigma=0.5)
    text = str(refusal.value)
    assert message in text and str(marker) in text and "\n" not in text, text


def test_a_folder_without_the_marker_is_refused(tmp_path: Path) -> None:
    save_diffusers_folder(tiny_unet(8), SCHEDULER, tmp_path / "ddpm")
    with pytest.raises(ModelFileError, match="has no consistency.json: it is not a consistency model"):
        load_consistency_denoiser(tmp_path / "ddpm", sigma=0.5)


# ----- ddsx-denoiser mode=distill and denoiser=consistency ---------------------------------------


@pytest.fixture
def compose_denoiser(tmp_path: Path):
    def _compose(*overrides: str):
        return compose_config(
            "ddsx_denoiser",
            [f"paths.root_dir={tmp_path}", "dataset=digits", "logger=none", *overrides],
            tmp_path / "run",
        )

    yield _compose
    GlobalHydra.instance().clear()


def test_distill_mode_through_the_app(compose_denoiser, tmp_path: Path) -> None:
    teacher = save_diffusers_folder(tiny_unet(8), SCHEDULER, tmp_path / "teacher")
    settings = [
        "mode=distill",
        f"distill.teacher={teacher}",
        "distill.num_intervals=4",
        "distill.quality.num_digits=20",
        "distill.quality.ode_steps=3",
        "distill.val_sigmas=[0.5]",
        "debug=fast_dev_run",
    ]
    cfg = compose_denoiser(*settings)
    metrics = run(cfg)
    # A smoke run never overwrites the real save_dir.
    saved = Path(metrics["save_dir"])
    assert saved == tmp_path / "run" / "denoiser" and not Path(cfg.distill.save_dir).exists()
    assert metrics["train/loss_step"] > 0 and metrics["val/ratio_to_teacher@0.5"] > 0
    quality = json.loads((saved / "quality.json").read_text())
    assert quality["digits"] == 20 and quality["steps"] == 1 and quality["meets_target"] is False
    assert quality["target"]["max_l2_ratio"] == pytest.approx(1.5 * quality["teacher_l2_ratio"]["0.5"])
    assert quality["ratio_to_teacher"]["0.5"] == pytest.approx(
        quality["l2_ratio"]["0.5"] / quality["teacher_l2_ratio"]["0.5"]
    )
    GlobalHydra.instance().clear()
    # mode=check reads it like a DDPM's quality.json: a smoke run never meets its target.
    with pytest.raises(DDSXError, match="is BELOW the target"):
        run(compose_denoiser("mode=check", f"save_dir={saved}"))
    GlobalHydra.instance().clear()
    # denoiser=consistency (the conf/denoiser yaml) loads it.
    train_cfg = compose_config(
        "ddsx_train",
        [f"paths.root_dir={tmp_path}", "denoiser=consistency", f"denoiser.path={saved}", "sigma=0.5"],
        tmp_path / "t",
    )
    denoiser = hydra.utils.instantiate(train_cfg.denoiser)
    assert isinstance(denoiser, ConsistencyDenoiser) and denoiser.describe()["t_max"] == 701
    assert denoiser(images(2)).shape == (2, 1, 8, 8)
    GlobalHydra.instance().clear()
    # A consistency folder is no teacher.
    with pytest.raises(ModelFileError, match="holds a consistency model"):
        run(compose_denoiser(*settings[:1], f"distill.teacher={saved}", *settings[2:]))

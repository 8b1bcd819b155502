"""Voting denoisers (issue 20): DensePure-style stochastic reverse runs and DiffSmooth-style local
smoothing. The vote against hand-computed cases, the stochastic reverse step against diffusers' own
DDIM and DDPM schedulers, the engine's seam (each copy's denoiser noise is sample j of the example's
seeded DENOISER_STREAM, whatever the batch size), and the settings a resume compares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from ddsx.certification import read_results, sidecar_path
from ddsx.certification.build import build_denoiser
from ddsx.cli.certify import certify
from ddsx.cli.errors import expected_message
from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.denoisers.densepure import DensePureDenoiser
from ddsx.denoisers.local_smoothing import LocalSmoothingDenoiser
from ddsx.denoisers.schedule import achieved_sigma
from ddsx.denoisers.vote import VotingDenoiser, VotingDenoiserError, majority_vote
from ddsx.smoothing.noise import DENOISER_STREAM, GaussianStream, example_generator
from ddsx.utils.safe_instantiate import allowed_targets, check_config
from tests.conftest import tiny_unet
from tests.test_certification_cli import save_tiny_ddpm, write_checkpoint
from tests.test_certification_engine import _run_ranks, certifier, make_dataset, stable_fields

ABAR = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
NUM_CLASSES = 3


# ----- the vote ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([[1, 1, 2]], [1]),  # a plain majority
        ([[2, 0, 2, 0]], [0]),  # a two-way tie: the smaller label
        ([[3, 1, 2]], [1]),  # all different: the smallest
        ([[4, 4, 4]], [4]),  # unanimous
        ([[2]], [2]),  # one vote is the label itself
        ([[0, 3, 3, 1, 1, 2]], [1]),  # a tie of 1 and 3 above a single 0 and 2
        ([[1, 1, 2], [2, 0, 2], [4, 3, 3]], [1, 2, 3]),  # rows vote separately
    ],
)
def test_the_majority_vote_against_hand_computed_cases(labels, expected) -> None:
    assert majority_vote(torch.tensor(labels), num_classes=5).tolist() == expected


def test_the_majority_vote_refuses_what_is_not_a_table_of_votes() -> None:
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        majority_vote(torch.tensor([1, 2, 3]), num_classes=5)


# ----- DensePure's stochastic reverse process --------------------------------------------------------


def dds(num_steps: int, sigma: float, **options) -> DiffusionDenoiser:
    return DiffusionDenoiser(tiny_unet(8), ABAR, sigma, num_steps=num_steps, **options)


def _unet_eps(denoiser: DiffusionDenoiser, x_t: torch.Tensor, t: int) -> torch.Tensor:
    return denoiser.unet(x_t, torch.full((len(x_t),), t, dtype=torch.long)).sample


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_the_stochastic_reverse_run_is_diffusers_ddim_with_eta(eta: float) -> None:
    """Path 150 -> 100 -> 50 -> 0 is DDIM's with 20 inference steps; the same z in each step."""
    denoiser = dds(num_steps=4, sigma=achieved_sigma(ABAR, 150))
    assert denoiser.timesteps == [150, 100, 50, 0]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 8, 8, generator=g)  # the model's own size: no padding
    z = torch.randn(2, *denoiser.reverse_noise_shape((1, 8, 8)), generator=g)
    assert z.shape == (2, 3, 1, 8, 8)
    with torch.no_grad():
        ours = denoiser(x, reverse_noise=z, eta=eta)
        scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=True)
        scheduler.set_timesteps(20)
        sample = ABAR[150] ** 0.5 * (2 * x - 1)
        for i, t in enumerate([150, 100, 50, 0]):
            noise = z[:, i] if i < 3 else torch.zeros_like(sample)
            out = scheduler.step(
                _unet_eps(denoiser, sample, t), t, sample, eta=eta, use_clipped_model_output=True,
                variance_noise=noise,
            )  # fmt: skip
            sample = out.prev_sample
        reference = ((out.pred_original_sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(ours, reference, rtol=0, atol=2e-5)
    with torch.no_grad():
        assert not torch.allclose(ours, denoiser(x)), "the noise must change the result"


def test_eta_one_on_consecutive_steps_is_ddpm_ancestral_sampling() -> None:
    denoiser = dds(num_steps=4, sigma=achieved_sigma(ABAR, 3))
    assert denoiser.timesteps == [3, 2, 1, 0]
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    scheduler = DDPMScheduler(num_train_timesteps=1000)  # fixed_small: the posterior variance
    scheduler.set_timesteps(1000)
    draws = torch.Generator().manual_seed(7)
    with torch.no_grad():
        sample = ABAR[3] ** 0.5 * (2 * x - 1)
        for t in [3, 2, 1, 0]:
            sample = scheduler.step(_unet_eps(denoiser, sample, t), t, sample, generator=draws).prev_sample
        reference = ((sample + 1) / 2).clamp(0, 1)
        # diffusers drew one (2, 1, 8, 8) normal per step after t = 3, 2, 1 from the generator: the same.
        replay = torch.Generator().manual_seed(7)
        z = torch.stack([torch.randn(2, 1, 8, 8, generator=replay) for _ in range(3)], dim=1)
        ours = denoiser(x, reverse_noise=z, eta=1.0)
    torch.testing.assert_close(ours, reference, rtol=0, atol=2e-5)


def test_densepure_runs_each_copy_votes_times_with_its_own_noise_copy_major() -> None:
    denoiser = DensePureDenoiser(dds(num_steps=3, sigma=0.25), votes=2)
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))  # padded to the 8x8 model
    noise = torch.randn(3, *denoiser.noise_shape((1, 4, 4)), generator=torch.Generator().manual_seed(3))
    assert noise.shape == (3, 2, 2, 1, 8, 8)  # copies, votes, steps after t*, the model's grid
    with torch.no_grad():
        out = denoiser(x, noise)
        assert out.shape == (6, 1, 4, 4)
        for i in range(3):
            for k in range(2):
                alone = denoiser.base(x[i : i + 1], reverse_noise=noise[i, k : k + 1], eta=1.0)
                torch.testing.assert_close(out[2 * i + k], alone[0], rtol=0, atol=1e-6)
        assert not torch.allclose(out[0], out[1]), "two votes of one copy differ by their noise"


def test_densepure_needs_a_noisy_step_after_t_star_and_a_stochastic_eta() -> None:
    # 2 steps (t*, 0): the only stochastic step lands at t = 0, whose noise is negligible.
    for num_steps in (1, 2):
        with pytest.raises(ValueError, match="num_steps >= 3"):
            DensePureDenoiser(dds(num_steps=num_steps, sigma=0.25))
    with pytest.raises(ValueError, match="eta"):
        DensePureDenoiser(dds(num_steps=3, sigma=0.25), eta=0.0)
    with pytest.raises(ValueError, match="votes"):
        DensePureDenoiser(dds(num_steps=3, sigma=0.25), votes=0)


# ----- DiffSmooth's local smoothing ------------------------------------------------------------------


def test_local_smoothing_draws_around_the_one_shot_denoised_image_copy_major() -> None:
    denoiser = LocalSmoothingDenoiser(dds(num_steps=1, sigma=0.25), votes=3, local_sigma=0.2)
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(2, *denoiser.noise_shape((1, 4, 4)), generator=torch.Generator().manual_seed(5))
    assert noise.shape == (2, 3, 1, 4, 4)
    with torch.no_grad():
        out = denoiser(x, noise)
        denoised = denoiser.base(x)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(out[3 * i + j], denoised[i] + 0.2 * noise[i, j], rtol=0, atol=1e-6)


def test_a_voting_denoiser_without_its_noise_is_refused_in_one_line() -> None:
    """Training through it (methods call denoiser(x_noisy)) would draw no seeded noise: refused."""
    for denoiser in (
        DensePureDenoiser(dds(num_steps=3, sigma=0.25)),
        LocalSmoothingDenoiser(dds(num_steps=1, sigma=0.25)),
    ):
        with pytest.raises(VotingDenoiserError) as refusal:
            denoiser(torch.rand(1, 1, 4, 4))
        assert expected_message(refusal.value) == str(refusal.value)


# ----- the engine's seam -----------------------------------------------------------------------------


class ConstantVotes(VotingDenoiser):
    """A stub for the seam: each copy becomes images filled with the values ``fills``, one per vote."""

    name = "constant_votes"

    def __init__(self, fills: list[float]) -> None:
        super().__init__(DiffusionDenoiser(tiny_unet(8), ABAR, 0.25), votes=len(fills))
        self.fills = torch.tensor(fills)

    def noise_shape(self, image_shape):
        return (1,)

    def _denoise_votes(self, x_noisy, noise):
        return self.fills.repeat(len(x_noisy)).view(-1, 1, 1, 1).expand(-1, *x_noisy.shape[1:])

    def calls_per_copy(self):
        return {"unet_calls_per_copy": 0, "classifier_calls_per_copy": self.votes}


class Reads(nn.Module):
    """Label = (the image's first pixel + shift) mod 3, as logits."""

    def __init__(self, shift: int) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x):
        label = (x.flatten(1)[:, 0].round().long() + self.shift) % NUM_CLASSES
        return nn.functional.one_hot(label, NUM_CLASSES).float()


def test_every_classifier_votes_over_the_same_images(tmp_path: Path) -> None:
    """Votes [2, 1, 1, 0]: classifier A labels them 2, 1, 1, 0 (majority 1), classifier B 0, 2, 2, 1
    (majority 2): neither the first nor the last vote, nor A's votes for B. count_a = n for each."""
    from ddsx.certification import ClassifierSpec, build_certifier
    from tests.test_certification_engine import settings

    data = make_dataset(2)
    s = settings(output=str(tmp_path / "certify.tsv"), n0=4, n=32)
    specs = [ClassifierSpec(Reads(0).eval(), "a", name="a"), ClassifierSpec(Reads(1).eval(), "b", name="b")]
    engine = build_certifier(
        s, specs, denoiser=ConstantVotes([2, 1, 1, 0]), dataset=data, dataset_name="toy", num_classes=3
    )
    a, b = engine.run(data)
    assert [(r.predict, r.count_a) for r in read_results(a)] == [(1, 32), (1, 32)]
    assert [(r.predict, r.count_a) for r in read_results(b)] == [(2, 32), (2, 32)]


def test_the_batch_memory_check_counts_a_voting_denoisers_votes(tmp_path: Path, monkeypatch) -> None:
    """4 votes: a batch of 16 copies of a 1x4x4 image holds the noise, the noisy images and 4 denoised
    images per copy (6 float32 copies). Free memory for 16 x 5 copies lets 16 one-shot copies through
    and refuses the voting denoiser's batch before anything is drawn."""
    from ddsx.certification import ClassifierSpec, build_certifier, memory
    from ddsx.certification.settings import InvalidSettingError
    from tests.test_certification_engine import settings

    monkeypatch.setattr(memory, "available_bytes", lambda device: 16 * 5 * 16 * 4)
    data = make_dataset(2)
    spec = [ClassifierSpec(Reads(0).eval(), "a", name="a")]
    s = settings(output=str(tmp_path / "one_shot.tsv"), n0=4, n=32, batch_size=16)
    build_certifier(s, spec, denoiser=None, dataset=data, dataset_name="toy", num_classes=3)
    s = settings(output=str(tmp_path / "votes.tsv"), n0=4, n=32, batch_size=16)
    with pytest.raises(InvalidSettingError, match="6 float32 copies"):
        build_certifier(
            s, spec, denoiser=ConstantVotes([2, 1, 1, 0]), dataset=data, dataset_name="toy", num_classes=3
        )


class Recording(VotingDenoiser):
    """A stub for the seam: keeps every (noisy copy, its denoiser noise) pair it is given."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__(DiffusionDenoiser(tiny_unet(8), ABAR, 0.25), votes=2)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def noise_shape(self, image_shape):
        return (self.votes, 3)

    def _denoise_votes(self, x_noisy, noise):
        self.seen += list(zip(x_noisy.clone(), noise.clone(), strict=True))
        return x_noisy.repeat_interleave(self.votes, dim=0)

    def calls_per_copy(self):
        return {"unet_calls_per_copy": 0, "classifier_calls_per_copy": self.votes}


def _expected_pairs(dataset, n0: int, n: int, sigma: float) -> dict[bytes, torch.Tensor]:
    """Copy j of example idx: (x + sigma * smoothing sample j, denoiser sample j), from the streams."""
    pairs = {}
    for idx, (x, _) in enumerate(dataset):
        smoothing = example_generator(0, idx)
        eps = torch.cat(
            [GaussianStream(x.shape, k, generator=smoothing).take(k) for k in (n0, n)]
        )  # selection stream, then the test's, from the one generator
        own = GaussianStream((2, 3), n0 + n, generator=example_generator(0, idx, stream=DENOISER_STREAM))
        z = own.take(n0 + n)
        for j in range(n0 + n):
            pairs[(eps[j] * sigma + x).numpy().tobytes()] = z[j]
    return pairs


@pytest.mark.parametrize("batch_size", [5, 64])
def test_each_copy_gets_sample_j_of_its_examples_seeded_denoiser_stream(tmp_path: Path, batch_size) -> None:
    """The lockstep rule: copy j of example idx meets sample j of the stream seeded by (seed, idx,
    DENOISER_STREAM), whatever the batch. Red if the engine drew that noise from the global generator,
    from the smoothing stream, or out of step with the copies."""
    data = make_dataset(3)
    recording = Recording()
    certifier(tmp_path, denoiser=recording, dataset=data, n0=4, n=16, batch_size=batch_size).run(data)
    expected = _expected_pairs(data, 4, 16, 0.25)
    assert len(recording.seen) == len(expected) == 3 * 20
    for noisy, noise in recording.seen:
        torch.testing.assert_close(noise, expected[noisy.numpy().tobytes()], rtol=0, atol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DensePureDenoiser(dds(num_steps=3, sigma=0.25), votes=3),
        lambda: LocalSmoothingDenoiser(dds(num_steps=1, sigma=0.25), votes=3, local_sigma=0.5),
    ],
    ids=["densepure", "local_smoothing"],
)
def test_real_voting_rows_do_not_depend_on_the_batch_size_or_processes(tmp_path: Path, make) -> None:
    denoiser = make()
    small = certifier(tmp_path / "small", denoiser=denoiser, max=4, n0=4, n=24, batch_size=5)
    large = certifier(tmp_path / "large", denoiser=denoiser, max=4, n0=4, n=24, batch_size=64)
    [a], [b] = small.run(make_dataset()), large.run(make_dataset())
    assert stable_fields(a) == stable_fields(b)
    two = _run_ranks(tmp_path / "two", world_size=2, denoiser=denoiser, max=4, n0=4, n=24, batch_size=7)
    assert stable_fields(two) == stable_fields(a)
    # The cost multiplier is recorded with the denoiser: what "denoiser calls per certificate" needs.
    described = json.loads(sidecar_path(a).read_text())["denoiser"]
    assert described["votes"] == 3 and described["classifier_calls_per_copy"] == 3
    steps = len(denoiser.base.timesteps)
    expected = 3 * steps if isinstance(denoiser, DensePureDenoiser) else steps
    assert described["unet_calls_per_copy"] == expected
    assert [r.t_star for r in read_results(a)] == [denoiser.base.t_star] * 4


# ----- configs and ddsx-certify ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "cls", "fields"),
    [
        ("densepure", DensePureDenoiser, {"votes": 5, "eta": 1.0}),
        ("local_smoothing", LocalSmoothingDenoiser, {"votes": 5, "local_sigma": 0.1}),
    ],
)
def test_each_variant_is_a_denoiser_option_a_stored_config_may_name(
    compose_certify, tmp_path: Path, option, cls, fields
) -> None:
    save_tiny_ddpm(tmp_path / "ddpm")
    cfg = compose_certify(f"denoiser={option}", f"denoiser.path={tmp_path / 'ddpm'}")
    denoiser = build_denoiser(cfg.denoiser, 0.25)
    assert isinstance(denoiser, cls) and denoiser.sigma == denoiser.base.sigma == 0.25
    assert all(getattr(denoiser, k) == v for k, v in fields.items())
    check_config(dict(cfg.denoiser), allowed_targets("denoiser"), "a stored config")  # no refusal


def test_ddsx_certify_through_a_named_model_and_densepure(compose_certify, tmp_path: Path) -> None:
    """'denoiser=[diffusers,densepure]': the first option's path and options, DensePure on top."""
    save_tiny_ddpm(tmp_path / "ddpm")
    ckpt = write_checkpoint(tmp_path / "last.ckpt", sigma=0.25)
    cfg = compose_certify(
        f"ckpt_path={ckpt}",
        "denoiser=[diffusers,densepure]",
        f"denoiser.path={tmp_path / 'ddpm'}",
        "denoiser.votes=2",
        "denoiser.num_steps=3",
        "certify.max=2",
        "certify.n=8",
        "certify.batch_size=8",
    )
    [path] = certify(cfg)
    assert len(read_results(path)) == 2
    described = json.loads(sidecar_path(path).read_text())["denoiser"]
    assert (described["name"], described["votes"], described["unet_calls_per_copy"]) == ("densepure", 2, 6)


def test_the_denoiser_stream_is_another_stream_of_the_example() -> None:
    """Its seed differs from the smoothing stream's (which keeps its value: the golden rows) and from
    the next example's; the same (seed, idx, stream) always gives the same seed."""
    from ddsx.smoothing.noise import example_seed

    assert example_seed(0, 3) == 5611424052063861358  # the smoothing stream, as before this stream existed
    own = example_seed(0, 3, DENOISER_STREAM)
    assert own == example_seed(0, 3, DENOISER_STREAM)
    assert own not in {
        example_seed(0, 3),
        example_seed(0, 4, DENOISER_STREAM),
        example_seed(1, 3, DENOISER_STREAM),
    }


def test_ddsx_train_through_a_voting_denoiser_stops_with_the_one_line_refusal(
    compose_train, tmp_path
) -> None:
    from ddsx.cli.train import train

    save_tiny_ddpm(tmp_path / "ddpm")
    cfg = compose_train(
        "dataset=digits", "debug=fast_dev_run", "method=dds", "sigma=0.25",
        "denoiser=densepure", f"denoiser.path={tmp_path / 'ddpm'}", "denoiser.num_steps=3",
    )  # fmt: skip
    with pytest.raises(VotingDenoiserError, match="cannot be trained through"):
        train(cfg)

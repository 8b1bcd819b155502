"""Each method trains on exactly the input its paper defines, attacked where it should be.

The attack's result is injected (its ascent step replaced by a known delta), so the classifier's
parameter gradient of one training step can be compared with the outer loss written out by hand;
with a non-zero delta it must differ from the one at delta = 0, so a method that quietly trains on
the unattacked input fails here.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ddsx.denoisers import IdentityDenoiser
from ddsx.methods import noise_attack
from ddsx.methods.base import check_attack_precision
from ddsx.methods.dds_adv import DDSAdversarialModule
from ddsx.methods.dds_finetune import DDSFinetuneModule
from ddsx.methods.smoothadv import SmoothAdvModule
from ddsx.models.classifiers import lenet

SIGMA = 0.5


class BlurDenoiser(IdentityDenoiser):
    """A differentiable, non-trivial stand-in for D: a fixed 3x3 box blur, clipped to [0,1]."""

    def forward(self, x):
        kernel = torch.full((x.shape[1], 1, 3, 3), 1 / 9, dtype=x.dtype)
        return F.conv2d(x, kernel, padding=1, groups=x.shape[1]).clamp(0, 1)


class CountingDenoiser(BlurDenoiser):
    """Records, per call, whether autograd was recording (a pass that will be back-propagated)."""

    def __init__(self, sigma=None):
        super().__init__(sigma)
        self.calls: list[bool] = []

    def forward(self, x):
        self.calls.append(torch.is_grad_enabled() and x.requires_grad)
        return super().forward(x)


def _batch(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _grads(module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.classifier.parameters()]


def _step_grads(module, x, y, seed) -> list[torch.Tensor]:
    """The classifier's parameter gradient of one training step of ``module`` (noise drawn from ``seed``)."""
    module.classifier.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss, _ = module.training_loss(x, y)
    loss.backward()
    return _grads(module)


def _hand_grads(classifier, inputs, y) -> list[torch.Tensor]:
    classifier.zero_grad(set_to_none=True)
    F.cross_entropy(classifier(inputs), y).backward()
    return [p.grad.clone() for p in classifier.parameters()]


def _assert_same(a, b):
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-7)


def _differ(a, b) -> bool:
    return any(not torch.allclose(ga, gb, rtol=1e-4, atol=1e-6) for ga, gb in zip(a, b, strict=True))


def _dds_adv(denoiser=None, **attack):
    torch.manual_seed(0)
    strength = {"steps": 1, "step_size": 0.1, "epsilon": None, "norm": "linf"} | attack
    return DDSAdversarialModule(
        lenet(), 10, SIGMA, torch.optim.SGD, denoiser=denoiser or BlurDenoiser(SIGMA), attack=strength
    )


# ----- the gradient of one step against the outer loss by hand --------------------------------
@pytest.mark.parametrize("keep_best", [False, True])
def test_dds_adv_trains_on_the_injected_noise_shift(monkeypatch, keep_best):
    """Outer step = grad of CE(h(D(x + sigma * (eps + delta))), y) for the delta the attack found."""
    module = _dds_adv(keep_best=keep_best, classifier_mode="eval")
    x, y = _batch()
    known = 0.8 * torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    monkeypatch.setattr(noise_attack, "ascent_step", lambda delta, grad, strength: known)
    grads = _step_grads(module, x, y, seed=3)

    torch.manual_seed(3)
    eps = torch.randn_like(x)  # the draw training_loss makes first
    denoiser, classifier = BlurDenoiser(), copy.deepcopy(module.classifier)
    at_known = _hand_grads(classifier, denoiser(x + SIGMA * (eps + known)), y)
    at_zero = _hand_grads(classifier, denoiser(x + SIGMA * eps), y)
    assert _differ(at_known, at_zero), "the injected delta must change the gradient"
    if keep_best:  # per example the higher loss of delta = 0 and delta = known is trained on
        with torch.no_grad():
            l0 = F.cross_entropy(classifier(denoiser(x + SIGMA * eps)), y, reduction="none")
            l1 = F.cross_entropy(classifier(denoiser(x + SIGMA * (eps + known))), y, reduction="none")
        assert 0 < int((l1 > l0).sum()) < len(y), "the test needs both outcomes"
        chosen = torch.where((l1 > l0).view(-1, 1, 1, 1), known, torch.zeros_like(known))
        _assert_same(grads, _hand_grads(classifier, denoiser(x + SIGMA * (eps + chosen)), y))
    else:
        _assert_same(grads, at_known)


def test_dds_adv_lambda_clean_adds_the_clean_noise_loss(monkeypatch):
    module = _dds_adv(lambda_clean=0.5)
    x, y = _batch(1)
    known = 0.5 * torch.ones_like(x)
    monkeypatch.setattr(noise_attack, "ascent_step", lambda delta, grad, strength: known)
    grads = _step_grads(module, x, y, seed=4)
    torch.manual_seed(4)
    eps = torch.randn_like(x)
    classifier, denoiser = copy.deepcopy(module.classifier), BlurDenoiser()
    classifier.zero_grad(set_to_none=True)
    loss = F.cross_entropy(classifier(denoiser(x + SIGMA * (eps + known))), y)
    (loss + 0.5 * F.cross_entropy(classifier(denoiser(x + SIGMA * eps)), y)).backward()
    _assert_same(grads, [p.grad for p in classifier.parameters()])


def test_dds_finetune_trains_on_the_denoised_noisy_input_and_equals_dds_adv_without_attack():
    torch.manual_seed(0)
    finetune = DDSFinetuneModule(lenet(), 10, SIGMA, torch.optim.SGD, denoiser=BlurDenoiser(SIGMA))
    x, y = _batch(2)
    grads = _step_grads(finetune, x, y, seed=5)
    torch.manual_seed(5)
    eps = torch.randn_like(x)
    _assert_same(grads, _hand_grads(copy.deepcopy(finetune.classifier), BlurDenoiser()(x + SIGMA * eps), y))
    no_attack = _dds_adv(steps=0)
    no_attack.classifier.load_state_dict(finetune.classifier.state_dict())
    _assert_same(_step_grads(no_attack, x, y, seed=5), grads)


def test_smoothadv_trains_on_the_injected_adversarial_images():
    """Outer step = grad of mean_i CE(h(x' + sigma * eps_i), y) at the attacked x' (m draws each)."""
    torch.manual_seed(0)
    module = SmoothAdvModule(lenet(), 10, SIGMA, torch.optim.SGD, epsilon=1.0, steps=1, num_noise=3)
    x, y = _batch(3, n=4)
    x_adv = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(8))).clamp(0, 1)
    module.attack = lambda x_, y_, eps_: x_adv  # inject the attack's result
    grads = _step_grads(module, x, y, seed=6)
    torch.manual_seed(6)
    eps = torch.randn((3, *x.shape))
    classifier = copy.deepcopy(module.classifier)
    noisy = torch.cat([x_adv + SIGMA * eps[i] for i in range(3)])
    at_adv = _hand_grads(classifier, noisy, y.repeat(3))
    at_clean = _hand_grads(classifier, torch.cat([x + SIGMA * eps[i] for i in range(3)]), y.repeat(3))
    assert _differ(at_adv, at_clean)
    _assert_same(grads, at_adv)


# ----- denoiser passes per training step ---------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("keep_best", [False, True])
@pytest.mark.parametrize("lambda_clean", [0.0, 0.5])
def test_dds_adv_denoises_k_times_with_gradient_and_once_without(steps, keep_best, lambda_clean):
    """K passes with gradient (the attack) + 1 without (at delta*, reused by the outer step); the
    clean-noise term reuses the attack's delta = 0 pass, so lambda_clean costs no denoiser pass."""
    denoiser = CountingDenoiser(SIGMA)
    module = _dds_adv(denoiser, steps=steps, epsilon=0.1, keep_best=keep_best, lambda_clean=lambda_clean)
    x, y = _batch(4)
    module.training_loss(x, y)[0].backward()
    assert denoiser.calls.count(True) == steps
    assert denoiser.calls.count(False) == 1


def test_dds_adv_without_attack_and_dds_finetune_denoise_once():
    for module in (_dds_adv(CountingDenoiser(SIGMA), steps=0, lambda_clean=0.5),):
        module.training_loss(*_batch(5))
        assert module.denoiser.calls == [False]
    finetune = DDSFinetuneModule(lenet(), 10, SIGMA, torch.optim.SGD, denoiser=CountingDenoiser(SIGMA))
    finetune.training_loss(*_batch(5))
    assert finetune.denoiser.calls == [False]


@pytest.mark.parametrize("steps", [1, 2])
def test_smoothadv_denoises_k_times_with_gradient_and_once_without(steps):
    denoiser = CountingDenoiser(SIGMA)
    module = SmoothAdvModule(
        lenet(), 10, SIGMA, torch.optim.SGD, denoiser=denoiser, epsilon=0.5, steps=steps, num_noise=2
    )
    module.training_loss(*_batch(6))
    assert denoiser.calls.count(True) == steps and denoiser.calls.count(False) == 1


def test_validation_denoises_each_batch_once():
    denoiser = CountingDenoiser(SIGMA)
    module = DDSFinetuneModule(lenet(), 10, SIGMA, torch.optim.SGD, denoiser=denoiser)
    module.log = lambda *args, **kwargs: None  # no trainer here
    with torch.no_grad():
        module.validation_step(_batch(7), 0)
    assert denoiser.calls == [False]


# ----- mixed precision ---------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["dds_adv", "smoothadv"])
def test_attack_methods_refuse_float16(module):
    method = _dds_adv() if module == "dds_adv" else SmoothAdvModule(lenet(), 10, SIGMA, torch.optim.SGD)
    method.trainer = SimpleNamespace(precision="16-mixed")
    with pytest.raises(ValueError, match="bf16-mixed"):
        method.setup("fit")
    method.trainer = SimpleNamespace(precision="bf16-mixed")
    method.setup("fit")  # accepted
    finetune = DDSFinetuneModule(lenet(), 10, SIGMA, torch.optim.SGD)
    finetune.trainer = SimpleNamespace(precision="16-mixed")
    finetune.setup("fit")  # no input gradient: the GradScaler covers it
    check_attack_precision("32-true", "dds_adv")


# ----- certification never uses batch statistics ------------------------------------------------
def test_smooth_puts_a_training_mode_classifier_in_eval_mode(caplog):
    """Certificates must not depend on batch statistics nor change them."""
    from torch import nn

    from ddsx.smoothing import Smooth

    torch.manual_seed(0)
    classifier = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))
    classifier(torch.rand(4, 1, 8, 8))  # materialise the lazy layer (and move the BN statistics once)
    classifier.train()
    before = {k: v.clone() for k, v in classifier.named_buffers()}
    smooth = Smooth(classifier, 10, SIGMA)
    x = torch.rand(1, 8, 8)
    with caplog.at_level("WARNING"):
        counts = smooth.sample_counts(x, 64, 16, torch.Generator().manual_seed(0))
    assert not any(m.training for m in classifier.modules())
    assert "training mode" in caplog.text
    assert all(torch.equal(v, before[k]) for k, v in classifier.named_buffers())
    # The counts are those of the eval-mode classifier: the same again with the same noise.
    assert torch.equal(counts, smooth.sample_counts(x, 64, 16, torch.Generator().manual_seed(0)))


# ----- the configs -------------------------------------------------------------------------------
@pytest.mark.parametrize("attack", ["mnist", "cifar10", "imagenet"])
def test_paper_recipes_use_the_authors_procedure(compose_train, attack):
    cfg = compose_train("method=dds_adv", f"attack={attack}")
    assert cfg.attack.keep_best is False and cfg.attack.classifier_mode == "train"


@pytest.mark.parametrize("method", ["standard", "gaussian", "smoothadv", "dds", "dds_finetune", "dds_adv"])
def test_method_configs_carry_their_report_name(compose_train, method):
    cfg = compose_train(f"method={method}", "trainer=gpu")
    assert cfg.method.name == method
    assert cfg.trainer.precision == "bf16-mixed"


def test_dds_adv_attack_runs_under_bf16_autocast_through_a_checkpointed_unet(monkeypatch):
    """trainer.precision=bf16-mixed + denoiser.checkpointing=true: the attack still gets a gradient."""
    from ddsx.denoisers.dds import DiffusionDenoiser
    from tests.conftest import tiny_unet

    abar = torch.linspace(0.9999, 0.01, 200).cumprod(0).clamp_min(1e-4)
    denoiser = DiffusionDenoiser(tiny_unet(28), abar, SIGMA, checkpointing=True)
    module = _dds_adv(denoiser, epsilon=0.1)
    gradients = []
    ascent = noise_attack.ascent_step

    def recording(delta, grad, strength):
        gradients.append(grad.detach().clone())
        return ascent(delta, grad, strength)

    monkeypatch.setattr(noise_attack, "ascent_step", recording)
    x, y = _batch(2, n=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = module.training_loss(x, y)
    loss.backward()
    assert torch.isfinite(loss) and len(gradients) == 1
    assert gradients[0].dtype == torch.float32 and gradients[0].abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.classifier.parameters())

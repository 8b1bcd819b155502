"""Every training method runs through ddsx-train; SmoothAdv's attack; dds_adv under 2-process DDP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ddsx.cli.train import build_training, fit_and_test, train
from ddsx.methods.dds_adv import DDSAdversarialModule
from ddsx.methods.smoothadv import SmoothAdvModule
from ddsx.models.classifiers import lenet


@pytest.mark.parametrize(
    "overrides",
    [
        ["method=dds_adv", "attack=mnist"],
        ["method=dds_adv", "attack=l2"],
        ["method=dds_finetune"],
        ["method=smoothadv"],
        ["method=dds"],
    ],
    ids=lambda o: " ".join(o),
)
def test_method_fast_dev_run(compose_train, overrides):
    cfg = compose_train("dataset=digits", "debug=fast_dev_run", *overrides)
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc_noisy"] <= 1.0
    if overrides[0] != "method=dds":
        assert torch.isfinite(torch.tensor(metrics["train/loss_step"]))


def test_dds_trains_nothing(compose_train):
    cfg = compose_train("dataset=digits", "debug=fast_dev_run", "method=dds")
    datamodule, model, trainer = build_training(cfg)
    before = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    metrics = fit_and_test(cfg, datamodule, model, trainer)
    assert not model.trainable and trainer.global_step == 0 and "test/acc_noisy" in metrics
    assert all(torch.equal(v, before[k]) for k, v in model.classifier.state_dict().items())


def _smoothadv(epsilon=0.5, steps=3, num_noise=4):
    torch.manual_seed(0)
    return SmoothAdvModule(
        classifier=lenet(),
        num_classes=10,
        sigma=0.25,
        optimizer=torch.optim.SGD,
        epsilon=epsilon,
        steps=steps,
        num_noise=num_noise,
    )


def test_smoothadv_attack_raises_soft_smoothed_loss_within_the_ball():
    module = _smoothadv()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    eps = torch.randn(4, 8, 1, 28, 28, generator=g)
    x_adv = module.attack(x, y, eps)
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert torch.all(norms <= 0.5 + 1e-5) and norms.max() > 0.1
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert module._soft_smoothed_loss(x_adv, eps, y).mean() > module._soft_smoothed_loss(x, eps, y).mean()


def test_smoothadv_soft_loss_matches_definition():
    module = _smoothadv(num_noise=3)
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
    eps = torch.randn(3, 2, 1, 28, 28)
    with torch.no_grad():
        probs = torch.stack([module.classifier(x + 0.25 * e).softmax(1) for e in eps])  # (m, N, K)
        expected = -probs.mean(0)[torch.arange(2), y].log()
        torch.testing.assert_close(module._soft_smoothed_loss(x, eps, y), expected, rtol=1e-5, atol=1e-6)


def test_smoothadv_epsilon_warmup():
    module = SmoothAdvModule(lenet(), 10, 0.25, torch.optim.SGD, epsilon=1.0, warmup_epochs=4)
    assert module.current_epsilon() == pytest.approx(0.25)  # epoch 0 of 4


@pytest.mark.e2e
def test_ddp_two_processes_keep_classifiers_identical(tmp_path):
    """Two CPU processes see different batches; after the synchronised steps the copies must agree."""
    script = Path(__file__).with_name("ddp_step.py")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = torch.load(tmp_path / "init.pt", weights_only=True)
    assert not torch.equal(r0["first_batch"], r1["first_batch"]), "ranks must train on different data"
    assert not torch.equal(r0["first_noise"], r1["first_noise"]), "ranks must draw independent noise"
    for key in init:
        assert torch.equal(r0["state"][key], r1["state"][key]), f"{key} differs between ranks"
    assert any(not torch.equal(r0["state"][k], init[k]) for k in init), "a step must change the weights"


def test_dds_is_certified_without_training(compose_train):
    cfg = compose_train(
        "dataset=digits",
        "debug=limit",
        "method=dds",
        "callbacks=certify",
        "certify=fast",
        "certify.max=3",
        "certify.n=200",
    )
    metrics = train(cfg)
    assert metrics["cert/examples"] == 3
    assert 0.0 <= metrics["cert/acc@0"] <= 1.0
    rows = (Path(cfg.paths.output_dir) / "certify.tsv").read_text().splitlines()
    assert rows[0].startswith("idx\tlabel\tpredict\tradius\tcorrect\ttime") and len(rows) == 4


def _lenet_with_batchnorm():
    torch.manual_seed(0)
    model = lenet()
    model.network.features.insert(1, nn.BatchNorm2d(6))
    return model.train()


@pytest.mark.parametrize("method", ["dds_adv", "smoothadv"])
def test_attack_passes_leave_batchnorm_and_grads_alone(method):
    """Only the outer training forward may update BN statistics; the attack writes no .grad."""
    classifier = _lenet_with_batchnorm()
    if method == "dds_adv":
        attack = {"steps": 3, "step_size": 0.1, "epsilon": 0.3}
        module = DDSAdversarialModule(classifier, 10, 0.5, torch.optim.SGD, attack=attack)
    else:
        module = SmoothAdvModule(classifier, 10, 0.5, torch.optim.SGD, epsilon=0.5, steps=3, num_noise=2)
    batchnorm = classifier.network.features[1]
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss, _ = module.training_loss(x, y)
    assert int(batchnorm.num_batches_tracked) == 1, "attack forwards must not update BN statistics"
    assert all(p.grad is None for p in classifier.parameters())
    assert classifier.training and all(p.requires_grad for p in classifier.parameters())
    loss.backward()
    assert all(p.grad is not None for p in classifier.parameters())

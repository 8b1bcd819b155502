"""SmoothAdv as Salman et al.'s code does it, against the rules written out here independently:
the projection order (clamp x + delta to [0,1], then rescale delta to the epsilon ball) on real,
saturated MNIST digits, and the split of a batch of B into m mini-batches of B/m images x m draws."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ddsx.data.mnist5k import load_mnist5k
from ddsx.methods.smoothadv import SmoothAdvModule, minibatch_bounds
from ddsx.models.classifiers import lenet

SIGMA, EPSILON, STEPS, M = 0.25, 1.0, 2, 4


def _digits(n=8):
    images, labels = load_mnist5k()
    pick = torch.arange(0, 5000, 5000 // n)[:n]  # every class: the file is sorted by label
    return images[pick].float() / 255.0, labels[pick]


def _authors_rule(classifier, x, y, eps, clamp_first=True):
    """PGD on the soft smoothed loss, one image at a time, each step: delta += (2 eps / K) g / ||g||,
    x + delta clamped to [0,1], then delta scaled down to norm epsilon if longer (``clamp_first``;
    False: the other order, as ddsx had it)."""
    delta = torch.zeros_like(x)
    for _ in range(STEPS):
        delta.requires_grad_(True)
        total = 0.0
        for i in range(len(x)):
            probs = torch.stack(
                [F.softmax(classifier((x[i] + delta[i] + SIGMA * e[i])[None]), 1)[0] for e in eps]
            )
            total = total - torch.log(probs.mean(0)[y[i]])
        grad = torch.autograd.grad(total, delta)[0]
        new = []
        for i in range(len(x)):
            d = delta[i].detach() + (2 * EPSILON / STEPS) * grad[i] / grad[i].norm()
            if clamp_first:
                d = torch.clamp(x[i] + d, 0.0, 1.0) - x[i]
            if d.norm() > EPSILON:
                d = d * (EPSILON / d.norm())
            if not clamp_first:
                d = torch.clamp(x[i] + d, 0.0, 1.0) - x[i]
            new.append(d)
        delta = torch.stack(new)
    return x + delta


def _module():
    torch.manual_seed(0)
    module = SmoothAdvModule(lenet(), 10, SIGMA, torch.optim.SGD, epsilon=EPSILON, steps=STEPS, num_noise=M)
    return module.eval()


def test_attack_clamps_then_rescales_as_the_authors_on_saturated_digits():
    x, y = _digits()
    assert float(((x == 0) | (x == 1)).float().mean()) > 0.5, "MNIST digits are mostly saturated pixels"
    eps = torch.randn((M, *x.shape), generator=torch.Generator().manual_seed(1))
    module = _module()
    x_adv = module.attack(x, y, eps)
    torch.testing.assert_close(x_adv, _authors_rule(module.classifier, x, y, eps), rtol=1e-4, atol=1e-5)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert torch.all(norms <= EPSILON + 1e-5) and torch.allclose(norms, torch.full_like(norms, EPSILON))
    # The other order (project, then clamp) loses part of the perturbation on these pixels, so the
    # comparison above can tell the two apart.
    other = (_authors_rule(module.classifier, x, y, eps, clamp_first=False) - x).flatten(1).norm(dim=1)
    assert float(other.mean()) < 0.97 * EPSILON


def test_minibatch_bounds_are_the_authors_split():
    for batch, parts in [(128, 2), (128, 3), (10, 4), (3, 4), (256, 8)]:
        expected = [(i * batch // parts, (i + 1) * batch // parts) for i in range(parts)]
        assert minibatch_bounds(batch, parts) == [(lo, hi) for lo, hi in expected if hi > lo]
        assert sum(hi - lo for lo, hi in minibatch_bounds(batch, parts)) == batch


class _Recorder(torch.nn.Module):
    """Wraps the classifier and records the batch size of every forward that builds a graph for h."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.sizes = inner, []

    def forward(self, x):
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.inner.parameters()):
            self.sizes.append(len(x))
        return self.inner(x)


def test_a_batch_of_b_trains_as_m_steps_on_b_over_m_images_with_m_draws(tmp_path):
    """B = 16, m = 4: four optimiser steps, each on 4 images x 4 draws = 16 noisy images."""
    x, y = _digits(16)
    module = SmoothAdvModule(
        _Recorder(lenet()), 10, SIGMA, torch.optim.SGD, epsilon=EPSILON, steps=1, num_noise=M
    )
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=16))
    assert trainer.global_step == M
    assert module.classifier.sizes == [16] * M

"""Data sets and networks shared by ``early_stopping_study.py`` and ``depth_study.py``.

Three binary tasks that need no download, after Hehl et al. (2025):

* ``circles``: Syn-I, two concentric circles (``make_circles(noise=0.03, factor=0.5)``, in torch);
* ``discs``: Syn-II, points uniform in the unit disc, label 1 inside one of four small discs of
  radius 0.2. The centres, (+-0.45, +-0.45), and the class balance (half the points drawn inside the
  small discs) are our choices: the papers do not specify the sampler;
* ``digits``: scikit-learn's 8x8 digits, 1 versus 7 (361 images, pixels / 16, flattened to 64
  features), a small stand-in for the papers' MNIST 1 vs 7.

Networks are [H]'s MLPs: ``depth`` x (Linear(width) + ReLU), then Linear(1) + Sigmoid, trained with
binary cross-entropy. With the sigmoid as a module, the default layers of ``RicciFlowMonitor`` and
``analyze`` (the activation modules) are exactly [H]'s feature list: input, h_1..h_depth, output.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

DATASETS = ("circles", "discs", "digits")

Split = tuple[Tensor, Tensor]


def circles(n: int, generator: torch.Generator, noise: float = 0.03, factor: float = 0.5) -> Split:
    """[n, 2] points on two noisy concentric circles, [n] labels (1 = inner circle)."""
    label = torch.arange(n) % 2
    angle = torch.rand(n, generator=generator) * 2 * math.pi
    radius = torch.where(label == 1, factor, 1.0)
    x = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    return x + noise * torch.randn(n, 2, generator=generator), label


_CENTRES = torch.tensor([[0.45, 0.45], [0.45, -0.45], [-0.45, 0.45], [-0.45, -0.45]])


def discs(n: int, generator: torch.Generator, radius: float = 0.2) -> Split:
    """[n, 2] points in the unit disc, [n] labels (1 = inside one of four discs of ``radius``), balanced."""
    label = torch.arange(n) % 2
    x = torch.empty(n, 2)
    filled = torch.zeros(n, dtype=torch.bool)
    while not bool(filled.all()):  # rejection sampling, one batch of candidates per round
        cand = torch.rand(4 * n, 2, generator=generator) * 2 - 1
        cand = cand[cand.norm(dim=1) <= 1]
        inside = (torch.cdist(cand, _CENTRES) <= radius).any(dim=1).long()
        for cls in (0, 1):
            todo = (~filled & (label == cls)).nonzero().flatten()
            pool = cand[inside == cls][: todo.numel()]
            x[todo[: pool.shape[0]]] = pool
            filled[todo[: pool.shape[0]]] = True
    return x, label


def digits() -> Split:
    """scikit-learn digits 1 (label 0) and 7 (label 1): [361, 64] in [0, 1], [361] labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    target = torch.tensor(data.target)
    keep = (target == 1) | (target == 7)
    x = torch.tensor(data.data, dtype=torch.float32)[keep] / 16.0
    return x, (target[keep] == 7).long()


def load(name: str, sizes: tuple[int, ...], seed: int) -> list[Split]:
    """Disjoint splits of ``name`` with the given sizes (synthetic data is drawn fresh per seed).

    For ``digits`` the sizes are fractions of the 361 images in percent (e.g. ``(50, 25, 25)``).
    """
    generator = torch.Generator().manual_seed(seed)
    if name == "digits":
        x, y = digits()
        order = torch.randperm(x.shape[0], generator=generator)
        cuts = [round(x.shape[0] * sum(sizes[: i + 1]) / 100) for i in range(len(sizes))]
        bounds = list(zip([0, *cuts[:-1]], cuts))
        return [(x[order[a:b]], y[order[a:b]]) for a, b in bounds]
    make = {"circles": circles, "discs": discs}[name]
    x, y = make(sum(sizes), generator)
    order = torch.randperm(x.shape[0], generator=generator)
    x, y = x[order], y[order]
    out, start = [], 0
    for size in sizes:
        out.append((x[start : start + size], y[start : start + size]))
        start += size
    return out


def mlp(in_features: int, width: int, depth: int) -> nn.Sequential:
    """``depth`` x (Linear + ReLU), then Linear(1) + Sigmoid: the output is a probability [B, 1]."""
    layers: list[nn.Module] = []
    fan_in = in_features
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    return nn.Sequential(*layers, nn.Linear(fan_in, 1), nn.Sigmoid())


def accuracy(net: nn.Module, x: Tensor, y: Tensor) -> float:
    """Share of correct predictions (probability > 0.5 means label 1), in eval mode."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        pred = (net(x).squeeze(-1) > 0.5).long()
    net.train(was_training)
    return float((pred == y).float().mean())

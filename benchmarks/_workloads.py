"""The benchmarks' common workload: probe points through a random He-initialised ReLU MLP."""

from __future__ import annotations

import math

import torch


def mlp_activations(
    n: int, widths: list[int], in_dim: int = 784, seed: int = 0, device: str = "cpu"
) -> list[torch.Tensor]:
    """[input, h_1, ..., h_L]: n points ~ N(0, I_in_dim) through ReLU layers of the given widths."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    h = torch.randn(n, in_dim, generator=gen)
    layers = [h]
    for w in widths:
        weight = torch.randn(h.shape[1], w, generator=gen) * math.sqrt(2.0 / h.shape[1])
        h = torch.relu(h @ weight)
        layers.append(h)
    return [x.to(device) for x in layers]

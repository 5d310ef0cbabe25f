"""Pearson correlations behind the Ricci coefficients, in float64.

Shape symbols: N points, T layer transitions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pearson(x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
    """Pearson correlation along the last dimension, in float64.

    ``nan`` where fewer than two points are used or either series is constant (exactly equal values, as
    ``scipy.stats.pearsonr``), otherwise clipped to [-1, 1].

    Args:
        x (Tensor): [..., P] values.
        y (Tensor): [..., P] values.
        mask (Tensor, optional): [..., P] bool, the points to use. Default: all.

    Returns:
        Tensor: [...] float64.

    Example:
        >>> pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 7.0]))
        tensor(0.9934, dtype=torch.float64)
    """
    if x.shape != y.shape:
        raise ValueError(f"`x` and `y` must have the same shape (got {tuple(x.shape)} and {tuple(y.shape)})")
    x, y = x.double(), y.double()
    if mask is None:
        mask = torch.ones_like(x, dtype=torch.bool)
    count = mask.sum(-1)
    zero = torch.zeros_like(x)
    xs, ys = torch.where(mask, x, zero), torch.where(mask, y, zero)
    n = count.clamp(min=1).double()
    xm = torch.where(mask, x - (xs.sum(-1) / n).unsqueeze(-1), zero)
    ym = torch.where(mask, y - (ys.sum(-1) / n).unsqueeze(-1), zero)
    r = (xm * ym).sum(-1) / ((xm * xm).sum(-1).sqrt() * (ym * ym).sum(-1).sqrt())

    def constant(v: Tensor) -> Tensor:
        hi = torch.where(mask, v, torch.full_like(v, -torch.inf)).amax(-1)
        lo = torch.where(mask, v, torch.full_like(v, torch.inf)).amin(-1)
        return hi == lo

    undefined = (count < 2) | constant(x) | constant(y) | ~torch.isfinite(r)
    return torch.where(undefined, torch.full_like(r, torch.nan), r.clamp(-1.0, 1.0))

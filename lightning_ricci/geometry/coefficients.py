"""Pearson correlations behind the Ricci coefficients, in float64.

Shape symbols: N points, T layer transitions, P paired values along the last dimension.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _check_series(name: str, v: Any) -> Tensor:
    if not isinstance(v, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor (got {type(v).__name__})")
    if v.is_complex():
        raise TypeError(f"`{name}` must be real (got {v.dtype})")
    if v.dim() == 0 or v.numel() == 0:
        raise ValueError(
            f"`{name}` must hold at least one value along its last dimension (got shape {tuple(v.shape)})"
        )
    return v


def _unit_scale(v: Tensor, mask: Tensor) -> Tensor:
    """[..., 1] power of two near the largest masked |v| (1 where that is 0 or not finite)."""
    peak = torch.where(mask, v.abs(), torch.zeros_like(v)).amax(-1, keepdim=True)
    _, exponent = torch.frexp(peak)  # peak = m * 2**exponent, 0.5 <= m < 1
    scale = torch.ldexp(torch.ones_like(peak), exponent - 1)  # 2**(e - 1) <= peak: never overflows
    ok = (peak > 0) & torch.isfinite(peak) & (scale > 0)
    return torch.where(ok, scale, torch.ones_like(peak))


def pearson(x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
    """Pearson correlation along the last dimension, in float64.

    ``nan`` where fewer than two points are used, either series is constant (exactly equal values, as
    ``scipy.stats.pearsonr``) or a used value is not finite; otherwise clipped to [-1, 1]. Each series is
    scaled by a power of two before and after centring (exact in floating point), so values of any finite
    magnitude (1e-300 or 1e300) give the same correlation as values near 1.

    Args:
        x (Tensor): [..., P] real values (integer or float).
        y (Tensor): [..., P] real values, the shape of ``x``, on its device.
        mask (Tensor, optional): [..., P] bool, the points to use. Default: all.

    Returns:
        Tensor: [...] float64, on the device of ``x``.

    Raises:
        TypeError: an argument is not a tensor, ``x`` or ``y`` is complex, or ``mask`` is not bool.
        ValueError: empty inputs, or shapes or devices that differ.

    Example:
        >>> pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 7.0]))
        tensor(0.9934, dtype=torch.float64)
    """
    x, y = _check_series("x", x), _check_series("y", y)
    if x.shape != y.shape:
        raise ValueError(f"`x` and `y` must have the same shape (got {tuple(x.shape)} and {tuple(y.shape)})")
    if y.device != x.device:
        raise ValueError(f"`y` must be on the device of `x` ({x.device}) (got {y.device})")
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"`mask` must be a bool torch.Tensor (got {type(mask).__name__})")
        if mask.dtype != torch.bool:
            raise TypeError(f"`mask` must be a bool tensor (got {mask.dtype})")
        if mask.shape != x.shape:
            raise ValueError(f"`mask` must have the shape of `x` {tuple(x.shape)} (got {tuple(mask.shape)})")
        if mask.device != x.device:
            raise ValueError(f"`mask` must be on the device of `x` ({x.device}) (got {mask.device})")
    x, y = x.double(), y.double()
    if mask is None:
        mask = torch.ones_like(x, dtype=torch.bool)
    count = mask.sum(-1)
    n = count.clamp(min=1).double()
    zero = torch.zeros_like(x)

    def centred(v: Tensor) -> Tensor:
        # Scaling by powers of two is exact, so on ordinary values this is the plain formula, bit for bit;
        # it keeps the sums and products of huge or tiny values from overflowing or underflowing.
        v = v / _unit_scale(v, mask)
        vs = torch.where(mask, v, zero)
        vm = torch.where(mask, v - (vs.sum(-1) / n).unsqueeze(-1), zero)
        return vm / _unit_scale(vm, mask)

    xm, ym = centred(x), centred(y)
    r = (xm * ym).sum(-1) / ((xm * xm).sum(-1).sqrt() * (ym * ym).sum(-1).sqrt())

    def constant(v: Tensor) -> Tensor:
        hi = torch.where(mask, v, torch.full_like(v, -torch.inf)).amax(-1)
        lo = torch.where(mask, v, torch.full_like(v, torch.inf)).amin(-1)
        return hi == lo

    undefined = (count < 2) | constant(x) | constant(y) | ~torch.isfinite(r)
    return torch.where(undefined, torch.full_like(r, torch.nan), r.clamp(-1.0, 1.0))

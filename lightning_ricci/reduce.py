"""Reduce a module output to one [B, D_l] block per batch: flatten, pool, first token or a callable.

Shape symbols: B rows of one forward batch, D_l features of layer l after its reduction.

**Reductions.** Every captured output becomes one [B, D_l] block, dim 0 being the sample, by ``reduce``:

* ``"flatten"``: [B, *] -> [B, prod(*)] (a conv map [B, C, H, W] gives C*H*W features);
* ``"mean"``: global average pooling: [B, C, *spatial] (4-D and more) over the spatial dims -> [B, C];
  a 3-D output is a batch-first token sequence [B, T, E], averaged over T -> [B, E]; 2-D is kept;
* ``"cls"``: the first token of a [B, T, E] sequence -> [B, E]; other shapes as ``"auto"``;
* ``"auto"`` (default): ``"flatten"`` when a sample has at most :data:`AUTO_FLATTEN_MAX` (4096) values
  or the output is 2-D (the papers' vectors and small maps); else a conv map [B, C, H, W] (or 3-D
  volume) is average-pooled to the largest s x s grid with C * s^2 <= :data:`AUTO_POOL_MAX` (1024)
  values (``"pool4x4"``; ``"mean"`` when s = 1), and a token sequence is averaged over its tokens;
* a callable ``f(tensor) -> [B, ...]``, flattened after it.

Float16 and bfloat16 are upcast to float32, float64 is kept; any other dtype is refused. The reduction is
done in the hook, batch by batch, into one preallocated [N, D_l] buffer per layer, so the probe pass holds
the reduced activations plus one batch, never a float64 copy or a concatenation of the batches.

The errors of a capture (:class:`CaptureError` and its ``TypeError`` / ``ValueError`` kinds) are
defined here, with the reductions that raise most of them.

This module needs only torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = [
    "AUTO_FLATTEN_MAX",
    "AUTO_POOL_MAX",
    "REDUCTIONS",
    "CaptureError",
    "CaptureTypeError",
    "CaptureValueError",
    "Reduce",
    "check_reduce",
    "first_tensor",
    "flatten_output",
    "reduce_output",
]

#: Samples with more values than this are pooled under ``reduce="auto"`` (see the module docstring).
AUTO_FLATTEN_MAX = 4096
#: Under ``reduce="auto"``, a conv map too large to flatten is average-pooled to a grid of at most this
#: many values per sample (global average pooling when the channels alone reach it).
AUTO_POOL_MAX = 1024
#: The named reductions.
REDUCTIONS = ("auto", "flatten", "mean", "cls")

Reduce = Literal["auto", "flatten", "mean", "cls"] | Callable[[Tensor], Tensor]


class CaptureError(RuntimeError):
    """A captured layer that cannot be used: it did not run, returned no float tensor, or has wrong rows.

    The monitor flags these (``ricci/failed``) under ``strict=False``. Wrong types also are
    ``TypeError`` and bad shapes ``ValueError`` (:class:`CaptureTypeError`, :class:`CaptureValueError`).
    """


class CaptureTypeError(CaptureError, TypeError):
    """A layer output of the wrong type (no tensor, or not floating point)."""


class CaptureValueError(CaptureError, ValueError):
    """A layer output of the wrong shape (0-dim, or rows that are not the batch)."""


def first_tensor(output: Any) -> Tensor | None:
    """The first tensor in ``output``, searched depth-first through tuples, lists and mappings, or None.

    >>> first_tensor(("a", [torch.zeros(2), torch.ones(3)])).shape
    torch.Size([2])
    """
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        values: Any = output.values()
    elif isinstance(output, (tuple, list)):
        values = output
    else:
        return None
    for value in values:
        found = first_tensor(value)
        if found is not None:
            return found
    return None


def reduce_output(output: Any, reduce: Reduce = "auto", name: str = "output") -> tuple[Tensor, str]:
    """Turn one module output into a detached [B, D] float block by ``reduce`` (see the module docstring).

    Args:
        output (Any): a tensor [B, *], or a tuple, list or mapping holding one (its first tensor is used).
        reduce (str | Callable): ``"auto"``, ``"flatten"``, ``"mean"``, ``"cls"`` or ``f(tensor) -> [B, ...]``.
            Default: ``"auto"``.
        name (str, optional): the layer name used in error messages. Default: ``"output"``.

    Returns:
        tuple[Tensor, str]: [B, D] float32 (float64 if the output was float64), a new tensor on the
        output's device, and the reduction applied (``"flatten"``, ``"mean"``, ``"cls"`` or the callable's name).

    Raises:
        CaptureError: no tensor in ``output``, a non-floating tensor, or a 0-dim one.

    >>> block, how = reduce_output(torch.ones(4, 64, 16, 16))
    >>> tuple(block.shape), how
    ((4, 1024), 'pool4x4')
    >>> reduce_output(torch.ones(4, 3, 8, 8))[1], reduce_output(torch.ones(4, 10, 6), "cls")[0].shape
    ('flatten', torch.Size([4, 6]))
    """
    tensor = first_tensor(output)
    if tensor is None:
        raise CaptureTypeError(
            f"layer {name!r} returned {type(output).__name__}, which holds no tensor; "
            "capture needs a tensor, or a tuple/list/dict holding one"
        )
    if not tensor.is_floating_point():
        raise CaptureTypeError(
            f"layer {name!r} returned a {tensor.dtype} tensor; capture needs a floating-point one"
        )
    if tensor.dim() == 0:
        raise CaptureValueError(
            f"layer {name!r} returned a 0-dim tensor; capture needs dim 0 to be the sample dim"
        )
    dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    tensor = tensor.detach()
    how = reduce if isinstance(reduce, str) else getattr(reduce, "__name__", "callable")
    if callable(reduce) and not isinstance(reduce, str):
        out = reduce(tensor)
        if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != tensor.shape[0]:
            raise CaptureValueError(
                f"layer {name!r}: the `reduce` callable must return a tensor [B, ...] with B = {tensor.shape[0]} "
                f"(got {type(out).__name__} {tuple(out.shape) if isinstance(out, Tensor) else ''})"
            )
        return out.detach().to(dtype=dtype, copy=True).reshape(out.shape[0], -1), how
    if how == "cls" and tensor.dim() != 3:
        how = "auto"
    if how == "auto":
        if tensor.dim() <= 2 or tensor[0].numel() <= AUTO_FLATTEN_MAX:
            how = "flatten"
        elif tensor.dim() in (4, 5):
            return _grid_pool(tensor.to(dtype))
        else:
            how = "mean"
    if how == "mean" and tensor.dim() > 2:
        dims = (1,) if tensor.dim() == 3 else tuple(range(2, tensor.dim()))
        return tensor.to(dtype).mean(dim=dims), "mean"
    if how == "cls":
        return tensor[:, 0].to(dtype=dtype, copy=True), "cls"
    # copy=True: an in-place op later in the forward (`x += residual`) must not change what was captured.
    return tensor.to(dtype=dtype, copy=True).reshape(tensor.shape[0], -1), "flatten"


def _grid_pool(tensor: Tensor) -> tuple[Tensor, str]:
    """Average-pool a [B, C, *spatial] map to the largest s x s (x s) grid with C * s^d <= AUTO_POOL_MAX."""
    channels, spatial = tensor.shape[1], tensor.shape[2:]
    side = max(1, int((AUTO_POOL_MAX / max(channels, 1)) ** (1 / len(spatial)) + 1e-9))
    size = tuple(min(side, s) for s in spatial)
    if all(s == 1 for s in size):
        return tensor.mean(dim=tuple(range(2, tensor.dim()))), "mean"
    pool = (
        torch.nn.functional.adaptive_avg_pool2d
        if len(spatial) == 2
        else torch.nn.functional.adaptive_avg_pool3d
    )
    pooled = pool(tensor, size)  # type: ignore[arg-type]
    return pooled.reshape(tensor.shape[0], -1), "pool" + "x".join(map(str, size))


def flatten_output(output: Any, name: str = "output") -> Tensor:
    """``reduce_output(output, "flatten", name)``: a detached [B, D] float copy, D the per-sample values.

    >>> flatten_output(torch.ones(4, 3, 2, 2)).shape
    torch.Size([4, 12])
    """
    return reduce_output(output, "flatten", name)[0]


def check_reduce(reduce: Any) -> None:
    """Validate ``reduce``: a name of :data:`REDUCTIONS`, a callable, or a dict layer name -> either.

    Raises:
        TypeError: another type.
        ValueError: an unknown name.

    >>> check_reduce({"layer1.0": "mean", "fc": "flatten"})
    """
    if isinstance(reduce, Mapping):
        for value in reduce.values():
            check_reduce(value)
        return
    if isinstance(reduce, str):
        if reduce not in REDUCTIONS:
            raise ValueError(
                f"`reduce` must be one of {', '.join(map(repr, REDUCTIONS))} or a callable (got {reduce!r})"
            )
        return
    if not callable(reduce):
        raise TypeError(f"`reduce` must be a str, a callable or a dict of them (got {type(reduce).__name__})")

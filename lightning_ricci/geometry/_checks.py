"""Input validation shared by the public functions of :mod:`lightning_ricci.geometry`.

Every public function validates once, here, and raises ``TypeError`` for a wrong type and ``ValueError``
for a wrong value or shape. Messages name the argument in backticks, say what was expected and end with
what was received: "`k` must be >= 1 (got 0)".
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

_FLOAT_DTYPES = (torch.float32, torch.float64)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {options} (got {value!r})")


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an ``int`` after checking its type and bounds (``low <= value < high``).

    Accepted: Python and NumPy integers and 0-d integer tensors or arrays. Refused with ``TypeError``:
    ``bool`` (Python, NumPy or a 0-d bool tensor), floats, and tensors or arrays with dimensions.
    """
    kind = _int_kind(value)
    if kind is not None:
        raise TypeError(f"`{name}` must be an int (got {kind})")
    value = operator.index(value)
    if low is not None and high is not None and high <= low:
        raise ValueError(f"`{name}` has no valid value: it must be >= {low} and < {high} (got {value})")
    if low is not None and value < low:
        raise ValueError(f"`{name}` must be >= {low} (got {value})")
    if high is not None and value >= high:
        raise ValueError(f"`{name}` must be < {high} (got {value})")
    return int(value)


def _int_kind(value: Any) -> str | None:
    """``None`` if ``value`` is an integer scalar, else what it is, for the error message."""
    dtype = getattr(value, "dtype", None)
    if isinstance(value, (Tensor, np.ndarray)):
        if value.ndim != 0:
            return f"{type(value).__name__} of shape {tuple(value.shape)}"
        if isinstance(value, Tensor):
            ok = not (value.is_floating_point() or value.is_complex() or dtype == torch.bool)
        else:
            ok = np.issubdtype(value.dtype, np.integer)
        return None if ok else f"0-d {type(value).__name__} of dtype {dtype}"
    if isinstance(value, (bool, np.bool_)):
        return f"bool {value}"
    if isinstance(value, (int, np.integer)):
        return None
    try:
        operator.index(value)
    except TypeError:
        return type(value).__name__
    return None


def check_labels(labels: Any, n: int, device: torch.device, *, where: str = "`layers`") -> Tensor:
    """Check [N] integer class ids on ``device`` (non-negative, any number of classes); return them as long.

    Args:
        labels (Tensor): [N] integer (not bool) class ids, ``>= 0``.
        n (int): N, the number of points.
        device (torch.device): the device the labels must be on.
        where (str): what ``device`` is the device of, for the message. Default: ``"`layers`"``.

    Raises:
        TypeError: ``labels`` is not a tensor, or not of an integer dtype.
        ValueError: wrong shape, a negative id, or another device.

    Example:
        >>> check_labels(torch.tensor([0, 2, 1], dtype=torch.int32), 3, torch.device("cpu"))
        tensor([0, 2, 1])
    """
    if not isinstance(labels, Tensor):
        raise TypeError(
            "`labels` must be a torch.Tensor of [N] integer class ids, e.g. `torch.as_tensor(y)` "
            f"(got {type(labels).__name__})"
        )
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(
            f"`labels` must hold integer class ids (got dtype {labels.dtype}); cast it first, e.g. `labels.long()`"
        )
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(
            f"`labels` must have shape [N] = [{n}], one class id per point, N = {n} "
            f"(got shape {tuple(labels.shape)})"
        )
    if labels.device != device:
        raise ValueError(f"`labels` must be on the device of {where} ({device}) (got {labels.device})")
    if labels.numel() and bool((labels < 0).any()):
        raise ValueError(f"`labels` must be non-negative class ids (got {int(labels.min())})")
    return labels.long()


def check_features(name: str, x: Any, *, allow_1d: bool = False, finite: bool = True) -> Tensor:
    """Check one feature tensor and return it flattened to [N, D].

    Args:
        name (str): argument name used in error messages, e.g. ``"layers[2]"``.
        x (Tensor): [N, ...] float32 or float64 features.
        allow_1d (bool): treat a 1-D tensor as N points with one feature. Default: False.
        finite (bool): also check that every value is finite. Default: True.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor (got {type(x).__name__})")
    if x.dim() == 1 and allow_1d:
        x = x.unsqueeze(1)
    if x.dim() < 2:
        raise ValueError(
            f"`{name}` must have shape [N, ...] with at least 2 dimensions (got shape {tuple(x.shape)})"
        )
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"`{name}` must be float32 or float64 (got {x.dtype}); "
            "cast it first, e.g. `x.float()` (half precision would flip kNN edges)"
        )
    if x.numel() == 0:
        raise ValueError(f"`{name}` must not be empty (got shape {tuple(x.shape)})")
    x = x.reshape(x.shape[0], -1)
    if finite:
        check_finite(name, x)
    flat: Tensor = x
    return flat


def check_finite(name: str, x: Tensor) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise ValueError(f"`{name}` must be finite (got NaN or Inf in {bad} of {x.shape[0]} rows)")


def check_layers(layers: Any) -> list[Tensor]:
    """Check a sequence of per-layer features and return them flattened to [N, D_l]."""
    if isinstance(layers, Tensor) or not isinstance(layers, Sequence):
        raise TypeError(
            f"`layers` must be a sequence of tensors, one per layer (got {type(layers).__name__})"
        )
    if len(layers) < 3:
        raise ValueError(f"`layers` must hold at least 3 layers (the input and two more) (got {len(layers)})")
    flat = [check_features(f"layers[{i}]", x, finite=False) for i, x in enumerate(layers)]
    n, device = flat[0].shape[0], flat[0].device
    if n < 2:
        raise ValueError(
            f"`layers` must hold at least 2 points (N >= 2) so that every point has a neighbour (got N = {n})"
        )
    for i, x in enumerate(flat[1:], start=1):
        if x.shape[0] != n:
            raise ValueError(
                f"`layers[{i}]` must have the same number of points as `layers[0]` ({n}) (got {x.shape[0]})"
            )
        if x.device != device:
            raise ValueError(
                f"`layers[{i}]` must be on the same device as `layers[0]` ({device}) (got {x.device})"
            )
    for i, x in enumerate(flat):
        check_finite(f"layers[{i}]", x)
    return flat


def check_edge_index(edge_index: Any, num_nodes: int) -> Tensor:
    """Check a [2, E] long edge list with node indices in ``[0, num_nodes)`` and return it."""
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"`edge_index` must be a torch.Tensor (got {type(edge_index).__name__})")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"`edge_index` must have shape [2, E] (got {tuple(edge_index.shape)})")
    if edge_index.dtype != torch.long:
        raise TypeError(f"`edge_index` must be torch.long (got {edge_index.dtype})")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(
            f"`edge_index` must hold node indices in [0, {num_nodes}) "
            f"(got {int(edge_index.min())}..{int(edge_index.max())})"
        )
    return edge_index

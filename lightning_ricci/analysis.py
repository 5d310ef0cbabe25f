"""Offline analysis of any ``nn.Module`` and depth selection from the layer coefficients.

Shape symbols: N probe points, L layers (the probe input included), T = L - 1 transitions
(layer t -> t + 1), M networks.

:func:`analyze` is the functional face of :class:`~lightning_ricci.RicciFlowMonitor`: the same layer
rules (the probe input first, then the outputs of the activation modules in forward order, or of the
modules named in ``layers``), the same flattening (:mod:`lightning_ricci.capture`) and the same default
``k`` (:func:`default_k`), without Lightning. :func:`critical_depth` turns the layer coefficients of
one or more trained networks into the depth where the layer curve bottoms out (Hehl et al. 2025,
Sec. 4.4).

:func:`load_activations` reads per-layer arrays saved to a ``.pt`` or ``.npz`` file, for the command
line ``python -m lightning_ricci``.

This module needs only torch (and numpy, for ``.npz`` files).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from lightning_ricci.capture import ACTIVATION_TYPES, ActivationCapture, check_layer_spec, find_layers
from lightning_ricci.geometry import ricci_flow
from lightning_ricci.geometry._checks import check_choice
from lightning_ricci.geometry.curvature import EDGE_CURVATURES
from lightning_ricci.geometry.flow import CONVENTIONS
from lightning_ricci.geometry.knn import KNN_BACKENDS, KnnBackend
from lightning_ricci.geometry.result import Convention, CurvatureKind, RicciFlowResult
from lightning_ricci.io import load_activations

__all__ = [
    "INPUT_LAYER",
    "AnalysisResult",
    "analyze",
    "critical_depth",
    "default_k",
    "load_activations",
    "mean_layer_curve",
]

#: Name of the probe input, the first layer (``"probe_input"`` if a module of the model is called so).
INPUT_LAYER = "input"


LayerSpec = (
    Sequence[str] | type[nn.Module] | tuple[type[nn.Module], ...] | Callable[[str, nn.Module], bool] | None
)
_Select = type[nn.Module] | tuple[type[nn.Module], ...] | Callable[[str, nn.Module], bool]
Curve = RicciFlowResult | Tensor | Sequence[float]


def default_k(num_points: int) -> int:
    """The default number of neighbours for ``num_points`` probe points.

    5 % of N as in Hehl et al. (k = 50 at N = 1000), at least 5 and at most 50, and always below N.

    Args:
        num_points (int): probe size N (at least 2).

    Returns:
        int: k.

    >>> default_k(1000), default_k(200), default_k(64), default_k(4)
    (50, 10, 5, 3)
    """
    return max(1, min(num_points - 1, max(5, min(50, round(0.05 * num_points)))))


@contextlib.contextmanager
def _eager() -> Iterator[None]:
    """Run everything inside eagerly, also code under ``torch.compile`` (so temporary hooks fire).

    ``set_stance("force_eager")`` makes compiled modules and functions run their original Python code
    without recompiling anything; the compiled training graph is left as it is.
    """
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is None:  # torch < 2.6
        yield
        return
    with set_stance("force_eager"):
        yield


@dataclasses.dataclass(frozen=True)
class AnalysisResult(RicciFlowResult):
    """A :class:`~lightning_ricci.RicciFlowResult` that also names its layers.

    Attributes:
        layer_names (tuple[str, ...]): the L layer names, the probe input (``"input"``) first, then the
            module names as :class:`~lightning_ricci.capture.ActivationCapture` reports them.
    """

    layer_names: tuple[str, ...] = ()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _probe_tensor(probe: Any) -> Tensor:
    x = probe[0] if isinstance(probe, (tuple, list)) and len(probe) > 0 else probe
    if not isinstance(x, Tensor):
        raise TypeError(
            "`probe` must be a tensor [N, ...] or a tuple (inputs, labels) whose first element is one "
            f"(got {type(x).__name__})"
        )
    if x.dim() == 0 or x.shape[0] < 3:
        raise ValueError(f"`probe` must hold at least 3 samples along dim 0 (got shape {tuple(x.shape)})")
    return x


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return fallback


def analyze(
    model: nn.Module,
    probe: Tensor | Sequence[Any],
    layers: LayerSpec = None,
    k: int | None = None,
    *,
    convention: Convention = "baptista",
    curvature: CurvatureKind = "forman",
    batch_size: int = 256,
    knn_backend: KnnBackend = "auto",
    memory_budget: int | None = None,
) -> AnalysisResult:
    """Ricci-flow diagnostics of any ``nn.Module`` on a probe set, without Lightning.

    The probe is passed through ``model`` once, in eval mode (the training flags are restored
    afterwards), under ``torch.no_grad()``, in chunks of ``batch_size``, on the device of the model's
    parameters. Temporary forward hooks capture the chosen layers, which are then handed to
    :func:`~lightning_ricci.ricci_flow` as ``[probe input (flattened), layer 1, ...]``, exactly as
    :class:`~lightning_ricci.RicciFlowMonitor` does at each validation run. Outputs are flattened per
    sample by the rule of :mod:`lightning_ricci.capture`.

    Args:
        model (nn.Module): the network; its ``forward`` is called with one tensor [B, ...].
        probe (Tensor | tuple): the probe inputs [N, ...], or ``(inputs, labels, ...)`` whose first
            element is used.
        layers (Sequence[str] | type | tuple[type, ...] | Callable, optional): module names (wrapper
            prefixes may be left out, ``"name:i"`` picks the i-th call of a module run several times),
            module classes, or a predicate ``(name, module) -> bool``; classes and predicates are ordered
            by the forward pass. Default: None (the activation modules,
            :data:`~lightning_ricci.capture.ACTIVATION_TYPES`).
        k (int, optional): neighbours per point, ``1 <= k < N``. Default: None (:func:`default_k` of N).
        convention (str): ``"baptista"`` or ``"hehl"``, see :func:`~lightning_ricci.ricci_flow`.
            Default: ``"baptista"``.
        curvature (str): ``"forman"``, ``"augmented_forman"`` or ``"approx_ollivier"`` for the local
            and layer coefficients. Default: ``"forman"``.
        batch_size (int): probe points per forward pass. Default: 256.
        knn_backend (str): passed to :func:`~lightning_ricci.ricci_flow`. Default: ``"auto"``.
        memory_budget (int, optional): passed to :func:`~lightning_ricci.ricci_flow`. Default: None.

    Returns:
        AnalysisResult: the :class:`~lightning_ricci.RicciFlowResult` with ``layer_names``.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad value: fewer than 3 probe points, ``k >= N``, an unknown module name (the
            message lists the modules that exist), or fewer than two captured layers.

    >>> net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh())
    >>> result = analyze(net, torch.randn(64, 2))
    >>> result.layer_names, result.k, result.layer.shape
    (('input', '1', '3', '5'), 5, torch.Size([3]))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module (got {type(model).__name__})")
    x = _probe_tensor(probe)
    num_points = x.shape[0]
    spec = check_layer_spec(layers)
    if k is not None and (not _is_int(k) or k < 1):
        raise ValueError(f"`k` must be a positive int or None (got {k!r})")
    if k is not None and k >= num_points:
        raise ValueError(f"`k` must be smaller than the number of probe points {num_points} (got {k})")
    check_choice("convention", convention, CONVENTIONS)
    check_choice("curvature", curvature, EDGE_CURVATURES)
    check_choice("knn_backend", knn_backend, KNN_BACKENDS)
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1 (got {batch_size!r})")

    device = _model_device(model, x.device)
    modes = {module: module.training for module in model.modules()}

    def run(xb: Tensor) -> Any:
        with torch.no_grad(), _eager():
            return model(xb.to(device))

    try:
        model.eval()
        if isinstance(spec, list):
            names = ActivationCapture(model, spec).names
        else:
            select = ACTIVATION_TYPES if spec is None else cast(_Select, spec)
            sample = x[: min(num_points, batch_size)]
            names = find_layers(model, lambda: run(sample), select)
        capture = ActivationCapture(model, names)
        with capture:
            for start in range(0, num_points, batch_size):
                xb = x[start : start + batch_size]
                capture.forward(lambda xb=xb: run(xb), batch_size=xb.shape[0])  # type: ignore[misc]
        acts = capture.activations()
    finally:
        for module, mode in modes.items():
            module.training = mode

    if len(acts) < 2:
        raise ValueError(
            f"`layers` must select at least 2 layers of {type(model).__name__} (with the probe input, "
            f"ricci_flow needs 3) (got {list(acts)})"
        )
    inputs = x.detach().to(acts[next(iter(acts))].device)
    inputs = inputs.to(torch.float64 if inputs.dtype == torch.float64 else torch.float32)
    tensors = [inputs.reshape(num_points, -1), *acts.values()]
    if any(t.dtype == torch.float64 for t in tensors):
        tensors = [t.double() for t in tensors]
    result = ricci_flow(
        tensors,
        k if k is not None else default_k(num_points),
        convention=convention,
        curvature=curvature,
        knn_backend=knn_backend,
        memory_budget=memory_budget,
    )
    input_name = INPUT_LAYER if INPUT_LAYER not in acts else "probe_input"
    values = {field.name: getattr(result, field.name) for field in dataclasses.fields(result)}
    return AnalysisResult(**values, layer_names=(input_name, *acts))


def _as_curve(value: Any, where: str) -> Tensor:
    if isinstance(value, RicciFlowResult):
        return value.layer.detach().double().cpu()
    if isinstance(value, Tensor):
        if value.dim() != 1 or not (value.is_floating_point() or value.numel() == 0):
            raise ValueError(
                f"`{where}` must be a 1-D float tensor [T] (got shape {tuple(value.shape)}, {value.dtype})"
            )
        return value.detach().double().cpu()
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
            raise TypeError(f"`{where}` must hold numbers (got {[type(v).__name__ for v in value][:5]})")
        return torch.tensor([float(v) for v in value], dtype=torch.float64)
    raise TypeError(
        f"`{where}` must be a RicciFlowResult, a 1-D tensor or a sequence of floats (got {type(value).__name__})"
    )


def mean_layer_curve(layer_coefficients: Curve | Sequence[Curve]) -> Tensor:
    """The layer-coefficient curve averaged over networks, aligned at the input transition.

    Entry t is the mean of r_t (the layer coefficient of transition t -> t+1) over the networks that have
    a finite r_t. Networks of different depths contribute to the indices they have, so the deepest
    networks alone define the tail, as in Hehl et al.'s Fig. 5 (one curve per depth, drawn on one axis).

    Args:
        layer_coefficients: one network (a :class:`~lightning_ricci.RicciFlowResult`, a 1-D tensor [T]
            or a sequence of floats), a sequence of networks, or a 2-D tensor [M, T] (NaN = missing).

    Returns:
        Tensor: [T_max] float64 on the CPU; NaN where no network has a finite value.

    Raises:
        TypeError: an entry is not a result, a tensor or a sequence of numbers.
        ValueError: no network, or a tensor of more than 2 dimensions.

    >>> mean_layer_curve([[-0.2, -0.6, -0.4], [-0.4, -0.8, -0.6, -0.1], [float("nan"), -0.7]])
    tensor([-0.3000, -0.7000, -0.5000, -0.1000], dtype=torch.float64)
    """
    curves: list[Tensor]
    if isinstance(layer_coefficients, Tensor) and layer_coefficients.dim() == 2:
        curves = [row for row in layer_coefficients.detach().double().cpu()]
    elif isinstance(layer_coefficients, Tensor) and layer_coefficients.dim() > 2:
        raise ValueError(
            f"`layer_coefficients` must be [T] or [M, T] (got shape {tuple(layer_coefficients.shape)})"
        )
    elif isinstance(layer_coefficients, (RicciFlowResult, Tensor)):
        curves = [_as_curve(layer_coefficients, "layer_coefficients")]
    elif isinstance(layer_coefficients, Sequence) and not isinstance(layer_coefficients, str):
        items = list(layer_coefficients)
        if not items:
            raise ValueError("`layer_coefficients` must hold at least one network (got an empty sequence)")
        if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items):
            curves = [_as_curve(items, "layer_coefficients")]
        else:
            curves = [_as_curve(v, f"layer_coefficients[{i}]") for i, v in enumerate(items)]
    else:
        raise TypeError(
            "`layer_coefficients` must be a RicciFlowResult, a tensor or a sequence of them "
            f"(got {type(layer_coefficients).__name__})"
        )
    length = max(c.numel() for c in curves)
    table = torch.full((len(curves), length), math.nan, dtype=torch.float64)
    for row, curve in zip(table, curves):
        row[: curve.numel()] = curve
    finite = torch.isfinite(table)
    count = finite.sum(dim=0)
    total = torch.where(finite, table, torch.zeros_like(table)).sum(dim=0)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


def critical_depth(layer_coefficients: Curve | Sequence[Curve]) -> int:
    """The critical depth: the transition t where the mean layer-coefficient curve bottoms out.

    Defined as ``argmin_t`` of :func:`mean_layer_curve` over its finite entries (the first one on a tie):
    the transition t -> t+1 that is most Ricci-flow-like on average. With layers indexed as
    ``[input, h_1, h_2, ...]``, t is also the index of the hidden layer h_t whose curvature drives that
    transition, so ``t`` hidden layers lead up to it (Hehl et al. 2025, Sec. 4.4, read the critical
    depth off the same axis). For one network it equals
    :attr:`RicciFlowResult.critical_layer <lightning_ricci.RicciFlowResult.critical_layer>`.

    Args:
        layer_coefficients: one network (a :class:`~lightning_ricci.RicciFlowResult`, a 1-D tensor [T]
            or a sequence of floats), a sequence of networks (depths may differ), or a 2-D tensor [M, T].
            NaN entries are ignored.

    Returns:
        int: t in ``0 .. T_max - 1``, or ``-1`` if no entry is finite.

    Raises:
        TypeError: an entry is not a result, a tensor or a sequence of numbers.
        ValueError: no network, or a tensor of more than 2 dimensions.

    >>> critical_depth([-0.2, -0.7, -0.5, -0.1])
    1
    >>> critical_depth([[-0.2, -0.6, -0.7], [-0.3, -0.8, -0.5, -0.1]]), critical_depth([float("nan")])
    (1, -1)
    """
    curve = mean_layer_curve(layer_coefficients)
    finite = torch.isfinite(curve)
    if not bool(finite.any()):
        return -1
    return int(torch.where(finite, curve, torch.full_like(curve, math.inf)).argmin())

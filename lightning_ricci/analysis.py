"""Offline analysis of any ``nn.Module`` and depth selection from the layer coefficients.

Shape symbols: N probe points, L layers (the probe input included), T = L - 1 transitions
(layer t -> t + 1), M networks.

:func:`analyze` is the functional face of :class:`~lightning_ricci.RicciFlowMonitor`: both run the one
measurement path of :mod:`lightning_ricci.pipeline` (probe, default layer rules, reductions, ``k``,
``ricci_flow``), so they give the same numbers on the same model and probe. :func:`critical_depth` turns
the layer coefficients of one or more trained networks into the depth where the layer curve bottoms
out (Hehl et al. 2025, Sec. 4.4).

:func:`load_activations` (from :mod:`lightning_ricci.io`) reads per-layer arrays saved to a ``.pt`` or
``.npz`` file, for the command line ``python -m lightning_ricci``.

This module needs only torch (and numpy, for ``.npz`` files).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

import torch
from torch import Tensor, nn

from lightning_ricci.geometry.knn import KnnBackend
from lightning_ricci.geometry.result import Convention, CurvatureKind, RicciFlowResult, RicciFlowScan
from lightning_ricci.io import load_activations
from lightning_ricci.layers import DEFAULT_MAX_LAYERS
from lightning_ricci.pipeline import INPUT_LAYER, LayerSpec, Pipeline, default_k
from lightning_ricci.probes import ForwardFn, make_probe
from lightning_ricci.reduce import Reduce

__all__ = [
    "INPUT_LAYER",
    "AnalysisResult",
    "analyze",
    "critical_depth",
    "default_k",
    "load_activations",
    "mean_layer_curve",
]

Curve = RicciFlowResult | Tensor | Sequence[float]


@dataclasses.dataclass(frozen=True)
class AnalysisResult(RicciFlowResult):
    """A :class:`~lightning_ricci.RicciFlowResult` that also names its layers and their reductions.

    Attributes:
        layer_names (tuple[str, ...]): the L layer names, the probe input (``"input"``) first, then the
            module names as :class:`~lightning_ricci.capture.ActivationCapture` reports them.
        reductions (tuple[str, ...]): the reduction applied to each layer (``"flatten"``, ``"mean"``,
            ``"pool4x4"``, ``"cls"`` or a callable's name).
        layer_rule (str): how the layers were chosen: ``"blocks"``, ``"activations"``, ``"children"``
            (the default rules), ``"names"`` or ``"selected"`` (a class or predicate).
    """

    layer_names: tuple[str, ...] = ()
    reductions: tuple[str, ...] = ()
    layer_rule: str = ""


@overload
def analyze(
    model: nn.Module,
    probe: Any,
    layers: LayerSpec = ...,
    k: int | None = ...,
    *,
    convention: Convention = ...,
    curvature: CurvatureKind = ...,
    batch_size: int | None = ...,
    knn_backend: KnnBackend = ...,
    memory_budget: int | None = ...,
    reduce: Reduce | Mapping[str, Reduce] = ...,
    max_layers: int = ...,
    forward_fn: ForwardFn | None = ...,
    input_key: str | None = ...,
    label_key: str | None = ...,
    batch_to_input: Callable[[Any], Any] | None = ...,
    node_mask: str | None = ...,
) -> AnalysisResult: ...


@overload
def analyze(
    model: nn.Module,
    probe: Any,
    layers: LayerSpec = ...,
    k: Sequence[int] = ...,
    *,
    convention: Convention = ...,
    curvature: CurvatureKind = ...,
    batch_size: int | None = ...,
    knn_backend: KnnBackend = ...,
    memory_budget: int | None = ...,
    reduce: Reduce | Mapping[str, Reduce] = ...,
    max_layers: int = ...,
    forward_fn: ForwardFn | None = ...,
    input_key: str | None = ...,
    label_key: str | None = ...,
    batch_to_input: Callable[[Any], Any] | None = ...,
    node_mask: str | None = ...,
) -> RicciFlowScan: ...


def analyze(
    model: nn.Module,
    probe: Any,
    layers: LayerSpec = None,
    k: int | Sequence[int] | None = None,
    *,
    convention: Convention = "baptista",
    curvature: CurvatureKind = "forman",
    batch_size: int | None = None,
    knn_backend: KnnBackend = "auto",
    memory_budget: int | None = None,
    reduce: Reduce | Mapping[str, Reduce] = "auto",
    max_layers: int = DEFAULT_MAX_LAYERS,
    forward_fn: ForwardFn | None = None,
    input_key: str | None = None,
    label_key: str | None = None,
    batch_to_input: Callable[[Any], Any] | None = None,
    node_mask: str | None = "val_mask",
) -> AnalysisResult | RicciFlowScan:
    """Ricci-flow diagnostics of any ``nn.Module`` on a probe set, without Lightning.

    The probe is passed through ``model`` once, exactly as :class:`~lightning_ricci.RicciFlowMonitor`
    does at each validation run (:mod:`lightning_ricci.pipeline`): in eval mode (the training flags are
    restored afterwards), under ``torch.no_grad()``, eagerly, in chunks of ``batch_size`` (a graph
    once), on the device of the model's parameters. The layers handed to
    :func:`~lightning_ricci.ricci_flow` are ``[probe input, layer 1, ...]``, each reduced to [N, D_l] by
    ``reduce``. Labels found in the probe (``(x, y)``, a dict's ``label_key``, a graph's ``y``) are passed
    to ``ricci_flow(labels=...)`` where it takes them.

    Args:
        model (nn.Module): the network.
        probe (Any): a tensor [N, ...], a tuple ``(inputs, labels, ...)``, a dict batch, or a graph
            (``torch_geometric.data.Data``), see :func:`~lightning_ricci.probes.make_probe`.
        layers (Sequence[str] | type | tuple[type, ...] | Callable, optional): module names (wrapper
            prefixes may be left out, ``"name:i"`` picks the i-th call, ``"name[0]"`` / ``"name[key]"`` an
            element of a tuple or dict output), module classes, or a predicate ``(name, module) -> bool``;
            classes and predicates are ordered by the forward pass. Default: None (the default rules of
            :mod:`lightning_ricci.capture`: blocks, else activation modules, else the children that run).
        k (int | Sequence[int], optional): neighbours per point, ``1 <= k < N``; a list of distinct values
            scans k in one ``ricci_flow`` call. Default: None (:func:`default_k` of N).
        convention (str): ``"baptista"`` or ``"hehl"``. Default: ``"baptista"``.
        curvature (str): ``"forman"``, ``"augmented_forman"`` or ``"approx_ollivier"``. Default: ``"forman"``.
        batch_size (int, optional): probe points per forward pass. Default: None (chosen from the
            largest module output, as the monitor does).
        knn_backend (str): passed to :func:`~lightning_ricci.ricci_flow`. Default: ``"auto"``.
        memory_budget (int, optional): passed to :func:`~lightning_ricci.ricci_flow`. Default: None.
        reduce (str | Callable | Mapping): per-layer reduction, see :mod:`lightning_ricci.capture`.
            Default: ``"auto"``.
        max_layers (int): cap on the default layers. Default: 12.
        forward_fn (Callable, optional): ``forward_fn(model, inputs) -> output``. Default: None.
        input_key (str, optional): the dict key of the model input. Default: None.
        label_key (str, optional): the dict key of the labels. Default: None.
        batch_to_input (Callable, optional): batch -> model input. Default: None.
        node_mask (str, optional): a graph's boolean attribute of probe nodes. Default: ``"val_mask"``.

    Returns:
        AnalysisResult | RicciFlowScan: the :class:`~lightning_ricci.RicciFlowResult` with ``layer_names``,
        ``reductions`` and ``layer_rule``; with a list ``k``, a :class:`~lightning_ricci.RicciFlowScan`
        whose ``results`` are such results, one per k.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad value: fewer than 3 probe points, ``k >= N``, an unknown module name (the
            message lists the modules that exist), a named layer that does not run, or fewer than two
            captured layers.

    >>> net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh())
    >>> result = analyze(net, torch.randn(64, 2), convention="hehl")
    >>> result.layer_names, result.k, result.reductions[0]
    (('input', '1', '3', '5'), 5, 'flatten')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module (got {type(model).__name__})")
    pipeline = Pipeline(
        layers,
        k,
        convention=convention,
        curvature=curvature,
        knn_backend=knn_backend,
        memory_budget=memory_budget,
        reduce=reduce,
        max_layers=max_layers,
        batch_size=batch_size,
        forward_fn=forward_fn,
    )
    data = make_probe(
        probe, input_key=input_key, label_key=label_key, batch_to_input=batch_to_input, node_mask=node_mask
    )
    pipeline.check_points(data.num_points, "the number of probe points")
    device = _model_device(model)
    setup = pipeline.setup(model, data, prepare=lambda batch: _to(batch, device))
    names = setup.names
    if len(names) < 2:
        raise ValueError(
            f"`layers` must select at least 2 layers of {type(model).__name__} (with the probe input, "
            f"ricci_flow needs 3) (got {names})"
        )
    for key, message in setup.warnings:
        if key == "degenerate":
            warnings.warn(f"analyze: {message}", UserWarning, stacklevel=2)
    captured = pipeline.capture(model, data, names, prepare=lambda batch: _to(batch, device))
    measured = pipeline.compute(captured)

    def named(result: RicciFlowResult) -> AnalysisResult:
        values = {field.name: getattr(result, field.name) for field in dataclasses.fields(result)}
        return AnalysisResult(
            **values,
            layer_names=tuple(captured.names),
            reductions=tuple(captured.reductions[name] for name in captured.names),
            layer_rule=pipeline.rule or "",
        )

    if isinstance(measured, RicciFlowScan):
        return RicciFlowScan.from_results(measured.ks, [named(r) for r in measured.results])
    return named(measured)


def _model_device(model: nn.Module) -> torch.device | None:
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return None


def _to(batch: Any, device: torch.device | None) -> Any:
    """Move every tensor of a batch (tensor, tuple, dict, graph with ``.to``) to ``device``."""
    if device is None:
        return batch
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return type(batch)({key: _to(value, device) for key, value in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(value, device) for value in batch)
    to = getattr(batch, "to", None)
    return to(device) if callable(to) else batch


def _as_curve(value: Any, where: str) -> Tensor:
    if isinstance(value, RicciFlowResult):
        return value.layer_coefficient.detach().double().cpu()
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

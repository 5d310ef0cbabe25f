"""Figures of a :class:`~lightning_ricci.RicciFlowResult` for TensorBoard and reports.

Shape symbols: N probe points, L layers (the input included).

matplotlib is an optional dependency (``pip install 'lightning-ricci[plots]'``). It is imported inside
the functions, and only its object-oriented API is used (``matplotlib.figure.Figure``, no ``pyplot``),
so no GUI backend is touched and figures are freed with the object.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from lightning_ricci.geometry.result import RicciFlowResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["flow_figure", "history_figure", "local_histogram"]


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "lightning_ricci.plotting needs matplotlib: `pip install 'lightning-ricci[plots]'`"
        ) from err
    return Figure


def _layer_names(result: RicciFlowResult, layer_names: Sequence[str] | None) -> list[str]:
    if layer_names is None:
        return [str(i) for i in range(result.num_layers)]
    names = list(layer_names)
    if len(names) != result.num_layers:
        raise ValueError(
            f"`layer_names` must name the {result.num_layers} layers of `result` (got {len(names)} names)"
        )
    return names


def flow_figure(result: RicciFlowResult, layer_names: Sequence[str] | None = None) -> Figure:
    """Curvature and geodesic change across layers, with the layer coefficients.

    Three panels: the total curvature Ric_l of every layer; the change of summed geodesic distances
    eta_l for every transition l -> l+1 (the both-layers-connected change where eta_l is not finite,
    drawn hollow); and the layer Ricci coefficients with the critical transition marked.

    Args:
        result (RicciFlowResult): the result to draw.
        layer_names (Sequence[str], optional): L names for the x axis. Default: None (``0..L-1``).

    Returns:
        matplotlib.figure.Figure: the figure (not registered with pyplot).

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
        ValueError: ``layer_names`` does not have L entries.
    """
    figure_class = _figure_class()
    names = _layer_names(result, layer_names)
    transitions = [f"{a}\u2192{b}" for a, b in itertools.pairwise(names)]
    curvature = result.curvature.detach().double().cpu()
    eta = result.eta.detach().double().cpu()
    eta_connected = result.eta_connected.detach().double().cpu()
    finite = torch.isfinite(eta)
    shown_eta = torch.where(finite, eta, eta_connected)
    layer = result.layer.detach().double().cpu()

    figure: Figure = figure_class(figsize=(4.0 + 1.2 * len(names), 3.6), layout="constrained")
    ax_curv, ax_eta, ax_layer = figure.subplots(1, 3)
    ax_curv.plot(range(len(names)), curvature.tolist(), marker="o")
    ax_curv.set_title("total curvature Ric$_l$")
    ax_curv.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize="small")

    positions = list(range(len(transitions)))
    ax_eta.axhline(0.0, color="0.7", linewidth=0.8)
    ax_eta.plot(positions, shown_eta.tolist(), color="C1")
    for pos, value, ok in zip(positions, shown_eta.tolist(), finite.tolist()):
        ax_eta.plot(pos, value, marker="o", color="C1", fillstyle="full" if ok else "none")
    ax_eta.set_title("geodesic change $\\eta_l$")
    ax_eta.set_xticks(positions, transitions, rotation=45, ha="right", fontsize="small")

    ax_layer.axhline(0.0, color="0.7", linewidth=0.8)
    ax_layer.plot(positions, layer.tolist(), marker="o", color="C2")
    critical = result.critical_layer
    if critical >= 0:
        ax_layer.plot(critical, float(layer[critical]), marker="*", markersize=14, color="C3", linestyle="")
    ax_layer.set_ylim(-1.05, 1.05)
    ax_layer.set_title("layer coefficient")
    ax_layer.set_xticks(positions, transitions, rotation=45, ha="right", fontsize="small")

    coefficient = result.coefficient
    if math.isfinite(coefficient):
        label = f"{coefficient:+.3f}"
    else:
        connected = result.coefficient_connected
        label = f"undefined (connected pairs: {connected:+.3f})" if math.isfinite(connected) else "undefined"
    figure.suptitle(f"Ricci coefficient ({result.convention}, k={result.k}): {label}")
    return figure


def local_histogram(result: RicciFlowResult, bins: int = 30) -> Figure:
    """Histogram of the local Ricci evolution coefficients of the probe points.

    Args:
        result (RicciFlowResult): the result to draw.
        bins (int, optional): number of bins on [-1, 1]. Default: 30.

    Returns:
        matplotlib.figure.Figure: the figure, with the mean and the negative share in the title.

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
        ValueError: ``bins`` < 1.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"`bins` must be a positive int (got {bins!r})")
    figure_class = _figure_class()
    local = result.local.detach().double().cpu()
    defined = local[~local.isnan()]
    figure: Figure = figure_class(figsize=(5.0, 3.6), layout="constrained")
    ax = figure.subplots()
    ax.hist(defined.tolist(), bins=bins, range=(-1.0, 1.0), color="C0")
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    ax.set_xlabel("local Ricci coefficient")
    ax.set_ylabel("probe points")
    undefined = int(local.numel() - defined.numel())
    ax.set_title(
        f"mean {result.local_mean:+.3f}, negative {result.local_negative_share:.0%}"
        + (f", undefined {undefined}" if undefined else "")
    )
    return figure


def history_figure(history: Sequence[Mapping[str, Any]]) -> Figure:
    """The coefficients over training, from :attr:`RicciFlowMonitor.history <lightning_ricci.RicciFlowMonitor>`.

    Draws the logged global coefficient (hollow markers where the convention left it undefined and a
    fallback was logged) and the mean local coefficient against the epoch.

    Args:
        history (Sequence[Mapping[str, Any]]): entries with ``epoch``, ``coefficient``, ``excluded`` and
            ``local_mean``, as the monitor records them.

    Returns:
        matplotlib.figure.Figure: the figure.

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
        ValueError: ``history`` is empty or an entry lacks a key.
    """
    if len(history) == 0:
        raise ValueError("`history` must hold at least one measurement (got an empty sequence)")
    needed = ("epoch", "coefficient", "excluded", "local_mean")
    for i, entry in enumerate(history):
        missing = [key for key in needed if key not in entry]
        if missing:
            raise ValueError(f"`history[{i}]` lacks {missing} (got keys {sorted(entry)})")
    figure_class = _figure_class()
    epochs = [int(entry["epoch"]) for entry in history]
    figure: Figure = figure_class(figsize=(6.0, 3.6), layout="constrained")
    ax = figure.subplots()
    ax.axhline(0.0, color="0.7", linewidth=0.8)
    ax.plot(epochs, [float(e["coefficient"]) for e in history], color="C0", label="global coefficient")
    for epoch, entry in zip(epochs, history):
        fill = "none" if entry["excluded"] else "full"
        ax.plot(epoch, float(entry["coefficient"]), marker="o", color="C0", fillstyle=fill)
    ax.plot(
        epochs,
        [float(e["local_mean"]) for e in history],
        color="C1",
        marker="s",
        label="mean local coefficient",
    )
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("Ricci coefficient")
    ax.legend(loc="best", fontsize="small")
    return figure

"""Figures of a :class:`~lightning_ricci.RicciFlowResult` for TensorBoard, W&B, MLflow and reports.

Shape symbols: N probe points, L layers (the input included).

Every figure reads on its own: each axis is labelled, hollow markers and the critical-layer star have
legend entries, and tick labels are plain numbers (no ``1e7`` offset or multiplier that a reader could
miss). The geodesic change is drawn relative to the input layer's geodesic sum: a constant scale,
so the curve keeps the exact shape the Ricci coefficient correlates.

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
from torch import Tensor

from lightning_ricci.geometry.result import RicciFlowResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["class_structure_figure", "flow_figure", "history_figure", "local_histogram"]

_MINUS = "\u2212"
_HOLLOW: dict[str, Any] = {"markerfacecolor": "white", "linestyle": "", "marker": "o"}


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


def _tick_names(names: list[str]) -> tuple[list[str], list[str]]:
    """Tick labels for the layers and the transitions, short enough to leave room for the data.

    Names over 20 characters keep their first 8 and last 11 characters (``model.la….mlp.act_fn``); a
    transition reads ``a→b`` while every name has at most 8 characters, else ``→b`` (into layer b).
    """
    short = [name if len(name) <= 20 else f"{name[:8]}\u2026{name[-11:]}" for name in names]
    if max(len(name) for name in short) <= 8:
        return short, [f"{a}\u2192{b}" for a, b in itertools.pairwise(short)]
    return short, [f"\u2192{b}" for b in short[1:]]


def _label_room(labels: list[str]) -> float:
    """Inches below a row of panels for its 45-degree tick labels."""
    return 0.045 * max(len(label) for label in labels)


def _cpu(values: Tensor) -> Tensor:
    return values.detach().to(device="cpu", dtype=torch.float64)


def _decimals(locs: Sequence[float]) -> int:
    """Fewest decimals that write every tick exactly (ticks are round numbers of one spacing)."""
    for decimals in range(13):
        if all(abs(round(v, decimals) - v) <= 1e-9 * max(1.0, abs(v)) for v in locs):
            return decimals
    return 13


def _plain_ticks(ax: Axes, axis: str = "y") -> None:
    """Plain tick labels with thousands separators: no offset, no ``1e7`` multiplier."""
    from matplotlib.ticker import FuncFormatter

    def write(value: float, _pos: int | None) -> str:
        decimals = _decimals(list(formatter.locs) or [value])
        if abs(value) < 0.5 * 10.0**-decimals:
            value = 0.0
        return f"{value:,.{decimals}f}".replace("-", _MINUS)

    formatter = FuncFormatter(write)
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(formatter)


def _category_axis(ax: Axes, labels: Sequence[str], title: str) -> None:
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize="small")
    ax.set_xlabel(title)
    ax.set_xlim(-0.5, len(labels) - 0.5)


def _class_fields(result: RicciFlowResult) -> dict[str, Tensor] | None:
    fields = {
        "modularity": getattr(result, "class_modularity", None),
        "normalized cut": getattr(result, "class_normalized_cut", None),
        "mixing (between-class edges)": getattr(result, "class_mixing", None),
    }
    if any(value is None for value in fields.values()):
        return None
    return {name: _cpu(value) for name, value in fields.items() if value is not None}


def _draw_curvature(ax: Axes, result: RicciFlowResult, names: list[str]) -> None:
    curvature = _cpu(result.total_curvature)
    ax.plot(range(len(names)), curvature.tolist(), marker="o", color="C0")
    ax.set_title("total curvature Ric$_l$")
    ax.set_ylabel("Ric$_l$ (sum over edges)")
    _category_axis(ax, names, "layer $l$")
    _plain_ticks(ax)


def _draw_geodesic_change(
    ax: Axes, result: RicciFlowResult, names: list[str], transitions: list[str]
) -> None:
    eta = _cpu(result.eta)
    finite = torch.isfinite(eta)
    shown = torch.where(finite, eta, _cpu(result.eta_connected))
    # "baptista" sums eta over ordered pairs, geodesic_sum is over unordered ones: the same reference.
    pairs = 2.0 if result.convention == "baptista" else 1.0
    reference = float(result.geodesic_sum[0]) * pairs if result.num_layers else math.nan
    relative = math.isfinite(reference) and reference > 0
    if relative:
        shown = 100.0 * shown / reference
        first = f"layer {names[0]}" if names[0].isdigit() else names[0]
        ax.set_ylabel(f"% of the geodesic sum of {first}")
    else:
        ax.set_ylabel("$\\eta_l$ (hop counts)")
    positions = list(range(len(transitions)))
    ax.axhline(0.0, color="0.7", linewidth=0.8)
    ax.plot(positions, shown.tolist(), color="C1", marker="o", label="$\\eta_l$, all pairs")
    hollow = [p for p, ok in zip(positions, finite.tolist()) if not ok]
    if hollow:
        ax.plot(
            hollow,
            [float(shown[p]) for p in hollow],
            color="C1",
            label="$\\eta_l$ undefined: pairs connected in both layers",
            **_HOLLOW,
        )
    ax.set_title("geodesic change $\\eta_l$")
    ax.legend(loc="best", fontsize="x-small")
    _category_axis(ax, transitions, "transition $l \\to l+1$")
    _plain_ticks(ax)


def _draw_layer_coefficient(ax: Axes, result: RicciFlowResult, transitions: list[str]) -> None:
    layer = _cpu(result.layer_coefficient)
    positions = list(range(len(transitions)))
    ax.axhline(0.0, color="0.7", linewidth=0.8)
    ax.plot(positions, layer.tolist(), marker="o", color="C2", label="layer coefficient")
    critical = result.critical_layer
    if critical >= 0:
        ax.plot(
            critical,
            float(layer[critical]),
            marker="*",
            markersize=14,
            color="C3",
            linestyle="",
            label="critical transition (lowest)",
        )
    ax.set_ylim(-1.05, 1.05)
    ax.set_title("layer Ricci coefficient $r_l$")
    ax.set_ylabel("Pearson r across probe points")
    ax.legend(loc="best", fontsize="x-small")
    _category_axis(ax, transitions, "transition $l \\to l+1$")
    _plain_ticks(ax)


def _draw_class_structure(ax: Axes, fields: dict[str, Tensor], names: list[str]) -> None:
    # Distinct markers and dashes: with two balanced classes normalized cut and mixing nearly coincide.
    for (label, values), marker, dashes in zip(fields.items(), ("o", "s", "^"), ("-", "--", ":")):
        ax.plot(range(len(names)), values.tolist(), marker=marker, linestyle=dashes, label=label)
    ax.set_title("class structure of the layer graphs")
    ax.set_ylabel("value of each measure")
    ax.legend(loc="best", fontsize="x-small")
    _category_axis(ax, names, "layer $l$")
    _plain_ticks(ax)


def _coefficient_text(result: RicciFlowResult) -> str:
    coefficient = result.coefficient
    if math.isfinite(coefficient):
        return f"{coefficient:+.3f}".replace("-", _MINUS)
    connected = result.coefficient_connected
    if math.isfinite(connected):
        return f"undefined (connected pairs: {connected:+.3f})".replace("-", _MINUS)
    return "undefined"


def flow_figure(result: RicciFlowResult, layer_names: Sequence[str] | None = None) -> Figure:
    """Curvature and geodesic change across layers, the layer coefficients, and the class structure.

    Panels: the total curvature Ric_l of every layer; the change of summed geodesic distances eta_l of
    every transition l -> l+1, as a percentage of the input layer's geodesic sum (a constant scale,
    which leaves its correlation with the curvature unchanged), drawn hollow where eta_l is undefined
    and the both-layers-connected change is shown instead; the layer Ricci coefficients with the
    critical transition starred. When the result has class fields (``ricci_flow(..., labels=...)``), a
    fourth panel shows class modularity, normalized cut and mixing per layer, and the panels form a
    2 x 2 grid: per layer on top, per transition below.

    Args:
        result (RicciFlowResult): the result to draw.
        layer_names (Sequence[str], optional): L names for the x axis. Default: None (``0..L-1``).

    Returns:
        matplotlib.figure.Figure: the figure (not registered with pyplot).

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
        ValueError: ``layer_names`` does not have L entries.

    Example:
        >>> import torch
        >>> from lightning_ricci import ricci_flow
        >>> x = torch.randn(40, 3)
        >>> result = ricci_flow([x, x.relu(), x.tanh()], 5)
        >>> [ax.get_title() for ax in flow_figure(result).axes]
        ['total curvature Ric$_l$', 'geodesic change $\\\\eta_l$', 'layer Ricci coefficient $r_l$']
    """
    figure_class = _figure_class()
    names, transitions = _tick_names(_layer_names(result, layer_names))
    room = _label_room(names + transitions)
    fields = _class_fields(result)
    width = 1.2 + 0.5 * len(names)  # inches per panel
    if fields is None:
        figure: Figure = figure_class(figsize=(max(9.0, 3 * width), 3.4 + room), layout="constrained")
        ax_curv, ax_eta, ax_layer = figure.subplots(1, 3)
    else:
        figure = figure_class(figsize=(max(8.0, 2 * width), 6.4 + 2 * room), layout="constrained")
        grid = figure.add_gridspec(2, 2)
        # Created in reading order (figure.axes keeps it): per layer on top, per transition below.
        ax_curv = figure.add_subplot(grid[0, 0])
        ax_eta = figure.add_subplot(grid[1, 0])
        ax_layer = figure.add_subplot(grid[1, 1])
        _draw_class_structure(figure.add_subplot(grid[0, 1]), fields, names)
    _draw_curvature(ax_curv, result, names)
    _draw_geodesic_change(ax_eta, result, names, transitions)
    _draw_layer_coefficient(ax_layer, result, transitions)
    figure.suptitle(
        f"Ricci coefficient ({result.convention}, k={result.k}, N={result.num_points}): "
        f"{_coefficient_text(result)}"
    )
    return figure


def class_structure_figure(result: RicciFlowResult, layer_names: Sequence[str] | None = None) -> Figure:
    """Class structure of the layer graphs, from a result computed with ``labels``.

    Two panels across layers: class modularity, normalized cut and mixing (the share of union edges
    whose ends have different labels); and the curvature gap of within- versus between-class edges
    (in pooled standard deviations; undefined layers are left out).

    Args:
        result (RicciFlowResult): a result of ``ricci_flow(..., labels=...)``.
        layer_names (Sequence[str], optional): L names for the x axis. Default: None (``0..L-1``).

    Returns:
        matplotlib.figure.Figure: the figure.

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
        ValueError: ``result`` has no class fields, or ``layer_names`` does not have L entries.

    Example:
        >>> import torch
        >>> from lightning_ricci import ricci_flow
        >>> x, y = torch.randn(40, 3), torch.arange(40) % 2
        >>> result = ricci_flow([x, x + 3 * y[:, None], x.tanh()], 5, labels=y)
        >>> len(class_structure_figure(result).axes)
        2
    """
    fields = _class_fields(result)
    gap = getattr(result, "curvature_gap", None)
    if fields is None or gap is None:
        raise ValueError(
            "`result` has no class structure: compute it with `ricci_flow(..., labels=...)` "
            "(got class_modularity=None)"
        )
    figure_class = _figure_class()
    names, _ = _tick_names(_layer_names(result, layer_names))
    size = (max(8.0, 2 * (1.2 + 0.5 * len(names))), 3.4 + _label_room(names))
    figure: Figure = figure_class(figsize=size, layout="constrained")
    ax_class, ax_gap = figure.subplots(1, 2)
    _draw_class_structure(ax_class, fields, names)
    ax_gap.axhline(0.0, color="0.7", linewidth=0.8)
    ax_gap.plot(range(len(names)), _cpu(gap).tolist(), marker="o", color="C3")
    ax_gap.set_title("curvature gap of the classes")
    ax_gap.set_ylabel("$(\\bar\\kappa_{within} - \\bar\\kappa_{between})\\,/\\,\\sigma_{pooled}$")
    _category_axis(ax_gap, names, "layer $l$")
    _plain_ticks(ax_gap)
    figure.suptitle(
        f"Class structure ({result.curvature_kind} curvature, k={result.k}, N={result.num_points})"
    )
    return figure


def local_histogram(result: RicciFlowResult, bins: int = 30) -> Figure:
    """Histogram of the local Ricci evolution coefficients of the probe points.

    Args:
        result (RicciFlowResult): the result to draw.
        bins (int, optional): number of bins on [-1, 1]. Default: 30.

    Returns:
        matplotlib.figure.Figure: the figure, with the mean marked and the negative share in the title.

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
        ValueError: ``bins`` < 1.

    Example:
        >>> import torch
        >>> from lightning_ricci import ricci_flow
        >>> x = torch.randn(40, 3)
        >>> local_histogram(ricci_flow([x, x.relu(), x.tanh()], 5), bins=10).axes[0].get_xlabel()
        'local Ricci coefficient'
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"`bins` must be a positive int (got {bins!r})")
    figure_class = _figure_class()
    local = _cpu(result.local)
    defined = local[~local.isnan()]
    figure: Figure = figure_class(figsize=(5.0, 3.6), layout="constrained")
    ax = figure.subplots()
    ax.hist(defined.tolist(), bins=bins, range=(-1.0, 1.0), color="C0", label="probe points")
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    mean = result.local_mean
    if math.isfinite(mean):
        ax.axvline(mean, color="C3", linestyle="--", label=f"mean {mean:+.3f}".replace("-", _MINUS))
    ax.set_xlim(-1.0, 1.0)
    ax.set_xlabel("local Ricci coefficient")
    ax.set_ylabel("probe points")
    ax.legend(loc="best", fontsize="small")
    undefined = int(local.numel() - defined.numel())
    share = result.local_negative_share
    ax.set_title(
        "local coefficients: "
        + (f"{share:.0%} negative" if math.isfinite(share) else "none defined")
        + (f", {undefined} of {local.numel()} undefined" if undefined else "")
    )
    _plain_ticks(ax)
    return figure


def history_figure(history: Sequence[Mapping[str, Any]]) -> Figure:
    """The coefficients over training, from ``RicciFlowMonitor.history``.

    Draws the logged global coefficient against the epoch (hollow markers where the convention left it
    undefined and a fallback was logged, crosses where the measurement failed, for entries that have a
    ``failed`` key) and the mean local coefficient.

    Args:
        history (Sequence[Mapping[str, Any]]): entries with ``epoch``, ``coefficient``, ``excluded`` and
            ``local_mean`` (and optionally ``failed``), as the monitor records them.

    Returns:
        matplotlib.figure.Figure: the figure.

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
        ValueError: ``history`` is empty or an entry lacks a key.

    Example:
        >>> entries = [{"epoch": 0, "coefficient": 0.2, "excluded": False, "local_mean": -0.1}]
        >>> history_figure(entries).axes[0].get_ylabel()
        'Ricci coefficient'
    """
    if len(history) == 0:
        raise ValueError("`history` must hold at least one measurement (got an empty sequence)")
    needed = ("epoch", "coefficient", "excluded", "local_mean")
    for i, entry in enumerate(history):
        missing = [key for key in needed if key not in entry]
        if missing:
            raise ValueError(f"`history[{i}]` lacks {missing} (got keys {sorted(entry)})")
    figure_class = _figure_class()
    from matplotlib.ticker import MaxNLocator

    epochs = [int(entry["epoch"]) for entry in history]
    coefficients = [float(entry["coefficient"]) for entry in history]
    figure: Figure = figure_class(figsize=(6.0, 3.6), layout="constrained")
    ax = figure.subplots()
    ax.axhline(0.0, color="0.7", linewidth=0.8)
    ax.plot(epochs, coefficients, color="C0", marker="o", label="global coefficient")
    failed = [bool(entry.get("failed", False)) for entry in history]
    fallback = [bool(entry["excluded"]) and not bad for entry, bad in zip(history, failed)]
    if any(fallback):
        ax.plot(
            [e for e, f in zip(epochs, fallback) if f],
            [c for c, f in zip(coefficients, fallback) if f],
            color="C0",
            label="fallback: paper's value undefined",
            **_HOLLOW,
        )
    if any(failed):
        ax.plot(
            [e for e, f in zip(epochs, failed) if f],
            [c for c, f in zip(coefficients, failed) if f],
            color="C3",
            marker="X",
            markersize=9,
            linestyle="",
            label="measurement failed",
        )
    ax.plot(
        epochs,
        [float(e["local_mean"]) for e in history],
        color="C1",
        marker="s",
        label="mean local coefficient",
    )
    ax.set_ylim(-1.05, 1.05)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("Ricci coefficient")
    ax.set_title("Ricci coefficients over training")
    ax.legend(loc="best", fontsize="small")
    _plain_ticks(ax)
    _plain_ticks(ax, "x")
    return figure

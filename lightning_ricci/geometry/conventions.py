"""What the two papers' conventions do differently, in one place.

Shape symbols: N probe points, L layers, R = L * N nodes of the disjoint union of the layer graphs.

A :class:`ConventionSpec` holds, for one convention, every choice that changes a number: the kNN tie
rule, how the per-layer Forman totals are summed, how the geodesic change of a transition treats pairs
whose connectivity changes (and when the network is excluded), and which layers the global
coefficient pairs. :func:`~lightning_ricci.ricci_flow` runs the same stages for both and reads these
fields; adding a convention means adding its name to :data:`Convention` and its spec to
:data:`CONVENTION_SPECS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from lightning_ricci.geometry.stages import Components, LayerGraphs, Transitions

Convention = Literal["baptista", "hehl"]


@dataclass(frozen=True)
class GeodesicChange:
    """The geodesic change of every transition under a convention's rules."""

    eta: Tensor  # [L-1] float64, the paper's value (may be +-inf or nan)
    eta_connected: Tensor  # [L-1] float64, over pairs connected in both layers
    excluded: bool  # the convention's own rule drops the network


@dataclass(frozen=True)
class ConventionSpec:
    """One convention of the global Ricci coefficient.

    Attributes:
        name (str): the option name (``convention=``).
        keep_ties (bool): kNN tie rule: keep every point tied at the k-th distance (R's ``cccd::nng``)
            or exactly k neighbours.
        forman_totals (Callable): ``LayerGraphs -> [L]`` float64 total Forman curvature of every layer.
        geodesic_change (Callable): ``(Transitions, Components) -> GeodesicChange``.
        curvature_pairs (slice): the layers whose totals enter the global coefficient.
        eta_pairs (slice): the transitions paired with them, in the same order.
    """

    name: Convention
    keep_ties: bool
    forman_totals: Callable[[LayerGraphs], Tensor]
    geodesic_change: Callable[[Transitions, Components], GeodesicChange]
    curvature_pairs: slice
    eta_pairs: slice


def _directed_totals(graphs: LayerGraphs) -> Tensor:
    """Sum over directed kNN edges i -> j of 4 - D(i) - D(j), D = in-degree + out-degree (R's igraph)."""
    src, dst, rows = graphs.src, graphs.dst, graphs.rows
    totals = torch.zeros(graphs.num_layers, dtype=torch.float64, device=src.device)
    dir_degree = torch.bincount(src, minlength=rows) + torch.bincount(dst, minlength=rows)
    return totals.index_add_(0, src // graphs.n, (4 - dir_degree[src] - dir_degree[dst]).double())


def _undirected_totals(graphs: LayerGraphs) -> Tensor:
    """Sum over undirected union edges of 4 - d(x) - d(y)."""
    a, b, degree = graphs.a, graphs.b, graphs.degree
    totals = torch.zeros(graphs.num_layers, dtype=torch.float64, device=a.device)
    return totals.index_add_(0, graphs.edge_layer, (4 - degree[a] - degree[b]).double())


def _r_rules(tr: Transitions, comps: Components) -> GeodesicChange:
    """R's ``sum(..., na.rm=TRUE)`` over ordered pairs: ``Inf - Inf`` dropped, ``+-Inf`` kept per node.

    A node row with both infinities is NaN and R's ``aggregate`` drops it; the network is excluded when
    some transition's mean is +-Inf (a pair connected in one layer and not in the next).
    """
    plus, minus, delta = tr.plus, tr.minus, tr.delta
    row_val = torch.where(plus, torch.inf, torch.where(minus, -torch.inf, delta))
    keep = ~(plus & minus)
    eta = torch.where(keep, row_val, torch.zeros_like(row_val)).sum(dim=1)
    eta = torch.where(keep.any(dim=1), eta, torch.full_like(eta, torch.nan))
    # Equal to eta wherever eta is finite (R drops the NaN rows); elsewhere every connected pair.
    trimmed = torch.where(keep, delta, torch.zeros_like(delta)).sum(dim=1)
    eta_connected = torch.where(torch.isfinite(eta), trimmed, delta.sum(dim=1))
    return GeodesicChange(eta, eta_connected, bool(torch.isinf(eta).any()))


def _connected_only(tr: Transitions, comps: Components) -> GeodesicChange:
    """g_{t+1} - g_t over unordered pairs, ``inf`` for a disconnected layer, which excludes the network."""
    g = tr.geodesic_sum
    g = torch.where(comps.num_components == 1, g, torch.full_like(g, torch.inf))
    return GeodesicChange(g[1:] - g[:-1], tr.delta.sum(dim=1) / 2, not comps.all_connected)


#: Every convention by name, in the order of :data:`CONVENTIONS`.
CONVENTION_SPECS: dict[Convention, ConventionSpec] = {
    spec.name: spec
    for spec in (
        # Baptista et al. (2024), R code: directed Forman, R's infinity rules, shifted hidden-layer pairs
        # (Ric_{l-1}, eta_{l-1 -> l}) for l = 2..L-1 of the hidden layers.
        ConventionSpec("baptista", True, _directed_totals, _r_rules, slice(1, -1), slice(1, None)),
        # Hehl et al. (2025): union graph, connected graphs only, (Ric_t, g_{t+1} - g_t) over all layers.
        ConventionSpec("hehl", False, _undirected_totals, _connected_only, slice(None, -1), slice(None)),
    )
}
#: The option names, derived from :data:`Convention`.
CONVENTIONS: tuple[Convention, ...] = get_args(Convention)
if tuple(CONVENTION_SPECS) != CONVENTIONS:  # pragma: no cover - a registry edit without the Literal
    raise ImportError("`CONVENTION_SPECS` and `Convention` list different conventions")

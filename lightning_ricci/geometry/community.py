"""How well the true classes separate in a layer graph: the community-structure metrics of Hehl et al.

Shape symbols: N points (nodes of one layer graph), E undirected edges (each stored once), C classes,
L layers, R = L * N nodes of the disjoint union of the layer graphs.

For a graph with m edges, a partition of its nodes into the classes S_c, vol(S_c) the sum of the degrees
in S_c, cut(S_c) the number of edges with exactly one end in S_c and m_c the number of edges with both:

* ``modularity`` = sum_c [m_c / m - (vol(S_c) / 2m)^2], Newman's modularity at resolution 1, as
  ``networkx.community.modularity(G, classes)``;
* ``normalized_cut`` = 1/2 sum_c cut(S_c) / vol(S_c); for two classes S, T this is
  ``0.5 * networkx.normalized_cut_size(G, S, T)``, Hehl et al.'s value. A class with vol(S_c) = 0 (all
  its points isolated) has nothing cut and adds 0 (networkx divides by zero there);
* ``mixing`` = share of edges whose ends carry different labels;
* ``curvature_gap`` = (mean_within - mean_between) / sqrt(1/2 (var_within + var_between)) of an edge
  curvature over the edges inside one class ("within") and across classes ("between"), with population
  variances (``numpy.std``, ddof = 0), as Hehl et al. compute it.

Undefined values are ``nan``: every metric on a graph without edges (networkx raises
``ZeroDivisionError`` for modularity and normalised cut there), and ``curvature_gap`` when no curvature is
given, when the within or between side has no edge, or when both sides have zero variance.

The classes are the distinct values present in ``labels``; absent ids change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_ricci.geometry._checks import check_edge_index, check_int
from lightning_ricci.geometry._checks import check_labels as _check_labels

__all__ = ["ClassStructure", "check_labels", "class_structure", "class_structure_batched"]


@dataclass(frozen=True)
class ClassStructure:
    """Community-structure metrics of one graph partitioned by class label.

    Attributes:
        modularity (float): Newman modularity of the partition (resolution 1), in [-1/2, 1).
        normalized_cut (float): 1/2 sum_c cut(S_c) / vol(S_c), in [0, C/2]; 0 for perfectly separated
            classes.
        mixing (float): share of edges between different classes, in [0, 1].
        curvature_gap (float): standardised difference of the mean edge curvature within and between
            classes; ``nan`` without curvature, with an empty side or zero variance on both sides.
    """

    modularity: float
    normalized_cut: float
    mixing: float
    curvature_gap: float


def check_labels(labels: Any, num_points: int, device: torch.device) -> Tensor:
    """Check class labels and return them as a [N] long tensor (the package's one labels validator,
    :func:`lightning_ricci.geometry._checks.check_labels`, worded for a graph).

    Args:
        labels (Tensor): [N] integer (not bool) class ids, ``>= 0``, on ``device``.
        num_points (int): N.
        device (torch.device): the device the labels must be on.

    Returns:
        Tensor: [N] long.

    Raises:
        TypeError: ``labels`` is not a tensor, or not of an integer dtype.
        ValueError: wrong shape, a negative id, or another device.

    Example:
        >>> check_labels(torch.tensor([1, 0, 1]), 3, torch.device("cpu"))
        tensor([1, 0, 1])
    """
    return _check_labels(labels, num_points, device, where="the graph")


def _check_edges(edges: Any, num_layers: int, num_points: int) -> Tensor:
    """Check [2, E] long undirected edges, each once, no self-loops, both ends in the same layer."""
    rows = num_layers * num_points
    edge_index = check_edge_index(edges, rows)
    if edge_index.shape[1] == 0:
        return edge_index
    a, b = edge_index
    if bool((a == b).any()):
        raise ValueError(f"`edge_index` must not contain self-loops (got {int((a == b).sum())})")
    if num_layers > 1 and bool((a // num_points != b // num_points).any()):
        raise ValueError(
            f"`edge_index` must join nodes of the same layer (nodes l * {num_points} .. "
            f"l * {num_points} + {num_points - 1}) (got {int((a // num_points != b // num_points).sum())} "
            "edges across layers)"
        )
    key = torch.minimum(a, b) * rows + torch.maximum(a, b)
    repeats = key.numel() - torch.unique(key).numel()
    if repeats:
        raise ValueError(
            "`edge_index` must hold each undirected edge once: (i, j) and (j, i) count as the same edge "
            f"(got {repeats} repeated edges)"
        )
    return edge_index


def _check_curvature(edge_curvature: Any, num_edges: int, device: torch.device) -> Tensor:
    if not isinstance(edge_curvature, Tensor):
        raise TypeError(f"`edge_curvature` must be a torch.Tensor (got {type(edge_curvature).__name__})")
    if not edge_curvature.is_floating_point():
        raise TypeError(f"`edge_curvature` must be a float tensor (got {edge_curvature.dtype})")
    if edge_curvature.shape != (num_edges,):
        raise ValueError(
            f"`edge_curvature` must have shape [E] = [{num_edges}], one value per edge "
            f"(got shape {tuple(edge_curvature.shape)})"
        )
    if edge_curvature.device != device:
        raise ValueError(
            f"`edge_curvature` must be on the device of `edge_index` ({device}) (got {edge_curvature.device})"
        )
    return edge_curvature.double()


def class_structure(
    edge_index: Tensor, num_nodes: int, labels: Tensor, edge_curvature: Tensor | None = None
) -> ClassStructure:
    """Modularity, normalised cut, mixing and curvature gap of the classes of one undirected graph.

    The graph is unweighted and undirected: ``edge_index`` holds every edge once, in either direction,
    without self-loops (a repeated or reversed edge raises ``ValueError``). See the module docstring for
    the formulas and the ``nan`` cases (a graph without edges gives ``nan`` everywhere).

    Args:
        edge_index (Tensor): [2, E] long undirected edges, each once, no self-loops.
        num_nodes (int): N, isolated nodes included.
        labels (Tensor): [N] integer class ids >= 0 (any number of classes), on the device of
            ``edge_index``.
        edge_curvature (Tensor, optional): [E] float curvature of the edges, in the order of
            ``edge_index``, for ``curvature_gap``. Default: None (``curvature_gap`` is ``nan``).

    Returns:
        ClassStructure: the four metrics as Python floats.

    Example:
        >>> two_triangles = torch.tensor([[0, 1, 2, 3, 4, 5, 2], [1, 2, 0, 4, 5, 3, 3]])
        >>> s = class_structure(two_triangles, 6, torch.tensor([0, 0, 0, 1, 1, 1]))
        >>> round(s.modularity, 4), round(s.normalized_cut, 4), round(s.mixing, 4)
        (0.3571, 0.1429, 0.1429)
    """
    num_nodes = check_int("num_nodes", num_nodes, low=1)
    metrics = class_structure_batched(edge_index, 1, num_nodes, labels, edge_curvature)
    return ClassStructure(
        modularity=float(metrics["class_modularity"][0]),
        normalized_cut=float(metrics["class_normalized_cut"][0]),
        mixing=float(metrics["class_mixing"][0]),
        curvature_gap=float(metrics["curvature_gap"][0]),
    )


def class_structure_batched(
    edge_index: Tensor,
    num_layers: int,
    num_points: int,
    labels: Tensor,
    edge_curvature: Tensor | None = None,
) -> dict[str, Tensor]:
    """:func:`class_structure` of every layer graph of a disjoint union, in one vectorised pass.

    Node ``l * N + i`` is point ``i`` in layer ``l``, the layout of :func:`ricci_flow`'s union graph;
    every layer shares the same ``labels``. ``edge_index`` holds each undirected edge once, both ends in
    the same layer, in any order.

    Args:
        edge_index (Tensor): [2, E] long undirected edges of the union graph, node ids in [0, L * N).
        num_layers (int): L.
        num_points (int): N, nodes per layer.
        labels (Tensor): [N] integer class ids >= 0, on the device of ``edge_index``.
        edge_curvature (Tensor, optional): [E] float curvature of the edges, for ``curvature_gap``.
            Default: None (``curvature_gap`` is ``nan`` in every layer).

    Returns:
        dict[str, Tensor]: [L] float64 tensors on the device of ``edge_index``, under the names of the
        :class:`RicciFlowResult` fields: ``"class_modularity"``, ``"class_normalized_cut"``,
        ``"class_mixing"`` and ``"curvature_gap"``.

    Example:
        >>> edges = torch.tensor([[0, 2, 5], [1, 3, 6]])  # layer 0: 0-1, 2-3; layer 1: 5-6 (points 1-2)
        >>> m = class_structure_batched(edges, 2, 4, torch.tensor([0, 0, 1, 1]))
        >>> m["class_mixing"], m["class_modularity"]
        (tensor([0., 1.], dtype=torch.float64), tensor([ 0.5000, -0.5000], dtype=torch.float64))
    """
    num_layers = check_int("num_layers", num_layers, low=1)
    num_points = check_int("num_points", num_points, low=1)
    edge_index = _check_edges(edge_index, num_layers, num_points)
    device = edge_index.device
    lab = check_labels(labels, num_points, device)
    kappa = None if edge_curvature is None else _check_curvature(edge_curvature, edge_index.shape[1], device)
    with torch.no_grad():
        return _class_structure(edge_index, num_layers, num_points, lab, kappa)


def _class_structure(
    edge_index: Tensor, num_layers: int, num_points: int, labels: Tensor, kappa: Tensor | None
) -> dict[str, Tensor]:
    device = edge_index.device
    _, cls = torch.unique(labels, return_inverse=True)  # class ids 0..C-1
    num_classes = int(cls.max()) + 1
    bins = num_layers * num_classes
    # Bin (layer, class) of every node of the union; an edge is inside a class when its ends share a bin.
    layer_base = torch.arange(num_layers, device=device).unsqueeze(1) * num_classes
    node_bin = (layer_base + cls.unsqueeze(0)).flatten()
    a, b = edge_index
    bin_a, bin_b = node_bin[a], node_bin[b]
    same = bin_a == bin_b

    # Exact integer counts per (layer, class, inside?) from each end; float64 only for the final ratios.
    from_a = torch.bincount(bin_a * 2 + same, minlength=2 * bins).view(num_layers, num_classes, 2)
    from_b = torch.bincount(bin_b * 2 + same, minlength=2 * bins).view(num_layers, num_classes, 2)
    vol = from_a.sum(-1) + from_b.sum(-1)  # [L, C]
    inside_c = from_a[..., 1]  # edges inside class c, counted once
    cut = from_a[..., 0] + from_b[..., 0]  # edges with one end in class c
    m = vol.sum(1) // 2
    inside = inside_c.sum(1)

    md, vd = m.double(), vol.double()
    no_edges = m == 0
    nan = torch.full((num_layers,), torch.nan, dtype=torch.float64, device=device)
    md_safe = md.clamp(min=1.0)
    contribution = inside_c.double() / md_safe.unsqueeze(1) - (vd / (2.0 * md_safe).unsqueeze(1)) ** 2
    modularity = torch.where(no_edges, nan, contribution.sum(dim=1))
    ratio = torch.where(vol > 0, cut.double() / vd.clamp(min=1.0), torch.zeros_like(vd))
    normalized_cut = torch.where(no_edges, nan, 0.5 * ratio.sum(dim=1))
    mixing = torch.where(no_edges, nan, (md - inside.double()) / md_safe)

    gap = nan.clone()
    if kappa is not None:
        group = (a // num_points) * 2 + same.long()  # [L, 2]: column 0 between, column 1 within
        count = torch.bincount(group, minlength=2 * num_layers)
        cd = count.double().clamp(min=1.0)
        total = torch.zeros(2 * num_layers, dtype=torch.float64, device=device).index_add_(0, group, kappa)
        mean = total / cd
        dev = kappa - mean[group]
        var = torch.zeros_like(total).index_add_(0, group, dev * dev) / cd
        mean, var, count = mean.view(num_layers, 2), var.view(num_layers, 2), count.view(num_layers, 2)
        denom = (0.5 * (var[:, 0] + var[:, 1])).sqrt()
        defined = (count > 0).all(dim=1) & (denom > 0)
        gap = torch.where(defined, (mean[:, 1] - mean[:, 0]) / torch.where(defined, denom, 1.0), nan)
    return {
        "class_modularity": modularity,
        "class_normalized_cut": normalized_cut,
        "class_mixing": mixing,
        "curvature_gap": gap,
    }

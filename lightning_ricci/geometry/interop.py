"""Export layer graphs to torch-geometric (optional ``pyg`` extra).

Shape symbols: N probe points, E undirected edges of the layer graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_ricci.geometry._checks import check_int
from lightning_ricci.geometry.result import RicciFlowResult


def _coalesce(edge_index: Tensor, edge_attr: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Both directions of every edge, sorted by (row, col), each entry once (the first value kept)."""
    row = torch.cat([edge_index[0], edge_index[1]])
    col = torch.cat([edge_index[1], edge_index[0]])
    attr = torch.cat([edge_attr, edge_attr])
    key = row * num_nodes + col
    order = torch.argsort(key, stable=True)
    key = key[order]
    first = torch.ones_like(key, dtype=torch.bool)
    first[1:] = key[1:] != key[:-1]
    keep = order[first]
    return torch.stack([row[keep], col[keep]]), attr[keep]


def to_pyg(result: RicciFlowResult, layer: int, x: Tensor | None = None) -> Any:
    """One layer graph of a :class:`RicciFlowResult` as a ``torch_geometric.data.Data``.

    The graph is undirected, stored with both directions and coalesced as PyG expects (sorted by source,
    then target, each directed entry once, as ``torch_geometric.utils.to_undirected`` returns it);
    ``edge_attr`` holds the edge curvature chosen in :func:`ricci_flow`, and ``node_curvature`` the
    scalar curvature of every point.

    Args:
        result (RicciFlowResult): output of :func:`ricci_flow`.
        layer (int): layer index, ``0 <= layer < result.num_layers``; negative values count from the end.
        x (Tensor, optional): [N, ...] node features to attach (e.g. the layer's activations), one row per
            probe point.

    Returns:
        torch_geometric.data.Data: ``edge_index`` [2, 2 E] long, coalesced, ``edge_attr`` [2 E] float64,
        ``node_curvature`` [N] float64, ``num_nodes`` N.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: ``layer`` out of range, or ``x`` without one row per point.

    Example:
        >>> from lightning_ricci import ricci_flow
        >>> layers = [torch.randn(30, 4) for _ in range(3)]
        >>> data = to_pyg(ricci_flow(layers, 4), 1, x=layers[1])
        >>> data.is_coalesced(), data.num_nodes, data.x.shape
        (True, 30, torch.Size([30, 4]))
    """
    try:
        from torch_geometric.data import Data
    except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "`to_pyg` needs torch-geometric: `pip install lightning-ricci[pyg]`"
        ) from err
    num_layers, num_points = result.num_layers, result.num_points
    layer = check_int("layer", layer, low=-num_layers, high=num_layers) % num_layers
    if x is not None:
        if not isinstance(x, Tensor):
            raise TypeError(f"`x` must be a torch.Tensor (got {type(x).__name__})")
        if x.dim() == 0 or x.shape[0] != num_points:
            raise ValueError(
                f"`x` must have shape [N, ...] with one row per point, N = {num_points} (got shape {tuple(x.shape)})"
            )
    edge_index, edge_attr = _coalesce(result.edge_index[layer], result.edge_curvature[layer], num_points)
    data = Data(edge_index=edge_index, edge_attr=edge_attr, num_nodes=num_points)
    data.node_curvature = result.node_curvature[layer]
    if x is not None:
        data.x = x
    return data

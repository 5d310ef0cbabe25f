"""Export layer graphs to torch-geometric (optional ``pyg`` extra)."""

from __future__ import annotations

from typing import Any

import torch

from lightning_ricci.geometry._checks import check_int
from lightning_ricci.geometry.result import RicciFlowResult


def to_pyg(result: RicciFlowResult, layer: int, x: torch.Tensor | None = None) -> Any:
    """One layer graph of a :class:`RicciFlowResult` as a ``torch_geometric.data.Data``.

    The graph is undirected, stored with both directions as PyG expects; ``edge_attr`` holds the edge
    curvature chosen in :func:`ricci_flow`, and ``node_curvature`` the scalar curvature of every point.

    Args:
        result (RicciFlowResult): output of :func:`ricci_flow`.
        layer (int): layer index, ``0 <= layer < result.num_layers``; negative values count from the end.
        x (Tensor, optional): [N, D] node features to attach (e.g. the layer's activations).

    Returns:
        torch_geometric.data.Data: ``edge_index`` [2, 2 E] long, ``edge_attr`` [2 E] float64,
        ``node_curvature`` [N] float64, ``num_nodes`` N.
    """
    try:
        from torch_geometric.data import Data
    except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "`to_pyg` needs torch-geometric: `pip install lightning-ricci[pyg]`"
        ) from err
    num_layers = result.num_layers
    layer = check_int("layer", layer, low=-num_layers, high=num_layers) % num_layers
    ei, kappa = result.edge_index[layer], result.edge_curvature[layer]
    edge_index = torch.cat([ei, ei.flip(0)], dim=1)
    data = Data(
        edge_index=edge_index,
        edge_attr=torch.cat([kappa, kappa]),
        num_nodes=result.num_points,
    )
    data.node_curvature = result.node_curvature[layer]
    if x is not None:
        data.x = x
    return data

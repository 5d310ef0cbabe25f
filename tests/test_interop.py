from __future__ import annotations

import pytest
import torch

from lightning_ricci import ricci_flow, to_pyg


def test_to_pyg_round_trip() -> None:
    pytest.importorskip("torch_geometric")
    from torch_geometric.utils import is_undirected

    gen = torch.Generator().manual_seed(0)
    layers = [torch.randn(60, 4, generator=gen) for _ in range(3)]
    result = ricci_flow(layers, 5, curvature="augmented_forman")
    data = to_pyg(result, 1, x=layers[1])
    assert data.num_nodes == 60 and torch.equal(data.x, layers[1])
    assert is_undirected(data.edge_index)
    assert data.edge_index.shape[1] == 2 * result.edge_index[1].shape[1]
    assert torch.equal(data.edge_attr[: result.edge_curvature[1].numel()], result.edge_curvature[1])
    assert torch.equal(to_pyg(result, -1).edge_index, to_pyg(result, 2).edge_index)
    with pytest.raises(ValueError, match=r"`layer` must be < 3 \(got 3\)"):
        to_pyg(result, 3)

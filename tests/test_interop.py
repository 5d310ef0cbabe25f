from __future__ import annotations

import dataclasses

import pytest
import torch

from lightning_ricci import ricci_flow, to_pyg

pytest.importorskip("torch_geometric")


@pytest.fixture(scope="module")
def layers() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(60, 4, generator=gen) for _ in range(3)]


def test_to_pyg_round_trip(layers: list[torch.Tensor]) -> None:
    from torch_geometric.utils import is_undirected

    result = ricci_flow(layers, 5, curvature="augmented_forman")
    data = to_pyg(result, 1, x=layers[1])
    assert data.num_nodes == 60 and torch.equal(data.x, layers[1])
    assert is_undirected(data.edge_index)
    assert data.edge_index.shape[1] == 2 * result.edge_index[1].shape[1]
    assert torch.equal(data.node_curvature, result.node_curvature[1])
    assert torch.equal(to_pyg(result, -1).edge_index, to_pyg(result, 2).edge_index)
    with pytest.raises(ValueError, match=r"`layer` must be < 3 \(got 3\)"):
        to_pyg(result, 3)


def test_edges_are_coalesced_as_pyg_does(layers: list[torch.Tensor]) -> None:
    from torch_geometric.utils import to_undirected

    result = ricci_flow(layers, 5, curvature="approx_ollivier")
    for layer in range(3):
        data = to_pyg(result, layer)
        assert data.is_coalesced()
        ei, attr = to_undirected(result.edge_index[layer], result.edge_curvature[layer], num_nodes=60)
        assert torch.equal(data.edge_index, ei)
        assert torch.equal(data.edge_attr, attr)
        # Every directed entry carries the curvature of its undirected edge.
        curv = {
            (int(i), int(j)): float(c)
            for (i, j), c in zip(result.edge_index[layer].T, result.edge_curvature[layer])
        }
        for (i, j), c in zip(data.edge_index.T.tolist(), data.edge_attr.tolist()):
            assert curv[(min(i, j), max(i, j))] == c


def test_repeated_and_reversed_edges_are_merged(layers: list[torch.Tensor]) -> None:
    result = ricci_flow(layers, 5)
    ei, kappa = result.edge_index[0], result.edge_curvature[0]
    messy = torch.cat([ei, ei[:, :5], ei[:, 5:9].flip(0)], dim=1)
    messy_kappa = torch.cat([kappa, kappa[:5], kappa[5:9]])
    edited = dataclasses.replace(
        result,
        edge_index=(messy, *result.edge_index[1:]),
        edge_curvature=(messy_kappa, *result.edge_curvature[1:]),
    )
    data, clean = to_pyg(edited, 0), to_pyg(result, 0)
    assert data.is_coalesced()
    assert torch.equal(data.edge_index, clean.edge_index)
    assert torch.equal(data.edge_attr, clean.edge_attr)


def test_rejects_features_of_the_wrong_size(layers: list[torch.Tensor]) -> None:
    result = ricci_flow(layers, 5)
    with pytest.raises(
        ValueError, match=r"`x` must have shape \[N, \.\.\.\].*N = 60 \(got shape \(59, 4\)\)"
    ):
        to_pyg(result, 0, x=layers[0][:59])
    with pytest.raises(ValueError, match=r"`x` must have shape .*\(got shape \(\)\)"):
        to_pyg(result, 0, x=torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"`x` must be a torch.Tensor \(got list\)"):
        to_pyg(result, 0, x=layers[0].tolist())  # type: ignore[arg-type]

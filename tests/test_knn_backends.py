"""kNN backend registry, the torch-cluster tie refusal and the keep-ties edge budget."""

from __future__ import annotations

import dataclasses
import typing
import warnings

import numpy as np
import pytest
import torch

from lightning_ricci import knn_graph
from lightning_ricci.geometry import knn as knn_module
from lightning_ricci.geometry.knn import (
    EDGE_BUDGET_PER_POINT_AND_K,
    KNN_BACKEND_SPECS,
    KNN_BACKENDS,
    KnnBackend,
    KnnEdgeBudgetWarning,
    knn_edges,
)


def _edges(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, edge_index.cpu().T.tolist()))


def _keep_ties_count(x: torch.Tensor, k: int) -> int:
    """Edges of R's keep-ties graph, from a dense float64 distance matrix (independent of the search)."""
    a = x.double().numpy()
    d = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    kth = np.sort(d, axis=1)[:, k - 1]
    return int((d <= kth[:, None]).sum())


@pytest.fixture
def fresh_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """The edge-budget warning is issued once per process: forget that it was."""
    monkeypatch.setattr(knn_module, "_edge_budget_warned", False)


def test_registry_matches_the_public_options() -> None:
    assert KNN_BACKENDS == typing.get_args(KnnBackend)
    assert set(KNN_BACKENDS) == {"auto", *KNN_BACKEND_SPECS}
    assert all(name == spec.name for name, spec in KNN_BACKEND_SPECS.items())
    assert KNN_BACKEND_SPECS["gemm"].supports_keep_ties
    assert not KNN_BACKEND_SPECS["torch_cluster"].supports_keep_ties
    assert KNN_BACKEND_SPECS["torch_cluster"].max_k["cuda"] == 99
    with pytest.raises(dataclasses.FrozenInstanceError):
        KNN_BACKEND_SPECS["gemm"].supports_keep_ties = False  # type: ignore[misc]


def test_backend_refuses_a_device_it_does_not_declare() -> None:
    x = torch.zeros(10, 3, device="meta")
    with pytest.raises(
        ValueError, match=r"`knn_backend='torch_cluster'` runs on cpu, cuda only \(got a tensor on meta\)"
    ):
        knn_edges(x, 2, keep_ties=False, backend="torch_cluster")


@pytest.mark.usefixtures("fresh_warning")
def test_coincident_rows_warn_once_with_the_edge_count() -> None:
    x = torch.relu(torch.randn(600, 16, generator=torch.Generator().manual_seed(0)))
    x[:300] = 0.0  # dead units: 300 copies of one row
    k = 2
    with pytest.warns(KnnEdgeBudgetWarning, match="above the edge budget") as record:
        got = knn_graph(x, k, ties="keep")
    assert got.shape[1] == _keep_ties_count(x, k) > EDGE_BUDGET_PER_POINT_AND_K * 600 * k
    assert f"{got.shape[1]:,} directed edges" in str(record[0].message)
    assert "ties='first'" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        knn_graph(x, k, ties="keep")  # once per process
        first = knn_graph(x, k, ties="first")  # exactly k per point: never over budget
    assert first.shape[1] == 600 * k


@pytest.mark.usefixtures("fresh_warning")
def test_strict_edge_budget_raises() -> None:
    x = torch.zeros(50, 4)
    x[:10] = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"`max_edges` = 100 .*coincide with another point"):
        knn_graph(x, 3, ties="keep", max_edges=100, strict=True)
    with pytest.raises(ValueError, match="all points coincide"):
        knn_edges(torch.ones(30, 2), 3, keep_ties=True, max_edges=100, strict=True)
    with pytest.raises(ValueError, match="equidistant"):
        knn_graph(torch.eye(40), 1, ties="keep", strict=True)  # distinct rows, all at distance sqrt(2)
    # Within the budget nothing is raised, and the graph is the one without a budget.
    assert _edges(knn_graph(x, 3, ties="keep", max_edges=10**6, strict=True)) == _edges(
        knn_graph(x, 3, ties="keep", max_edges=10**6)
    )
    assert knn_graph(x, 3, ties="first", max_edges=1, strict=True).shape[1] == 150


def test_edge_budget_arguments_are_checked() -> None:
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"`max_edges` must be >= 1 \(got 0\)"):
        knn_graph(x, 2, max_edges=0)
    with pytest.raises(TypeError, match=r"`strict` must be a bool \(got str\)"):
        knn_graph(x, 2, strict="yes")  # type: ignore[arg-type]


def test_torch_cluster_refuses_keep_ties_on_tied_data() -> None:
    pytest.importorskip("torch_cluster")
    grid = torch.tensor([[float(i), float(j)] for i in range(6) for j in range(6)])  # many equal distances
    with pytest.raises(ValueError, match=r"`knn_backend='torch_cluster'`.*`keep_ties=True`"):
        knn_edges(grid, 4, keep_ties=True, backend="torch_cluster")
    with pytest.raises(ValueError, match=r"`backend='torch_cluster'`.*`ties='keep'`"):
        knn_graph(grid, 4, ties="keep", backend="torch_cluster")
    dead = torch.randn(40, 5, generator=torch.Generator().manual_seed(2))
    dead[:8] = 0.0  # 8 coincident rows: k = 5 is tied at distance 0
    with pytest.raises(ValueError, match="at their k-th distance"):
        knn_graph(dead, 5, ties="keep", backend="torch_cluster")
    # The exactly-k rule has no such limit; on tie-free data keep-ties agrees with the exact backend.
    assert knn_graph(grid, 4, ties="first", backend="torch_cluster").shape[1] == 36 * 4
    x = torch.randn(120, 6, generator=torch.Generator().manual_seed(3))
    assert _edges(knn_graph(x, 7, ties="keep", backend="torch_cluster")) == _edges(
        knn_graph(x, 7, ties="keep")
    )

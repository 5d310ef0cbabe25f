from __future__ import annotations

import pytest
import torch

from lightning_ricci import approx_ollivier_curvature, augmented_forman_curvature, forman_curvature

nx = pytest.importorskip("networkx")


def _edges(graph: object) -> torch.Tensor:
    return torch.tensor(list(graph.edges())).T


@pytest.mark.parametrize("n", [3, 5, 8])
def test_hand_computed_values(n: int) -> None:
    cycle = _edges(nx.cycle_graph(n))
    assert forman_curvature(cycle, n).tolist() == [0.0] * n
    complete = _edges(nx.complete_graph(n))
    assert forman_curvature(complete, n).tolist() == [6.0 - 2 * n] * complete.shape[1]
    # K_n: every edge lies on n - 2 triangles.
    assert augmented_forman_curvature(complete, n).tolist() == [6.0 - 2 * n + 3 * (n - 2)] * complete.shape[1]
    path = _edges(nx.path_graph(n))
    expected = [4.0 - (1 if i == 0 else 2) - (1 if i + 1 == n - 1 else 2) for i in range(n - 1)]
    assert forman_curvature(path, n).tolist() == expected
    star = _edges(nx.star_graph(n - 1))
    assert forman_curvature(star, n).tolist() == [4.0 - (n - 1) - 1] * (n - 1)


def test_against_networkx_on_random_graphs() -> None:
    for seed in range(5):
        graph = nx.gnm_random_graph(40, 150, seed=seed)
        edges = _edges(graph)
        deg = dict(graph.degree())
        tri = [len(set(graph[u]) & set(graph[v])) for u, v in graph.edges()]
        forman = [4 - deg[u] - deg[v] for u, v in graph.edges()]
        assert forman_curvature(edges, 40).tolist() == forman
        assert augmented_forman_curvature(edges, 40).tolist() == [f + 3 * t for f, t in zip(forman, tri)]
        expected = []
        for (u, v), t in zip(graph.edges(), tri):
            du, dv = deg[u], deg[v]
            lo, hi = min(du, dv), max(du, dv)
            base = 1 - 1 / du - 1 / dv
            val = t / hi - 0.5 * (max(0.0, base - t / lo) + max(0.0, base - t / hi))
            expected.append(float(torch.tensor(val, dtype=torch.float32)))
        assert approx_ollivier_curvature(edges, 40).tolist() == pytest.approx(expected, abs=0)


def test_triangle_with_tail() -> None:
    # A triangle (0, 1, 2) with a tail 2-3-4; degrees 2, 2, 3, 2, 1.
    edges = torch.tensor([[0, 0, 1, 2, 3], [1, 2, 2, 3, 4]])
    assert forman_curvature(edges, 5).tolist() == [0.0, -1.0, -1.0, -1.0, 1.0]
    assert augmented_forman_curvature(edges, 5).tolist() == [3.0, 2.0, 2.0, -1.0, 1.0]


def test_reverse_edges_count_once() -> None:
    edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    assert forman_curvature(edges, 3).tolist() == [1.0, 1.0, 1.0, 1.0]


def test_errors() -> None:
    with pytest.raises(ValueError, match="self-loops"):
        forman_curvature(torch.tensor([[0], [0]]), 2)
    with pytest.raises(ValueError, match=r"`edge_index` must have shape \[2, E\]"):
        forman_curvature(torch.zeros(4, dtype=torch.long), 2)

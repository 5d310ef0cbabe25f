from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from lightning_ricci.geometry.community import ClassStructure, class_structure, class_structure_batched
from lightning_ricci.geometry.curvature import forman_curvature

nx = pytest.importorskip("networkx")

FIELDS = ("modularity", "normalized_cut", "mixing", "curvature_gap")
KEYS = ("class_modularity", "class_normalized_cut", "class_mixing", "curvature_gap")


def _random_graph(
    gen: torch.Generator, n: int, num_classes: int, density: float, isolated: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges (each once, random orientation and order) of a random graph; the last ``isolated`` nodes have none."""
    upper = torch.triu(torch.rand(n, n, generator=gen) < density, diagonal=1)
    upper[n - isolated :, :] = False
    upper[:, n - isolated :] = False
    i, j = upper.nonzero().T
    flip = torch.rand(i.numel(), generator=gen) < 0.5
    edges = torch.stack([torch.where(flip, j, i), torch.where(flip, i, j)])
    edges = edges[:, torch.randperm(edges.shape[1], generator=gen)]
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    return edges, labels


def _hehl_reference(edges: np.ndarray, n: int, y: np.ndarray, kappa: np.ndarray) -> dict[str, float]:
    """Hehl et al.'s community_structure.py on a dense adjacency, generalised to C classes as method.md §2.7."""
    adj = np.zeros((n, n))
    curv = np.zeros((n, n))
    adj[edges[0], edges[1]] = adj[edges[1], edges[0]] = 1
    curv[edges[0], edges[1]] = curv[edges[1], edges[0]] = kappa
    graph = nx.from_numpy_array(adj)
    communities = [[i for i, val in enumerate(y) if val == label] for label in sorted(set(y.tolist()))]
    modularity = nx.community.modularity(graph, communities)
    if len(communities) == 2:
        ncut = 0.5 * nx.algorithms.cuts.normalized_cut_size(G=graph, S=communities[0], T=communities[1])
    else:
        ncut = 0.5 * sum(
            nx.cut_size(graph, c) / nx.volume(graph, c) for c in communities if nx.volume(graph, c) > 0
        )
    within, between = [], []
    for i, j in zip(*adj.nonzero()):
        if i < j:
            (within if y[i] == y[j] else between).append(curv[i, j])
    mixing = len(between) / (len(within) + len(between))
    gap = (np.mean(within) - np.mean(between)) / np.sqrt(0.5 * (np.std(within) ** 2 + np.std(between) ** 2))
    return {"modularity": modularity, "normalized_cut": ncut, "mixing": mixing, "curvature_gap": gap}


@pytest.mark.parametrize("num_classes", [2, 3, 5])
@pytest.mark.parametrize("isolated", [0, 4])
def test_matches_networkx_and_hehl(num_classes: int, isolated: int, device: torch.device) -> None:
    gen = torch.Generator().manual_seed(10 * num_classes + isolated)
    for trial in range(4):
        n = 30 + 7 * trial
        edges, labels = _random_graph(gen, n, num_classes, density=0.15, isolated=isolated)
        kappa = torch.randn(edges.shape[1], generator=gen, dtype=torch.float64)
        expected = _hehl_reference(edges.numpy(), n, labels.numpy(), kappa.numpy())
        got = class_structure(edges.to(device), n, labels.to(device), kappa.to(device))
        assert isinstance(got, ClassStructure)
        for name in FIELDS:
            assert getattr(got, name) == pytest.approx(expected[name], rel=1e-12, abs=1e-12), name


def test_two_classes_normalized_cut_is_half_networkx_size() -> None:
    gen = torch.Generator().manual_seed(3)
    edges, labels = _random_graph(gen, 50, 2, density=0.1)
    graph = nx.Graph()
    graph.add_nodes_from(range(50))
    graph.add_edges_from(edges.T.tolist())
    s = [i for i in range(50) if labels[i] == 0]
    t = [i for i in range(50) if labels[i] == 1]
    expected = 0.5 * nx.normalized_cut_size(graph, s, t)
    assert class_structure(edges, 50, labels).normalized_cut == pytest.approx(expected, rel=1e-13)


def test_two_triangles_by_hand() -> None:
    # Triangles 0-1-2 and 3-4-5 joined by the bridge 2-3: m = 7, 6 edges inside, vol = 7 per class.
    edges = torch.tensor([[0, 1, 2, 3, 4, 5, 2], [1, 2, 0, 4, 5, 3, 3]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    got = class_structure(edges, 6, labels, forman_curvature(edges, 6))
    assert got.modularity == pytest.approx(6 / 7 - 2 * (7 / 14) ** 2, abs=1e-15)
    assert got.normalized_cut == pytest.approx(0.5 * (1 / 7 + 1 / 7), abs=1e-15)
    assert got.mixing == pytest.approx(1 / 7, abs=1e-15)
    # Forman: within edges 0, -1, -1, -1, 0, -1 (mean -2/3, variance 2/9); the bridge -2 (variance 0).
    assert got.curvature_gap == pytest.approx((-2 / 3 + 2) / math.sqrt(0.5 * 2 / 9), abs=1e-14)


def test_path_and_star_by_hand() -> None:
    # Path 0-1-2, labels 0 | 1 1: m = 2, one edge inside class 1, vol = 1 and 3, one edge cut.
    path = class_structure(torch.tensor([[0, 1], [1, 2]]), 3, torch.tensor([0, 1, 1]))
    assert path.modularity == pytest.approx(1 / 2 - (1 / 4) ** 2 - (3 / 4) ** 2, abs=1e-15)
    assert path.normalized_cut == pytest.approx(0.5 * (1 / 1 + 1 / 3), abs=1e-15)
    assert path.mixing == pytest.approx(0.5, abs=1e-15)
    assert math.isnan(path.curvature_gap)  # no curvature given
    # Star with its centre in class 0 and three leaves in class 1: every edge is cut.
    star = class_structure(torch.tensor([[0, 0, 0], [1, 2, 3]]), 4, torch.tensor([0, 1, 1, 1]))
    assert (star.modularity, star.normalized_cut, star.mixing) == (-0.5, 1.0, 1.0)


def test_class_without_edges_and_one_class() -> None:
    # Class 1 (node 2, isolated) has vol 0: nothing cut, it adds 0 (networkx divides by zero).
    edges = torch.tensor([[0], [1]])
    got = class_structure(edges, 3, torch.tensor([0, 0, 1]), torch.tensor([0.5], dtype=torch.float64))
    assert (got.modularity, got.normalized_cut, got.mixing) == (0.0, 0.0, 0.0)
    assert math.isnan(got.curvature_gap)  # no between edge
    graph = nx.Graph([(0, 1)])
    graph.add_node(2)
    with pytest.raises(ZeroDivisionError):
        nx.normalized_cut_size(graph, [0, 1], [2])
    # All one class: modularity 0, nothing cut, curvature gap undefined.
    gen = torch.Generator().manual_seed(5)
    edges, _ = _random_graph(gen, 20, 1, density=0.3)
    kappa = torch.randn(edges.shape[1], generator=gen, dtype=torch.float64)
    one = class_structure(edges, 20, torch.full((20,), 4), kappa)
    assert one.modularity == pytest.approx(0.0, abs=1e-15)
    assert (one.normalized_cut, one.mixing) == (0.0, 0.0)
    assert math.isnan(one.curvature_gap)


def test_no_edges_is_nan_where_networkx_divides_by_zero() -> None:
    empty = nx.empty_graph(4)
    with pytest.raises(ZeroDivisionError):
        nx.community.modularity(empty, [{0, 1}, {2, 3}])
    with pytest.raises(ZeroDivisionError):
        nx.normalized_cut_size(empty, {0, 1}, {2, 3})
    got = class_structure(torch.zeros(2, 0, dtype=torch.long), 4, torch.tensor([0, 0, 1, 1]), torch.zeros(0))
    assert all(math.isnan(getattr(got, name)) for name in FIELDS)


def test_curvature_gap_zero_variance_is_nan() -> None:
    # Square 0-1-2-3 with labels 0 0 1 1: within edges 0-1, 2-3, between 1-2, 3-0.
    edges = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    labels = torch.tensor([0, 0, 1, 1])
    flat = class_structure(edges, 4, labels, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert math.isnan(flat.curvature_gap)  # both sides constant: numpy gives inf, documented as nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.isinf((1.0 - 0.0) / np.sqrt(0.5 * (np.std([1.0, 1.0]) ** 2 + np.std([0.0, 0.0]) ** 2)))
    spread = class_structure(edges, 4, labels, torch.tensor([1.0, 0.0, 3.0, 0.0]))
    assert spread.curvature_gap == pytest.approx((2.0 - 0.0) / math.sqrt(0.5 * 1.0), abs=1e-15)
    nan_curv = class_structure(edges, 4, labels, torch.tensor([math.nan, 0.0, 3.0, 0.0]))
    assert math.isnan(nan_curv.curvature_gap)


def test_label_ids_need_not_be_contiguous() -> None:
    gen = torch.Generator().manual_seed(6)
    edges, labels = _random_graph(gen, 40, 3, density=0.2)
    kappa = torch.randn(edges.shape[1], generator=gen, dtype=torch.float64)
    remapped = torch.tensor([7, 1000, 3])[labels].to(torch.int32)
    got, expected = class_structure(edges, 40, remapped, kappa), class_structure(edges, 40, labels, kappa)
    for name in FIELDS:
        assert getattr(got, name) == pytest.approx(getattr(expected, name), rel=1e-14)


def test_batched_equals_per_layer_calls(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(7)
    num_layers, n = 5, 36
    labels = torch.randint(0, 3, (n,), generator=gen)
    parts, curv, singles = [], [], []
    for layer in range(num_layers):
        density = 0.0 if layer == 2 else 0.05 + 0.05 * layer  # layer 2 has no edges
        edges, _ = _random_graph(gen, n, 3, density=density, isolated=layer)
        kappa = torch.randn(edges.shape[1], generator=gen, dtype=torch.float64)
        singles.append(class_structure(edges, n, labels, kappa))
        parts.append(edges + layer * n)
        curv.append(kappa)
    edges, kappa = torch.cat(parts, dim=1), torch.cat(curv)
    order = torch.randperm(edges.shape[1], generator=gen)  # layers interleaved
    got = class_structure_batched(
        edges[:, order].to(device), num_layers, n, labels.to(device), kappa[order].to(device)
    )
    assert set(got) == set(KEYS)
    for key, name in zip(KEYS, FIELDS):
        assert got[key].dtype == torch.float64 and got[key].shape == (num_layers,)
        assert got[key].device.type == device.type
        expected = torch.tensor([getattr(s, name) for s in singles], dtype=torch.float64)
        torch.testing.assert_close(got[key].cpu(), expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert all(math.isnan(float(got[key][2])) for key in KEYS)
    no_curv = class_structure_batched(edges.to(device), num_layers, n, labels.to(device))
    assert bool(no_curv["curvature_gap"].isnan().all())


def test_batched_matches_ricci_flow_union_edges() -> None:
    # The layout of ricci_flow's union graph: per-layer edges i < j, node l * N + i.
    from lightning_ricci import ricci_flow

    gen = torch.Generator().manual_seed(8)
    layers = [torch.randn(50, 3, generator=gen) for _ in range(3)]
    labels = (layers[0][:, 0] > 0).long()
    result = ricci_flow(layers, 4, curvature="approx_ollivier")
    union = torch.cat([ei + layer * 50 for layer, ei in enumerate(result.edge_index)], dim=1)
    got = class_structure_batched(union, 3, 50, labels, torch.cat(result.edge_curvature))
    for layer in range(3):
        ei, kappa = result.edge_index[layer], result.edge_curvature[layer]
        expected = _hehl_reference(ei.numpy(), 50, labels.numpy(), kappa.numpy())
        for key, name in zip(KEYS, FIELDS):
            assert float(got[key][layer]) == pytest.approx(expected[name], rel=1e-12, abs=1e-12)


def test_no_gradient_tracked() -> None:
    edges = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    kappa = torch.tensor([1.0, 0.0, 3.0, 0.0], dtype=torch.float64, requires_grad=True)
    got = class_structure_batched(edges, 1, 4, torch.tensor([0, 0, 1, 1]), kappa)
    assert not got["curvature_gap"].requires_grad


def test_bad_labels() -> None:
    edges = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"`labels` must have shape \[N\].*N = 3 \(got shape \(2,\)\)"):
        class_structure(edges, 3, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"`labels` must have shape .*\(got shape \(3, 1\)\)"):
        class_structure(edges, 3, torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(TypeError, match=r"`labels` must hold integer class ids \(got dtype torch.float32\)"):
        class_structure(edges, 3, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(TypeError, match=r"`labels` must hold integer class ids \(got dtype torch.bool\)"):
        class_structure(edges, 3, torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match=r"`labels` must be non-negative class ids \(got -1\)"):
        class_structure(edges, 3, torch.tensor([0, -1, 1]))
    with pytest.raises(TypeError, match=r"`labels` must be a torch.Tensor .*\(got list\)"):
        class_structure(edges, 3, [0, 1, 1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`labels` must be on the device of the graph \(cpu\) \(got meta\)"):
        class_structure(edges, 3, torch.zeros(3, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match=r"`labels` must have shape .*N = 4"):
        class_structure_batched(edges, 2, 4, torch.tensor([0, 1, 1]))


def test_bad_edges_and_curvature() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    for edges, pattern in [
        (torch.tensor([[0, 1, 0], [1, 2, 1]]), r"each undirected edge once.*\(got 1 repeated edges\)"),
        (torch.tensor([[0, 1, 1], [1, 2, 0]]), r"each undirected edge once.*\(got 1 repeated edges\)"),
        (torch.tensor([[0, 2], [1, 2]]), r"must not contain self-loops \(got 1\)"),
        (torch.tensor([[0, 1], [1, 4]]), r"node indices in \[0, 4\) \(got 0..4\)"),
        (torch.tensor([[0, 1, 2]]), r"shape \[2, E\] \(got \(1, 3\)\)"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            class_structure(edges, 4, labels)
    with pytest.raises(TypeError, match=r"`edge_index` must be torch.long \(got torch.int32\)"):
        class_structure(torch.tensor([[0], [1]], dtype=torch.int32), 4, labels)
    with pytest.raises(ValueError, match=r"join nodes of the same layer .*\(got 1 edges across layers\)"):
        class_structure_batched(torch.tensor([[0, 3], [1, 4]]), 2, 4, labels)
    edges = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(
        ValueError, match=r"`edge_curvature` must have shape \[E\] = \[2\].*\(got shape \(3,\)\)"
    ):
        class_structure(edges, 4, labels, torch.zeros(3))
    with pytest.raises(TypeError, match=r"`edge_curvature` must be a float tensor \(got torch.int64\)"):
        class_structure(edges, 4, labels, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`num_nodes` must be >= 1 \(got 0\)"):
        class_structure(torch.zeros(2, 0, dtype=torch.long), 0, torch.zeros(0, dtype=torch.long))

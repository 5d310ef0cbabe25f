from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_ricci import geodesic_distances, geodesic_sums
from lightning_ricci.geometry.geodesics import connected_components, csr, multi_source_bfs

csgraph = pytest.importorskip("scipy.sparse.csgraph")
sparse = pytest.importorskip("scipy.sparse")


def _scipy_distances(edge_index: torch.Tensor, n: int) -> np.ndarray:
    e = edge_index.cpu().numpy()
    a = sparse.coo_matrix((np.ones(e.shape[1]), (e[0], e[1])), shape=(n, n)).tocsr()
    return csgraph.shortest_path(a, directed=False, unweighted=True)


@pytest.mark.parametrize("seed", range(8))
def test_sums_and_pairs_match_scipy(device: torch.device, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 260, (1,), generator=gen))
    edge_index = torch.randint(0, n, (2, int(torch.randint(0, 3 * n, (1,), generator=gen))), generator=gen)
    if seed % 2:  # a hub touching everything
        edge_index = torch.cat(
            [edge_index, torch.stack([torch.zeros(n, dtype=torch.long), torch.arange(n)])], 1
        )
    dist = _scipy_distances(edge_index, n)
    finite = np.where(np.isinf(dist), 0, dist)
    total, per_node = geodesic_sums(edge_index.to(device), n)
    assert per_node.device.type == device.type
    assert per_node.cpu().tolist() == finite.sum(1).astype(int).tolist()
    assert int(total) == int(finite.sum()) // 2
    pairs = torch.randint(0, n, (2, 100), generator=gen)
    expected = dist[pairs[0], pairs[1]]
    got = geodesic_distances(edge_index.to(device), n, pairs.to(device)).cpu().numpy()
    assert np.array_equal(got, np.where(np.isinf(expected), -1, expected).astype(int))


def test_path_cycle_complete_star() -> None:
    path = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    assert geodesic_sums(path, 5)[0] == 20  # sum over i<j of |i - j| for 5 points
    cycle = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]])
    assert geodesic_sums(cycle, 6)[1].tolist() == [9] * 6  # 1+1+2+2+3
    complete = torch.combinations(torch.arange(6)).T
    assert geodesic_sums(complete, 6)[0] == 15
    star = torch.stack([torch.zeros(5, dtype=torch.long), torch.arange(1, 6)])
    assert geodesic_sums(star, 6)[1].tolist() == [5] + [1 + 2 * 4] * 5


def test_graphs_without_edges(device: torch.device) -> None:
    for edges in (
        torch.zeros(2, 0, dtype=torch.long),
        torch.tensor([[0, 3], [0, 3]]),
    ):  # none; self-loops only
        total, per_node = geodesic_sums(edges.to(device), 5)
        assert int(total) == 0
        assert per_node.tolist() == [0] * 5


def test_source_blocks_and_masks_agree() -> None:
    gen = torch.Generator().manual_seed(3)
    n, graphs = 200, 3
    row = torch.randint(0, n, (graphs, 400), generator=gen)
    col = torch.randint(0, n, (graphs, 400), generator=gen)
    offset = torch.arange(graphs).unsqueeze(1) * n
    a, b = (row + offset).flatten(), (col + offset).flatten()
    keep = a != b
    a, b = a[keep], b[keep]
    key = torch.unique(torch.cat([a * graphs * n + b, b * graphs * n + a]))
    r, c = key // (graphs * n), key % (graphs * n)
    ptr, col_sorted = csr(r, c, graphs * n)
    labels = connected_components(r, c, graphs * n)
    full = multi_source_bfs(ptr, col_sorted, graphs, n, masks=[labels])
    blocked = multi_source_bfs(ptr, col_sorted, graphs, n, masks=[labels], block_words=1)
    assert torch.equal(full.dist_sum, blocked.dist_sum)
    # Masking by the graph's own components changes nothing.
    assert torch.equal(full.masked_sums[0], full.dist_sum)
    assert torch.equal(blocked.masked_sums[0], full.dist_sum)


def test_components_match_scipy() -> None:
    gen = torch.Generator().manual_seed(4)
    n = 300
    e = torch.randint(0, n, (2, 200), generator=gen)
    both = torch.cat([e, e.flip(0)], 1)
    labels = connected_components(both[0], both[1], n)
    num, ref = csgraph.connected_components(_scipy_adj(e, n), directed=False)
    assert torch.unique(labels).numel() == num
    for lab in torch.unique(labels):
        assert len(set(ref[(labels == lab).numpy()])) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_components_of_long_paths_and_cycles_are_labelled_by_their_smallest_node(seed: int) -> None:
    """Long diameters (label propagation needs one round per hop there) and shuffled node ids."""
    gen = torch.Generator().manual_seed(seed)
    n = 3000
    perm = torch.randperm(n, generator=gen)
    pieces = [perm[:1500], perm[1500:2600], perm[2600:2990]]  # two paths and a cycle; 10 isolated nodes
    e = torch.cat([torch.stack([p[:-1], p[1:]]) for p in pieces] + [pieces[2][[0, -1]].unsqueeze(1)], 1)
    both = torch.cat([e, e.flip(0)], 1)
    labels = connected_components(both[0], both[1], n)
    num, ref = csgraph.connected_components(_scipy_adj(e, n), directed=False)
    ref = torch.from_numpy(ref)
    expected = torch.full((num,), n).scatter_reduce(0, ref, torch.arange(n), reduce="amin")[ref]
    assert num == 13 and torch.equal(labels, expected)


def _scipy_adj(e: torch.Tensor, n: int) -> object:
    return sparse.coo_matrix((np.ones(e.shape[1]), (e[0].numpy(), e[1].numpy())), shape=(n, n)).tocsr()


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"`edge_index` must have shape \[2, E\]"):
        geodesic_sums(torch.zeros(3, 4, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="node indices in"):
        geodesic_sums(torch.tensor([[0], [7]]), 5)
    with pytest.raises(ValueError, match=r"`num_nodes` must be >= 1"):
        geodesic_sums(torch.tensor([[0], [1]]), 0)
    with pytest.raises(ValueError, match=r"`pairs` must have shape \[2, P\]"):
        geodesic_distances(torch.tensor([[0], [1]]), 2, torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize(
    ("pairs", "error", "match"),
    [
        (
            torch.tensor([[0, -1], [1, 2]]),
            ValueError,
            r"`pairs` must hold node indices in \[0, 4\) \(got -1\.\.2\)",
        ),
        (
            torch.tensor([[0, 1], [4, 2]]),
            ValueError,
            r"`pairs` must hold node indices in \[0, 4\) \(got 0\.\.4\)",
        ),
        (
            torch.tensor([[0.0, 1.0], [1.0, 2.0]]),
            TypeError,
            r"`pairs` must hold integer node indices \(got dtype torch.float32\)",
        ),
        (
            torch.tensor([[True], [False]]),
            TypeError,
            r"`pairs` must hold integer node indices \(got dtype torch.bool\)",
        ),
        ([[0, 1], [1, 2]], TypeError, r"`pairs` must be a torch.Tensor \[2, P\] .*\(got list\)"),
        (torch.tensor([0, 1, 2]), ValueError, r"`pairs` must have shape \[2, P\] \(got \(3,\)\)"),
        (
            torch.zeros(2, 1, dtype=torch.long, device="meta"),
            ValueError,
            r"`pairs` must be on the device of `edge_index`",
        ),
    ],
)
def test_geodesic_distances_validates_pairs(pairs: object, error: type[Exception], match: str) -> None:
    path = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(error, match=match):
        geodesic_distances(path, 4, pairs)  # type: ignore[arg-type]


def test_geodesic_distances_accepts_other_integer_dtypes() -> None:
    path = torch.tensor([[0, 1], [1, 2]])
    pairs = torch.tensor([[0, 3, 2], [2, 0, 2]], dtype=torch.int32)
    assert geodesic_distances(path, 4, pairs).tolist() == [2, -1, 0]

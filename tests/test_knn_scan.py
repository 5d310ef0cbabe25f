"""``knn_edges_scan``: several k from one distance estimate, and row shards of a search.

The graphs are checked against a dense NumPy float64 reference of both tie rules (on integer data every
squared distance is an exact integer, so its ties are the true ones), and against separate
``knn_edges`` calls.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lightning_ricci import ricci_flow
from lightning_ricci.geometry import knn as knn_module
from lightning_ricci.geometry.knn import KnnEdgeBudgetWarning, knn_edges, knn_edges_scan


def _reference(x: torch.Tensor, k: int, keep_ties: bool) -> torch.Tensor:
    """Dense float64 kNN graph: R's keep-all-ties rule, or exactly k with ties by lowest index."""
    a = x.double().numpy()
    d = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    n = a.shape[0]
    if keep_ties:
        kth = np.sort(d, axis=1)[:, k - 1]
        i, j = np.nonzero(d <= kth[:, None])
    else:
        order = np.argsort(d, axis=1, kind="stable")[:, :k]  # equal distances: lowest index first
        i, j = np.repeat(np.arange(n), k), np.sort(order, axis=1).ravel()
    return torch.from_numpy(np.stack([i, j])).long()


def _clouds() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    dead = torch.randn(160, 5, generator=gen)
    dead[100:] = 0.0  # coincident rows in the last rows only: one row shard sees no duplicate
    return {
        "duplicates": torch.randint(0, 4, (90, 2), generator=gen).double(),
        "lattice": torch.randint(-3, 4, (70, 3), generator=gen).float(),
        "random": torch.randn(120, 6, generator=gen),
        "dead_tail": dead,
        "wide": torch.relu(torch.randn(80, 700, generator=gen)),  # two GEMM chunks
    }


KS = [9, 1, 4, 9, 2]  # unsorted, repeated


@pytest.mark.filterwarnings("ignore:the keep-ties kNN graph")  # dead_tail at k = 1: over the edge budget
@pytest.mark.parametrize("keep_ties", [True, False])
@pytest.mark.parametrize("name", sorted(_clouds()))
@pytest.mark.parametrize("memory_budget", [None, 1 << 16])
def test_scan_gives_every_k_of_the_reference(name: str, keep_ties: bool, memory_budget: int | None) -> None:
    x = _clouds()[name]
    scan = knn_edges_scan(x, KS, keep_ties=keep_ties, memory_budget=memory_budget)
    assert len(scan) == len(KS)
    for k, (edges, constant) in zip(KS, scan):
        assert not constant
        assert torch.equal(edges, _reference(x, k, keep_ties)), k
        assert torch.equal(edges, knn_edges(x, k, keep_ties=keep_ties)[0]), k


@pytest.mark.filterwarnings("ignore:the keep-ties kNN graph")  # dead_tail at k = 1: over the edge budget
@pytest.mark.parametrize("keep_ties", [True, False])
@pytest.mark.parametrize("name", sorted(_clouds()))
def test_row_shards_join_into_the_whole_graph(name: str, keep_ties: bool) -> None:
    x = _clouds()[name]
    n = x.shape[0]
    for cuts in ([0, n // 2, n], [0, 1, n // 3, n - 1, n], [0, 0, n]):
        shards = [knn_edges_scan(x, KS, keep_ties=keep_ties, rows=(a, b)) for a, b in zip(cuts, cuts[1:])]
        for index, k in enumerate(KS):
            for (a, b), shard in zip(zip(cuts, cuts[1:]), shards):
                sources = shard[index][0][0]
                assert bool(((sources >= a) & (sources < b)).all())
            joined = torch.cat([shard[index][0] for shard in shards], dim=1)
            assert torch.equal(joined, _reference(x, k, keep_ties)), (cuts, k)


def test_row_shards_of_coincident_points() -> None:
    x = torch.ones(12, 3)
    for rows in [(0, 5), (5, 12), (3, 3)]:
        ((edges, constant),) = knn_edges_scan(x, [4], keep_ties=True, rows=rows)
        assert constant  # every shard says the layer is constant
        want = [(i, j) for i in range(*rows) for j in range(12) if j != i]
        assert edges.T.tolist() == [list(e) for e in want]


def test_bad_rows() -> None:
    with pytest.raises(ValueError, match=r"`rows` must be \(start, stop\) with 0 <= start <= stop <= 10"):
        knn_edges(torch.randn(10, 2), 3, keep_ties=True, rows=(4, 11))


@pytest.fixture
def fresh_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """The edge-budget warning is issued once per process: forget that it was."""
    monkeypatch.setattr(knn_module, "_edge_budget_warned", False)


@pytest.mark.usefixtures("fresh_warning")
def test_each_k_of_a_scan_has_its_own_edge_budget() -> None:
    x = torch.randn(150, 4, generator=torch.Generator().manual_seed(2))
    x[:100] = 0.0  # 100 coincident rows: at least 9900 edges whatever k is
    count = _reference(x, 2, True).shape[1]
    assert 20 * 150 * 2 < count < 20 * 150 * 40  # over the default budget of k = 2, not of k = 40
    with pytest.raises(ValueError, match=rf"k = 2\) has {count:,} directed edges"):
        knn_edges_scan(x, [40, 2], keep_ties=True, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        knn_edges_scan(x, [40], keep_ties=True, strict=True)  # within the budget of k = 40
        knn_edges_scan(x, [40, 2], keep_ties=False, strict=True)  # exactly k: no budget
    # A shard's count is turned into the whole graph's before the check (as the ranks' all-reduce does).
    with pytest.raises(ValueError, match=r"has 1,000,000 directed edges"):
        knn_edges_scan(x, [40], keep_ties=True, strict=True, rows=(0, 10), _count_edges=lambda c: 10**6)
    # ricci_flow's scan warns for the small k as a call with that k alone does.
    layers = [x, x * 2, torch.relu(x)]
    with pytest.warns(KnnEdgeBudgetWarning, match=rf"k = 2\) has {count:,} directed edges"):
        ricci_flow(layers, [40, 2])


def test_scan_of_huge_float64_features() -> None:
    """float64 features near the top of the range: a power-of-two scale changes no distance order."""
    gen = torch.Generator().manual_seed(5)
    h = torch.randn(90, 6, generator=gen, dtype=torch.float64)
    layers = [h]
    for _ in range(3):
        h = torch.relu(h @ torch.randn(h.shape[1], 8, generator=gen, dtype=torch.float64))
        layers.append(h)
    layers[2] = layers[2].round()  # integer values: exact ties at the k-th distance
    scale = 2.0**1000  # ~1e301: differences and squares overflow float64 unless rescaled
    huge = [x * scale for x in layers]
    assert float(huge[1].abs().max()) > 1e300
    ks = [3, 7, 5]
    for convention in ("baptista", "hehl"):
        scan = ricci_flow(huge, ks, convention=convention)  # type: ignore[arg-type]
        plain = ricci_flow(layers, ks, convention=convention)  # type: ignore[arg-type]
        for k, got, want in zip(ks, scan.results, plain.results):
            alone = ricci_flow(huge, k, convention=convention)  # type: ignore[arg-type]
            for other in (want, alone):
                assert all(torch.equal(a, b) for a, b in zip(got.edge_index, other.edge_index)), k
                assert torch.equal(got.eta_connected, other.eta_connected)
                assert got.coefficient_connected == other.coefficient_connected

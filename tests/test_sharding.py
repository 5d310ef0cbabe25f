"""``ricci_flow(..., process_group=...)`` on 2 CPU processes (gloo) against the single-process result.

Every rank must return the same result as one process: integer-valued fields bit for bit, coefficients
to 1e-12 (they are computed from the same integers, so they agree exactly here too).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_ricci import RicciFlowResult, RicciFlowScan, ricci_flow
from lightning_ricci.geometry import knn as knn_module
from lightning_ricci.geometry.knn import KnnEdgeBudgetWarning

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

WORLD_SIZE = 2


def _mlp(n: int, seed: int, depth: int = 4, width: int = 16) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, 6, generator=gen)
    layers = [h]
    for _ in range(depth):
        h = torch.relu(h @ (torch.randn(h.shape[1], width, generator=gen) / h.shape[1] ** 0.5))
        layers.append(h)
    return layers


def _split(layers: list[torch.Tensor], which: list[int], seed: int) -> list[torch.Tensor]:
    """Move half of the points far away in the layers ``which``: those graphs are disconnected."""
    gen = torch.Generator().manual_seed(seed)
    far = 100.0 * (torch.rand(layers[0].shape[0], 1, generator=gen) > 0.5)
    return [x + far if i in which else x for i, x in enumerate(layers)]


def _grid_layers() -> list[torch.Tensor]:
    """An integer grid through integer maps: exact ties between distinct points, and duplicates."""
    gen = torch.Generator().manual_seed(3)
    layers = [torch.tensor([[float(i), float(j)] for i in range(10) for j in range(9)], dtype=torch.float64)]
    for _ in range(3):
        weight = torch.randint(-2, 3, (layers[-1].shape[1], 3), generator=gen).double()
        layers.append(torch.relu(layers[-1] @ weight))
    return layers


def _budget_layers() -> list[torch.Tensor]:
    """100 of 150 rows coincide in the middle layer: over the keep-ties edge budget at k = 3."""
    layers = _mlp(150, seed=12, depth=2)
    layers[1] = layers[1].clone()
    layers[1][50:] = 0.0
    return layers


def _cases() -> list[tuple[str, list[torch.Tensor], Any, dict[str, Any]]]:
    """(name, layers, k, options), rebuilt identically in every process."""
    dead = _mlp(170, seed=3)
    dead[2] = dead[2].clone()
    dead[2][:50] = 0.0  # dead-ReLU duplicates: ties kept under baptista
    tail = _mlp(160, seed=13, depth=3)
    tail[1], tail[2] = tail[1].clone(), tail[2].clone()
    tail[1][120:] = 0.0  # duplicates in the second rank's query rows only
    tail[2][:30] = 0.0  # ... and in the first rank's only
    constant = _mlp(90, seed=14, depth=3)
    constant[2] = torch.zeros_like(constant[2])
    labels = (_mlp(150, seed=1)[0][:, 0] > 0).long()
    return [
        ("mlp_baptista", _mlp(150, seed=1), 7, {"curvature": "augmented_forman", "labels": labels}),
        ("mlp_hehl", _mlp(150, seed=1), 7, {"convention": "hehl", "curvature": "approx_ollivier"}),
        ("dead_relu_ties", dead, 5, {}),
        # connectivity changes between layers: baptista's exclusion rule, +-Inf transitions
        ("split_appears", _split(_mlp(140, seed=4), [2, 3, 4], seed=5), 6, {}),
        # disconnected the same way in consecutive layers: kept by baptista
        ("split_everywhere", _split(_mlp(140, seed=6), [0, 1, 2, 3, 4], seed=7), 6, {}),
        ("split_hehl", _split(_mlp(140, seed=6), [1, 2], seed=8), 6, {"convention": "hehl"}),
        # several BFS source blocks per rank
        ("small_budget", _split(_mlp(300, seed=9), [3], seed=10), 6, {"memory_budget": 1 << 16}),
        ("k_scan", _mlp(130, seed=11, depth=5), [4, 9, 6], {"labels": labels[:130] * 3}),
        # each rank searches its share of every layer's query rows: shards that differ in kind
        ("dead_rows_in_one_shard", tail, [2, 5], {}),
        ("dead_rows_in_one_shard_hehl", tail, [2, 5], {"convention": "hehl"}),
        ("grid_ties", _grid_layers(), [3, 8, 5], {}),
        ("grid_ties_hehl", _grid_layers(), [3, 8, 5], {"convention": "hehl", "memory_budget": 1 << 16}),
        ("three_layers", _mlp(101, seed=15, depth=2), 4, {}),  # an odd N: unequal shards
        ("constant_layer", constant, [3, 6], {}),
    ]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KnnEdgeBudgetWarning)  # the constant layer's complete graph
            results = {
                name: ricci_flow(layers, k, process_group=dist.group.WORLD, **options)
                for name, layers, k, options in _cases()
            }
        results["budget_warnings"] = _budget_warnings(dist.group.WORLD)
        try:  # ranks that disagree on the data: a clear error on every rank, not a hang
            ricci_flow(_mlp(40 + rank, seed=0), 4, process_group=dist.group.WORLD)
            results["mismatch"] = "no error"
        except ValueError as err:
            results["mismatch"] = str(err)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _budget_warnings(group: Any) -> list[str]:
    """The edge-budget warnings of a keep-ties scan, with a fresh once-per-process flag."""
    knn_module._edge_budget_warned = False
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ricci_flow(_budget_layers(), [3, 40], process_group=group)
    knn_module._edge_budget_warned = False
    return [str(w.message) for w in record if issubclass(w.category, KnnEdgeBudgetWarning)]


def _assert_same(got: RicciFlowResult, want: RicciFlowResult, where: str) -> None:
    exact = ("total_curvature", "eta", "eta_connected", "geodesic_sum", "num_components", "node_curvature")
    for field in exact:
        torch.testing.assert_close(
            getattr(got, field), getattr(want, field), rtol=0, atol=0, equal_nan=True, msg=f"{where}: {field}"
        )
    for field in ("local", "layer_coefficient", "class_modularity", "curvature_gap"):
        a, b = getattr(got, field), getattr(want, field)
        if b is None:
            assert a is None, f"{where}: {field}"
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12, equal_nan=True, msg=f"{where}: {field}")
    for a, b in zip(got.edge_index, want.edge_index):
        assert torch.equal(a, b), f"{where}: edge_index"
    assert got.excluded == want.excluded, f"{where}: excluded"
    for name in ("coefficient", "coefficient_connected"):
        x, y = getattr(got, name), getattr(want, name)
        assert (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-12, f"{where}: {name} {x} != {y}"


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("sharding")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]


def test_every_rank_returns_the_single_process_result(sharded: list[dict[str, Any]]) -> None:
    cases = _cases()
    seen_excluded = seen_kept_disconnected = False
    for name, layers, k, options in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KnnEdgeBudgetWarning)
            want = ricci_flow(layers, k, **options)
        for rank, results in enumerate(sharded):
            got = results[name]
            if isinstance(want, RicciFlowScan):
                assert isinstance(got, RicciFlowScan) and got.ks == want.ks
                for kk, g, w in zip(want.ks, got.results, want.results):
                    _assert_same(g, w, f"{name} k={kk} rank {rank}")
                torch.testing.assert_close(
                    got.coefficients, want.coefficients, rtol=0, atol=0, equal_nan=True
                )
            else:
                _assert_same(got, want, f"{name} rank {rank}")
        if isinstance(want, RicciFlowResult) and want.convention == "baptista":
            disconnected = bool((want.num_components > 1).any())
            seen_excluded |= want.excluded and disconnected
            seen_kept_disconnected |= disconnected and not want.excluded
    # The cases exercise the exclusion rule both ways.
    assert seen_excluded and seen_kept_disconnected


def test_every_rank_warns_of_the_whole_graph_edge_count(sharded: list[dict[str, Any]]) -> None:
    want = _budget_warnings(None)
    assert len(want) == 1 and "(N = 150, k = 3)" in want[0]
    for results in sharded:  # the count summed over the ranks' shards: the single-process message
        assert results["budget_warnings"] == want


def test_ranks_that_disagree_get_a_clear_error(sharded: list[dict[str, Any]]) -> None:
    for results in sharded:
        assert results["mismatch"].startswith(
            "`process_group`: every rank must call ricci_flow with the same"
        )


def test_source_shards_add_up_to_the_whole_bfs() -> None:
    from lightning_ricci.geometry import distributed
    from lightning_ricci.geometry.geodesics import csr, multi_source_bfs, undirected_entries

    gen = torch.Generator().manual_seed(0)
    n = 333
    row, col = undirected_entries(torch.randint(0, n, (2, 500), generator=gen), n)
    ptr, col = csr(row, col, n)
    queries = torch.randint(0, n, (2, 200), generator=gen)
    whole = multi_source_bfs(ptr, col, 1, n, queries=queries, block_words=1)
    ranges = [(r * n // 3, (r + 1) * n // 3) for r in range(3)]  # as distributed.shard deals them
    parts = [multi_source_bfs(ptr, col, 1, n, queries=queries, block_words=1, sources=s) for s in ranges]
    assert all(0 < p.dist_sum.sum() < whole.dist_sum.sum() for p in parts)  # each shard did a part
    assert torch.equal(sum(p.dist_sum for p in parts), whole.dist_sum)
    assert torch.equal(torch.stack([p.query_dist for p in parts]).amax(0), whole.query_dist)
    costs = [784.0, 512, 512, 512, 512, 512]  # largest first, each to the least-loaded rank
    owners = distributed.layer_owners(costs, 2)
    loads = sorted(sum(c for c, o in zip(costs, owners) if o == r) for r in range(2))
    assert loads == [3 * 512, 784 + 2 * 512]


def test_process_group_without_torch_distributed_is_refused() -> None:
    if dist.is_initialized():  # pragma: no cover - only outside this suite
        pytest.skip("a default process group exists")
    with pytest.raises(
        ValueError, match=r"`process_group` needs an initialised torch.distributed default group"
    ):
        ricci_flow(_mlp(40, seed=0), 4, process_group=object())


def test_a_group_of_one_rank_is_the_single_process_path(tmp_path: Path) -> None:
    if dist.is_initialized():  # pragma: no cover - only outside this suite
        pytest.skip("a default process group exists")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        layers = _mlp(60, seed=2)
        _assert_same(
            ricci_flow(layers, 5, process_group=dist.group.WORLD), ricci_flow(layers, 5), "world of 1"
        )
        with pytest.raises(TypeError, match=r"`process_group` must be a torch.distributed.ProcessGroup"):
            ricci_flow(layers, 5, process_group="world")
    finally:
        dist.destroy_process_group()

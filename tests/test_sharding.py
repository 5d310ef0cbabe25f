"""``ricci_flow(..., process_group=...)`` on 2 CPU processes (gloo) against the single-process result.

Every rank must return the same result as one process: integer-valued fields bit for bit, coefficients
to 1e-12 (they are computed from the same integers, so they agree exactly here too).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_ricci import RicciFlowResult, RicciFlowScan, ricci_flow

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


def _cases() -> list[tuple[str, list[torch.Tensor], Any, dict[str, Any]]]:
    """(name, layers, k, options), rebuilt identically in every process."""
    dead = _mlp(170, seed=3)
    dead[2] = dead[2].clone()
    dead[2][:50] = 0.0  # dead-ReLU duplicates: ties kept under baptista
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
    ]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        results = {
            name: ricci_flow(layers, k, process_group=dist.group.WORLD, **options)
            for name, layers, k, options in _cases()
        }
        try:  # ranks that disagree on the data: a clear error on every rank, not a hang
            ricci_flow(_mlp(40 + rank, seed=0), 4, process_group=dist.group.WORLD)
            results["mismatch"] = "no error"
        except ValueError as err:
            results["mismatch"] = str(err)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


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
        want = ricci_flow(layers, k, **options)
        for rank, results in enumerate(sharded):
            got = results[name]
            if isinstance(want, RicciFlowScan):
                assert isinstance(got, RicciFlowScan) and got.ks == want.ks
                for kk, g, w in zip(want.ks, got.results, want.results):
                    _assert_same(g, w, f"{name} k={kk} rank {rank}")
                assert torch.equal(got.coefficients, want.coefficients)
            else:
                _assert_same(got, want, f"{name} rank {rank}")
        if isinstance(want, RicciFlowResult) and want.convention == "baptista":
            disconnected = bool((want.num_components > 1).any())
            seen_excluded |= want.excluded and disconnected
            seen_kept_disconnected |= disconnected and not want.excluded
    # The cases exercise the exclusion rule both ways.
    assert seen_excluded and seen_kept_disconnected


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

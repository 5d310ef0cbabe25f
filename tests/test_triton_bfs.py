"""The fused Triton BFS level against the torch level path, bit for bit.

On the CPU the kernel runs in Triton's interpreter, which must be switched on (``TRITON_INTERPRET=1``)
before Triton is first imported: ``test_interpreted_kernel`` therefore runs this file again in a fresh
process with the variable set, and the tests marked ``interpreted`` only run there (or when the whole
run has it set). The interpreter costs milliseconds per program, so these graphs are small; the CUDA
test compares both paths on ricci_flow-sized graphs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_ricci.geometry import _triton, geodesics
from lightning_ricci.geometry._bitset import NeighbourOr
from lightning_ricci.geometry.geodesics import _BfsResult, connected_components, csr, multi_source_bfs

pytest.importorskip("triton")
csgraph = pytest.importorskip("scipy.sparse.csgraph")
sparse = pytest.importorskip("scipy.sparse")


INTERPRETED = _triton.interpreting()
interpreted = pytest.mark.skipif(
    not INTERPRETED, reason="runs in test_interpreted_kernel's TRITON_INTERPRET=1 process"
)


@pytest.mark.skipif(INTERPRETED, reason="this process already interprets")
def test_interpreted_kernel() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stdout[-5000:] + completed.stderr[-2000:]
    assert " passed" in completed.stdout and " failed" not in completed.stdout


def _union(
    graphs: list[torch.Tensor], n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR of the disjoint union of undirected graphs on n nodes each: (ptr, col, rows, cols of entries)."""
    rows = len(graphs) * n
    parts = [e + i * n for i, e in enumerate(graphs)]
    a, b = torch.cat(parts, 1) if parts else torch.zeros(2, 0, dtype=torch.long)
    keep = a != b
    a, b = a[keep], b[keep]
    key = torch.unique(torch.cat([a * rows + b, b * rows + a]))
    r, c = key // rows, key % rows
    ptr, col = csr(r, c, rows)
    return ptr, col, r, c


def _assert_same(a: _BfsResult, b: _BfsResult) -> None:
    assert torch.equal(a.dist_sum, b.dist_sum)
    assert len(a.masked_sums) == len(b.masked_sums)
    for x, y in zip(a.masked_sums, b.masked_sums):
        assert torch.equal(x, y)
    assert torch.equal(a.query_dist, b.query_dist)


def _both(ptr: torch.Tensor, col: torch.Tensor, graphs: int, n: int, **kwargs: object) -> _BfsResult:
    fused = multi_source_bfs(ptr, col, graphs, n, level_kernel="triton", **kwargs)  # type: ignore[arg-type]
    plain = multi_source_bfs(ptr, col, graphs, n, level_kernel="torch", **kwargs)  # type: ignore[arg-type]
    _assert_same(fused, plain)
    return fused


def _distance_sums(edges: torch.Tensor, n: int) -> list[int]:
    dist = _scipy_distances(edges, n)
    return [int(v) for v in np.where(np.isinf(dist), 0, dist).sum(1)]


def _scipy_distances(edge_index: torch.Tensor, n: int) -> np.ndarray:
    e = edge_index.numpy()
    a = sparse.coo_matrix((np.ones(e.shape[1]), (e[0], e[1])), shape=(n, n)).tocsr()
    return csgraph.shortest_path(a, directed=False, unweighted=True)


@interpreted
def test_layers_hub_components_masks_queries() -> None:
    # 70 nodes (not a multiple of 64) in source blocks of 64, so two blocks, the first using bit 63.
    gen = torch.Generator().manual_seed(0)
    n = 70
    hub = torch.cat(
        [
            torch.stack([torch.zeros(n, dtype=torch.long), torch.arange(n)]),
            torch.randint(0, n, (2, 30), generator=gen),
        ],
        1,
    )  # a hub of degree n - 1
    islands = torch.randint(0, 40, (2, 45), generator=gen)  # nodes 40..69 isolated, several components
    ring = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
    ring = torch.cat([ring, torch.randint(0, n, (2, 6), generator=gen)], 1)  # a long cycle with chords
    ptr, col, r, c = _union([hub, islands, ring], n)
    labels = connected_components(r, c, 3 * n)
    random_labels = torch.randint(0, 3, (3 * n,), generator=gen)
    queries = torch.stack(
        [torch.randint(0, 3 * n, (60,), generator=gen), torch.randint(0, n, (60,), generator=gen)]
    )
    res = _both(ptr, col, 3, n, masks=[labels, random_labels], queries=queries, block_words=1)

    for layer, edges in enumerate([hub, islands, ring]):
        assert res.dist_sum[layer * n : (layer + 1) * n].tolist() == _distance_sums(edges, n)
    dists = [_scipy_distances(e, n) for e in (hub, islands, ring)]
    ref = [dists[int(row) // n][int(row) % n, int(t)] for row, t in zip(queries[0], queries[1])]
    assert res.query_dist.tolist() == [-1 if np.isinf(d) else int(d) for d in ref]


@interpreted
def test_several_word_blocks_per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two-word blocks over three words per row: one full block and one with a masked tail word.
    monkeypatch.setattr(_triton, "launch_config", lambda words: (2, 1))
    gen = torch.Generator().manual_seed(1)
    n = 150
    edges = torch.cat(
        [
            torch.randint(0, n, (2, 200), generator=gen),
            torch.stack([torch.arange(10), torch.arange(10) + 90]),
        ],
        1,
    )
    ptr, col, _, _ = _union([edges], n)
    assert _both(ptr, col, 1, n).dist_sum.tolist() == _distance_sums(edges, n)


@interpreted
@pytest.mark.parametrize("n", [1, 9])
def test_graphs_without_edges(n: int) -> None:
    ptr, col, _, _ = _union([torch.zeros(2, 0, dtype=torch.long)] * 2, n)
    res = _both(ptr, col, 2, n, queries=torch.tensor([[0, 2 * n - 1], [0, 0]]))
    assert res.dist_sum.tolist() == [0] * (2 * n)
    assert res.query_dist.tolist() == [0, 0 if n == 1 else -1]


@interpreted
def test_one_level_matches_torch() -> None:
    # One launch on random words (sign bit included) with a rows-not-in-degree-order CSR.
    gen = torch.Generator().manual_seed(2)
    rows, words, level = 37, 3, 5
    deg = torch.randint(0, 12, (rows,), generator=gen)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), deg.cumsum(0)])
    col = torch.randint(0, rows, (int(deg.sum()),), generator=gen)
    frontier = torch.randint(-(2**63), 2**63 - 1, (rows, words), generator=gen, dtype=torch.long)
    unvisited = torch.randint(-(2**63), 2**63 - 1, (rows, words), generator=gen, dtype=torch.long)
    planes = [
        torch.randint(-(2**63), 2**63 - 1, (rows, words), generator=gen, dtype=torch.long) for _ in range(3)
    ]

    expected_nxt = NeighbourOr(ptr, col)(frontier, torch.empty_like(frontier)) & unvisited
    expected_planes = [p | expected_nxt if level >> i & 1 else p.clone() for i, p in enumerate(planes)]
    expected_unvisited = unvisited & ~expected_nxt

    nxt = torch.full_like(frontier, 12345)
    flag = torch.full((1,), 2, dtype=torch.int32)
    table = torch.tensor([p.data_ptr() for p in planes])
    _triton.launch_level(ptr, col, frontier, nxt, unvisited, table, flag, level, len(planes))
    assert torch.equal(nxt, expected_nxt)
    assert torch.equal(unvisited, expected_unvisited)
    for got, want in zip(planes, expected_planes):
        assert torch.equal(got, want)
    assert int(flag) == level


def test_auto_falls_back_to_torch_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_triton, "_failure", None)
    monkeypatch.setattr(
        _triton, "use_fused_levels", lambda kernel, device: kernel != "torch" and _triton._failure is None
    )

    def broken(*args: object, **kwargs: object) -> list[torch.Tensor]:
        raise RuntimeError("no kernel here")

    monkeypatch.setattr(_triton, "run_levels", broken)
    gen = torch.Generator().manual_seed(3)
    n = 130  # three source blocks of one word: the first fails, the others go straight to torch
    ptr, col, _, _ = _union([torch.randint(0, n, (2, 200), generator=gen)], n)
    expected = multi_source_bfs(ptr, col, 1, n, level_kernel="torch")
    with pytest.warns(RuntimeWarning, match="no kernel here") as record:
        _assert_same(multi_source_bfs(ptr, col, 1, n, block_words=1), expected)
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_same(multi_source_bfs(ptr, col, 1, n), expected)
    monkeypatch.setattr(_triton, "_failure", None)
    with pytest.raises(RuntimeError, match="no kernel here"):
        multi_source_bfs(ptr, col, 1, n, level_kernel="triton")


@pytest.mark.parametrize("wrong", [False, True])
def test_auto_checks_the_kernel_against_torch_first(monkeypatch: pytest.MonkeyPatch, wrong: bool) -> None:
    """A kernel that gives wrong planes is caught on a test graph before it touches real data."""
    monkeypatch.setattr(_triton, "_failure", None)
    monkeypatch.setattr(_triton, "verified", set())
    monkeypatch.setattr(
        _triton, "use_fused_levels", lambda kernel, device: kernel != "torch" and _triton._failure is None
    )
    calls = []

    def levels(
        ptr: torch.Tensor, col: torch.Tensor, frontier: torch.Tensor, unvisited: torch.Tensor, **kw: int
    ) -> list[torch.Tensor]:
        calls.append(frontier.shape)
        planes = geodesics._torch_levels(NeighbourOr(ptr, col), frontier, unvisited, **kw)
        if wrong:
            planes[0][3, 0] ^= 1 << 5  # one pair one hop off
        return planes

    monkeypatch.setattr(_triton, "run_levels", levels)
    gen = torch.Generator().manual_seed(4)
    n = 90
    ptr, col, _, _ = _union([torch.randint(0, n, (2, 150), generator=gen)], n)
    expected = multi_source_bfs(ptr, col, 1, n, level_kernel="torch")
    if wrong:
        with pytest.warns(RuntimeWarning, match="differ from the torch path"):
            _assert_same(multi_source_bfs(ptr, col, 1, n), expected)
        assert len(calls) == 2 and _triton.verified == set()  # only the test graph (two blocks) saw it
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _assert_same(multi_source_bfs(ptr, col, 1, n), expected)
            _assert_same(multi_source_bfs(ptr, col, 1, n), expected)
        assert _triton.verified == {"cpu"}
        assert len(calls) == 2 + 2  # the test graph (two source blocks), then one block per call


def test_level_kernel_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    ptr, col, _, _ = _union([torch.tensor([[0, 1], [1, 2]])], 3)
    with pytest.raises(ValueError, match="`level_kernel`"):
        multi_source_bfs(ptr, col, 1, 3, level_kernel="cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="`level_kernel` 'triton' runs on CUDA tensors"):
        multi_source_bfs(ptr, col, 1, 3, level_kernel="triton")
    # "auto" keeps the torch path on the CPU.
    assert multi_source_bfs(ptr, col, 1, 3).dist_sum.tolist() == [3, 2, 3]


@pytest.mark.skipif(INTERPRETED, reason="compiles the GPU kernel")
@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("words", [79, 119, 139])  # the word-block sizes ricci_flow meets
def test_kernel_compiles_for_cuda(arch: int, words: int) -> None:
    # Ahead-of-time compilation to a cubin needs no GPU: it checks the GPU path's code, not its results.
    import triton

    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError:
        pytest.skip("this Triton has no ahead-of-time compile entry points")
    pointers = ["ptr", "col", "frontier", "nxt", "unvisited", "plane_table"]
    signature = {name: "*i64" for name in pointers} | {"flag": "*i32"}
    signature |= {name: "i32" for name in ("level", "num_planes", "num_rows", "words", "blocks_per_row")}
    signature |= {"ROWS": "constexpr", "BLOCK_W": "constexpr"}
    block_w, num_warps = _triton.launch_config(words)
    source = ASTSource(
        fn=_triton._kernel(), signature=signature, constexprs={"ROWS": _triton.ROWS, "BLOCK_W": block_w}
    )
    try:
        compiled = triton.compile(
            source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps}
        )
    except Exception as exc:
        if "ptxas" in str(exc).lower():
            pytest.skip(f"no usable ptxas: {exc}")
        raise
    assert compiled.asm["cubin"]
    # The flag's atomic max: `atom` (Triton 3.6) or, its result unused, `red` (Triton 3.9).
    assert re.search(r"\b(atom|red)\.global\.gpu\.relaxed\.max\.s32\b", compiled.asm["ptx"])


@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRETED, reason="needs CUDA and compiled Triton")
def test_cuda_knn_graphs_match_torch() -> None:
    from lightning_ricci.geometry.knn import knn_graph

    gen = torch.Generator().manual_seed(4)
    n, layers = 5000, 4
    x = torch.randn(n, 32, generator=gen)
    graphs = []
    for _ in range(layers):
        graphs.append(knn_graph(x.cuda(), 10).cpu())
        x = torch.relu(x @ torch.randn(32, 32, generator=gen))
    graphs.append(torch.randint(0, n, (2, 3000), generator=gen))  # many components and isolated nodes
    ptr, col, r, c = _union(graphs, n)
    ptr, col, r, c = ptr.cuda(), col.cuda(), r.cuda(), c.cuda()
    labels = connected_components(r, c, len(graphs) * n)
    queries = torch.stack(
        [
            torch.randint(0, len(graphs) * n, (5000,), generator=gen),
            torch.randint(0, n, (5000,), generator=gen),
        ]
    ).cuda()
    for kwargs in ({}, {"block_words": 16}):
        fused = multi_source_bfs(
            ptr, col, len(graphs), n, masks=[labels], queries=queries, level_kernel="triton", **kwargs
        )
        plain = multi_source_bfs(
            ptr, col, len(graphs), n, masks=[labels], queries=queries, level_kernel="torch", **kwargs
        )
        _assert_same(fused, plain)

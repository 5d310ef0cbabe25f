"""Exact all-pairs hop-distance sums on the device, for many graphs at once.

Shape symbols: N nodes per graph, B graphs (layers) sharing the same node set, R = B * N rows,
E directed edge entries.

A multi-source BFS runs from every node of every graph at once. The visited sets are bit-packed: row
``(b, v)`` holds, for every source s, whether v has been reached from s in graph b. One BFS level is a
neighbourhood OR over the CSR adjacency: on CUDA one fused Triton kernel per level
(:mod:`~lightning_ricci.geometry._triton`), elsewhere gathers and ORs in torch
(:class:`~lightning_ricci.geometry._bitset.NeighbourOr`). Newly reached pairs are counted with popcount
and summed in int64, so no [N, N] distance matrix is ever formed. Sources are processed in blocks to
bound memory. Distances are symmetric, so the sum over sources of a row equals the sum over targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_ricci.geometry import _triton
from lightning_ricci.geometry._bitset import NeighbourOr, pack_rows, popcount_rows
from lightning_ricci.geometry._checks import check_choice, check_edge_index, check_int
from lightning_ricci.geometry.knn import DEFAULT_MEMORY_BUDGET


@dataclass
class _BfsResult:
    dist_sum: Tensor  # [R] sum of hop distances to reachable nodes
    masked_sums: list[Tensor]  # [R] each: the same sum restricted to a mask
    query_dist: Tensor  # [Q] hop distance of each query pair, -1 if unreachable


LEVEL_KERNELS = ("auto", "torch", "triton")


def csr(row: Tensor, col: Tensor, num_rows: int) -> tuple[Tensor, Tensor]:
    """CSR (ptr, col) of edges sorted by ``row``."""
    order = torch.argsort(row * num_rows + col)
    counts = torch.bincount(row, minlength=num_rows)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return ptr, col[order]


def connected_components(row: Tensor, col: Tensor, num_nodes: int) -> Tensor:
    """[num_nodes] label of each node's component (its smallest node index); edges both ways.

    FastSV (Zhang, Azad and Hu, 2020): every round hooks each tree onto the smallest grandparent label
    seen across its edges (through the parent and directly) and halves the trees' depth, so the number
    of rounds grows with the logarithm of the diameter, not with the diameter (a path of 20,000 nodes
    takes 12 rounds).
    """
    parent = torch.arange(num_nodes, device=row.device)
    while True:
        grand = parent[parent]
        seen = grand.scatter_reduce(0, row, grand[col], reduce="amin")  # own and neighbours' grandparents
        new = parent.scatter_reduce(0, parent, seen, reduce="amin")  # hook the parent (stochastic hooking)
        new = torch.minimum(torch.minimum(new, seen), grand)  # hook the node itself; shortcut
        new = new[new]
        if torch.equal(new, parent):
            return parent  # a star per component, rooted at its smallest node
        parent = new


def multi_source_bfs(
    ptr: Tensor,
    col: Tensor,
    num_graphs: int,
    num_nodes: int,
    *,
    masks: list[Tensor] | None = None,
    queries: Tensor | None = None,
    block_words: int | None = None,
    memory_budget: int | None = None,
    level_kernel: str = "auto",
    sources: tuple[int, int] | None = None,
) -> _BfsResult:
    """All-sources BFS on ``num_graphs`` graphs over the same ``num_nodes`` nodes.

    Rows are relabelled by non-increasing degree (so the torch neighbourhood OR needs no final
    permutation, and the rows that the Triton kernel steps through together have similar degrees).
    Each level ORs the newly reached bits into bit planes that spell the level in binary, so the
    distance sums (and masked sums and per-pair distances) are read off the planes once at the end
    instead of a popcount per level.

    Args:
        ptr (Tensor): [R + 1] CSR pointer over rows ``b * num_nodes + v``.
        col (Tensor): [E] neighbour rows (inside the same graph).
        num_graphs (int): B.
        num_nodes (int): N.
        masks (list[Tensor], optional): each [R] long labels; a pair (v, s) of graph b counts in that
            mask's sum when ``labels[b * N + v] == labels[b * N + s]``. Default: None.
        queries (Tensor, optional): [2, Q] long (row, target node) pairs whose distance is wanted.
        block_words (int, optional): sources per block / 64. Default: from ``memory_budget``.
        memory_budget (int, optional): bytes for the bitset state of one source block (about a dozen
            [R, W] int64 arrays). Default: :data:`~lightning_ricci.geometry.knn.DEFAULT_MEMORY_BUDGET`.
        level_kernel (str): how a BFS level runs: ``"torch"`` (gathers and ORs, any device), ``"triton"``
            (one fused Triton launch per level; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``)
            or ``"auto"`` (Triton on CUDA when it can be imported, else torch; if the kernel fails to
            build or launch, a warning is issued once and torch is used for the rest of the process).
            The results do not depend on it. Default: ``"auto"``.
        sources (tuple[int, int], optional): run only the sources ``start <= s < stop`` (one rank's share):
            the sums then cover those sources only, and the queries whose target is outside stay -1.
            Default: every node.

    Returns:
        _BfsResult: per-row distance sums and masked sums (original row order) and query distances.

    Raises:
        ValueError: an unknown ``level_kernel``, or ``"triton"`` where the kernel cannot run.
    """
    check_choice("level_kernel", level_kernel, LEVEL_KERNELS)
    device = ptr.device
    fused = _triton.use_fused_levels(level_kernel, device)
    if fused and level_kernel == "auto":
        fused = _fused_agrees_once(device)
    rows = num_graphs * num_nodes
    masks = masks or []
    degree = ptr[1:] - ptr[:-1]
    order = torch.argsort(degree, descending=True, stable=True)  # new row -> old row
    rank = torch.empty_like(order)
    rank[order] = torch.arange(rows, device=device)  # old row -> new row
    new_deg = degree[order]
    new_ptr = torch.cat([ptr.new_zeros(1), new_deg.cumsum(0)])
    seg = torch.repeat_interleave(torch.arange(rows, device=device), new_deg, output_size=col.numel())
    within = torch.arange(col.numel(), device=device) - new_ptr[:-1][seg]
    new_col = rank[col[ptr[:-1][order][seg] + within]]
    plan: NeighbourOr | None = None  # built on first use: the fused kernel reads the CSR directly

    first, stop = (0, num_nodes) if sources is None else sources
    total_words = max(1, (stop - first + 63) // 64)
    if block_words is None:
        budget = memory_budget or DEFAULT_MEMORY_BUDGET.get(device.type, DEFAULT_MEMORY_BUDGET["cuda"])
        block_words = max(1, budget // (8 * rows * (12 + len(masks))))
    block_words = min(block_words, total_words)
    check_every = 1 if device.type == "cpu" else 4
    graph_of_row = torch.arange(rows, device=device) // num_nodes
    keyed_masks = [(labels * num_graphs + graph_of_row)[order] for labels in masks]

    dist_sum = torch.zeros(rows, dtype=torch.long, device=device)
    masked_sums = [torch.zeros(rows, dtype=torch.long, device=device) for _ in masks]
    num_q = 0 if queries is None else queries.shape[1]
    query_dist = torch.full((num_q,), -1, dtype=torch.long, device=device)

    for s0 in range(first, stop, 64 * block_words):
        num_src = min(64 * block_words, stop - s0)
        words = (num_src + 63) // 64
        src_local = torch.arange(num_src, device=device)
        src_pos = src_local.repeat(num_graphs)
        start_rows = rank[
            (torch.arange(num_graphs, device=device).unsqueeze(1) * num_nodes + s0 + src_local).flatten()
        ]
        planes: list[Tensor] | None = None
        if fused:
            frontier, unvisited = _first_level(start_rows, src_pos, rows, words, num_src)
            try:
                planes = _triton.run_levels(
                    new_ptr, new_col, frontier, unvisited, max_level=num_nodes, check_every=check_every
                )
            except Exception as exc:  # building, compiling or launching the kernel
                if level_kernel == "triton":
                    raise
                _triton.give_up(exc)
                fused = False
        if planes is None:
            frontier, unvisited = _first_level(start_rows, src_pos, rows, words, num_src)
            if plan is None:
                plan = NeighbourOr(new_ptr, new_col)
            planes = _torch_levels(plan, frontier, unvisited, max_level=num_nodes, check_every=check_every)

        # Read the sums off the bit planes: distance = sum over p of 2^p * bit of plane p.
        for p, plane in enumerate(planes):
            dist_sum += popcount_rows(plane) << p
        for keyed, total in zip(keyed_masks, masked_sums):
            uniq, inv = torch.unique(keyed[start_rows], return_inverse=True)
            bits = pack_rows(inv, src_pos, uniq.numel(), words)
            pos = torch.searchsorted(uniq, keyed).clamp(max=uniq.numel() - 1)
            mask = bits[pos]
            mask[uniq[pos] != keyed] = 0
            for p, plane in enumerate(planes):
                total += popcount_rows(plane & mask) << p
        if num_q:
            assert queries is not None
            q_idx = ((queries[1] >= s0) & (queries[1] < s0 + num_src)).nonzero().squeeze(1)
            q_row = rank[queries[0, q_idx]]
            q_off = queries[1, q_idx] - s0
            flat, q_bit = q_row * words + q_off // 64, q_off % 64  # word of each query in a [R, W] array
            dist = torch.zeros_like(q_row)
            for p, plane in enumerate(planes):
                dist |= ((plane.view(-1).index_select(0, flat) >> q_bit) & 1) << p
            reached = ((unvisited.view(-1).index_select(0, flat) >> q_bit) & 1) == 0
            query_dist[q_idx] = torch.where(reached, dist, torch.full_like(dist, -1))

    return _BfsResult(dist_sum[rank], [t[rank] for t in masked_sums], query_dist)


def _fused_agrees_once(device: torch.device) -> bool:
    """Before the fused kernel's first use on ``device``: does it match the torch path on a test graph?

    The graph (two layers of 150 nodes, three words per row, a hub, isolated nodes, a second component)
    takes milliseconds. If the kernel fails or disagrees, :func:`_triton.give_up` warns once and the
    torch path is used for the rest of the process, so a miscompiled kernel cannot give wrong sums.
    """
    key = str(device)
    if key in _triton.verified:
        return True
    gen = torch.Generator().manual_seed(0)
    n = 150
    edges = [torch.randint(0, 120, (2, 300), generator=gen), torch.randint(0, 140, (2, 200), generator=gen)]
    edges[1] = torch.cat(
        [edges[1], torch.stack([torch.zeros(60, dtype=torch.long), torch.arange(60, 120)])], 1
    )
    rows, cols = [], []
    for b, e in enumerate(edges):
        r, c = undirected_entries(e, n)
        rows.append(r + b * n)
        cols.append(c + b * n)
    ptr, col = csr(torch.cat(rows).to(device), torch.cat(cols).to(device), 2 * n)
    queries = torch.stack([torch.arange(0, 2 * n, 7), torch.arange(0, 2 * n, 7).flip(0) % n]).to(device)
    try:
        got = multi_source_bfs(ptr, col, 2, n, queries=queries, block_words=2, level_kernel="triton")
    except Exception as exc:  # noqa: BLE001 - building, compiling or launching the kernel
        _triton.give_up(exc)
        return False
    want = multi_source_bfs(ptr, col, 2, n, queries=queries, block_words=2, level_kernel="torch")
    if not (torch.equal(got.dist_sum, want.dist_sum) and torch.equal(got.query_dist, want.query_dist)):
        _triton.give_up(RuntimeError("its distance sums differ from the torch path's on a test graph"))
        return False
    _triton.verified.add(key)
    return True


def _first_level(
    start_rows: Tensor, src_pos: Tensor, rows: int, words: int, num_src: int
) -> tuple[Tensor, Tensor]:
    """(frontier, unvisited) [R, W] int64 of a source block before the first level."""
    frontier = pack_rows(start_rows, src_pos, rows, words)
    unvisited = ~frontier
    if num_src % 64:
        unvisited[:, -1] &= (1 << (num_src % 64)) - 1  # bits past the last source are never reached
    return frontier, unvisited


def _torch_levels(
    plan: NeighbourOr, frontier: Tensor, unvisited: Tensor, *, max_level: int, check_every: int
) -> list[Tensor]:
    """Run the BFS of one source block to the end in torch; updates ``unvisited`` and returns the planes."""
    nxt = torch.empty_like(frontier)
    planes: list[Tensor] = []
    level = 0
    while True:
        level += 1
        plan(frontier, nxt)
        nxt &= unvisited
        if level % check_every == 0 and not bool(nxt.any()):
            break
        if level > max_level:  # only after empty levels on devices that check lazily
            break
        unvisited ^= nxt
        while level >= 1 << len(planes):
            planes.append(torch.zeros_like(frontier))
        for p, plane in enumerate(planes):
            if level >> p & 1:
                plane |= nxt
        frontier, nxt = nxt, frontier
    return planes


def geodesic_sums(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Sums of hop distances of an undirected, unweighted graph, by exact all-sources BFS.

    The graph is the union of ``edge_index`` and its reverse. Unreachable pairs are left out of the
    sums; a disconnected graph therefore has a finite total.

    Args:
        edge_index (Tensor): [2, E] long edges.
        num_nodes (int): N.

    Returns:
        tuple[Tensor, Tensor]: the total over unordered connected pairs (0-dim long) and, per node,
        the sum of its distances to every node it reaches ([N] long).

    Example:
        >>> path = torch.tensor([[0, 1, 2], [1, 2, 3]])
        >>> geodesic_sums(path, 4)
        (tensor(10), tensor([6, 4, 4, 6]))
    """
    num_nodes = check_int("num_nodes", num_nodes, low=1)
    row, col = undirected_entries(check_edge_index(edge_index, num_nodes), num_nodes)
    ptr, col = csr(row, col, num_nodes)
    per_node = multi_source_bfs(ptr, col, 1, num_nodes).dist_sum
    return per_node.sum() // 2, per_node


def geodesic_distances(edge_index: Tensor, num_nodes: int, pairs: Tensor) -> Tensor:
    """Hop distances of selected node pairs of an undirected, unweighted graph.

    Args:
        edge_index (Tensor): [2, E] long edges (read as undirected).
        num_nodes (int): N.
        pairs (Tensor): [2, P] integer node pairs, each index in ``[0, N)``, on the device of
            ``edge_index``.

    Returns:
        Tensor: [P] long distances, ``-1`` for pairs in different components.

    Raises:
        TypeError: ``pairs`` is not a tensor, or holds floats or bools.
        ValueError: ``pairs`` is not [2, P], holds an index outside ``[0, N)`` or is on another device.

    Example:
        >>> path = torch.tensor([[0, 1], [1, 2]])
        >>> geodesic_distances(path, 4, torch.tensor([[0, 0, 3], [2, 1, 0]]))
        tensor([ 2,  1, -1])
    """
    num_nodes = check_int("num_nodes", num_nodes, low=1)
    edge_index = check_edge_index(edge_index, num_nodes)
    pairs = _check_pairs(pairs, num_nodes, edge_index.device)
    row, col = undirected_entries(edge_index, num_nodes)
    ptr, col = csr(row, col, num_nodes)
    dist = multi_source_bfs(ptr, col, 1, num_nodes, queries=pairs).query_dist
    return torch.where(pairs[0] == pairs[1], torch.zeros_like(dist), dist)


def _check_pairs(pairs: object, num_nodes: int, device: torch.device) -> Tensor:
    if not isinstance(pairs, Tensor):
        raise TypeError(
            f"`pairs` must be a torch.Tensor [2, P] of node indices, e.g. `torch.tensor(pairs).T` "
            f"(got {type(pairs).__name__})"
        )
    if pairs.dtype == torch.bool or pairs.is_floating_point() or pairs.is_complex():
        raise TypeError(f"`pairs` must hold integer node indices (got dtype {pairs.dtype})")
    if pairs.dim() != 2 or pairs.shape[0] != 2:
        raise ValueError(f"`pairs` must have shape [2, P] (got {tuple(pairs.shape)})")
    if pairs.device != device:
        raise ValueError(f"`pairs` must be on the device of `edge_index` ({device}) (got {pairs.device})")
    pairs = pairs.long()
    if pairs.numel() and (int(pairs.min()) < 0 or int(pairs.max()) >= num_nodes):
        raise ValueError(
            f"`pairs` must hold node indices in [0, {num_nodes}) (got {int(pairs.min())}..{int(pairs.max())})"
        )
    return pairs


def undirected_entries(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Both directions of every distinct edge, self-loops dropped, sorted: (row, col)."""
    a, b = edge_index[0], edge_index[1]
    keep = a != b
    a, b = a[keep], b[keep]
    key = torch.unique(torch.cat([a * num_nodes + b, b * num_nodes + a]))
    return key // num_nodes, key % num_nodes


__all__ = [
    "connected_components",
    "csr",
    "geodesic_distances",
    "geodesic_sums",
    "multi_source_bfs",
    "undirected_entries",
]

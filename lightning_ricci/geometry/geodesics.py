"""Exact all-pairs hop-distance sums on the device, for many graphs at once.

Shape symbols: N nodes per graph, B graphs (layers) sharing the same node set, R = B * N rows,
E directed edge entries.

A multi-source BFS runs from every node of every graph at once. The visited sets are bit-packed: row
``(b, v)`` holds, for every source s, whether v has been reached from s in graph b. One BFS level is a
neighbourhood OR over the CSR adjacency (:class:`~lightning_ricci.geometry._bitset.NeighbourOr`);
newly reached pairs are counted with popcount and summed in int64, so no [N, N] distance matrix is
ever formed. Sources are processed in blocks to bound memory. Distances are symmetric, so the sum over
sources of a row equals the sum over targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_ricci.geometry._bitset import NeighbourOr, pack_rows, popcount_rows
from lightning_ricci.geometry._checks import check_int

# Bytes of bitset state (about six [R, W] arrays) per source block.
_BFS_BYTES = {"cpu": 1 << 28, "cuda": 1 << 31}


@dataclass
class _BfsResult:
    dist_sum: Tensor  # [R] sum of hop distances to reachable nodes
    masked_sums: list[Tensor]  # [R] each: the same sum restricted to a mask
    query_dist: Tensor  # [Q] hop distance of each query pair, -1 if unreachable


def csr(row: Tensor, col: Tensor, num_rows: int) -> tuple[Tensor, Tensor]:
    """CSR (ptr, col) of edges sorted by ``row``."""
    order = torch.argsort(row * num_rows + col)
    counts = torch.bincount(row, minlength=num_rows)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return ptr, col[order]


def connected_components(row: Tensor, col: Tensor, num_nodes: int) -> Tensor:
    """[num_nodes] label of each node's component (its smallest node index); edges both ways."""
    label = torch.arange(num_nodes, device=row.device)
    while True:
        new = label.scatter_reduce(0, row, label[col], reduce="amin")
        new = new[new]
        new = new[new]
        if torch.equal(new, label):
            return label
        label = new


def multi_source_bfs(
    ptr: Tensor,
    col: Tensor,
    num_graphs: int,
    num_nodes: int,
    *,
    masks: list[Tensor] | None = None,
    queries: Tensor | None = None,
    block_words: int | None = None,
) -> _BfsResult:
    """All-sources BFS on ``num_graphs`` graphs over the same ``num_nodes`` nodes.

    Args:
        ptr (Tensor): [R + 1] CSR pointer over rows ``b * num_nodes + v``.
        col (Tensor): [E] neighbour rows (inside the same graph).
        num_graphs (int): B.
        num_nodes (int): N.
        masks (list[Tensor], optional): each [R] long labels; pairs (v, s) count in that mask's sum
            when ``labels[v] == labels[b * N + s]`` for the row's graph b. Default: None.
        queries (Tensor, optional): [2, Q] long (row, target node) pairs whose distance is wanted.
        block_words (int, optional): sources per block / 64. Default: from a memory budget.
    """
    device = ptr.device
    rows = num_graphs * num_nodes
    masks = masks or []
    plan = NeighbourOr(ptr, col)
    total_words = (num_nodes + 63) // 64
    if block_words is None:
        budget = _BFS_BYTES.get(device.type, _BFS_BYTES["cuda"])
        block_words = max(1, budget // (8 * rows * (6 + len(masks))))
    block_words = min(block_words, total_words)
    check_every = 1 if device.type == "cpu" else 4

    dist_sum = torch.zeros(rows, dtype=torch.long, device=device)
    masked_sums = [torch.zeros(rows, dtype=torch.long, device=device) for _ in masks]
    num_q = 0 if queries is None else queries.shape[1]
    query_dist = torch.full((num_q,), -1, dtype=torch.long, device=device)
    graph_of_row = torch.arange(rows, device=device) // num_nodes

    for s0 in range(0, num_nodes, 64 * block_words):
        num_src = min(64 * block_words, num_nodes - s0)
        words = (num_src + 63) // 64
        src_local = torch.arange(num_src, device=device)
        start_rows = (torch.arange(num_graphs, device=device).unsqueeze(1) * num_nodes + s0 + src_local).flatten()
        frontier = pack_rows(start_rows, src_local.repeat(num_graphs), rows, words)
        visited = frontier.clone()
        block_masks = []
        for labels in masks:
            # Row (b, v) keeps the sources s of the block with labels[(b, s)] == labels[(b, v)].
            keyed = labels * num_graphs + graph_of_row
            uniq, inv = torch.unique(keyed[start_rows], return_inverse=True)
            bits = pack_rows(inv, src_local.repeat(num_graphs), uniq.numel(), words)
            pos = torch.searchsorted(uniq, keyed).clamp(max=uniq.numel() - 1)
            hit = uniq[pos] == keyed
            m = bits[pos]
            m[~hit] = 0
            block_masks.append(m)
        if num_q:
            assert queries is not None
            in_block = (queries[1] >= s0) & (queries[1] < s0 + num_src)
            q_idx = in_block.nonzero().squeeze(1)
            q_row = queries[0, q_idx]
            q_off = queries[1, q_idx] - s0
            q_word, q_bit = q_off // 64, q_off % 64
        level = 0
        while True:
            level += 1
            nxt = plan(frontier)
            nxt &= ~visited
            if level % check_every == 0 and not bool(nxt.any()):
                break
            if level > num_nodes:  # only reached after empty levels on devices that check lazily
                break
            visited |= nxt
            dist_sum += level * popcount_rows(nxt)
            for total, m in zip(masked_sums, block_masks):
                total += level * popcount_rows(nxt & m)
            if num_q and q_idx.numel():
                hit = ((nxt[q_row, q_word] >> q_bit) & 1).bool()
                query_dist[q_idx] = torch.where(hit, torch.full_like(q_row, level), query_dist[q_idx])
            frontier = nxt
    return _BfsResult(dist_sum, masked_sums, query_dist)


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
    row, col = _undirected(edge_index, num_nodes)
    ptr, col = csr(row, col, num_nodes)
    per_node = multi_source_bfs(ptr, col, 1, num_nodes).dist_sum
    return per_node.sum() // 2, per_node


def geodesic_distances(edge_index: Tensor, num_nodes: int, pairs: Tensor) -> Tensor:
    """Hop distances of selected node pairs of an undirected, unweighted graph.

    Args:
        edge_index (Tensor): [2, E] long edges (read as undirected).
        num_nodes (int): N.
        pairs (Tensor): [2, P] long node pairs.

    Returns:
        Tensor: [P] long distances, ``-1`` for pairs in different components.

    Example:
        >>> path = torch.tensor([[0, 1], [1, 2]])
        >>> geodesic_distances(path, 4, torch.tensor([[0, 0, 3], [2, 1, 0]]))
        tensor([ 2,  1, -1])
    """
    num_nodes = check_int("num_nodes", num_nodes, low=1)
    if pairs.dim() != 2 or pairs.shape[0] != 2:
        raise ValueError(f"`pairs` must have shape [2, P] (got {tuple(pairs.shape)})")
    row, col = _undirected(edge_index, num_nodes)
    ptr, col = csr(row, col, num_nodes)
    dist = multi_source_bfs(ptr, col, 1, num_nodes, queries=pairs).query_dist
    return torch.where(pairs[0] == pairs[1], torch.zeros_like(dist), dist)


def _undirected(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"`edge_index` must have shape [2, E] (got {tuple(edge_index.shape)})")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(f"`edge_index` must hold node indices in [0, {num_nodes}) (got {edge_index.min()}..{edge_index.max()})")
    a, b = edge_index[0], edge_index[1]
    keep = a != b
    a, b = a[keep], b[keep]
    key = torch.unique(torch.cat([a * num_nodes + b, b * num_nodes + a]))
    return key // num_nodes, key % num_nodes


__all__ = ["geodesic_sums", "geodesic_distances", "connected_components", "multi_source_bfs", "csr"]

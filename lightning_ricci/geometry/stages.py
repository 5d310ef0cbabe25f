"""The stages of :func:`~lightning_ricci.ricci_flow`, shared by both conventions.

Shape symbols: N probe points, L layers, R = L * N nodes of the disjoint union of the layer graphs
(node (l, i) is row ``l * N + i``), E directed kNN edges, U undirected union edges, Q BFS queries.

Each stage is a function from the previous stages' outputs (small frozen dataclasses) to its own. What
the two conventions do differently lives in :mod:`~lightning_ricci.geometry.conventions`, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_ricci.geometry import distributed
from lightning_ricci.geometry.coefficients import pearson
from lightning_ricci.geometry.curvature import CURVATURES, EdgeCurvature, edge_curvature, triangle_counts
from lightning_ricci.geometry.geodesics import connected_components, csr, multi_source_bfs


@dataclass(frozen=True)
class LayerGraphs:
    """The L layer graphs as one disjoint union: directed kNN edges and their undirected union."""

    num_layers: int
    n: int
    src: Tensor  # [E] directed kNN edges src -> dst
    dst: Tensor  # [E]
    a: Tensor  # [U] union edges a < b, sorted by (a, b), so grouped by layer
    b: Tensor  # [U]
    edge_layer: Tensor  # [U] layer of each union edge
    adj_row: Tensor  # [2U] both directions of the union edges
    adj_col: Tensor  # [2U]
    ptr: Tensor  # [R + 1] CSR of the union graph
    col: Tensor  # [2U]
    degree: Tensor  # [R] union degree
    constant: bool  # some layer's points all coincide

    @property
    def rows(self) -> int:
        return self.num_layers * self.n

    def layer_bounds(self) -> list[tuple[int, int]]:
        """(start, stop) of every layer's union edges in ``a`` / ``b``."""
        bounds = torch.bincount(self.edge_layer, minlength=self.num_layers).cumsum(0).tolist()
        return list(zip([0] + bounds[:-1], bounds))


@dataclass(frozen=True)
class Curvatures:
    """The chosen edge curvature on the union edges and the scalar curvature of every node."""

    kappa: Tensor  # [U] float64
    node: Tensor  # [R] float64, mean over incident union edges


@dataclass(frozen=True)
class Components:
    """Connected components of every layer's union graph."""

    label: Tensor  # [R] smallest row of the node's component
    size: Tensor  # [R] size of the node's component
    num_components: Tensor  # [L] long
    all_connected: bool


@dataclass(frozen=True)
class Geodesics:
    """Exact hop-distance sums of all layers, and the distances of the local coefficients' queries."""

    dist_sum: Tensor  # [L, N] long, sum of distances to every reachable node
    sum_next: Tensor  # [L, N] long, the same over nodes in the node's component of the next layer
    sum_prev: Tensor  # [L, N] long, ... of the previous layer
    qa: Tensor  # [Q] layer-t union edges (t < L - 1) measured in layer t + 1
    qb: Tensor  # [Q]
    query_dist: Tensor  # [Q] long, -1 if unreachable


@dataclass(frozen=True)
class Transitions:
    """Per node and transition t -> t+1: the change of summed distances and where infinities arise."""

    delta: Tensor  # [L-1, N] float64 change over pairs connected in both layers
    plus: Tensor  # [L-1, N] bool, some node reachable at t is not at t+1 (+Inf in R)
    minus: Tensor  # [L-1, N] bool, some node reachable at t+1 is not at t (-Inf in R)
    geodesic_sum: Tensor  # [L] float64 sum over unordered connected pairs


def layer_graphs(edges: Sequence[Tensor], n: int, constant: bool) -> LayerGraphs:
    """Stage 1: the disjoint union of the layers' directed kNN graphs ``edges`` ([2, E_l] each)."""
    num_layers = len(edges)
    rows = num_layers * n
    src = torch.cat([e[0] + layer * n for layer, e in enumerate(edges)])
    dst = torch.cat([e[1] + layer * n for layer, e in enumerate(edges)])
    key = torch.unique(torch.minimum(src, dst) * rows + torch.maximum(src, dst))
    a, b = key // rows, key % rows
    adj_row, adj_col = torch.cat([a, b]), torch.cat([b, a])
    ptr, col = csr(adj_row, adj_col, rows)
    return LayerGraphs(
        num_layers, n, src, dst, a, b, a // n, adj_row, adj_col, ptr, col, ptr[1:] - ptr[:-1], constant
    )


def curvatures(graphs: LayerGraphs, kind: EdgeCurvature) -> Curvatures:
    """Stage 2: edge curvature ``kind`` on the union edges, and its mean over each node's edges."""
    n, a, b = graphs.n, graphs.a, graphs.b
    triangles = None
    if CURVATURES[kind].needs_triangles:
        parts = []
        for layer in range(graphs.num_layers):  # one [N, N / 64] adjacency bitset at a time
            edges, entries = graphs.edge_layer == layer, graphs.adj_row // n == layer
            offset = layer * n
            parts.append(
                triangle_counts(
                    a[edges] - offset,
                    b[edges] - offset,
                    graphs.adj_row[entries] - offset,
                    graphs.adj_col[entries] - offset,
                    n,
                )
            )
        triangles = torch.cat(parts)
    kappa = edge_curvature(kind, graphs.degree[a], graphs.degree[b], triangles)
    node = torch.zeros(graphs.rows, dtype=torch.float64, device=a.device)
    node.index_add_(0, a, kappa).index_add_(0, b, kappa)
    node /= graphs.degree.double()
    return Curvatures(kappa, node)


def components(graphs: LayerGraphs) -> Components:
    """Stage 3: connected components of every layer."""
    rows, device = graphs.rows, graphs.a.device
    label = connected_components(graphs.adj_row, graphs.adj_col, rows)
    size = torch.bincount(label, minlength=rows)[label]
    is_root = label == torch.arange(rows, device=device)
    num_components = torch.zeros(graphs.num_layers, dtype=torch.long, device=device).index_add_(
        0, torch.arange(rows, device=device) // graphs.n, is_root.long()
    )
    return Components(label, size, num_components, bool((num_components == 1).all()))


def geodesics(
    graphs: LayerGraphs,
    comps: Components,
    memory_budget: int | None,
    process_group: distributed.Group | None = None,
) -> Geodesics:
    """Stage 4: exact all-sources BFS on all layers at once (sharded over the ranks of ``process_group``).

    The sums are restricted to the node's component in the next and the previous layer (for the pairs
    connected in both layers of a transition) only when some layer is disconnected. Queries: the layer-t
    union edges measured in layer t + 1; hop distances are symmetric, so one query per edge serves both
    of its ends.
    """
    num_layers, n, device = graphs.num_layers, graphs.n, graphs.a.device
    lab = comps.label.view(num_layers, n)
    masks = None
    if not comps.all_connected:
        last = torch.arange(num_layers, device=device).unsqueeze(1) * n
        next_label = torch.cat([lab[1:], last[-1:].expand(1, n)]).flatten()
        prev_label = torch.cat([last[:1].expand(1, n), lab[:-1]]).flatten()
        masks = [next_label, prev_label]
    early = graphs.edge_layer < num_layers - 1
    qa, qb = graphs.a[early], graphs.b[early]
    queries = torch.stack([qa + n, qb % n])
    sources = distributed.shard(n, process_group)
    bfs = multi_source_bfs(
        graphs.ptr,
        graphs.col,
        num_layers,
        n,
        masks=masks,
        queries=queries,
        memory_budget=memory_budget,
        sources=sources,
    )
    dist_sum, masked_sums, query_dist = bfs.dist_sum, bfs.masked_sums, bfs.query_dist
    if process_group is not None:
        dist_sum, *masked_sums = distributed.all_reduce_sum([dist_sum, *masked_sums], process_group)
        query_dist = distributed.all_reduce_max(query_dist, process_group)  # -1 where another rank owns it
    dist_sum = dist_sum.view(num_layers, n)
    if masks is None:
        sum_next, sum_prev = dist_sum, dist_sum
    else:
        sum_next, sum_prev = masked_sums[0].view(num_layers, n), masked_sums[1].view(num_layers, n)
    return Geodesics(dist_sum, sum_next, sum_prev, qa, qb, query_dist)


def transitions(comps: Components, geo: Geodesics) -> Transitions:
    """Stage 5a: per node, the change of summed distances of every transition and its infinities."""
    num_layers, n = geo.dist_sum.shape
    lab = comps.label.view(num_layers, n)
    size = comps.size.view(num_layers, n)
    both = _pair_component_sizes(lab)  # [L-1, N] |comp_t(v) & comp_{t+1}(v)|
    plus = (size[:-1] - both) > 0  # reachable at t, not at t+1: +Inf entries
    minus = (size[1:] - both) > 0  # reachable at t+1, not at t: -Inf entries
    delta = (geo.sum_prev[1:] - geo.sum_next[:-1]).double()
    geodesic_sum = geo.dist_sum.sum(dim=1).double() / 2
    return Transitions(delta, plus, minus, geodesic_sum)


def local_coefficients(graphs: LayerGraphs, curv: Curvatures, geo: Geodesics) -> tuple[Tensor, Tensor]:
    """Stage 6: the local [N] and layer [L - 1] coefficients of Hehl et al. over transitions t = 0..L-2."""
    num_layers, n, rows, device = graphs.num_layers, graphs.n, graphs.rows, graphs.a.device
    q_row = torch.cat([geo.qa, geo.qb])  # both ends of every queried edge, in layer t
    query_dist = geo.query_dist.repeat(2)
    reach = query_dist >= 0
    qsum = torch.zeros(rows, dtype=torch.float64, device=device)
    qsum.index_add_(0, q_row, torch.where(reach, query_dist, 0).double())
    unreachable = torch.zeros(rows, dtype=torch.long, device=device)
    unreachable.index_add_(0, q_row, (~reach).long())
    deg_t = graphs.degree.view(num_layers, n)[:-1].double()
    local_eta = (qsum.view(num_layers, n)[:-1] - deg_t) / deg_t  # [L-1, N]
    valid = unreachable.view(num_layers, n)[:-1] == 0
    scalar = curv.node.view(num_layers, n)[:-1]
    local = pearson(scalar.T, local_eta.T)
    local = torch.where(valid.all(dim=0), local, torch.full_like(local, torch.nan))
    return local, pearson(scalar, local_eta, valid)


def per_layer_edges(graphs: LayerGraphs, kappa: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Stage 7: every layer's union edges ([2, E_l], i < j, local node ids) and their curvature."""
    bounds = graphs.layer_bounds()
    edge_index = tuple(
        torch.stack([graphs.a[s:e], graphs.b[s:e]]) - layer * graphs.n for layer, (s, e) in enumerate(bounds)
    )
    return edge_index, tuple(kappa[s:e] for s, e in bounds)


def _pair_component_sizes(lab: Tensor) -> Tensor:
    """[L-1, N] size of comp_t(v) & comp_{t+1}(v), from component labels [L, N]."""
    num_layers, n = lab.shape
    stride = num_layers * n
    pair = lab[:-1] * stride + lab[1:]
    _, inv, counts = torch.unique(pair.flatten(), return_inverse=True, return_counts=True)
    sizes: Tensor = counts[inv].view(num_layers - 1, n)
    return sizes

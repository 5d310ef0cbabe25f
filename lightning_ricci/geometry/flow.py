"""``ricci_flow``: every Ricci-flow quantity of one network, all layers in one batched computation.

Shape symbols: N probe points, L layers, R = L * N nodes of the disjoint union of the layer graphs,
E directed kNN edges, U undirected union edges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_ricci.geometry._checks import check_choice, check_int, check_layers
from lightning_ricci.geometry.coefficients import pearson
from lightning_ricci.geometry.curvature import EDGE_CURVATURES, edge_curvature, triangle_counts
from lightning_ricci.geometry.geodesics import connected_components, csr, multi_source_bfs
from lightning_ricci.geometry.knn import KNN_BACKENDS, KnnBackend, knn_edges
from lightning_ricci.geometry.result import Convention, CurvatureKind, RicciFlowResult

CONVENTIONS = ("baptista", "hehl")


def ricci_flow(
    layers: Sequence[Tensor],
    k: int,
    *,
    convention: Convention = "baptista",
    curvature: CurvatureKind = "forman",
    knn_backend: KnnBackend = "auto",
    memory_budget: int | None = None,
) -> RicciFlowResult:
    """Ricci-flow diagnostics of a network from the activations of its layers on N probe points.

    ``convention="baptista"`` reproduces the R code of Baptista et al. (2024): directed kNN graphs that
    keep every point tied at the k-th distance, Forman curvature with in+out degree summed over directed
    edges, hop distances on the union graph summed over ordered pairs with R's infinity rules, the
    network excluded when connectivity changes between consecutive layers, and the shifted pairing over
    hidden layers: ``coefficient = pearson(curvature[1:-1], eta[1:])``. ``layers[0]`` (the input) only
    enters through the first geodesic change and the exclusion rule.

    ``convention="hehl"`` reproduces Hehl et al. (2025): exactly k neighbours, union graph, and
    ``coefficient = pearson(curvature[:-1], eta)`` over all given layers (list the output layer last),
    ``nan`` when any layer graph is disconnected.

    Both conventions also return the local and layer coefficients of Hehl et al. on the convention's
    union graphs, with the edge curvature chosen by ``curvature``; the global coefficient always uses
    Forman curvature, as both papers do.

    Degenerate but valid data gives ``nan`` rather than an error: a layer whose points all coincide
    (its graph is the complete graph) sets ``excluded``; fewer than two layer pairs, or a constant
    series, leave a correlation undefined.

    Args:
        layers (Sequence[Tensor]): L >= 3 float32/float64 tensors [N, ...], the same N points in every
            layer (trailing dimensions are flattened): the network input, then the layers after each
            nonlinearity.
        k (int): neighbours per point, ``1 <= k < N``.
        convention (str): ``"baptista"`` or ``"hehl"``. Default: ``"baptista"``.
        curvature (str): edge curvature of the local and layer coefficients: ``"forman"``,
            ``"augmented_forman"`` or ``"approx_ollivier"``. Default: ``"forman"``.
        knn_backend (str): ``"auto"``/``"gemm"`` (exact blocked GEMM) or ``"torch_cluster"``
            (exactly k neighbours in the library's tie order: with ``"baptista"`` it matches R only on
            data without ties at the k-th distance). Default: ``"auto"``.
        memory_budget (int, optional): bytes of scratch memory for one block of kNN distances and for
            the BFS bitsets of one block of sources; lower it to trade speed for memory (results do not
            change). Default: 256 MiB on the CPU, 2 GiB on CUDA.

    Returns:
        RicciFlowResult: the coefficients and per-layer quantities, on the device of ``layers``.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> x = torch.randn(200, 8)
        >>> h1 = torch.relu(x @ torch.randn(8, 16)); h2 = torch.relu(h1 @ torch.randn(16, 16))
        >>> h3 = torch.relu(h2 @ torch.randn(16, 16))
        >>> result = ricci_flow([x, h1, h2, h3], k=10)
        >>> result.curvature.shape, result.eta.shape, result.local.shape
        (torch.Size([4]), torch.Size([3]), torch.Size([200]))
    """
    flat = check_layers(layers)
    n = flat[0].shape[0]
    k = check_int("k", k, low=1, high=n)
    check_choice("convention", convention, CONVENTIONS)
    check_choice("curvature", curvature, EDGE_CURVATURES)
    check_choice("knn_backend", knn_backend, KNN_BACKENDS)
    if memory_budget is not None:
        memory_budget = check_int("memory_budget", memory_budget, low=1 << 16)
    with torch.no_grad():
        return _ricci_flow(flat, k, convention, curvature, knn_backend, memory_budget)


def _ricci_flow(
    flat: list[Tensor],
    k: int,
    convention: Convention,
    curvature: CurvatureKind,
    knn_backend: KnnBackend,
    memory_budget: int | None,
) -> RicciFlowResult:
    num_layers, n = len(flat), flat[0].shape[0]
    device = flat[0].device
    rows = num_layers * n
    baptista = convention == "baptista"

    # 1. kNN graphs of all layers as one disjoint union: node (l, i) is row l * n + i.
    src_parts, dst_parts, constant = [], [], False
    for layer, x in enumerate(flat):
        edges, const = knn_edges(x, k, keep_ties=baptista, backend=knn_backend, memory_budget=memory_budget)
        src_parts.append(edges[0] + layer * n)
        dst_parts.append(edges[1] + layer * n)
        constant |= const
    src, dst = torch.cat(src_parts), torch.cat(dst_parts)

    # 2. Union graph (undirected edges a < b), CSR adjacency, degrees.
    key = torch.unique(torch.minimum(src, dst) * rows + torch.maximum(src, dst))
    a, b = key // rows, key % rows
    edge_layer = a // n
    adj_row, adj_col = torch.cat([a, b]), torch.cat([b, a])
    ptr, col = csr(adj_row, adj_col, rows)
    degree = ptr[1:] - ptr[:-1]

    # 3. Total Forman curvature per layer.
    totals = torch.zeros(num_layers, dtype=torch.float64, device=device)
    if baptista:
        dir_degree = torch.bincount(src, minlength=rows) + torch.bincount(dst, minlength=rows)
        totals.index_add_(0, src // n, (4 - dir_degree[src] - dir_degree[dst]).double())
    else:
        totals.index_add_(0, edge_layer, (4 - degree[a] - degree[b]).double())

    # 4. Chosen edge curvature on the union edges and the scalar curvature of every node.
    triangles = None
    if curvature != "forman":
        parts = []
        for layer in range(num_layers):  # one [N, N / 64] adjacency bitset at a time
            edges, entries = edge_layer == layer, adj_row // n == layer
            offset = layer * n
            parts.append(
                triangle_counts(a[edges] - offset, b[edges] - offset, adj_row[entries] - offset, adj_col[entries] - offset, n)
            )
        triangles = torch.cat(parts)
    kappa = edge_curvature(curvature, degree[a], degree[b], triangles)
    node_curv = torch.zeros(rows, dtype=torch.float64, device=device)
    node_curv.index_add_(0, a, kappa).index_add_(0, b, kappa)
    node_curv /= degree.double()

    # 5. Connected components; pairs that change connectivity between consecutive layers.
    label = connected_components(adj_row, adj_col, rows)
    comp_size = torch.bincount(label, minlength=rows)[label]
    is_root = label == torch.arange(rows, device=device)
    num_components = torch.zeros(num_layers, dtype=torch.long, device=device).index_add_(
        0, torch.arange(rows, device=device) // n, is_root.long()
    )
    all_connected = bool((num_components == 1).all())

    # 6. Exact all-sources BFS on all layers at once. Queries: layer-t union edges measured in layer t+1.
    lab = label.view(num_layers, n)
    masks = None
    if not all_connected:
        last = torch.arange(num_layers, device=device).unsqueeze(1) * n
        next_label = torch.cat([lab[1:], last[-1:].expand(1, n)]).flatten()
        prev_label = torch.cat([last[:1].expand(1, n), lab[:-1]]).flatten()
        masks = [next_label, prev_label]
    # Hop distances are symmetric: one query per edge, credited to both of its ends below.
    early = edge_layer < num_layers - 1
    qa, qb = a[early], b[early]
    queries = torch.stack([qa + n, qb % n])
    bfs = multi_source_bfs(ptr, col, num_layers, n, masks=masks, queries=queries, memory_budget=memory_budget)
    dist_sum = bfs.dist_sum.view(num_layers, n)
    if masks is None:
        sum_next, sum_prev = dist_sum, dist_sum
    else:
        sum_next = bfs.masked_sums[0].view(num_layers, n)
        sum_prev = bfs.masked_sums[1].view(num_layers, n)

    # 7. Geodesic change per transition t -> t+1, per node, under R's rules and over connected pairs.
    size = comp_size.view(num_layers, n)
    both = _pair_component_sizes(lab)  # [L-1, N] |comp_t(v) & comp_{t+1}(v)|
    plus = (size[:-1] - both) > 0  # reachable at t, not at t+1: +Inf entries
    minus = (size[1:] - both) > 0  # reachable at t+1, not at t: -Inf entries
    delta = (sum_prev[1:] - sum_next[:-1]).double()
    mixed = plus & minus
    geodesic_sum = dist_sum.sum(dim=1).double() / 2
    if baptista:
        # R's per-node sums: +Inf, -Inf, or finite; rows with both infinities are NaN and dropped (keep).
        row_val = torch.where(plus, torch.inf, torch.where(minus, -torch.inf, delta))
        keep = ~mixed
        eta = torch.where(keep, row_val, torch.zeros_like(row_val)).sum(dim=1)
        eta = torch.where(keep.any(dim=1), eta, torch.full_like(eta, torch.nan))
        # Equal to eta wherever eta is finite (R drops the NaN rows); elsewhere every connected pair.
        trimmed = torch.where(keep, delta, torch.zeros_like(delta)).sum(dim=1)
        eta_connected = torch.where(torch.isfinite(eta), trimmed, delta.sum(dim=1))
        excluded = bool(torch.isinf(eta).any())
        curv_x = totals[1:-1]
        eta_y, eta_c_y = eta[1:], eta_connected[1:]
    else:
        g = torch.where(num_components == 1, geodesic_sum, torch.full_like(geodesic_sum, torch.inf))
        eta = g[1:] - g[:-1]
        eta_connected = delta.sum(dim=1) / 2
        excluded = not all_connected
        curv_x, eta_y, eta_c_y = totals[:-1], eta, eta_connected
    excluded |= constant
    defined = ~torch.isnan(eta_y)
    coefficient = math.nan if excluded else float(pearson(curv_x, eta_y, defined))
    # Where the paper's value is defined, use its transitions (so the two agree); elsewhere use them all.
    connected_mask = defined if math.isfinite(coefficient) else torch.ones_like(defined)
    coefficient_connected = float(pearson(curv_x, eta_c_y, connected_mask))

    # 8. Local and layer coefficients (Hehl et al.) over transitions t = 0..L-2.
    q_row = torch.cat([qa, qb])  # both ends of every queried edge, in layer t
    query_dist = bfs.query_dist.repeat(2)
    reach = query_dist >= 0
    qsum = torch.zeros(rows, dtype=torch.float64, device=device)
    qsum.index_add_(0, q_row, torch.where(reach, query_dist, 0).double())
    unreachable = torch.zeros(rows, dtype=torch.long, device=device)
    unreachable.index_add_(0, q_row, (~reach).long())
    deg_t = degree.view(num_layers, n)[:-1].double()
    local_eta = (qsum.view(num_layers, n)[:-1] - deg_t) / deg_t  # [L-1, N]
    valid = unreachable.view(num_layers, n)[:-1] == 0
    scalar = node_curv.view(num_layers, n)[:-1]
    local = pearson(scalar.T, local_eta.T)
    local = torch.where(valid.all(dim=0), local, torch.full_like(local, torch.nan))
    layer_coef = pearson(scalar, local_eta, valid)

    bounds = torch.bincount(edge_layer, minlength=num_layers).cumsum(0).tolist()
    starts = [0] + bounds[:-1]
    edge_index = tuple(
        torch.stack([a[s:e], b[s:e]]) - layer * n for layer, (s, e) in enumerate(zip(starts, bounds))
    )
    edge_curv = tuple(kappa[s:e] for s, e in zip(starts, bounds))
    return RicciFlowResult(
        coefficient=coefficient,
        coefficient_connected=coefficient_connected,
        excluded=excluded,
        curvature=totals,
        eta=eta,
        eta_connected=eta_connected,
        geodesic_sum=geodesic_sum,
        num_components=num_components,
        local=local,
        layer=layer_coef,
        node_curvature=node_curv.view(num_layers, n),
        edge_index=edge_index,
        edge_curvature=edge_curv,
        k=k,
        convention=convention,
        curvature_kind=curvature,
    )


def _pair_component_sizes(lab: Tensor) -> Tensor:
    """[L-1, N] size of comp_t(v) & comp_{t+1}(v), from component labels [L, N]."""
    num_layers, n = lab.shape
    stride = num_layers * n
    pair = lab[:-1] * stride + lab[1:]
    _, inv, counts = torch.unique(pair.flatten(), return_inverse=True, return_counts=True)
    sizes: Tensor = counts[inv].view(num_layers - 1, n)
    return sizes

"""``ricci_flow``: every Ricci-flow quantity of one network, all layers in one batched computation.

Shape symbols: N probe points, L layers, R = L * N nodes of the disjoint union of the layer graphs,
E directed kNN edges, K values of k in a scan.

The computation is a fixed sequence of stages (:mod:`~lightning_ricci.geometry.stages`): kNN graphs,
union graphs, curvature, components, geodesics, coefficients, class structure. What the conventions do
differently is read from their :class:`~lightning_ricci.geometry.conventions.ConventionSpec`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import torch
from torch import Tensor

from lightning_ricci.geometry import distributed, stages
from lightning_ricci.geometry._checks import check_choice, check_int, check_labels, check_layers
from lightning_ricci.geometry.coefficients import pearson
from lightning_ricci.geometry.community import class_structure_batched
from lightning_ricci.geometry.conventions import CONVENTION_SPECS, CONVENTIONS, Convention, ConventionSpec
from lightning_ricci.geometry.curvature import EDGE_CURVATURES
from lightning_ricci.geometry.knn import KNN_BACKENDS, KnnBackend, knn_edges_scan
from lightning_ricci.geometry.result import CurvatureKind, RicciFlowResult, RicciFlowScan

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["CONVENTIONS", "ricci_flow"]


@overload
def ricci_flow(
    layers: Sequence[Tensor],
    k: int,
    *,
    convention: Convention = ...,
    curvature: CurvatureKind = ...,
    knn_backend: KnnBackend = ...,
    memory_budget: int | None = ...,
    labels: Tensor | None = ...,
    process_group: ProcessGroup | None = ...,
) -> RicciFlowResult: ...


@overload
def ricci_flow(
    layers: Sequence[Tensor],
    k: Sequence[int],
    *,
    convention: Convention = ...,
    curvature: CurvatureKind = ...,
    knn_backend: KnnBackend = ...,
    memory_budget: int | None = ...,
    labels: Tensor | None = ...,
    process_group: ProcessGroup | None = ...,
) -> RicciFlowScan: ...


def ricci_flow(
    layers: Sequence[Tensor],
    k: int | Sequence[int],
    *,
    convention: Convention = "baptista",
    curvature: CurvatureKind = "forman",
    knn_backend: KnnBackend = "auto",
    memory_budget: int | None = None,
    labels: Tensor | None = None,
    process_group: ProcessGroup | None = None,
) -> RicciFlowResult | RicciFlowScan:
    """Ricci-flow diagnostics of a network from the activations of its layers on N probe points.

    ``convention="baptista"`` reproduces the R code of Baptista et al. (2024): directed kNN graphs that
    keep every point tied at the k-th distance, Forman curvature with in+out degree summed over directed
    edges, hop distances on the union graph summed over ordered pairs with R's infinity rules, the
    network excluded when connectivity changes between consecutive layers, and the shifted pairing over
    hidden layers: ``coefficient = pearson(total_curvature[1:-1], eta[1:])``. ``layers[0]`` (the input)
    only enters through the first geodesic change and the exclusion rule.

    ``convention="hehl"`` reproduces Hehl et al. (2025): exactly k neighbours, union graph, and
    ``coefficient = pearson(total_curvature[:-1], eta)`` over all given layers (list the output layer
    last), ``nan`` when any layer graph is disconnected.

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
        k (int or Sequence[int]): neighbours per point, ``1 <= k < N``. A sequence of values scans k:
            the kNN search runs once, for the largest k, and every smaller k's graph is read off it
            (the same graph as a call with that k alone, ties included); a
            :class:`~lightning_ricci.RicciFlowScan` is returned.
        convention (str): ``"baptista"`` or ``"hehl"``. Default: ``"baptista"``.
        curvature (str): edge curvature of the local and layer coefficients and the curvature gap:
            ``"forman"``, ``"augmented_forman"`` or ``"approx_ollivier"``. Default: ``"forman"``.
        knn_backend (str): ``"auto"``/``"gemm"`` (exact blocked GEMM) or ``"torch_cluster"``
            (exactly k neighbours in the library's tie order: with ``"baptista"`` it matches R only on
            data without ties at the k-th distance). Default: ``"auto"``.
        memory_budget (int, optional): bytes of scratch memory for one block of kNN distances and for
            the BFS bitsets of one block of sources; lower it to trade speed for memory (results do not
            change). Default: 256 MiB on the CPU, 2 GiB on CUDA.
        labels (Tensor, optional): [N] integer class ids (any number of classes) of the probe points, on
            the device of ``layers``. Adds ``class_modularity``, ``class_normalized_cut``,
            ``class_mixing`` and ``curvature_gap`` per layer, on each layer's union graph. Default: None.
        process_group (ProcessGroup, optional): a ``torch.distributed`` group (e.g.
            ``torch.distributed.group.WORLD``) whose ranks share the work; every rank of the group must
            make the same call on the same data, and every rank returns the same result, equal to the
            single-process one. Every layer's kNN query rows and the BFS sources are split between
            the ranks. ``None``: this process alone, whether or not torch.distributed is initialised.
            Default: None.

    Returns:
        RicciFlowResult or RicciFlowScan: the coefficients and per-layer quantities, on the device of
        ``layers`` (a scan: one result per k, plus the coefficients across k).

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> x = torch.randn(200, 8)
        >>> h1 = torch.relu(x @ torch.randn(8, 16)); h2 = torch.relu(h1 @ torch.randn(16, 16))
        >>> result = ricci_flow([x, h1, h2, torch.relu(h2 @ torch.randn(16, 16))], k=10)
        >>> result.total_curvature.shape, result.eta.shape, result.local.shape
        (torch.Size([4]), torch.Size([3]), torch.Size([200]))
        >>> ricci_flow([x, h1, h2, h2], k=[5, 10]).ks
        [5, 10]
    """
    flat = check_layers(layers)
    n = flat[0].shape[0]
    scan = _is_sequence(k)
    if scan:
        assert not isinstance(k, int)
        ks = _check_ks(k, n)
    else:
        ks = [check_int("k", k, low=1, high=n)]
    check_choice("convention", convention, CONVENTIONS)
    check_choice("curvature", curvature, EDGE_CURVATURES)
    check_choice("knn_backend", knn_backend, KNN_BACKENDS)
    if memory_budget is not None:
        memory_budget = check_int("memory_budget", memory_budget, low=1 << 16)
    if labels is not None:
        labels = check_labels(labels, n, flat[0].device)
    group = distributed.check_group(process_group)
    if group is not None:
        options = (
            CONVENTIONS.index(convention),
            EDGE_CURVATURES.index(curvature),
            KNN_BACKENDS.index(knn_backend),
        )
        dims = [x.shape[1] for x in flat]
        distributed.check_same_call(
            [n, len(flat), sum(dims), max(dims), len(ks), sum(ks), max(ks), *options, labels is None],
            group,
            flat[0].device,
        )
    spec = CONVENTION_SPECS[convention]
    with torch.no_grad():
        results = _ricci_flow(flat, ks, spec, curvature, knn_backend, memory_budget, labels, group)
    if not scan:
        return results[0]
    return RicciFlowScan.from_results(ks, results)


def _is_sequence(k: Any) -> bool:
    if isinstance(k, (str, bytes)):
        return False
    if isinstance(k, Sequence):
        return True
    return getattr(k, "ndim", 0) == 1  # a 1-D tensor or NumPy array


def _check_ks(k: Any, n: int) -> list[int]:
    values = [check_int(f"k[{i}]", v, low=1, high=n) for i, v in enumerate(k)]
    if not values:
        raise ValueError("`k` must hold at least one value when it is a sequence (got an empty sequence)")
    return values


def _ricci_flow(
    flat: list[Tensor],
    ks: list[int],
    spec: ConventionSpec,
    curvature: CurvatureKind,
    knn_backend: KnnBackend,
    memory_budget: int | None,
    labels: Tensor | None,
    group: distributed.Group | None,
) -> list[RicciFlowResult]:
    """One result per k in ``ks``: the kNN graphs of every k, then the stages of one measurement each."""
    n = flat[0].shape[0]
    graphs_per_k = _knn_graphs(flat, ks, spec, knn_backend, memory_budget, group)
    done: dict[int, RicciFlowResult] = {}
    for k in ks:
        if k not in done:
            edges, constant = graphs_per_k[k]
            done[k] = _measure(edges, constant, n, k, spec, curvature, memory_budget, labels, group)
    return [done[k] for k in ks]


def _measure(
    edges: list[Tensor],
    constant: bool,
    n: int,
    k: int,
    spec: ConventionSpec,
    curvature: CurvatureKind,
    memory_budget: int | None,
    labels: Tensor | None,
    group: distributed.Group | None,
) -> RicciFlowResult:
    """Every quantity of one k from the layers' directed kNN graphs ``edges``."""
    graphs = stages.layer_graphs(edges, n, constant)
    totals = spec.forman_totals(graphs)
    curv = stages.curvatures(graphs, curvature)
    comps = stages.components(graphs)
    geo = stages.geodesics(graphs, comps, memory_budget, group)
    trans = stages.transitions(comps, geo)
    change = spec.geodesic_change(trans, comps)
    excluded = change.excluded or graphs.constant
    coefficient, coefficient_connected = _global_coefficients(
        totals, change.eta, change.eta_connected, spec, excluded
    )
    local, layer_coefficient = stages.local_coefficients(graphs, curv, geo)
    edge_index, edge_curv = stages.per_layer_edges(graphs, curv.kappa)
    classes = _class_structure(graphs, curv.kappa, labels) if labels is not None else {}
    return RicciFlowResult(
        coefficient=coefficient,
        coefficient_connected=coefficient_connected,
        excluded=excluded,
        total_curvature=totals,
        eta=change.eta,
        eta_connected=change.eta_connected,
        geodesic_sum=trans.geodesic_sum,
        num_components=comps.num_components,
        local=local,
        layer_coefficient=layer_coefficient,
        node_curvature=curv.node.view(graphs.num_layers, n),
        edge_index=edge_index,
        edge_curvature=edge_curv,
        k=k,
        convention=spec.name,
        curvature_kind=curvature,
        **classes,
    )


def _global_coefficients(
    totals: Tensor, eta: Tensor, eta_connected: Tensor, spec: ConventionSpec, excluded: bool
) -> tuple[float, float]:
    """The paper's coefficient (``nan`` when excluded) and the connected-pairs one, on the spec's pairs."""
    curv_x, eta_y, eta_c_y = totals[spec.curvature_pairs], eta[spec.eta_pairs], eta_connected[spec.eta_pairs]
    defined = ~torch.isnan(eta_y)
    coefficient = math.nan if excluded else float(pearson(curv_x, eta_y, defined))
    # Where the paper's value is defined, use its transitions (so the two agree); elsewhere use them all.
    connected_mask = defined if math.isfinite(coefficient) else torch.ones_like(defined)
    return coefficient, float(pearson(curv_x, eta_c_y, connected_mask))


def _class_structure(graphs: stages.LayerGraphs, kappa: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Stage 8: the four class-structure fields, [L] float64 each, on every layer's union graph."""
    union = torch.stack([graphs.a, graphs.b])  # each undirected edge once, node (l, i) = l * N + i
    return class_structure_batched(union, graphs.num_layers, graphs.n, labels, kappa)


def _knn_graphs(
    flat: list[Tensor],
    ks: list[int],
    spec: ConventionSpec,
    knn_backend: KnnBackend,
    memory_budget: int | None,
    group: distributed.Group | None,
) -> dict[int, tuple[list[Tensor], bool]]:
    """Every layer's directed kNN graph for every k in ``ks``: (edges per layer, some layer constant).

    The exact backend estimates each layer's distances once, for the largest k, and decides every k on
    those candidates (:func:`~lightning_ricci.geometry.knn.knn_edges_scan`); under ``group`` every rank
    searches its share of each layer's query rows. torch-cluster searches each k, one rank per layer (its
    tie order may depend on the query set).
    """
    distinct = sorted(set(ks))
    if knn_backend == "torch_cluster":
        per_layer = _knn_whole_layers(flat, distinct, spec, knn_backend, memory_budget, group)
    else:
        per_layer = _knn_row_shards(flat, distinct, spec, knn_backend, memory_budget, group)
    return {
        k: ([layer[i][0] for layer in per_layer], any(layer[i][1] for layer in per_layer))
        for i, k in enumerate(distinct)
    }


def _knn_row_shards(
    flat: list[Tensor],
    ks: list[int],
    spec: ConventionSpec,
    knn_backend: KnnBackend,
    memory_budget: int | None,
    group: distributed.Group | None,
) -> list[list[tuple[Tensor, bool]]]:
    """Stage 0 (exact backend): per layer, per k of ``ks``, (edges, all points coincide); each rank of
    ``group`` searches a contiguous share of the query rows, and the shares are gathered in rank order
    (the edges are sorted by source, so that is the whole graph). The keep-ties edge budget is checked
    on the count summed over the ranks, as one process would."""
    rows = distributed.shard(flat[0].shape[0], group)
    count = None if group is None else (lambda c: distributed.all_reduce_count(c, group, flat[0].device))
    local = [
        knn_edges_scan(
            x,
            ks,
            keep_ties=spec.keep_ties,
            backend=knn_backend,
            memory_budget=memory_budget,
            rows=rows,
            _count_edges=count,
        )
        for x in flat
    ]
    if group is None:
        return local
    gathered = distributed.gather_row_shards(
        [part for layer in local for part in layer], group, flat[0].device
    )
    return [gathered[layer * len(ks) : (layer + 1) * len(ks)] for layer in range(len(flat))]


def _knn_whole_layers(
    flat: list[Tensor],
    ks: list[int],
    spec: ConventionSpec,
    knn_backend: KnnBackend,
    memory_budget: int | None,
    group: distributed.Group | None,
) -> list[list[tuple[Tensor, bool]]]:
    """Stage 0 (torch-cluster): every layer's graphs for every k, each layer computed by one rank."""
    n = flat[0].shape[0]
    rank, size = distributed.rank_and_size(group)
    owners = distributed.layer_owners([float(n) * n * x.shape[1] for x in flat], size)
    local = {
        layer: knn_edges_scan(
            x, ks, keep_ties=spec.keep_ties, backend=knn_backend, memory_budget=memory_budget
        )
        for layer, x in enumerate(flat)
        if owners[layer] == rank
    }
    if group is None:
        return [local[layer] for layer in range(len(flat))]
    shared = [
        distributed.share_layers(
            {layer: (*graphs[i], None) for layer, graphs in local.items()},
            owners,
            group,
            flat[0].device,
            False,
        )
        for i in range(len(ks))
    ]
    return [
        [(shared[i][layer][0], shared[i][layer][1]) for i in range(len(ks))] for layer in range(len(flat))
    ]

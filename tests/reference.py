"""Independent dense numpy/scipy reference for :func:`lightning_ricci.ricci_flow`.

Written from the semantics of the authors' code (Baptista et al.'s R script, Hehl et al.'s Python) only;
it does not import ``lightning_ricci``.
Clarity over speed: every quantity is computed on dense [N, N] matrices, so keep N <= ~300.

Shape symbols: N points, D features, L layers (``len(layers)``, the input included).

Conventions
-----------
``"baptista"`` (R code of Baptista et al.):
    * kNN graph = ``cccd::nng``: directed edge i->j for every j != i with dist(i, j) <= r_k(i), the k-th
      smallest distance from i to the other points. All ties at the k-th distance are kept.
    * Ric_l = sum over directed edges i->j of 4 - D(i) - D(j), D = in-degree + out-degree.
    * Geodesics = hop counts on the undirected union graph (``igraph::distances``), Inf between
      components. Per node Delta(i) = ``sum(gamma_next[i, ] - gamma_prev[i, ], na.rm=TRUE)`` with R
      arithmetic; eta = sum of the non-NaN Delta(i) (``aggregate`` with ``na.omit``).
    * Network excluded if for any transition (input -> h_1 included) the mean of the non-NaN Delta(i)
      is +-Inf.
    * coefficient = Pearson(Ric_1..Ric_{L-2}, eta_{1->2}..eta_{L-2->L-1}) ("layer skip" pairing,
      hidden layers only), transitions with NaN eta dropped (``cor.test`` uses complete cases).
``"hehl"`` (Python code of Hehl et al.):
    * kNN graph = ``sklearn.neighbors.kneighbors_graph(X, k, include_self=False)``, symmetrised by union.
    * Ric_l = sum over undirected edges of 4 - d(x) - d(y).
    * eta_l = g_{l+1} - g_l, g_l = sum over unordered pairs of hop distances (numpy arithmetic).
    * coefficient = Pearson(Ric_0..Ric_{L-2}, eta_0..eta_{L-2}); nan (excluded) if any graph is
      disconnected.
Both: a layer whose points all coincide has the complete graph and excludes the network.

Local / layer coefficients (Hehl et al.) use the convention's undirected union graph and the
chosen edge curvature (forman, augmented_forman, approx_ollivier) for every transition t = 0..L-2.

One choice the R script leaves open: if *every* per-node Delta(i) of a transition is NaN, R's
``aggregate`` drops that (layer, model) group altogether; here that transition's ``eta`` is NaN
(missing), and the mean used by the exclusion rule is NaN too (so it does not exclude).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, shortest_path
from scipy.spatial.distance import cdist
from scipy.stats import pearsonr

CONVENTIONS = ("baptista", "hehl")
CURVATURES = ("forman", "augmented_forman", "approx_ollivier")


# --------------------------------------------------------------------------------------------------
# Pearson
# --------------------------------------------------------------------------------------------------
def pearson(x: Any, y: Any) -> float:
    """Float64 Pearson correlation; nan for fewer than 2 points, a constant or a non-finite series."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {x.shape} vs {y.shape}")
    if x.size < 2:
        return float("nan")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    # scipy.stats.pearsonr's own test for a constant input: exact equality with the first element.
    if (x == x[0]).all() or (y == y[0]).all():
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(pearsonr(x, y)[0])


def pearson_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Column-wise :func:`pearson` of two [T, M] arrays -> [M] (same guards, scipy's vectorised pearsonr)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    out = np.full(x.shape[1], np.nan)
    if x.shape[0] < 2:
        return out
    ok = (
        np.isfinite(x).all(axis=0)
        & np.isfinite(y).all(axis=0)
        & ~(x == x[:1]).all(axis=0)
        & ~(y == y[:1]).all(axis=0)
    )
    if ok.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[ok] = pearsonr(x[:, ok], y[:, ok], axis=0)[0]
    return out


# --------------------------------------------------------------------------------------------------
# Graphs
# --------------------------------------------------------------------------------------------------
def as_2d_float64(x: Any) -> np.ndarray:
    """[N, ...] array-like -> [N, D] float64 (float32 values are converted exactly)."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float64)


def is_constant_layer(x: np.ndarray) -> bool:
    """True when all N points coincide."""
    return bool((x == x[0]).all())


def knn_directed_with_ties(x: np.ndarray, k: int) -> np.ndarray:
    """[B] ``cccd::nng``: [N, N] bool, A[i, j] = edge i->j, every tie at the k-th distance kept."""
    x = as_2d_float64(x)
    n = x.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, N-1] (got k={k}, N={n})")
    dist = cdist(x, x, metric="euclidean")
    np.fill_diagonal(dist, np.inf)  # j != i
    r_k = np.sort(dist, axis=1)[:, k - 1]  # k-th smallest distance to the other points
    adj = dist <= r_k[:, None]
    np.fill_diagonal(adj, False)
    return adj


def knn_sklearn_directed(x: np.ndarray, k: int) -> np.ndarray:
    """[H] ``kneighbors_graph(X, k, include_self=False)`` as [N, N] bool (complete graph if constant)."""
    from sklearn.neighbors import kneighbors_graph
    from threadpoolctl import threadpool_limits

    x = as_2d_float64(x)
    n = x.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, N-1] (got k={k}, N={n})")
    if is_constant_layer(x):
        adj = np.ones((n, n), dtype=bool)
        np.fill_diagonal(adj, False)
        return adj
    with threadpool_limits(limits=1):  # small problems: avoid oversubscribing the CPU
        a = kneighbors_graph(x, k, mode="connectivity", include_self=False)
    adj = a.toarray() > 0
    np.fill_diagonal(adj, False)
    return adj


def directed_graph(x: np.ndarray, k: int, convention: str) -> np.ndarray:
    """The convention's directed kNN adjacency [N, N] bool."""
    if convention == "baptista":
        return knn_directed_with_ties(x, k)
    if convention == "hehl":
        return knn_sklearn_directed(x, k)
    raise ValueError(f"unknown convention {convention!r}")


def union_graph(adj: np.ndarray) -> np.ndarray:
    """Undirected union ``A or A^T`` as a symmetric [N, N] bool matrix."""
    return adj | adj.T


def hop_distances(sym_adj: np.ndarray) -> np.ndarray:
    """[N, N] float64 unweighted shortest-path lengths on an undirected graph, inf between components."""
    graph = csr_matrix(sym_adj.astype(np.float64))
    return shortest_path(graph, method="D", directed=False, unweighted=True)


def num_components(sym_adj: np.ndarray) -> int:
    n_comp, _ = connected_components(csr_matrix(sym_adj.astype(np.int8)), directed=False)
    return int(n_comp)


# --------------------------------------------------------------------------------------------------
# Curvatures
# --------------------------------------------------------------------------------------------------
def forman_total_directed(adj: np.ndarray) -> float:
    """[B] Ric = sum over directed edges i->j of 4 - D(i) - D(j), D = in + out degree."""
    a = adj.astype(np.int64)
    deg = a.sum(axis=0) + a.sum(axis=1)
    i, j = np.nonzero(adj)
    return float(np.sum(4 - deg[i] - deg[j]))


def forman_total_undirected(sym_adj: np.ndarray) -> float:
    """[H] Ric = sum over undirected edges {x, y} (each once) of 4 - d(x) - d(y)."""
    deg = sym_adj.astype(np.int64).sum(axis=1)
    i, j = np.nonzero(np.triu(sym_adj, 1))
    return float(np.sum(4 - deg[i] - deg[j]))


def edge_curvature_matrix(sym_adj: np.ndarray, kind: str) -> np.ndarray:
    """Dense symmetric [N, N] float64 edge curvature on an undirected graph; 0 off the edges."""
    if kind not in CURVATURES:
        raise ValueError(f"unknown curvature {kind!r}")
    deg = sym_adj.sum(axis=1).astype(np.float64)
    i, j = np.nonzero(sym_adj)  # both orientations of every edge
    dx, dy = deg[i], deg[j]
    af = sym_adj.astype(np.float64)
    tri = (af[i] * af[j]).sum(axis=1)  # number of common neighbours T(x, y) = (A^2)_xy
    if kind == "forman":
        kappa = 4.0 - dx - dy
    elif kind == "augmented_forman":
        kappa = 4.0 - dx - dy + 3.0 * tri
    else:  # approx_ollivier (Tian et al.), computed in float64 and stored as float32 like the authors
        lo = np.minimum(dx, dy)
        hi = np.maximum(dx, dy)
        base = 1.0 - 1.0 / dx - 1.0 / dy
        kappa = tri / hi - 0.5 * (np.maximum(base - tri / lo, 0.0) + np.maximum(base - tri / hi, 0.0))
        kappa = kappa.astype(np.float32).astype(np.float64)
    out = np.zeros(sym_adj.shape, dtype=np.float64)
    out[i, j] = kappa
    return out


def node_curvature(sym_adj: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """[N] mean of the edge curvature over each node's edges (nan for an isolated node)."""
    deg = sym_adj.sum(axis=1)
    total = np.where(sym_adj, kappa, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return total / deg


def undirected_edges(sym_adj: np.ndarray) -> np.ndarray:
    """[2, E] long edges i < j, row-major order."""
    i, j = np.nonzero(np.triu(sym_adj, 1))
    return np.stack([i, j]).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# R arithmetic for the [B] geodesic change
# --------------------------------------------------------------------------------------------------
def r_difference(g_next: np.ndarray, g_prev: np.ndarray) -> np.ndarray:
    """Elementwise ``g_next - g_prev`` with R rules: Inf-Inf = NaN, Inf-x = Inf, x-Inf = -Inf."""
    g_next, g_prev = np.broadcast_arrays(np.asarray(g_next, np.float64), np.asarray(g_prev, np.float64))
    out = np.full(g_next.shape, np.nan)  # Inf - Inf = NaN
    fin_n = np.isfinite(g_next)
    fin_p = np.isfinite(g_prev)
    both = fin_n & fin_p
    out[both] = g_next[both] - g_prev[both]
    out[~fin_n & fin_p] = np.inf
    out[fin_n & ~fin_p] = -np.inf
    return out


def r_sum(values: np.ndarray, na_rm: bool) -> float:
    """R's ``sum(values, na.rm=na_rm)`` for a double vector whose NaNs are R ``NaN``/``NA``."""
    values = np.asarray(values, dtype=np.float64).ravel()
    nan = np.isnan(values)
    if nan.any() and not na_rm:
        return float("nan")
    values = values[~nan]
    has_pos = bool((values == np.inf).any())
    has_neg = bool((values == -np.inf).any())
    if has_pos and has_neg:
        return float("nan")
    if has_pos:
        return float("inf")
    if has_neg:
        return float("-inf")
    return float(values.sum())


def r_row_sums(diff: np.ndarray) -> np.ndarray:
    """``apply(diff, 1, function(x) sum(x, na.rm=TRUE))``: [N] per-node Delta(i)."""
    return np.array([r_sum(row, na_rm=True) for row in diff], dtype=np.float64)


def baptista_transition(g_prev: np.ndarray, g_next: np.ndarray) -> dict[str, Any]:
    """[B] quantities of one transition prev -> next from the two [N, N] hop-distance matrices.

    Returns ``delta`` [N] (per node, R semantics), ``eta`` (sum of non-NaN rows, nan if none),
    ``mean`` (mean of the non-NaN rows, nan if none), ``eta_connected`` (over pairs finite in both
    layers; where ``eta`` is finite it equals ``eta``, i.e. nodes whose ``delta`` is NaN are skipped).
    """
    diff = r_difference(g_next, g_prev)
    delta = r_row_sums(diff)
    keep = ~np.isnan(delta)  # aggregate(..., na.action = na.omit)
    if keep.any():
        eta = r_sum(delta[keep], na_rm=False)
        with np.errstate(invalid="ignore"):
            mean = float(np.mean(delta[keep]))
    else:  # the whole (layer, model) group disappears from R's aggregate
        eta = float("nan")
        mean = float("nan")
    finite = np.isfinite(g_prev) & np.isfinite(g_next)
    row_conn = np.where(finite, diff, 0.0).sum(axis=1)  # diff is finite exactly where both are
    eta_connected = float(row_conn[keep].sum()) if np.isfinite(eta) else float(row_conn.sum())
    return {"delta": delta, "eta": eta, "mean": mean, "eta_connected": eta_connected}


def unordered_sum(g: np.ndarray) -> float:
    """[H] g_l = sum over i < j of hop distances (inf if any pair is disconnected)."""
    iu = np.triu_indices(g.shape[0], 1)
    return float(np.sum(g[iu]))


def connected_unordered_sum(g: np.ndarray) -> float:
    """Sum over connected pairs i < j of hop distances."""
    iu = np.triu_indices(g.shape[0], 1)
    vals = g[iu]
    return float(np.sum(vals[np.isfinite(vals)]))


# --------------------------------------------------------------------------------------------------
# Local and layer coefficients ([H] 2.3, 2.4)
# --------------------------------------------------------------------------------------------------
def local_expansion(sym_adj_t: np.ndarray, g_next: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """eta_t(x) = mean over layer-t neighbours y of d_{t+1}(x, y) - 1, and whether all are reachable.

    Returns ``(eta [N] (nan where some neighbour is unreachable at t+1), reachable [N] bool)``.
    """
    deg = sym_adj_t.sum(axis=1)
    nbr_dist = np.where(sym_adj_t, g_next, 0.0)  # d_{t+1}(x, y) on the layer-t edges
    reach = np.isfinite(nbr_dist).all(axis=1) & (deg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        eta = (np.where(sym_adj_t, g_next - 1.0, 0.0).sum(axis=1)) / deg
    eta[~reach] = np.nan
    return eta, reach


# --------------------------------------------------------------------------------------------------
# Everything
# --------------------------------------------------------------------------------------------------
def reference_global(layers: list[np.ndarray], k: int, convention: str) -> dict[str, Any]:
    """Graphs, geodesics and the curvature-independent fields (global coefficient and totals)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}")
    xs = [as_2d_float64(x) for x in layers]
    n_layers = len(xs)
    n = xs[0].shape[0]
    if n_layers < 2 or any(x.shape[0] != n for x in xs):
        raise ValueError("need >= 2 layers with the same number of points")

    directed = [directed_graph(x, k, convention) for x in xs]
    union = [union_graph(a) for a in directed]
    geo = [hop_distances(u) for u in union]
    constant = [is_constant_layer(x) for x in xs]

    if convention == "baptista":
        ric = np.array([forman_total_directed(a) for a in directed])
    else:
        ric = np.array([forman_total_undirected(u) for u in union])

    n_comp = np.array([num_components(u) for u in union], dtype=np.int64)
    geodesic_sum = np.array([connected_unordered_sum(g) for g in geo])

    if convention == "baptista":
        trans = [baptista_transition(geo[t], geo[t + 1]) for t in range(n_layers - 1)]
        eta = np.array([tr["eta"] for tr in trans])
        eta_connected = np.array([tr["eta_connected"] for tr in trans])
        means = np.array([tr["mean"] for tr in trans])
        excluded = bool(np.isinf(means).any() or any(constant))
        x_ric = ric[1:-1]  # Ric_1 .. Ric_{L-2}: hidden layers, "layer skip" pairing
        y_eta = eta[1:]  # eta_{1->2} .. eta_{L-2->L-1}
        y_con = eta_connected[1:]
    else:
        g = np.array([unordered_sum(gm) for gm in geo])
        with np.errstate(invalid="ignore"):
            eta = g[1:] - g[:-1]  # numpy arithmetic: inf - inf = nan
        eta_connected = np.zeros(n_layers - 1)
        iu = np.triu_indices(n, 1)
        for t in range(n_layers - 1):
            a, b = geo[t][iu], geo[t + 1][iu]
            fin = np.isfinite(a) & np.isfinite(b)
            eta_connected[t] = float(np.sum(b[fin] - a[fin]))
        excluded = bool((n_comp > 1).any() or any(constant))
        x_ric = ric[:-1]
        y_eta = eta
        y_con = eta_connected

    # [H] local expansion eta_t(x) (curvature independent), t = 0..L-2
    eta_loc = np.full((n_layers - 1, n), np.nan)
    reach = np.zeros((n_layers - 1, n), dtype=bool)
    for t in range(n_layers - 1):
        eta_loc[t], reach[t] = local_expansion(union[t], geo[t + 1])

    if excluded:
        coefficient = float("nan")
    else:
        ok = ~np.isnan(y_eta)  # R's complete.cases
        coefficient = pearson(x_ric[ok], y_eta[ok])
    # The connected version uses the paper's transitions where the paper's value is defined, else all.
    if np.isfinite(coefficient):
        coefficient_connected = pearson(x_ric[ok], y_con[ok])
    else:
        coefficient_connected = pearson(x_ric, y_con)

    return {
        "coefficient": coefficient,
        "coefficient_connected": coefficient_connected,
        "excluded": excluded,
        "curvature": ric.astype(np.float64),
        "eta": np.asarray(eta, dtype=np.float64),
        "eta_connected": np.asarray(eta_connected, dtype=np.float64),
        "geodesic_sum": geodesic_sum,
        "num_components": n_comp,
        # extras, used by reference_local and handy for tests
        "directed": directed,
        "union": union,
        "geodesics": geo,
        "local_eta": eta_loc,
        "reachable": reach,
    }


def reference_local(base: dict[str, Any], curvature: str) -> dict[str, Any]:
    """Edge / node curvature, local and layer coefficients on the graphs of :func:`reference_global`."""
    if curvature not in CURVATURES:
        raise ValueError(f"unknown curvature {curvature!r}")
    union = base["union"]
    n_layers, n = len(union), union[0].shape[0]

    kappas = [edge_curvature_matrix(u, curvature) for u in union]
    node_curv = np.stack([node_curvature(u, kp) for u, kp in zip(union, kappas)])  # [L, N]
    edge_index = [undirected_edges(u) for u in union]
    edge_curv = [kp[ei[0], ei[1]] for kp, ei in zip(kappas, edge_index)]

    eta_loc, reach = base["local_eta"], base["reachable"]
    ok = reach.all(axis=0)  # rho(x) = nan as soon as one layer-t neighbour is unreachable at t+1
    local = np.full(n, np.nan)
    local[ok] = pearson_columns(node_curv[:-1, ok], eta_loc[:, ok])

    layer = np.full(n_layers - 1, np.nan)
    for t in range(n_layers - 1):
        m = reach[t]
        if m.sum() >= 2:
            layer[t] = pearson(node_curv[t, m], eta_loc[t, m])

    return {
        "local": local,
        "layer": layer,
        "node_curvature": node_curv,
        "edge_index": edge_index,
        "edge_curvature": edge_curv,
    }


def reference_ricci_flow(
    layers: list[np.ndarray], k: int, convention: str, curvature: str = "forman"
) -> dict[str, Any]:
    """All fields of ``RicciFlowResult`` as numpy values (see the module docstring)."""
    if curvature not in CURVATURES:
        raise ValueError(f"unknown curvature {curvature!r}")
    base = reference_global(layers, k, convention)
    return {**base, **reference_local(base, curvature)}


def knn_reference(x: np.ndarray, k: int, ties: str) -> set[tuple[int, int]]:
    """Directed kNN edges (i, j): R's ``cccd::nng`` (``ties="keep"``: every j at a distance <= the k-th)
    or exactly k by (distance, index) (``ties="first"``), from scipy's float64 squared distances.

    Features whose squares would leave float64's range are first rescaled by a power of two (exact;
    the k nearest neighbours do not change under a global rescaling).
    """
    from scipy import spatial

    peak = float(np.abs(x).max())
    if peak > 1e150 or 0 < peak < 1e-150:
        x = x * 2.0 ** -np.frexp(peak)[1]
    d = spatial.distance.cdist(x, x, "sqeuclidean")
    np.fill_diagonal(d, np.inf)
    edges = set()
    for i in range(len(x)):
        if ties == "keep":
            cut = np.sort(d[i])[k - 1]
            edges |= {(i, int(j)) for j in np.nonzero(d[i] <= cut)[0]}
        else:
            edges |= {(i, int(j)) for j in np.lexsort((np.arange(len(x)), d[i]))[:k]}
    return edges


def edge_set(edge_index: Any) -> set[tuple[int, int]]:
    """The (i, j) pairs of a [2, E] edge tensor."""
    return set(map(tuple, edge_index.cpu().T.tolist()))

"""Checks of the dense reference (tests/reference.py) itself, on graphs whose values are known.

Values come from hand computation (path, cycle, K_n, star, ties on a line, duplicate rows) or from an
independent networkx re-derivation (geodesics, curvatures, local / layer coefficients).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("sklearn")
nx = pytest.importorskip("networkx")

try:  # tests/ on sys.path (pytest's default rootdir-less import mode)
    import reference as ref
except ImportError:  # tests/ is a package
    from tests import reference as ref


def line(n: int, start: float = 0.0) -> np.ndarray:
    """n equally spaced points on a line, spacing 1, as [n, 1] (exact float distances)."""
    return (start + np.arange(n, dtype=np.float64))[:, None]


def path_adj(n: int) -> np.ndarray:
    a = np.zeros((n, n), dtype=bool)
    idx = np.arange(n - 1)
    a[idx, idx + 1] = a[idx + 1, idx] = True
    return a


def polygon(n: int) -> np.ndarray:
    t = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], axis=1)


# --------------------------------------------------------------------------------------------------
# Pearson
# --------------------------------------------------------------------------------------------------
def test_pearson_matches_corrcoef_and_guards():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=7), rng.normal(size=7)
    assert ref.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert math.isnan(ref.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(ref.pearson([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
    assert math.isnan(ref.pearson([1.0], [2.0]))
    assert math.isnan(ref.pearson([], []))
    assert ref.pearson([0.0, 1.0], [3.0, 1.0]) == -1.0
    assert math.isnan(ref.pearson([0.0, 1.0, 2.0], [0.0, np.inf, 1.0]))
    # the column-wise version used for the local coefficient agrees, guards included
    xs = rng.normal(size=(5, 6))
    ys = rng.normal(size=(5, 6))
    xs[:, 1] = 2.0
    ys[:, 2] = -1.0
    ys[3, 3] = np.inf
    cols = ref.pearson_columns(xs, ys)
    expected = [ref.pearson(xs[:, j], ys[:, j]) for j in range(6)]
    np.testing.assert_allclose(cols, expected, rtol=1e-12, atol=1e-15, equal_nan=True)
    assert np.isnan(cols[1:4]).all() and np.isfinite(cols[[0, 4, 5]]).all()


# --------------------------------------------------------------------------------------------------
# kNN graphs: ties and duplicates
# --------------------------------------------------------------------------------------------------
def test_baptista_knn_keeps_ties_on_equally_spaced_line():
    x = line(10)
    a1 = ref.knn_directed_with_ties(x, 1)
    # interior points have two neighbours at distance 1: both kept
    assert a1.sum(1).tolist() == [1] + [2] * 8 + [1]
    assert (a1 == path_adj(10)).all()
    a3 = ref.knn_directed_with_ties(x, 3)
    # point 0: 1,2,3 -> 3 ; point 1: 1,1,2,3 -> r=2 -> {0,2,3}; points 2..7: 1,1,2,2 -> 4
    assert a3.sum(1).tolist() == [3, 3, 4, 4, 4, 4, 4, 4, 3, 3]
    assert a3[1].nonzero()[0].tolist() == [0, 2, 3]
    assert a3[5].nonzero()[0].tolist() == [3, 4, 6, 7]
    # sklearn ([H]) picks exactly k
    assert (ref.knn_sklearn_directed(x, 3).sum(1) == 3).all()
    assert not np.diag(a3).any()


def test_baptista_knn_duplicate_rows():
    x = np.array([0.0, 0.0, 0.0, 10.0, 11.0, 12.0, 13.0])[:, None]
    a1 = ref.knn_directed_with_ties(x, 1)
    assert a1.sum(1).tolist() == [2, 2, 2, 1, 2, 2, 1]
    assert a1[0].nonzero()[0].tolist() == [1, 2]
    a2 = ref.knn_directed_with_ties(x, 2)
    assert a2.sum(1).tolist() == [2, 2, 2, 2, 2, 2, 2]
    assert a2[3].nonzero()[0].tolist() == [4, 5]
    a3 = ref.knn_directed_with_ties(x, 3)
    assert a3.sum(1).tolist() == [3] * 7  # 11: 1, 1, 2 -> r = 2 -> {10, 12, 13}
    assert a3[0].nonzero()[0].tolist() == [1, 2, 3]
    # D = in + out. k=1 graph by hand: 6 edges among the zeros (D=4): 6*(4-8); 10<->11 (D 2, 4);
    # 11<->12 (D 4, 4); 12<->13 (D 4, 2). Cross-checked with networkx in-degree + out-degree.
    g = nx.DiGraph(a1.astype(int))
    expected = sum(4 - g.degree(i) - g.degree(j) for i, j in g.edges)
    assert ref.forman_total_directed(a1) == expected
    assert ref.forman_total_directed(a1) == -24 + 2 * (4 - 2 - 4) + 2 * (4 - 4 - 4) + 2 * (4 - 4 - 2)


def test_constant_layer_is_complete_graph_and_excludes():
    rng = np.random.default_rng(1)
    n, k = 12, 3
    x = rng.normal(size=(n, 4))
    const = np.full((n, 5), 0.25)
    full = ~np.eye(n, dtype=bool)
    for conv in ref.CONVENTIONS:
        assert (ref.directed_graph(const, k, conv) == full).all()
        layers = [x, 2 * x + 1, const, np.tanh(x), x**3]
        out = ref.reference_ricci_flow(layers, k, conv)
        assert out["excluded"]
        assert math.isnan(out["coefficient"])
        assert out["num_components"][2] == 1
        assert out["geodesic_sum"][2] == n * (n - 1) / 2
    # directed complete graph: D = 2(n-1), n(n-1) edges
    out = ref.reference_ricci_flow([x, const, x, x], k, "baptista")
    assert out["curvature"][1] == n * (n - 1) * (4 - 4 * (n - 1))
    out = ref.reference_ricci_flow([x, const, x, x], k, "hehl")
    assert out["curvature"][1] == n * (n - 1) / 2 * (6 - 2 * n)


# --------------------------------------------------------------------------------------------------
# Tiny graphs with known curvature
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 5, 9])
def test_path(n):
    a = path_adj(n)
    assert ref.forman_total_undirected(a) == 2.0  # end edges 4-1-2 = 1, interior 4-2-2 = 0
    kappa = ref.edge_curvature_matrix(a, "forman")
    ends = {(0, 1), (n - 2, n - 1)}
    for i in range(n - 1):
        assert kappa[i, i + 1] == (1.0 if (i, i + 1) in ends else 0.0)
    assert (ref.edge_curvature_matrix(a, "augmented_forman") == kappa).all()  # no triangles
    g = ref.hop_distances(a)
    assert (g == np.abs(np.subtract.outer(np.arange(n), np.arange(n)))).all()
    assert ref.connected_unordered_sum(g) == n * (n * n - 1) / 6
    # the same path from points on a line through the [B] kNN (k=1, ties kept): all edges mutual,
    # D = 2 * union degree; ends 2 directed edges of 4-2-4, interior 2(n-3) of 4-4-4
    d = ref.knn_directed_with_ties(line(n), 1)
    assert (ref.union_graph(d) == a).all()
    if n >= 3:
        assert ref.forman_total_directed(d) == -8 * (n - 2)


@pytest.mark.parametrize("n", [6, 11])
def test_cycle_from_polygon(n):
    x = polygon(n)
    d = ref.knn_directed_with_ties(x, 2)
    u = ref.union_graph(d)
    assert (u.sum(1) == 2).all() and (d == u).all()  # mutual 2-regular
    assert ref.num_components(u) == 1
    assert ref.forman_total_undirected(u) == 0.0  # 4 - 2 - 2 on every edge
    assert ref.forman_total_directed(d) == -8 * n  # 2n directed edges, D = 4
    for kind in ref.CURVATURES:
        kappa = ref.edge_curvature_matrix(u, kind)
        assert (kappa[u] == 0).all(), kind  # no triangles; AO: (1 - 1/2 - 1/2)_+ = 0
        assert (ref.node_curvature(u, kappa) == 0).all()
    s = ref.knn_sklearn_directed(x, 2)
    assert (ref.union_graph(s) == u).all()
    geo = ref.hop_distances(u)
    assert ref.connected_unordered_sum(geo) == n * sum(min(j, n - j) for j in range(1, n)) / 2
    out = ref.reference_ricci_flow([x, x, x, x], 2, "hehl")
    assert (out["curvature"] == 0).all()
    assert (out["eta"] == 0).all()


@pytest.mark.parametrize("n", [3, 4, 7])
def test_complete_graph(n):
    x = np.eye(n)  # all pairwise distances sqrt(2): one tie holds every point
    d = ref.knn_directed_with_ties(x, 1)
    full = ~np.eye(n, dtype=bool)
    assert (d == full).all()
    assert ref.forman_total_directed(d) == n * (n - 1) * (4 - 4 * (n - 1))
    u = ref.union_graph(d)
    assert ref.forman_total_undirected(u) == n * (n - 1) / 2 * (6 - 2 * n)
    assert (ref.edge_curvature_matrix(u, "forman")[full] == 6 - 2 * n).all()
    assert (ref.edge_curvature_matrix(u, "augmented_forman")[full] == n).all()  # + 3(n-2)
    ao = ref.edge_curvature_matrix(u, "approx_ollivier")[full]
    assert np.allclose(ao, (n - 2) / (n - 1), rtol=1e-7)
    assert (ao == np.float32((n - 2) / (n - 1))).all()  # stored as float32
    assert (ref.hop_distances(u)[full] == 1).all()
    assert (ref.union_graph(ref.knn_sklearn_directed(x, n - 1)) == full).all()


@pytest.mark.parametrize("leaves", [1, 3, 6])
def test_star(leaves):
    n = leaves + 1
    a = np.zeros((n, n), dtype=bool)
    a[0, 1:] = a[1:, 0] = True
    assert ref.forman_total_undirected(a) == leaves * (3 - leaves)
    kappa = ref.edge_curvature_matrix(a, "forman")
    assert (kappa[0, 1:] == 3 - leaves).all()
    assert (ref.edge_curvature_matrix(a, "augmented_forman")[0, 1:] == 3 - leaves).all()
    # AO: T = 0, m = 1, M = leaves: (1 - 1/leaves - 1)_+ = 0 -> 0
    assert (ref.edge_curvature_matrix(a, "approx_ollivier")[0, 1:] == 0).all()
    nc = ref.node_curvature(a, kappa)
    assert (nc == 3 - leaves).all()
    g = ref.hop_distances(a)
    assert ref.connected_unordered_sum(g) == leaves + 2 * leaves * (leaves - 1) / 2


def test_triangle_common_neighbours_augmented_forman():
    # K4 minus one edge: edge (0,1) has common neighbours 2 and 3
    a = ~np.eye(4, dtype=bool)
    a[2, 3] = a[3, 2] = False
    af = ref.edge_curvature_matrix(a, "augmented_forman")
    assert af[0, 1] == 4 - 3 - 3 + 3 * 2
    assert af[0, 2] == 4 - 3 - 2 + 3 * 1
    ao = ref.edge_curvature_matrix(a, "approx_ollivier")
    # edge (0,2): d = 3, 2, T = 1: 1/3 - 1/2[(1-1/3-1/2-1/2)_+ + (1-1/3-1/2-1/3)_+] = 1/3
    assert ao[0, 2] == np.float32(1 / 3)
    # edge (0,1): d = 3, 3, T = 2: 2/3 - 1/2 * 2 * (1 - 2/3 - 2/3)_+ = 2/3
    assert ao[0, 1] == np.float32(2 / 3)


# --------------------------------------------------------------------------------------------------
# Geodesics vs networkx
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geodesics_match_networkx(seed):
    rng = np.random.default_rng(seed)
    n = 40
    # two blocks, sparse: usually several components
    a = rng.random((n, n)) < 0.06
    a[: n // 2, n // 2 :] = False
    a = np.triu(a, 1)
    a = a | a.T
    g = ref.hop_distances(a)
    graph = nx.from_numpy_array(a.astype(int))
    expected = np.full((n, n), np.inf)
    for i, lengths in nx.all_pairs_shortest_path_length(graph):
        for j, length in lengths.items():
            expected[i, j] = length
    assert np.array_equal(g, expected)
    assert ref.num_components(a) == nx.number_connected_components(graph)
    assert ref.num_components(a) > 1


# --------------------------------------------------------------------------------------------------
# R infinity rules
# --------------------------------------------------------------------------------------------------
def test_r_arithmetic():
    inf, nan = np.inf, np.nan
    d = ref.r_difference(np.array([inf, inf, 3.0, 2.0]), np.array([inf, 1.0, inf, 5.0]))
    assert np.isnan(d[0]) and d[1] == inf and d[2] == -inf and d[3] == -3.0
    assert ref.r_sum([1.0, nan, 2.0], na_rm=True) == 3.0
    assert math.isnan(ref.r_sum([1.0, nan, 2.0], na_rm=False))
    assert ref.r_sum([1.0, inf, nan], na_rm=True) == inf
    assert ref.r_sum([1.0, -inf, nan], na_rm=True) == -inf
    assert math.isnan(ref.r_sum([inf, -inf], na_rm=True))
    rows = ref.r_row_sums(
        np.array([[0.0, inf, nan, 1.0], [-inf, 0.0, 2.0, nan], [inf, -inf, 0.0, 1.0], [nan, nan, nan, 0.0]])
    )
    assert rows[0] == inf and rows[1] == -inf and math.isnan(rows[2]) and rows[3] == 0.0


def _segments(layout: dict[str, float], size: int = 10) -> np.ndarray:
    """Groups of ``size`` equally spaced points on a line, group g starting at ``layout[g]``."""
    return np.concatenate([line(size, layout[g]) for g in sorted(layout)])


JOINED = {"P": 0.0, "Q": 10.0, "R": 20.0}  # one segment of 30 points
PQ_R = {"P": 0.0, "Q": 10.0, "R": 1000.0}
P_QR = {"P": 0.0, "Q": 1000.0, "R": 1010.0}
P_Q_R = {"P": 0.0, "Q": 1000.0, "R": 2000.0}


def test_consistent_disconnection_is_kept_by_baptista():
    layers = [_segments(PQ_R) * s for s in (1.0, 2.0, 3.0, 0.5, 1.5)]
    out = ref.reference_ricci_flow(layers, 2, "baptista")
    assert (out["num_components"] == 2).all()
    assert not out["excluded"]
    assert np.isfinite(out["eta"]).all() and (out["eta"] == 0).all()  # inf - inf dropped
    assert (out["eta_connected"] == 0).all()
    # hehl: any disconnected layer -> excluded, eta = inf - inf = nan
    out = ref.reference_ricci_flow(layers, 2, "hehl")
    assert out["excluded"] and math.isnan(out["coefficient"]) and np.isnan(out["eta"]).all()


def test_consistent_disconnection_random_clusters_coefficient_defined():
    rng = np.random.default_rng(3)
    centres = np.zeros((2, 3))
    centres[1, 0] = 1e3
    base = np.concatenate([rng.normal(size=(40, 3)) + c for c in centres])
    layers = [base]
    for _ in range(5):
        w = rng.normal(size=(3, 3))
        layers.append(np.concatenate([layers[-1][:40] @ w, layers[-1][40:] @ w + 1e4]))
    out = ref.reference_ricci_flow(layers, 8, "baptista")
    assert (out["num_components"] == 2).all()
    assert not out["excluded"]
    assert np.isfinite(out["eta"]).all()
    assert np.isfinite(out["coefficient"])
    assert out["coefficient"] == pytest.approx(out["coefficient_connected"], abs=1e-12)
    assert out["coefficient"] == pytest.approx(ref.pearson(out["curvature"][1:-1], out["eta"][1:]), abs=1e-12)
    # ordered-pair sums, inf - inf pairs dropped: eta = 2 * change of the connected unordered sum
    assert np.array_equal(out["eta"], 2 * np.diff(out["geodesic_sum"]))


@pytest.mark.parametrize(
    ("layouts", "bad", "sign"),
    [
        ((JOINED, JOINED, PQ_R, PQ_R, PQ_R), 1, np.inf),  # split appears: +Inf
        ((PQ_R, PQ_R, PQ_R, JOINED, JOINED), 2, -np.inf),  # merge: -Inf
        ((PQ_R, JOINED, JOINED, JOINED, JOINED), 0, -np.inf),  # input -> h_1 counts too
    ],
)
def test_connectivity_change_excludes(layouts, bad, sign):
    layers = [_segments(lay) for lay in layouts]
    out = ref.reference_ricci_flow(layers, 2, "baptista")
    assert out["excluded"]
    assert math.isnan(out["coefficient"])
    assert out["eta"][bad] == sign
    assert np.isfinite(np.delete(out["eta"], bad)).all()
    assert np.isfinite(out["eta_connected"]).all()
    # excluded: the connected variant keeps every transition
    expected = ref.pearson(out["curvature"][1:-1], out["eta_connected"][1:])
    assert out["coefficient_connected"] == expected or (
        math.isnan(expected) and math.isnan(out["coefficient_connected"])
    )


def test_mixed_infinities_give_nan_eta_and_no_exclusion():
    # PQ|R -> P|QR: P rows +Inf (P-Q splits, P-R inf-inf dropped), Q rows NaN (+Inf and -Inf),
    # R rows -Inf. Mean of non-NaN rows = mean(+Inf..., -Inf...) = NaN, not +-Inf: R keeps the network.
    layers = [_segments(lay) for lay in (JOINED, PQ_R, P_QR, P_QR, P_QR, JOINED)]
    out = ref.reference_ricci_flow(layers, 2, "baptista")
    tr = ref.baptista_transition(out["geodesics"][1], out["geodesics"][2])
    assert (tr["delta"][:10] == np.inf).all()
    assert np.isnan(tr["delta"][10:20]).all()
    assert (tr["delta"][20:] == -np.inf).all()
    assert math.isnan(tr["mean"])
    assert math.isnan(out["eta"][1])
    # JOINED -> PQ|R is a plain split (+Inf) and excludes the network anyway; drop those layers:
    kept = ref.reference_ricci_flow(layers[1:5], 2, "baptista")
    assert not kept["excluded"]
    assert math.isnan(kept["eta"][0])
    assert np.array_equal(kept["eta"][1:], [0.0, 0.0])
    # eta_connected skips the NaN rows (Q); P rows: P-P pairs unchanged (0); R rows: R-R pairs unchanged
    assert kept["eta_connected"][0] == 0.0


def test_mixed_infinities_connected_change_counts_only_non_nan_rows():
    # distances inside P change between the layers (P compressed into every other point of a line)
    p_sparse = line(10) * 1.0
    layer_a = np.concatenate([p_sparse, line(10, 10.0), line(10, 1000.0)])  # PQ|R
    layer_b = np.concatenate([p_sparse, line(10, 1000.0), line(10, 1010.0)])  # P|QR
    g_a = ref.hop_distances(ref.union_graph(ref.knn_directed_with_ties(layer_a, 1)))
    g_b = ref.hop_distances(ref.union_graph(ref.knn_directed_with_ties(layer_b, 1)))
    tr = ref.baptista_transition(g_a, g_b)
    fin = np.isfinite(g_a) & np.isfinite(g_b)
    rows = np.where(fin, np.where(fin, g_b, 0) - np.where(fin, g_a, 0), 0).sum(1)
    keep = ~np.isnan(tr["delta"])
    assert tr["eta_connected"] == rows[keep].sum()
    assert keep.sum() == 20  # Q's 10 rows dropped


def test_all_rows_nan_transition():
    # four groups, A B | C D -> A C | B D: every node has both a split and a merge -> every row NaN
    ab_cd = np.concatenate([line(8, 0.0), line(8, 8.0), line(8, 1000.0), line(8, 1008.0)])
    ac_bd = np.concatenate([line(8, 0.0), line(8, 1000.0), line(8, 8.0), line(8, 1008.0)])
    g1 = ref.hop_distances(ref.union_graph(ref.knn_directed_with_ties(ab_cd, 2)))
    g2 = ref.hop_distances(ref.union_graph(ref.knn_directed_with_ties(ac_bd, 2)))
    tr = ref.baptista_transition(g1, g2)
    assert np.isnan(tr["delta"]).all()
    assert math.isnan(tr["eta"]) and math.isnan(tr["mean"])
    assert tr["eta_connected"] == 0.0


# --------------------------------------------------------------------------------------------------
# Whole pipeline vs a networkx re-derivation
# --------------------------------------------------------------------------------------------------
def _nx_kappa(graph, x, y, kind):
    dx, dy = graph.degree(x), graph.degree(y)
    t = len(set(graph[x]) & set(graph[y]))
    if kind == "forman":
        return 4 - dx - dy
    if kind == "augmented_forman":
        return 4 - dx - dy + 3 * t
    lo, hi = min(dx, dy), max(dx, dy)
    base = 1 - 1 / dx - 1 / dy
    return float(np.float32(t / hi - 0.5 * (max(base - t / lo, 0) + max(base - t / hi, 0))))


def _corr(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def _mlp_layers(seed, n=60, d=4, widths=(12, 12, 8, 8)):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, d))
    layers = [h]
    for w in widths:
        h = np.maximum(h @ rng.normal(size=(h.shape[1], w)) + 0.1 * rng.normal(size=w), 0.0)
        layers.append(h)
    return layers


@pytest.mark.parametrize(
    ("conv", "kind", "k"), list(itertools.product(ref.CONVENTIONS, ref.CURVATURES, [3, 6]))
)
def test_pipeline_matches_networkx_rederivation(conv, kind, k):
    layers = _mlp_layers(seed=7 + k)
    out = ref.reference_ricci_flow(layers, k, conv, kind)
    n, n_layers = layers[0].shape[0], len(layers)
    graphs, spl = [], []
    for x in layers:
        # kNN from first principles: sort distances of each row
        dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        g = nx.DiGraph()
        g.add_nodes_from(range(n))
        for i in range(n):
            others = [j for j in range(n) if j != i]
            if conv == "baptista":
                r = sorted(dist[i, j] for j in others)[k - 1]
                g.add_edges_from((i, j) for j in others if dist[i, j] <= r)
            else:
                order = sorted(others, key=lambda j: dist[i, j])  # no ties in this data
                g.add_edges_from((i, j) for j in order[:k])
        graphs.append(g)
        spl.append(dict(nx.all_pairs_shortest_path_length(g.to_undirected())))
    for l, g in enumerate(graphs):
        u = g.to_undirected()
        if conv == "baptista":
            ric = sum(4 - g.degree(i) - g.degree(j) for i, j in g.edges)
        else:
            ric = sum(4 - u.degree(i) - u.degree(j) for i, j in u.edges)
        assert out["curvature"][l] == ric
        assert out["num_components"][l] == nx.number_connected_components(u)
        assert set(map(tuple, out["edge_index"][l].T.tolist())) == {tuple(sorted(e)) for e in u.edges}

    # geodesic sums
    def gsum(l, ordered):
        total = 0.0
        for i in range(n):
            for j, dd in spl[l][i].items():
                if ordered or i < j:
                    total += dd
        return total

    if all(nx.is_connected(g.to_undirected()) for g in graphs):
        for l in range(n_layers - 1):
            expected = gsum(l + 1, conv == "baptista") - gsum(l, conv == "baptista")
            assert out["eta"][l] == expected
    # node curvature, local and layer coefficients
    scal = np.zeros((n_layers, n))
    for l, g in enumerate(graphs):
        u = g.to_undirected()
        for x in range(n):
            scal[l, x] = np.mean([_nx_kappa(u, x, y, kind) for y in u[x]])
    np.testing.assert_allclose(out["node_curvature"], scal, rtol=1e-12, atol=1e-12)
    eta = np.full((n_layers - 1, n), np.nan)
    for t in range(n_layers - 1):
        u = graphs[t].to_undirected()
        for x in range(n):
            nb = list(u[x])
            if all(y in spl[t + 1][x] for y in nb):
                eta[t, x] = np.mean([spl[t + 1][x][y] - 1 for y in nb])
    local = np.array(
        [_corr(scal[:-1, x], eta[:, x]) if np.isfinite(eta[:, x]).all() else math.nan for x in range(n)]
    )
    np.testing.assert_allclose(out["local"], local, rtol=1e-9, atol=1e-12, equal_nan=True)
    layer = []
    for t in range(n_layers - 1):
        m = np.isfinite(eta[t])
        layer.append(_corr(scal[t, m], eta[t, m]) if m.sum() >= 2 else math.nan)
    np.testing.assert_allclose(out["layer"], layer, rtol=1e-9, atol=1e-12, equal_nan=True)

"""``lightning_ricci.ricci_flow`` against the independent dense reference (tests/reference.py).

Every field of the result is compared: integer-valued totals exactly, float64 paths with rtol 1e-9,
paths where the float32 approximate-Ollivier rounding enters with ~1e-6; nan (and inf) positions must
match. Data: random ReLU MLPs on Gaussian clouds, duplicate rows (dead-ReLU zero rows and duplicated
inputs), exact distance ties on an integer grid, constant layers, and disconnected layer graphs whose
connectivity is kept, split, merged or permuted between layers.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

pytest.importorskip("scipy")
pytest.importorskip("sklearn")

try:  # tests/ on sys.path (pytest's default import mode)
    import reference as ref
except ImportError:  # tests/ is a package
    from tests import reference as ref

from lightning_ricci import ricci_flow

CONVENTIONS = ("baptista", "hehl")
CURVATURES = ("forman", "augmented_forman", "approx_ollivier")


# --------------------------------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------------------------------
def _np(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _tolerances(kind: str) -> dict[str, float]:
    # approx. Ollivier is stored as float32 per edge: allow float32 rounding in sums / correlations
    if kind == "approx_ollivier":
        return {"rtol": 1e-6, "atol": 1e-6}
    return {"rtol": 1e-9, "atol": 1e-12}


def _assert_scalar(got: float, expected: float, name: str, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    got = float(got)
    if math.isnan(expected):
        assert math.isnan(got), f"{name}: expected nan, got {got!r}"
        return
    assert not math.isnan(got), f"{name}: expected {expected!r}, got nan"
    assert got == pytest.approx(expected, rel=rtol, abs=atol), f"{name}: expected {expected!r}, got {got!r}"


def _assert_same_nan_close(
    got: np.ndarray, expected: np.ndarray, name: str, rtol: float, atol: float
) -> None:
    assert got.shape == expected.shape, f"{name}: shape {got.shape} != {expected.shape}"
    nan_got, nan_exp = np.isnan(got), np.isnan(expected)
    if not np.array_equal(nan_got, nan_exp):
        idx = np.nonzero(nan_got != nan_exp)[0][:10]
        raise AssertionError(
            f"{name}: nan positions differ at {idx.tolist()}: expected {expected[idx].tolist()}, got {got[idx].tolist()}"
        )
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=name)


def assert_matches_reference(res, exp: dict, k: int, convention: str, kind: str) -> None:
    n_layers = len(exp["curvature"])
    n = exp["local"].shape[0]
    tol = _tolerances(kind)

    assert res.k == k and res.convention == convention and res.curvature_kind == kind
    assert bool(res.excluded) == exp["excluded"], f"excluded: expected {exp['excluded']}, got {res.excluded}"
    # the global coefficients use only integer-valued totals (Forman, hop counts)
    _assert_scalar(res.coefficient, exp["coefficient"], "coefficient")
    _assert_scalar(res.coefficient_connected, exp["coefficient_connected"], "coefficient_connected")

    # integer-valued totals: exact, including +-inf / nan positions
    for name, length in (
        ("total_curvature", n_layers),
        ("eta", n_layers - 1),
        ("eta_connected", n_layers - 1),
        ("geodesic_sum", n_layers),
    ):
        got = _np(getattr(res, name))
        assert got.dtype == np.float64, f"{name}: dtype {got.dtype}"
        assert got.shape == (length,), f"{name}: shape {got.shape}"
        np.testing.assert_array_equal(got, exp[name.removeprefix("total_")], err_msg=name)
    assert np.isfinite(_np(res.eta_connected)).all()
    np.testing.assert_array_equal(
        _np(res.num_components).astype(np.int64), exp["num_components"], err_msg="num_components"
    )

    # per-node quantities
    node = _np(res.node_curvature)
    assert node.dtype == np.float64 and node.shape == (n_layers, n)
    _assert_same_nan_close(node.ravel(), exp["node_curvature"].ravel(), "node_curvature", **tol)
    corr_tol = {"rtol": 1e-9, "atol": 1e-10} if kind != "approx_ollivier" else {"rtol": 1e-5, "atol": 1e-5}
    local = _np(res.local)
    assert local.dtype == np.float64
    _assert_same_nan_close(local, exp["local"], "local", **corr_tol)
    _assert_same_nan_close(_np(res.layer_coefficient), exp["layer"], "layer_coefficient", **corr_tol)

    # edges and edge curvature (compared as sets keyed by i * N + j, i < j)
    assert len(res.edge_index) == n_layers and len(res.edge_curvature) == n_layers
    for l in range(n_layers):
        ei = _np(res.edge_index[l]).astype(np.int64)
        ec = _np(res.edge_curvature[l]).astype(np.float64)
        assert ei.ndim == 2 and ei.shape[0] == 2 and ec.shape == (ei.shape[1],), f"layer {l}: edge shapes"
        assert (ei[0] < ei[1]).all(), f"layer {l}: edge_index not i < j"
        key = ei[0] * n + ei[1]
        order = np.argsort(key)
        exp_ei = exp["edge_index"][l]
        exp_key = exp_ei[0] * n + exp_ei[1]
        if not np.array_equal(key[order], exp_key):
            missing = np.setdiff1d(exp_key, key)[:5]
            extra = np.setdiff1d(key, exp_key)[:5]
            raise AssertionError(
                f"layer {l}: union edges differ; missing {[(int(c) // n, int(c) % n) for c in missing]}, "
                f"extra {[(int(c) // n, int(c) % n) for c in extra]}"
            )
        np.testing.assert_allclose(ec[order], exp["edge_curvature"][l], err_msg=f"edge_curvature[{l}]", **tol)


def check_against_reference(layers_np: list[np.ndarray], k: int, convention: str, kinds, dtype: torch.dtype):
    """Run the package on torch tensors of ``dtype`` for every curvature in ``kinds`` and compare each
    result with the reference on the very same values. Returns the reference of the last kind."""
    layers_t = [torch.as_tensor(x).to(dtype) for x in layers_np]
    base = ref.reference_global([x.numpy() for x in layers_t], k, convention)
    exp = base
    for kind in kinds:
        res = ricci_flow(layers_t, k, convention=convention, curvature=kind, knn_backend="auto")
        exp = {**base, **ref.reference_local(base, kind)}
        assert_matches_reference(res, exp, k, convention, kind)
    return exp


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def mlp_layers(
    n: int,
    d: int,
    seed: int,
    widths=(32, 32, 16, 16, 8),
    out_dim: int | None = None,
    x: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Gaussian cloud through a random He-initialised ReLU MLP; all post-activations (+ linear output)."""
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, d)) if x is None else x
    layers = [h]
    for w in widths:
        weight = rng.normal(size=(h.shape[1], w)) * math.sqrt(2.0 / h.shape[1])
        h = np.maximum(h @ weight + 0.1 * rng.normal(size=w), 0.0)
        layers.append(h)
    if out_dim is not None:
        layers.append(h @ rng.normal(size=(h.shape[1], out_dim)))
    return layers


def knn_margin(x: np.ndarray, k: int) -> float:
    """Smallest relative gap between the k-th distance and the next larger one (exact ties skipped)."""
    from scipy.spatial.distance import cdist

    dist = cdist(x, x)
    np.fill_diagonal(dist, np.inf)
    srt = np.sort(dist, axis=1)
    r_k = srt[:, k - 1 : k]
    nxt = np.where(srt > r_k, srt, np.inf).min(axis=1)
    return float(np.min((nxt - r_k[:, 0]) / nxt))


def has_duplicate_rows(x: np.ndarray) -> bool:
    return np.unique(x, axis=0).shape[0] < x.shape[0]


# (D, k, N, seed): D in {2, 8, 50}, k in {3, 5, 10}, N in 120..200. Seeds picked so that no k-th
# distance has a near-tie (relative gap > 2e-5) that float32 rounding could flip.
MLP_CASES = [
    (2, 3, 120, 3),
    (2, 10, 200, 3),
    (8, 5, 150, 14),
    (8, 10, 150, 17),
    (50, 3, 150, 12),
    (50, 10, 180, 15),
]


def _case_layers(d, k, n, seed, convention, dtype):
    layers = mlp_layers(n, d, seed, out_dim=2 if convention == "hehl" else None)
    # the data must be well posed: no duplicates (sklearn's tie order is not part of the contract) and
    # no near-tie at the k-th distance
    for x in layers:
        x_cast = torch.as_tensor(x).to(dtype).double().numpy()
        assert not has_duplicate_rows(x_cast)
        assert knn_margin(x_cast, k) > 2e-5
    return layers


def _kinds(index: int) -> tuple[str, ...]:
    """One curvature per case, in rotation: each (convention, curvature) pair meets two cases."""
    return (CURVATURES[index % 3],)


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("index", range(len(MLP_CASES)))
def test_random_mlp_float64(index, convention):
    d, k, n, seed = MLP_CASES[index]
    layers = _case_layers(d, k, n, seed, convention, torch.float64)
    check_against_reference(layers, k, convention, _kinds(index), torch.float64)


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("index", [1, 4])
def test_random_mlp_float32(index, convention):
    d, k, n, seed = MLP_CASES[index]
    layers = _case_layers(d, k, n, seed, convention, torch.float32)
    check_against_reference(layers, k, convention, _kinds(index + 1), torch.float32)


def test_random_mlp_cases_cover_defined_and_excluded():
    """The MLP cases above exercise both a defined coefficient and a disconnected (excluded) network."""
    seen = set()
    for (d, k, n, seed), conv in itertools.product(MLP_CASES, CONVENTIONS):
        exp = ref.reference_global(mlp_layers(n, d, seed, out_dim=2 if conv == "hehl" else None), k, conv)
        seen.add((conv, exp["excluded"], bool((~exp["reachable"]).any())))  # local nan where unreachable
    assert ("baptista", False, False) in seen and ("hehl", False, False) in seen
    assert any(excl for _, excl, _ in seen)
    assert any(has_nan for _, _, has_nan in seen)


# ---- duplicate rows ([B] keeps all ties) -----------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dead_relu_zero_rows_baptista(dtype):
    layers = mlp_layers(160, 8, seed=11)
    rng = np.random.default_rng(11)
    for l, share in ((2, 0.4), (3, 0.25), (4, 0.1)):
        dead = rng.random(160) < share
        layers[l] = layers[l].copy()
        layers[l][dead] = 0.0
    runs = (
        {5: ["forman", "augmented_forman"], 10: ["approx_ollivier"]}
        if dtype == torch.float64
        else {5: ["forman"]}
    )
    for k, kinds in runs.items():
        exp_out = ref.knn_directed_with_ties(layers[2], k).sum(1)
        assert exp_out.max() > k  # ties at distance 0 are kept: out-degree exceeds k
        check_against_reference(layers, k, "baptista", kinds, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_duplicated_inputs_baptista(dtype):
    rng = np.random.default_rng(12)
    x = rng.normal(size=(130, 8))
    x = np.concatenate([x, x[:20], x[:10]])  # 20 points twice, 10 of them three times
    layers = mlp_layers(x.shape[0], 8, seed=12, x=x)
    kind = "approx_ollivier" if dtype == torch.float64 else "forman"
    check_against_reference(layers, 5, "baptista", [kind], dtype)


def test_large_offset_float32_baptista():
    # a large common offset (|x| >> nearest-neighbour distances) stresses float32 distance arithmetic:
    # ||x||^2 + ||y||^2 - 2 x.y cancels; duplicated rows must still tie exactly at distance 0
    rng = np.random.default_rng(15)
    x = rng.normal(size=(100, 12))
    x = np.concatenate([x, x[:15], x[:5]])
    layers = [x * s + 1e3 for s in (1.0, 2.0, 0.5, 3.0, 1.5)]
    check_against_reference(layers, 5, "baptista", ["forman"], torch.float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_integer_grid_ties_baptista(dtype):
    # exact distance ties between distinct points: an integer grid through integer linear maps
    rng = np.random.default_rng(13)
    grid = np.array(list(itertools.product(range(12), range(11))), dtype=np.float64)
    layers = [grid]
    for _ in range(4):
        layers.append(
            np.maximum(layers[-1] @ rng.integers(-2, 3, size=(layers[-1].shape[1], 3)), 0).astype(np.float64)
        )
    for k in (3, 6) if dtype == torch.float64 else (4,):
        assert max(int(a.sum(1).max()) for a in ref.reference_global(layers, k, "baptista")["directed"]) > k
        check_against_reference(layers, k, "baptista", ["augmented_forman"], dtype)


# ---- constant layer -----------------------------------------------------------------------------
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_constant_layer(convention):
    layers = mlp_layers(100, 8, seed=14)
    dead = 3 if convention == "baptista" else -1  # a hidden layer / the output layer
    layers[dead] = np.zeros_like(layers[dead])  # every unit dead
    kind = "forman" if convention == "baptista" else "approx_ollivier"
    exp = check_against_reference(layers, 6, convention, [kind], torch.float32)
    assert exp["excluded"] and math.isnan(exp["coefficient"])


# ---- disconnected graphs --------------------------------------------------------------------------
def cluster_layers(layouts: list[dict[str, float]], size: int, seed: int, d: int = 6) -> list[np.ndarray]:
    """Groups of ``size`` points; in each layer group g sits at offset ``layout[g]`` (1e4 apart = split).

    Within a layer every group is an independent random ReLU image of a Gaussian cloud, so groups that
    share an offset overlap (one component) and groups at different offsets are far apart.
    """
    rng = np.random.default_rng(seed)
    groups = sorted(layouts[0])
    layers = []
    for layout in layouts:
        weight = rng.normal(size=(d, d))
        parts = []
        for g in groups:
            cloud = np.maximum(rng.normal(size=(size, d)) @ weight, 0.0) + rng.normal(size=(size, d)) * 0.3
            cloud[:, 0] += layout[g]
            parts.append(cloud)
        layers.append(np.concatenate(parts))
    return layers


J2 = {"A": 0.0, "B": 0.0}
S2 = {"A": 0.0, "B": 1e4}
PQR = {"P": 0.0, "Q": 0.0, "R": 0.0}
PQ_R = {"P": 0.0, "Q": 0.0, "R": 1e4}
P_QR = {"P": 0.0, "Q": 1e4, "R": 1e4}
AB_CD = {"A": 0.0, "B": 0.0, "C": 1e4, "D": 1e4}
AC_BD = {"A": 0.0, "B": 1e4, "C": 0.0, "D": 1e4}

DISCONNECTED_CASES = {
    # name: (layouts, group size, expected components, expected [B] exclusion)
    "split_everywhere": ([S2] * 5, 70, [2] * 5, False),
    "split_appears": ([J2, J2, S2, S2, S2], 70, [1, 1, 2, 2, 2], True),
    "split_merges": ([S2, S2, S2, J2, J2], 70, [2, 2, 2, 1, 1], True),
    "split_input_only": ([S2, J2, J2, J2, J2], 70, [2, 1, 1, 1, 1], True),
    "mixed_infinities": ([PQ_R, P_QR, P_QR, PQ_R, PQ_R, PQ_R], 45, [2] * 6, False),
    "three_groups": ([PQR, PQ_R, PQ_R, PQ_R, PQ_R], 45, [1, 2, 2, 2, 2], True),
    # every node gains one group and loses another: every per-node R row is NaN, R's aggregate drops
    # the transition (reference: eta nan, mean nan -> not excluded)
    "all_rows_nan": ([AB_CD, AB_CD, AC_BD, AC_BD, AC_BD], 35, [2] * 5, False),
}


# [H] excludes every disconnected network; three scenarios suffice for its nan / inf bookkeeping
HEHL_DISCONNECTED = ("split_everywhere", "split_appears", "mixed_infinities")


@pytest.mark.parametrize(
    ("name", "convention"),
    [(name, "baptista") for name in sorted(DISCONNECTED_CASES)]
    + [(name, "hehl") for name in HEHL_DISCONNECTED],
)
def test_disconnected(name, convention):
    layouts, size, components, b_excluded = DISCONNECTED_CASES[name]
    k = 8
    layers = cluster_layers(layouts, size, seed=20 + len(name))
    exp = ref.reference_global(layers, k, convention)
    # the scenario is what it claims to be
    assert exp["num_components"].tolist() == components
    assert exp["excluded"] == (b_excluded if convention == "baptista" else True)
    if convention == "baptista" and name == "mixed_infinities":
        assert np.isnan(exp["eta"][0]) and np.isnan(exp["eta"][2])
        assert np.isfinite(exp["coefficient"]) and exp["coefficient"] == exp["coefficient_connected"]
    if convention == "baptista" and name == "all_rows_nan":
        assert np.isnan(exp["eta"][1]) and np.isfinite(np.delete(exp["eta"], 1)).all()
    kind = CURVATURES[(sorted(DISCONNECTED_CASES).index(name) + (convention == "hehl")) % 3]
    check_against_reference(layers, k, convention, [kind], torch.float64)


def test_disconnected_float32():
    layouts, size, components, _ = DISCONNECTED_CASES["mixed_infinities"]
    layers = cluster_layers(layouts, size, seed=21)
    exp = check_against_reference(layers, 8, "baptista", ["augmented_forman"], torch.float32)
    assert exp["num_components"].tolist() == components and not exp["excluded"]


# ---- shapes: few layers, [N, C, H, W] layers ------------------------------------------------------
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("num_layers", [3, 4])  # the package requires >= 3 layers
def test_few_layers_and_image_shaped_layers(num_layers, convention):
    rng = np.random.default_rng(30 + num_layers)
    images = rng.normal(size=(90, 2, 3, 3))  # flattened to [90, 18]
    layers = mlp_layers(
        90, 18, seed=30 + num_layers, widths=(24, 12, 6)[: num_layers - 1], x=images.reshape(90, -1)
    )
    layers[0] = images
    exp = check_against_reference(layers, 6, convention, ["augmented_forman"], torch.float64)
    assert exp["curvature"].shape == (num_layers,)
    if convention == "baptista" and num_layers < 4:  # fewer than two hidden-layer pairs
        assert math.isnan(exp["coefficient"])


# ---- class structure of the union graphs (labels=) ------------------------------------------------
def _reference_class_structure(sym_adj: np.ndarray, kappa: np.ndarray, labels: np.ndarray) -> list[float]:
    """networkx's modularity (and, for two classes, its normalised cut) and Hehl et al.'s curvature gap."""
    nx = pytest.importorskip("networkx")
    graph = nx.from_numpy_array(sym_adj)
    classes = [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
    modularity = nx.community.modularity(graph, classes)
    if len(classes) == 2:
        ncut = 0.5 * nx.normalized_cut_size(graph, classes[0], classes[1])
    else:  # 1/2 sum_c cut(S_c, V - S_c) / vol(S_c)
        ncut = 0.5 * sum(nx.cut_size(graph, s) / nx.volume(graph, s) for s in classes)
    i, j = np.nonzero(np.triu(sym_adj, 1))  # every edge once, i < j
    same = labels[i] == labels[j]
    mixing = float(np.mean(~same))
    within, between = kappa[i, j][same], kappa[i, j][~same]  # as community_structure.py: np.mean, np.std
    gap = (np.mean(within) - np.mean(between)) / np.sqrt(0.5 * (np.std(within) ** 2 + np.std(between) ** 2))
    return [modularity, ncut, mixing, float(gap)]


@pytest.mark.parametrize(
    ("convention", "kind", "num_classes"),
    [("baptista", "forman", 2), ("hehl", "approx_ollivier", 2), ("baptista", "augmented_forman", 3)],
)
def test_class_structure_matches_networkx_and_hehl(convention, kind, num_classes):
    layers = mlp_layers(150, 8, seed=40 + num_classes)
    if convention == "baptista":  # dead-ReLU duplicates: ties kept (sklearn's tie order is not ours)
        layers[2] = layers[2].copy()
        layers[2][:30] = 0.0
    rng = np.random.default_rng(41)
    labels = (layers[0][:, 0] > 0).astype(np.int64) if num_classes == 2 else rng.integers(0, 3, 150) * 5
    base = ref.reference_global(layers, 6, convention)
    exp = ref.reference_local(base, kind)
    kappas = [ref.edge_curvature_matrix(u, kind) for u in base["union"]]
    res = ricci_flow(
        [torch.as_tensor(x) for x in layers],
        6,
        convention=convention,
        curvature=kind,
        labels=torch.as_tensor(labels),
    )
    assert_matches_reference(res, {**base, **exp}, 6, convention, kind)
    got = np.stack(
        [
            _np(getattr(res, f))
            for f in ("class_modularity", "class_normalized_cut", "class_mixing", "curvature_gap")
        ]
    )
    want = np.array([_reference_class_structure(u, kp, labels) for u, kp in zip(base["union"], kappas)]).T
    assert got.dtype == np.float64 and got.shape == (4, len(layers))
    np.testing.assert_allclose(got[:3], want[:3], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-9 if kind != "approx_ollivier" else 1e-5, atol=1e-9)

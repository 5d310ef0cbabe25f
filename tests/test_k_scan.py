"""``ricci_flow(layers, k=[...])``: one kNN search for the largest k, every smaller k read off it.

Each k of a scan must give exactly the result of a separate call with that k, on data with exact ties at
the k-th distance (integer grids, duplicated rows) under both tie rules.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lightning_ricci import RicciFlowResult, RicciFlowScan, ricci_flow


def _mlp(n: int = 120, dim: int = 5, depth: int = 4, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, dim, generator=gen)
    layers = [h]
    for _ in range(depth):
        h = torch.relu(h @ (torch.randn(h.shape[1], 16, generator=gen) / h.shape[1] ** 0.5))
        layers.append(h)
    return layers


def _grid_layers() -> list[torch.Tensor]:
    """An integer grid through integer maps: many exact ties between distinct points; plus duplicates."""
    gen = torch.Generator().manual_seed(3)
    grid = torch.tensor(list(itertools.product(range(10), range(9))), dtype=torch.float64)
    layers = [grid]
    for _ in range(4):
        layers.append(
            torch.relu(layers[-1] @ torch.randint(-2, 3, (layers[-1].shape[1], 3), generator=gen).double())
        )
    return layers


def _dead_and_split_layers() -> list[torch.Tensor]:
    layers = _mlp(n=150, seed=4)
    layers[2] = layers[2].clone()
    layers[2][:40] = 0.0  # dead-ReLU rows: ties at distance 0
    gen = torch.Generator().manual_seed(5)
    layers[3] = layers[3] + 100.0 * (torch.rand(150, 1, generator=gen) > 0.5)  # a disconnected layer
    return layers


def _constant_layer() -> list[torch.Tensor]:
    layers = _mlp(n=80, seed=6)
    layers[2] = torch.zeros_like(layers[2])
    return layers


def _assert_same(got: RicciFlowResult, want: RicciFlowResult) -> None:
    for field in (
        "total_curvature",
        "eta",
        "eta_connected",
        "geodesic_sum",
        "num_components",
        "local",
        "layer_coefficient",
        "node_curvature",
    ):
        torch.testing.assert_close(getattr(got, field), getattr(want, field), rtol=0, atol=0, equal_nan=True)
    for a, b in zip(got.edge_index, want.edge_index):
        assert torch.equal(a, b)
    for a, b in zip(got.edge_curvature, want.edge_curvature):
        assert torch.equal(a, b)
    assert got.excluded == want.excluded and got.k == want.k
    for value, other in (
        (got.coefficient, want.coefficient),
        (got.coefficient_connected, want.coefficient_connected),
    ):
        assert value == other or (math.isnan(value) and math.isnan(other))


DATA = {
    "mlp": _mlp,
    "grid": _grid_layers,
    "dead_and_split": _dead_and_split_layers,
    "constant": _constant_layer,
}


@pytest.mark.filterwarnings("ignore:the keep-ties kNN graph")  # the constant layer's complete graph
@pytest.mark.parametrize("convention", ["baptista", "hehl"])
@pytest.mark.parametrize("data", sorted(DATA))
def test_every_k_of_a_scan_equals_a_separate_call(convention: str, data: str) -> None:
    layers = DATA[data]()
    ks = [9, 3, 5, 4]  # unsorted: results come back in the order given
    scan = ricci_flow(layers, ks, convention=convention, curvature="augmented_forman")  # type: ignore[arg-type]
    assert isinstance(scan, RicciFlowScan) and scan.ks == ks and len(scan.results) == len(ks)
    for k, got in zip(ks, scan.results):
        _assert_same(got, ricci_flow(layers, k, convention=convention, curvature="augmented_forman"))  # type: ignore[arg-type]


def test_scan_summary_follows_the_monitor_rule() -> None:
    layers = _mlp(n=150, depth=5, seed=8)
    scan = ricci_flow(layers, [4, 6, 10, 6])
    values = [
        r.coefficient if not math.isnan(r.coefficient) else r.coefficient_connected for r in scan.results
    ]
    assert scan.coefficients.dtype == torch.float64 and scan.coefficients.tolist() == values
    assert scan.results[1] is scan.results[3]  # a repeated k is computed once
    assert scan.spread == pytest.approx(max(values) - min(values), abs=0)
    signs = [math.copysign(1.0, v) for v in values]
    majority = max(signs.count(1.0), signs.count(-1.0))
    assert scan.sign_agreement == majority / len(values)


def test_scan_with_labels_and_the_paper_value_undefined() -> None:
    layers = _dead_and_split_layers()  # excluded under baptista: the coefficient falls back
    labels = (layers[0][:, 0] > 0).long()
    scan = ricci_flow(layers, [3, 6], labels=labels)
    for k, result in zip(scan.ks, scan.results):
        assert math.isnan(result.coefficient) and result.excluded
        assert result.class_modularity is not None and result.class_modularity.shape == (len(layers),)
        single = ricci_flow(layers, k, labels=labels)
        assert single.class_mixing is not None and result.class_mixing is not None
        assert torch.equal(result.class_mixing, single.class_mixing)
    assert scan.coefficients.tolist() == [r.coefficient_connected for r in scan.results]


@pytest.mark.parametrize(
    ("ks", "error", "match"),
    [
        ([], ValueError, r"`k` must hold at least one value when it is a sequence \(got an empty sequence\)"),
        ([3, True], TypeError, r"`k\[1\]` must be an int \(got bool True\)"),
        ([3, 2.0], TypeError, r"`k\[1\]` must be an int \(got float\)"),
        ([3, 40], ValueError, r"`k\[1\]` must be < 40 \(got 40\)"),
        ((0, 3), ValueError, r"`k\[0\]` must be >= 1 \(got 0\)"),
    ],
)
def test_bad_k_sequences(ks: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ricci_flow(_mlp(n=40), ks)  # type: ignore[call-overload]


def test_k_as_a_1d_tensor_scans() -> None:
    layers = _mlp(n=60)
    scan = ricci_flow(layers, torch.tensor([3, 5]))  # type: ignore[call-overload]
    assert isinstance(scan, RicciFlowScan) and scan.ks == [3, 5]

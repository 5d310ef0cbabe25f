from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_ricci import RicciFlowResult, ricci_flow


def _mlp_layers(
    n: int = 150, dim: int = 6, width: int = 24, depth: int = 4, seed: int = 0
) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, dim, generator=gen)
    layers = [h]
    for _ in range(depth):
        h = torch.relu(h @ (torch.randn(h.shape[1], width, generator=gen) / h.shape[1] ** 0.5))
        layers.append(h)
    return layers


@pytest.mark.parametrize("convention", ["baptista", "hehl"])
@pytest.mark.parametrize("curvature", ["forman", "augmented_forman", "approx_ollivier"])
def test_shapes_dtypes_and_device(device: torch.device, convention: str, curvature: str) -> None:
    layers = [x.to(device) for x in _mlp_layers()]
    result = ricci_flow(layers, 8, convention=convention, curvature=curvature)  # type: ignore[arg-type]
    assert isinstance(result, RicciFlowResult)
    num_layers, n = len(layers), layers[0].shape[0]
    assert result.total_curvature.shape == (num_layers,) and result.total_curvature.dtype == torch.float64
    assert (
        result.eta.shape == result.eta_connected.shape == result.layer_coefficient.shape == (num_layers - 1,)
    )
    assert result.local.shape == (n,) and result.node_curvature.shape == (num_layers, n)
    assert result.geodesic_sum.shape == result.num_components.shape == (num_layers,)
    for t in (result.total_curvature, result.eta, result.local, result.layer_coefficient, *result.edge_index):
        assert t.device.type == device.type
    assert len(result.edge_index) == len(result.edge_curvature) == num_layers
    for ei, kappa in zip(result.edge_index, result.edge_curvature):
        assert ei.shape[1] == kappa.numel() and bool((ei[0] < ei[1]).all())
    assert isinstance(result.coefficient, float) and isinstance(result.excluded, bool)
    assert -1.0 <= result.coefficient_connected <= 1.0
    assert result.num_layers == num_layers and result.num_points == n


def test_trailing_dimensions_are_flattened() -> None:
    layers = _mlp_layers()
    images = [layers[0].view(150, 2, 3)] + layers[1:]
    assert ricci_flow(images, 8).coefficient == ricci_flow(layers, 8).coefficient


def test_float64_and_float32_agree_on_well_separated_data() -> None:
    layers64 = [x.double() for x in _mlp_layers()]
    r32 = ricci_flow([x.float() for x in layers64], 8)
    r64 = ricci_flow(layers64, 8)
    assert torch.equal(r32.total_curvature, r64.total_curvature)
    assert torch.equal(r32.eta, r64.eta)


def test_forman_totals_by_hand_on_a_line() -> None:
    # Points 0, 1, 2, 4, 8 on a line with k = 1 and ties kept: edges 0->1, 1->0, 1->2, 2->1, 3->2, 4->3.
    line = torch.tensor([[0.0], [1.0], [2.0], [4.0], [8.0]])
    result = ricci_flow([line, line, line], 1)
    # in+out degrees: 2, 4, 3, 2, 1; sum over directed edges of 4 - D(i) - D(j).
    expected = (4 - 2 - 4) + (4 - 4 - 2) + (4 - 4 - 3) + (4 - 3 - 4) + (4 - 2 - 3) + (4 - 1 - 2)
    assert result.total_curvature.tolist() == [float(expected)] * 3
    # Union graph is the path 0-1-2-3-4: sum over unordered pairs of |i - j| = 20.
    assert result.geodesic_sum.tolist() == [20.0] * 3
    assert result.eta.tolist() == [0.0, 0.0]
    hehl = ricci_flow([line, line, line], 1, convention="hehl")
    # Exactly one neighbour (lowest index on ties): 0->1, 1->0, 2->1, 3->2, 4->3; union is the path.
    assert hehl.total_curvature.tolist() == [float(4 - 1 - 2 + 4 - 2 - 2 + 4 - 2 - 2 + 4 - 2 - 1)] * 3


def test_constant_layer_is_excluded_but_connected_coefficient_finite() -> None:
    layers = _mlp_layers(depth=5)
    layers[3] = torch.zeros_like(layers[3])
    for convention in ("baptista", "hehl"):
        result = ricci_flow(layers, 8, convention=convention)  # type: ignore[arg-type]
        assert result.excluded and math.isnan(result.coefficient)
        assert math.isfinite(result.coefficient_connected)
        assert int(result.num_components[3]) == 1


def test_disconnected_layers() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(120, 3, generator=gen)
    split = x.clone()
    split[:60] += 100.0  # two far clusters: disconnected at k = 5
    layers = [x, split, split, x, x]
    bap = ricci_flow(layers, 5)
    assert bap.num_components.tolist() == [1, 2, 2, 1, 1]
    assert bap.excluded and math.isnan(bap.coefficient) and math.isfinite(bap.coefficient_connected)
    assert torch.isinf(bap.eta[0]) and bool(torch.isfinite(bap.eta_connected).all())
    # Disconnected the same way in consecutive layers: that transition has no infinities.
    assert torch.isfinite(bap.eta[1])
    hehl = ricci_flow(layers, 5, convention="hehl")
    assert hehl.excluded and math.isnan(hehl.coefficient) and math.isfinite(hehl.coefficient_connected)


def test_too_few_pairs_gives_nan() -> None:
    layers = _mlp_layers(depth=2)  # input + 2 hidden: one shifted pair for baptista
    result = ricci_flow(layers, 8)
    assert math.isnan(result.coefficient) and not result.excluded


@pytest.mark.parametrize(
    ("layers", "k", "error", "match"),
    [
        ("tensor", 3, TypeError, r"`layers` must be a sequence of tensors"),
        ("two", 3, ValueError, r"`layers` must hold at least 3 layers .* \(got 2\)"),
        (
            "mismatch",
            3,
            ValueError,
            r"`layers\[2\]` must have the same number of points as `layers\[0\]` \(20\) \(got 19\)",
        ),
        (
            "rank",
            3,
            ValueError,
            r"`layers\[1\]` must have shape \[N, \.\.\.\] with at least 2 dimensions \(got shape \(20,\)\)",
        ),
        ("int", 3, TypeError, r"`layers\[1\]` must be float32 or float64 \(got torch.int64\)"),
        ("bf16", 3, TypeError, r"`layers\[1\]` must be float32 or float64 \(got torch.bfloat16\)"),
        ("fp16", 3, TypeError, r"`layers\[1\]` must be float32 or float64 \(got torch.float16\)"),
        ("nan", 3, ValueError, r"`layers\[2\]` must be finite \(got NaN or Inf in 1 of 20 rows\)"),
        ("inf", 3, ValueError, r"`layers\[2\]` must be finite"),
        ("empty", 3, ValueError, r"`layers\[1\]` must not be empty"),
        ("device", 3, ValueError, r"`layers\[1\]` must be on the same device as `layers\[0\]`"),
        ("ok", 0, ValueError, r"`k` must be >= 1 \(got 0\)"),
        ("ok", 20, ValueError, r"`k` must be < 20 \(got 20\)"),
        ("notalist", 3, TypeError, r"`layers` must be a sequence"),
    ],
)
def test_bad_input(layers: str, k: int, error: type[Exception], match: str) -> None:
    base = [torch.randn(20, 4) for _ in range(4)]
    cases = {
        "tensor": torch.randn(3, 20, 4),
        "two": base[:2],
        "mismatch": [base[0], base[1], torch.randn(19, 4)],
        "rank": [base[0], torch.randn(20), base[2]],
        "int": [base[0], torch.ones(20, 4, dtype=torch.long), base[2]],
        "bf16": [base[0], base[1].bfloat16(), base[2]],
        "fp16": [base[0], base[1].half(), base[2]],
        "nan": [base[0], base[1], base[2].index_fill(0, torch.tensor([3]), float("nan"))],
        "inf": [base[0], base[1], base[2].index_fill(0, torch.tensor([3]), float("inf"))],
        "empty": [base[0], torch.zeros(20, 0), base[2]],
        "device": [base[0], torch.empty(20, 4, device="meta"), base[2]],
        "ok": base,
        "notalist": 42,
    }
    with pytest.raises(error, match=match):
        ricci_flow(cases[layers], k)  # type: ignore[arg-type]


def test_option_errors() -> None:
    layers = _mlp_layers()
    with pytest.raises(ValueError, match=r"`convention` must be one of 'baptista', 'hehl' \(got 'paper'\)"):
        ricci_flow(layers, 5, convention="paper")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`curvature` must be one of"):
        ricci_flow(layers, 5, curvature="ollivier")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`knn_backend` must be one of"):
        ricci_flow(layers, 5, knn_backend="faiss")  # type: ignore[arg-type]


def test_local_and_layer_coefficients_are_bounded() -> None:
    result = ricci_flow(_mlp_layers(depth=5), 8, convention="hehl", curvature="augmented_forman")
    finite = result.local[~result.local.isnan()]
    assert finite.numel() > 0 and bool((finite.abs() <= 1).all())
    assert 0.0 <= result.local_negative_share <= 1.0
    assert -1 <= result.critical_layer < result.layer_coefficient.numel()


def test_small_memory_budget_gives_identical_results() -> None:
    layers = _mlp_layers(n=300, depth=4)
    gen = torch.Generator().manual_seed(9)
    layers[2][:40] = 0.0  # duplicates take the dedup path
    layers[3] = layers[3] + 100.0 * (torch.rand(300, 1, generator=gen) > 0.5)  # and a disconnected layer
    for convention in ("baptista", "hehl"):
        big = ricci_flow(layers, 7, convention=convention)  # type: ignore[arg-type]
        small = ricci_flow(layers, 7, convention=convention, memory_budget=1 << 16)  # type: ignore[arg-type]
        for field in (
            "total_curvature",
            "eta",
            "eta_connected",
            "geodesic_sum",
            "local",
            "layer_coefficient",
        ):
            torch.testing.assert_close(
                getattr(small, field), getattr(big, field), equal_nan=True, rtol=0, atol=0
            )
        assert small.excluded == big.excluded
    with pytest.raises(ValueError, match=r"`memory_budget` must be >= 65536 \(got 10\)"):
        ricci_flow(layers, 7, memory_budget=10)


def test_connected_coefficient_finite_when_every_paper_eta_is_nan() -> None:
    # Sparse random graphs (k = 2) whose components regroup from layer to layer: in every transition some
    # points only lose reachable points (+Inf rows) and others only gain (-Inf rows), so R's eta is NaN,
    # the exclusion rule (+-Inf means) does not fire, and the paper's coefficient is undefined.
    gen = torch.Generator().manual_seed(27)
    result = ricci_flow([torch.randn(40, 2, generator=gen) for _ in range(5)], 2)
    assert bool(torch.isnan(result.eta).all()) and not result.excluded
    assert math.isnan(result.coefficient)
    assert bool(torch.isfinite(result.eta_connected).all())
    assert math.isfinite(result.coefficient_connected)


def test_deprecated_field_names_warn_and_alias_the_new_ones() -> None:
    result = ricci_flow(_mlp_layers(), 8)
    with pytest.warns(
        DeprecationWarning, match=r"`RicciFlowResult.curvature` is deprecated: use `total_curvature`"
    ):
        old_curvature = result.curvature
    assert old_curvature is result.total_curvature
    with pytest.warns(
        DeprecationWarning, match=r"`RicciFlowResult.layer` is deprecated: use `layer_coefficient`"
    ):
        old_layer = result.layer
    assert old_layer is result.layer_coefficient
    assert result.class_modularity is None and result.curvature_gap is None  # no labels given


def test_convention_and_curvature_options_come_from_their_registries() -> None:
    from typing import get_args

    from lightning_ricci.geometry.conventions import CONVENTION_SPECS, CONVENTIONS, Convention
    from lightning_ricci.geometry.curvature import CURVATURES, EDGE_CURVATURES, EdgeCurvature

    assert CONVENTIONS == get_args(Convention) == tuple(CONVENTION_SPECS)
    assert EDGE_CURVATURES == get_args(EdgeCurvature) == tuple(CURVATURES)
    layers = _mlp_layers(n=60)
    for name in CONVENTIONS:  # every registered convention runs and reports its name
        assert ricci_flow(layers, 4, convention=name).convention == name


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        ([0, 1] * 30, TypeError, r"`labels` must be a torch.Tensor .* \(got list\)"),
        (torch.zeros(60), TypeError, r"`labels` must hold integer class ids \(got dtype torch.float32\)"),
        (
            torch.zeros(60, dtype=torch.bool),
            TypeError,
            r"`labels` must hold integer class ids \(got dtype torch.bool\)",
        ),
        (
            torch.zeros(59, dtype=torch.long),
            ValueError,
            r"`labels` must have shape \[N\] = \[60\].*\(got shape \(59,\)\)",
        ),
        (torch.zeros(60, 1, dtype=torch.long), ValueError, r"`labels` must have shape \[N\] = \[60\]"),
        (torch.arange(60) - 1, ValueError, r"`labels` must be non-negative class ids \(got -1\)"),
        (
            torch.zeros(60, dtype=torch.long, device="meta"),
            ValueError,
            r"`labels` must be on the device of `layers`",
        ),
    ],
)
def test_bad_labels(labels: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ricci_flow(_mlp_layers(n=60), 4, labels=labels)  # type: ignore[arg-type]


def test_labels_add_class_fields_and_change_nothing_else() -> None:
    layers = _mlp_layers(n=120)
    labels = (layers[0][:, 0] > 0).long() * 7  # any non-negative ids, not necessarily 0..C-1
    plain, labelled = ricci_flow(layers, 6), ricci_flow(layers, 6, labels=labels)
    for field in ("total_curvature", "eta", "local", "layer_coefficient", "node_curvature"):
        torch.testing.assert_close(
            getattr(labelled, field), getattr(plain, field), rtol=0, atol=0, equal_nan=True
        )
    # Mixing by hand on the result's own union edges: the share of edges whose ends differ in label.
    for layer, edges in enumerate(labelled.edge_index):
        mixing = (labels[edges[0]] != labels[edges[1]]).double().mean()
        assert float(labelled.class_mixing[layer]) == pytest.approx(float(mixing), abs=1e-15)
    # The input layer separates the classes along feature 0 better than chance; a constant labelling
    # has no "between" edges, so the curvature gap is undefined there.
    assert float(labelled.class_mixing[0]) < 0.5
    single = ricci_flow(layers, 6, labels=torch.zeros(120, dtype=torch.long))
    assert bool(torch.isnan(single.curvature_gap).all()) and bool((single.class_mixing == 0).all())


@pytest.mark.parametrize(
    ("k", "match"),
    [
        (True, r"`k` must be an int \(got bool True\)"),
        (np.bool_(True), r"`k` must be an int \(got bool True\)"),
        (torch.tensor(True), r"`k` must be an int \(got 0-d Tensor of dtype torch.bool\)"),
        (np.array(True), r"`k` must be an int \(got 0-d ndarray of dtype bool\)"),
        (5.0, r"`k` must be an int \(got float\)"),
        (np.float64(5.0), r"`k` must be an int \(got float64\)"),
        (torch.tensor(5.0), r"`k` must be an int \(got 0-d Tensor of dtype torch.float32\)"),
        (torch.tensor([[5]]), r"`k` must be an int \(got Tensor of shape \(1, 1\)\)"),
        ("5", r"`k` must be an int \(got str\)"),
    ],
)
def test_k_refuses_bools_floats_and_arrays(k: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        ricci_flow(_mlp_layers(n=40), k)  # type: ignore[call-overload]


def test_k_accepts_python_numpy_and_0d_tensor_integers() -> None:
    layers = _mlp_layers(n=60)
    want = ricci_flow(layers, 5)
    for k in (np.int64(5), np.int32(5), np.array(5), torch.tensor(5), torch.tensor(5, dtype=torch.uint8)):
        got = ricci_flow(layers, k)  # type: ignore[call-overload]
        assert got.k == 5 and type(got.k) is int
        assert torch.equal(got.total_curvature, want.total_curvature)


def test_a_single_point_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=r"`layers` must hold at least 2 points \(N >= 2\) .*\(got N = 1\)"):
        ricci_flow([torch.randn(1, 3)] * 3, 1)
    from lightning_ricci.geometry._checks import check_int

    with pytest.raises(ValueError, match=r"`k` has no valid value: it must be >= 1 and < 1 \(got 1\)"):
        check_int("k", 1, low=1, high=1)

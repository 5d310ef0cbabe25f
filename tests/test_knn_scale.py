"""Exact kNN at every width and magnitude, against an independent float64 reference (scipy's cdist)."""

from __future__ import annotations

import pytest
import torch
from reference import edge_set, knn_reference

from lightning_ricci import knn_graph
from lightning_ricci.geometry.knn import knn_edges

spatial = pytest.importorskip("scipy.spatial")


@pytest.mark.parametrize("ties", ["keep", "first"])
def test_wide_relu_features_match_float64(device: torch.device, ties: str) -> None:
    # Wide enough that a plain float32 rounding bound (growing with D) separates nothing.
    gen = torch.Generator().manual_seed(3)
    x = torch.relu(torch.randn(160, 20000, generator=gen))
    got = knn_graph(x.to(device), 12, ties=ties)
    assert edge_set(got) == knn_reference(x.double().numpy(), 12, ties)


def test_tight_clusters_match_float64(device: torch.device) -> None:
    # Centred norms far above the neighbour distances: the estimates cannot separate most candidates.
    gen = torch.Generator().manual_seed(4)
    centres = torch.randn(4, 3000, generator=gen) * 100.0
    x = centres[torch.arange(120) % 4] + torch.randn(120, 3000, generator=gen)
    for ties in ("keep", "first"):
        assert edge_set(knn_graph(x.to(device), 20, ties=ties)) == knn_reference(x.double().numpy(), 20, ties)


def test_exact_and_near_ties_at_large_width() -> None:
    # Rows base + e_i are all at squared distance 2 from each other (exact ties among distinct rows);
    # three rows are moved by 2^-10 along a shared axis (a near-tie, 1e-9 of the squared norms).
    dim = 4096
    base = torch.full((dim,), 1000.0)
    x = base.repeat(40, 1)
    x[torch.arange(40), torch.arange(40) + 1] += 1.0
    x[:3, 0] += 2.0**-10
    for ties in ("keep", "first"):
        for k in (1, 2, 5):
            got = knn_graph(x, k, ties=ties, max_edges=40 * 39)  # ties="keep" gives ~all pairs
            assert edge_set(got) == knn_reference(x.double().numpy(), k, ties), (ties, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("magnitude", ["huge", "tiny"])
@pytest.mark.parametrize("ties", ["keep", "first"])
def test_huge_and_tiny_magnitudes(dtype: torch.dtype, magnitude: str, ties: str) -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(90, 40, generator=gen, dtype=torch.float64)
    x[::7] = torch.round(x[::7] * 2) / 2  # a few exact ties and, after rounding, coincident rows
    x[1] = x[0]
    if magnitude == "huge":
        factor = 2e19 if dtype == torch.float32 else 1e155
        extremes = [3e38 / 8, 1e25] if dtype == torch.float32 else [1e300, 1e200]
    else:
        factor = 1e-30 if dtype == torch.float32 else 1e-300
        extremes = [1e-36, 1e-33] if dtype == torch.float32 else [1e-305, 1e-302]
    for scale in [factor, *extremes]:
        scaled = (x * scale).to(dtype)
        assert torch.isfinite(scaled).all() and (scaled != 0).any()
        before = scaled.clone()
        got = knn_graph(scaled, 6, ties=ties)
        assert torch.equal(scaled, before)  # the rescaling works on copies
        assert edge_set(got) == knn_reference(scaled.double().numpy(), 6, ties), scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_power_of_two_rescaling_changes_nothing(dtype: torch.dtype) -> None:
    # kNN is scale invariant; a power of two rescales every rounding alike, so the graph is identical.
    gen = torch.Generator().manual_seed(6)
    x = torch.relu(torch.randn(200, 700, generator=gen)).to(dtype)
    x[5] = x[9]
    for ties in ("keep", "first"):
        want = knn_graph(x, 10, ties=ties)
        for power in (-100, -30, 30, 100):
            assert torch.equal(knn_graph(x * 2.0**power, 10, ties=ties), want), (ties, power)


def test_one_huge_value_in_an_ordinary_layer() -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(60, 8, generator=gen)
    x[17, 3] = 2e19  # squares overflow float32
    for ties in ("keep", "first"):
        assert edge_set(knn_graph(x, 4, ties=ties)) == knn_reference(x.double().numpy(), 4, ties)


def test_small_memory_budget_gives_the_same_graph() -> None:
    # A budget below the [N, N] matrix: row blocks and retries recompute the estimates.
    gen = torch.Generator().manual_seed(8)
    x = torch.relu(torch.randn(300, 1500, generator=gen))
    x[:40] = 0.0  # coincident rows: the grouped path
    for keep in (True, False):
        small, _ = knn_edges(x, 9, keep_ties=keep, memory_budget=1 << 16)
        assert edge_set(small) == knn_reference(x.double().numpy(), 9, "keep" if keep else "first")

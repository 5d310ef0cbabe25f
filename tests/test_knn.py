from __future__ import annotations

import pytest
import torch
from reference import edge_set, knn_reference

from lightning_ricci import knn_graph

spatial = pytest.importorskip("scipy.spatial")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ties", ["keep", "first"])
def test_matches_reference_on_random_clouds(device: torch.device, dtype: torch.dtype, ties: str) -> None:
    gen = torch.Generator().manual_seed(0)
    for n, dim, k in [(50, 2, 1), (120, 8, 5), (200, 64, 12), (90, 300, 30)]:
        x = torch.randn(n, dim, generator=gen, dtype=torch.float64).to(dtype)
        got = knn_graph(x.to(device), k, ties=ties)
        assert got.device.type == device.type
        assert edge_set(got) == knn_reference(x.double().numpy(), k, ties)
        if ties == "first":
            assert torch.equal(torch.bincount(got[0], minlength=n).cpu(), torch.full((n,), k))


@pytest.mark.parametrize("ties", ["keep", "first"])
def test_duplicate_rows_and_exact_ties(device: torch.device, ties: str) -> None:
    gen = torch.Generator().manual_seed(1)
    for trial in range(12):
        n = int(torch.randint(6, 70, (1,), generator=gen))
        x = torch.randint(0, 3, (n, 2), generator=gen).double()  # grid points: many exact ties
        if trial % 2:
            x[: n // 2] = 0.0  # dead-ReLU-like duplicates
        if bool((x == x[0]).all()):
            continue
        k = int(torch.randint(1, n, (1,), generator=gen))
        got = knn_graph(x.to(device), k, ties=ties)
        assert edge_set(got) == knn_reference(x.numpy(), k, ties), (trial, n, k)


def test_keep_ties_exceeds_k_on_equal_spacing() -> None:
    x = torch.tensor([0.0, 1.0, 2.0, 3.0])
    got = knn_graph(x, 1, ties="keep")
    assert edge_set(got) == {(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)}
    assert edge_set(knn_graph(x, 1, ties="first")) == {(0, 1), (1, 0), (2, 1), (3, 2)}


def test_near_ties_resolved_in_float64() -> None:
    # Two candidates whose squared distances differ far below float32 resolution of the norms.
    base = torch.full((1, 16), 1000.0, dtype=torch.float64)
    x = torch.cat([base, base + 1.0, base - 1.0 - 1e-9, base + 50.0]).float().double()
    got = knn_graph(x, 1, ties="keep")
    assert edge_set(got) == knn_reference(x.numpy(), 1, "keep")


def test_constant_points_give_complete_graph() -> None:
    got = knn_graph(torch.zeros(5, 3), 2)
    assert got.shape == (2, 20)


def test_output_sorted_and_long() -> None:
    got = knn_graph(torch.randn(40, 3), 4)
    assert got.dtype == torch.long
    key = got[0] * 40 + got[1]
    assert torch.equal(key, key.sort().values)


def test_errors() -> None:
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"`k` must be < 10 \(got 10\)"):
        knn_graph(x, 10)
    with pytest.raises(ValueError, match=r"`k` must be >= 1 \(got 0\)"):
        knn_graph(x, 0)
    with pytest.raises(TypeError, match=r"`k` must be an int \(got float\)"):
        knn_graph(x, 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`x` must be float32 or float64"):
        knn_graph(x.half(), 2)
    with pytest.raises(TypeError, match="`x` must be float32 or float64"):
        knn_graph(torch.ones(10, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="`x` must be finite"):
        knn_graph(torch.tensor([[0.0], [float("nan")], [1.0]]), 1)
    with pytest.raises(ValueError, match="`ties` must be one of"):
        knn_graph(x, 2, ties="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`backend` must be one of"):
        knn_graph(x, 2, backend="faiss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be empty"):
        knn_graph(torch.zeros(4, 0), 1)


def test_torch_cluster_backend_agrees_on_tie_free_data(device: torch.device) -> None:
    pytest.importorskip("torch_cluster")
    gen = torch.Generator().manual_seed(2)
    for n, dim, k in [(100, 3, 5), (150, 32, 10)]:
        x = torch.randn(n, dim, generator=gen).to(device)
        assert edge_set(knn_graph(x, k, backend="torch_cluster")) == edge_set(knn_graph(x, k, backend="gemm"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_cluster_refuses_large_k_on_cuda() -> None:
    pytest.importorskip("torch_cluster")
    with pytest.raises(ValueError, match="`k` must be <= 99"):
        knn_graph(torch.randn(300, 4, device="cuda"), 100, backend="torch_cluster")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tf32_setting_restored_and_ignored() -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    x = torch.randn(500, 256, dtype=torch.float64)
    got = knn_graph(x.float().cuda(), 10)
    assert torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    assert edge_set(got) == knn_reference(x.float().double().numpy(), 10, "first")

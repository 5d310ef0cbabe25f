from __future__ import annotations

import math

import pytest
import torch

from lightning_ricci import pearson

stats = pytest.importorskip("scipy.stats")


def test_matches_scipy() -> None:
    gen = torch.Generator().manual_seed(0)
    for size in (2, 3, 8, 100):
        x, y = torch.randn(size, generator=gen), torch.randn(size, generator=gen)
        assert float(pearson(x, y)) == pytest.approx(stats.pearsonr(x.numpy(), y.numpy())[0], abs=1e-12)


def test_batched_and_masked() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 9, generator=gen, dtype=torch.float64), torch.randn(5, 9, generator=gen, dtype=torch.float64)
    mask = torch.rand(5, 9, generator=gen) > 0.3
    got = pearson(x, y, mask)
    for i in range(5):
        m = mask[i].numpy()
        expected = stats.pearsonr(x[i].numpy()[m], y[i].numpy()[m])[0] if m.sum() >= 2 else math.nan
        assert float(got[i]) == pytest.approx(expected, abs=1e-12, nan_ok=True)


def test_undefined_cases_are_nan() -> None:
    assert math.isnan(pearson(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.0, 2.0, 3.0])))
    assert math.isnan(pearson(torch.tensor([1.0]), torch.tensor([2.0])))
    assert math.isnan(pearson(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]), torch.tensor([True, False])))
    with pytest.raises(ValueError, match="same shape"):
        pearson(torch.zeros(3), torch.zeros(4))

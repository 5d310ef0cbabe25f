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
    x, y = (
        torch.randn(5, 9, generator=gen, dtype=torch.float64),
        torch.randn(5, 9, generator=gen, dtype=torch.float64),
    )
    mask = torch.rand(5, 9, generator=gen) > 0.3
    got = pearson(x, y, mask)
    for i in range(5):
        m = mask[i].numpy()
        expected = stats.pearsonr(x[i].numpy()[m], y[i].numpy()[m])[0] if m.sum() >= 2 else math.nan
        assert float(got[i]) == pytest.approx(expected, abs=1e-12, nan_ok=True)


def test_undefined_cases_are_nan() -> None:
    assert math.isnan(pearson(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.0, 2.0, 3.0])))
    assert math.isnan(pearson(torch.tensor([1.0]), torch.tensor([2.0])))
    assert math.isnan(
        pearson(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]), torch.tensor([True, False]))
    )
    with pytest.raises(ValueError, match="same shape"):
        pearson(torch.zeros(3), torch.zeros(4))


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e200, 1e300])
def test_huge_and_tiny_magnitudes(scale: float) -> None:
    ramp = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert float(pearson(ramp * scale, ramp)) == pytest.approx(1.0, abs=1e-15)
    assert float(pearson(ramp, -ramp * scale)) == pytest.approx(-1.0, abs=1e-15)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 30, generator=gen, dtype=torch.float64) * scale
    y = torch.randn(4, 30, generator=gen, dtype=torch.float64) + x / scale
    mask = torch.rand(4, 30, generator=gen) > 0.25
    got = pearson(x, y * scale, mask)
    for i in range(4):
        m = mask[i].numpy()
        expected = stats.pearsonr(x[i].numpy()[m], (y[i] * scale).numpy()[m])[0]
        assert float(got[i]) == pytest.approx(expected, abs=1e-13)
        # The correlation does not depend on the magnitude: the same as the values near 1.
        assert float(got[i]) == pytest.approx(float(pearson(x[i] / scale, y[i], mask[i])), abs=1e-13)


def test_extreme_finite_values() -> None:
    top = torch.finfo(torch.float64).max
    x = torch.tensor([top, -top, 0.5 * top], dtype=torch.float64)
    y = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    assert float(pearson(x, y)) == pytest.approx(1.0, abs=1e-15)
    sub = torch.tensor([5e-324, 1e-323, 1.5e-323], dtype=torch.float64)  # subnormal: exactly 1, 2, 3 ulps
    assert float(pearson(sub, torch.tensor([1.0, 2.0, 3.0]))) == pytest.approx(1.0, abs=1e-15)
    assert math.isnan(pearson(torch.tensor([1.0, math.inf, 2.0]), torch.tensor([1.0, 2.0, 3.0])))


def test_rejects_bad_inputs() -> None:
    x = torch.tensor([1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match=r"`x` must be a torch.Tensor \(got list\)"):
        pearson([1.0, 2.0, 3.0], x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`y` must be a torch.Tensor \(got list\)"):
        pearson(x, [1.0, 2.0, 3.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`x` must be real \(got torch.complex64\)"):
        pearson(torch.tensor([1 + 1j, 2.0, 3.0]), x)
    with pytest.raises(TypeError, match=r"`y` must be real \(got torch.complex128\)"):
        pearson(x, x.to(torch.complex128))
    with pytest.raises(ValueError, match=r"`x` must hold at least one value .*\(got shape \(0,\)\)"):
        pearson(torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match=r"`x` must hold at least one value .*\(got shape \(\)\)"):
        pearson(torch.tensor(1.0), torch.tensor(2.0))
    with pytest.raises(TypeError, match=r"`mask` must be a bool tensor \(got torch.int64\)"):
        pearson(x, x, torch.tensor([1, 0, 1]))
    with pytest.raises(TypeError, match=r"`mask` must be a bool torch.Tensor \(got list\)"):
        pearson(x, x, [True, False, True])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`mask` must have the shape of `x` \(3,\) \(got \(2,\)\)"):
        pearson(x, x, torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"`y` must be on the device of `x` \(cpu\) \(got meta\)"):
        pearson(x, torch.zeros(3, device="meta"))
    with pytest.raises(ValueError, match=r"`mask` must be on the device of `x` \(cpu\) \(got meta\)"):
        pearson(x, x, torch.ones(3, dtype=torch.bool, device="meta"))

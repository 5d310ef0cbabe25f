"""Field-by-field equality of two ``RicciFlowResult``s (NaN equal to NaN), shared by the tests that
compare two routes to the same numbers (the monitor, ``analyze`` and direct ``ricci_flow`` calls)."""

from __future__ import annotations

import dataclasses
import math

import torch

from lightning_ricci import RicciFlowResult


def assert_same(a: RicciFlowResult, b: RicciFlowResult) -> None:
    for field in dataclasses.fields(RicciFlowResult):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, torch.Tensor):
            assert torch.equal(x.nan_to_num(9.0), y.nan_to_num(9.0)), field.name
        elif isinstance(x, tuple):
            assert all(torch.equal(p, q) for p, q in zip(x, y)), field.name
        elif isinstance(x, float) and math.isnan(x):
            assert math.isnan(y), field.name
        else:
            assert x == y, field.name

"""Tests of lightning_ricci.plotting: figures of a real result, the missing-matplotlib message."""

from __future__ import annotations

import sys

import pytest
import torch

from lightning_ricci import ricci_flow
from lightning_ricci.plotting import flow_figure, history_figure, local_histogram


@pytest.fixture(scope="module")
def result() -> object:
    torch.manual_seed(0)
    x = torch.randn(60, 3)
    layers = [x]
    for _ in range(4):
        layers.append(torch.relu(layers[-1] @ torch.randn(layers[-1].shape[1], 8)))
    return ricci_flow(layers, 6, convention="hehl")


def test_figures(result: object) -> None:
    pytest.importorskip("matplotlib")
    figure = flow_figure(result, ["input", "a", "b", "c", "d"])  # type: ignore[arg-type]
    assert len(figure.axes) == 3
    assert figure.axes[0].get_xticklabels()[1].get_text() == "a"
    assert len(local_histogram(result, bins=10).axes) == 1  # type: ignore[arg-type]
    history = [
        {"epoch": 0, "coefficient": 0.2, "excluded": False, "local_mean": -0.1},
        {"epoch": 1, "coefficient": -0.4, "excluded": True, "local_mean": -0.5},
    ]
    assert len(history_figure(history).axes) == 1


def test_bad_arguments(result: object) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match=r"`layer_names` must name the 5 layers of `result` \(got 2 names\)"):
        flow_figure(result, ["a", "b"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`bins` must be a positive int \(got 0\)"):
        local_histogram(result, bins=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`history` must hold at least one measurement"):
        history_figure([])
    with pytest.raises(ValueError, match=r"`history\[0\]` lacks \['excluded'\]"):
        history_figure([{"epoch": 0, "coefficient": 0.1, "local_mean": 0.0}])


def test_missing_matplotlib_names_the_extra(result: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import raises ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'lightning-ricci\[plots\]'"):
        flow_figure(result)  # type: ignore[arg-type]

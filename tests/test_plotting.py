"""Tests of lightning_ricci.plotting: the figures draw what the result holds and read on their own."""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
from typing import Any

import pytest
import torch

from lightning_ricci import RicciFlowResult, ricci_flow
from lightning_ricci.plotting import class_structure_figure, flow_figure, history_figure, local_histogram

NAMES = ["input", "a", "b", "c", "d"]
HOLLOW = "$\\eta_l$ undefined: pairs connected in both layers"
STAR = "critical transition (lowest)"


@pytest.fixture(scope="module")
def layers_and_labels() -> tuple[list[torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    labels = torch.arange(60) % 2
    layers = [torch.randn(60, 3) + 3.0 * labels[:, None]]
    for _ in range(4):
        layers.append(torch.relu(layers[-1] @ torch.randn(layers[-1].shape[1], 8)))
    return layers, labels


@pytest.fixture(scope="module")
def result(layers_and_labels: tuple[list[torch.Tensor], torch.Tensor]) -> RicciFlowResult:
    out = ricci_flow(layers_and_labels[0], 6, convention="hehl")
    assert bool(torch.isfinite(out.eta).all()), "the tests below need every layer graph connected"
    return out


@pytest.fixture(scope="module")
def labelled(layers_and_labels: tuple[list[torch.Tensor], torch.Tensor]) -> RicciFlowResult:
    layers, labels = layers_and_labels
    return ricci_flow(layers, 6, convention="hehl", labels=labels)


def _check_reads_on_its_own(figure: Any) -> None:
    """Every axis titled and labelled, and after drawing no offset or multiplier beside any axis."""
    figure.draw_without_rendering()
    for ax in figure.axes:
        assert ax.get_title(), ax
        assert ax.get_xlabel(), ax.get_title()
        assert ax.get_ylabel(), ax.get_title()
        assert ax.yaxis.get_offset_text().get_text() == "", ax.get_title()
        assert ax.xaxis.get_offset_text().get_text() == "", ax.get_title()


def _axis(figure: Any, title_start: str) -> Any:
    (ax,) = [ax for ax in figure.axes if ax.get_title().startswith(title_start)]
    return ax


def _line(ax: Any, label: str) -> Any:
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return line


def _legend_texts(ax: Any) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def _tick_value(text: str) -> float:
    return float(text.replace(",", "").replace("\u2212", "-"))


def test_flow_figure_draws_the_result(result: RicciFlowResult) -> None:
    pytest.importorskip("matplotlib")
    figure = flow_figure(result, NAMES)
    _check_reads_on_its_own(figure)
    assert [ax.get_title() for ax in figure.axes] == [
        "total curvature Ric$_l$",
        "geodesic change $\\eta_l$",
        "layer Ricci coefficient $r_l$",
    ]
    curvature_ax = figure.axes[0]
    assert [t.get_text() for t in curvature_ax.get_xticklabels()] == NAMES
    (curvature,) = curvature_ax.get_lines()
    assert list(curvature.get_ydata()) == result.total_curvature.tolist()
    # eta as a share of the input's geodesic sum, checked through g_{l+1} - g_l (an independent route).
    g = result.geodesic_sum.tolist()
    eta_line = _line(figure.axes[1], "$\\eta_l$, all pairs")
    assert list(eta_line.get_ydata()) == pytest.approx(
        [100 * (b - a) / g[0] for a, b in itertools.pairwise(g)]
    )
    assert HOLLOW not in _legend_texts(figure.axes[1])  # every eta defined: no hollow marker to explain
    assert "k=6" in figure.get_suptitle() and f"{result.coefficient:+.3f}"[1:] in figure.get_suptitle()


def test_long_layer_names_are_shortened_on_the_ticks(result: RicciFlowResult) -> None:
    pytest.importorskip("matplotlib")
    short = flow_figure(result, NAMES)
    assert [t.get_text() for t in short.axes[1].get_xticklabels()] == [
        "input\u2192a",
        "a\u2192b",
        "b\u2192c",
        "c\u2192d",
    ]
    names = ["input", "encoder.block0.act", "encoder.block1.act", "model.layers.11.mlp.act_fn", "head"]
    figure = flow_figure(result, names)
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == [
        "input",
        "encoder.block0.act",
        "encoder.block1.act",
        "model.la\u2026.mlp.act_fn",  # over 20 characters: 8 first and 11 last kept
        "head",
    ]
    transitions = [t.get_text() for t in figure.axes[1].get_xticklabels()]
    assert transitions == [
        "\u2192encoder.block0.act",
        "\u2192encoder.block1.act",
        "\u2192model.la\u2026.mlp.act_fn",
        "\u2192head",
    ]


def test_geodesic_change_is_on_the_same_scale_in_both_conventions(
    result: RicciFlowResult, layers_and_labels: tuple[list[torch.Tensor], torch.Tensor]
) -> None:
    pytest.importorskip("matplotlib")
    baptista = ricci_flow(layers_and_labels[0], 6, convention="baptista")
    assert bool(torch.isfinite(baptista.eta).all())
    # baptista sums eta over ordered pairs: twice hehl's, the same once each is relative to its input sum.
    assert baptista.eta.tolist() != pytest.approx(result.eta.tolist())
    shown = [
        list(_line(flow_figure(r).axes[1], "$\\eta_l$, all pairs").get_ydata()) for r in (result, baptista)
    ]
    assert shown[1] == pytest.approx(shown[0])


def test_huge_values_get_plain_tick_labels_without_an_offset(result: RicciFlowResult) -> None:
    pytest.importorskip("matplotlib")
    # Totals near -1e7 that differ in the last digits: matplotlib's default writes "-1e7" beside the axis.
    huge = dataclasses.replace(result, total_curvature=result.total_curvature - 1.0e7)
    figure = flow_figure(huge, NAMES)
    _check_reads_on_its_own(figure)
    ax = figure.axes[0]
    texts = [t.get_text() for t in ax.get_yticklabels()]
    locs = list(ax.get_yticks())
    assert len(set(texts)) == len(texts) > 1
    assert [_tick_value(t) for t in texts] == pytest.approx(locs, abs=0)  # each label is its tick, in full
    assert all(t.startswith("\u2212") and "," in t for t in texts)


def test_fallback_eta_is_hollow_and_in_the_legend(result: RicciFlowResult) -> None:
    pytest.importorskip("matplotlib")
    eta = result.eta.clone()
    eta[1] = math.inf  # as when layer 1 or 2 is disconnected
    figure = flow_figure(dataclasses.replace(result, eta=eta), NAMES)
    _check_reads_on_its_own(figure)
    ax = figure.axes[1]
    assert HOLLOW in _legend_texts(ax)
    hollow = _line(ax, HOLLOW)
    assert list(hollow.get_xdata()) == [1]
    g0 = float(result.geodesic_sum[0])
    assert list(hollow.get_ydata()) == pytest.approx([100 * float(result.eta_connected[1]) / g0])
    assert hollow.get_markerfacecolor() == "white"


def test_critical_transition_star_is_in_the_legend(result: RicciFlowResult) -> None:
    pytest.importorskip("matplotlib")
    ax = flow_figure(result).axes[2]
    assert STAR in _legend_texts(ax)
    star = _line(ax, STAR)
    coefficients = result.layer_coefficient.tolist()
    lowest = min(range(len(coefficients)), key=lambda i: coefficients[i])
    assert list(star.get_xdata()) == [lowest]
    assert list(star.get_ydata()) == [coefficients[lowest]]
    undefined = dataclasses.replace(
        result, layer_coefficient=torch.full_like(result.layer_coefficient, math.nan)
    )
    assert STAR not in _legend_texts(flow_figure(undefined).axes[2])


def test_class_panel_only_with_labels(result: RicciFlowResult, labelled: RicciFlowResult) -> None:
    pytest.importorskip("matplotlib")
    assert result.class_modularity is None
    assert not any("class" in ax.get_title() for ax in flow_figure(result).axes)
    figure = flow_figure(labelled, NAMES)
    _check_reads_on_its_own(figure)
    assert len(figure.axes) == 4
    ax = _axis(figure, "class structure")
    assert labelled.class_modularity is not None and labelled.class_normalized_cut is not None
    assert labelled.class_mixing is not None
    assert list(_line(ax, "modularity").get_ydata()) == labelled.class_modularity.tolist()
    assert list(_line(ax, "normalized cut").get_ydata()) == labelled.class_normalized_cut.tolist()
    assert list(_line(ax, "mixing (between-class edges)").get_ydata()) == labelled.class_mixing.tolist()
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES


def test_class_structure_figure(result: RicciFlowResult, labelled: RicciFlowResult) -> None:
    pytest.importorskip("matplotlib")
    figure = class_structure_figure(labelled, NAMES)
    _check_reads_on_its_own(figure)
    assert labelled.curvature_gap is not None
    (gap,) = _axis(figure, "curvature gap").get_lines()[1:]  # after the zero line
    assert torch.equal(torch.tensor(list(gap.get_ydata()), dtype=torch.float64), labelled.curvature_gap.cpu())
    with pytest.raises(ValueError, match=r"`result` has no class structure: .*labels="):
        class_structure_figure(result)


def test_local_histogram_counts_the_defined_coefficients(result: RicciFlowResult) -> None:
    pytest.importorskip("matplotlib")
    local = result.local.clone()
    local[:5] = math.nan
    figure = local_histogram(dataclasses.replace(result, local=local), bins=10)
    _check_reads_on_its_own(figure)
    (ax,) = figure.axes
    heights = [patch.get_height() for patch in ax.patches]
    assert len(heights) == 10
    assert sum(heights) == 55  # 60 probe points, 5 undefined
    assert "5 of 60 undefined" in ax.get_title()
    mean = float(local[~local.isnan()].mean())
    (mean_line,) = [line for line in ax.get_lines() if line.get_label().startswith("mean")]
    assert list(mean_line.get_xdata()) == pytest.approx([mean, mean])


def test_history_figure_marks_fallbacks_and_failures() -> None:
    pytest.importorskip("matplotlib")
    history = [
        {"epoch": 0, "coefficient": 0.2, "excluded": False, "local_mean": -0.1},
        {"epoch": 1, "coefficient": -0.4, "excluded": True, "local_mean": -0.5},
        {"epoch": 2, "coefficient": 0.0, "excluded": True, "failed": True, "local_mean": 0.0},
        {"epoch": 3, "coefficient": -0.6, "excluded": False, "local_mean": -0.3},
    ]
    figure = history_figure(history)
    _check_reads_on_its_own(figure)
    (ax,) = figure.axes
    assert list(_line(ax, "global coefficient").get_ydata()) == [0.2, -0.4, 0.0, -0.6]
    assert list(_line(ax, "mean local coefficient").get_ydata()) == [-0.1, -0.5, 0.0, -0.3]
    fallback = _line(ax, "fallback: paper's value undefined")
    assert (list(fallback.get_xdata()), list(fallback.get_ydata())) == ([1], [-0.4])  # not the failed one
    failed = _line(ax, "measurement failed")
    assert (list(failed.get_xdata()), list(failed.get_ydata())) == ([2], [0.0])
    clean = history_figure([history[0], history[3]]).axes[0]
    assert _legend_texts(clean) == ["global coefficient", "mean local coefficient"]


def test_bad_arguments(result: RicciFlowResult, labelled: RicciFlowResult) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match=r"`layer_names` must name the 5 layers of `result` \(got 2 names\)"):
        flow_figure(result, ["a", "b"])
    with pytest.raises(ValueError, match=r"`layer_names` must name the 5 layers of `result` \(got 2 names\)"):
        class_structure_figure(labelled, ["a", "b"])
    with pytest.raises(ValueError, match=r"`bins` must be a positive int \(got 0\)"):
        local_histogram(result, bins=0)
    with pytest.raises(ValueError, match=r"`history` must hold at least one measurement"):
        history_figure([])
    with pytest.raises(ValueError, match=r"`history\[0\]` lacks \['excluded'\]"):
        history_figure([{"epoch": 0, "coefficient": 0.1, "local_mean": 0.0}])


def test_missing_matplotlib_names_the_extra(result: RicciFlowResult, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import raises ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'lightning-ricci\[plots\]'"):
        flow_figure(result)

"""``analyze`` (offline analysis of any nn.Module), ``critical_depth`` and ``mean_layer_curve``."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _results import assert_same
from torch import nn

from lightning_ricci import AnalysisResult, RicciFlowResult, analyze, critical_depth, ricci_flow
from lightning_ricci.analysis import default_k, mean_layer_curve


def mlp(depth: int = 4, width: int = 12, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(2, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 1), nn.Sigmoid())


def probe(n: int = 80, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def manual_layers(net: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    out, h = [x], x
    with torch.no_grad():
        for module in net:
            h = module(h)
            if isinstance(module, (nn.ReLU, nn.Sigmoid)):
                out.append(h)
    return out


@pytest.mark.parametrize("convention", ["baptista", "hehl"])
def test_analyze_equals_ricci_flow_on_the_activations(convention: str) -> None:
    net, x = mlp(), probe()
    result = analyze(net, x, convention=convention, curvature="augmented_forman")
    assert isinstance(result, AnalysisResult) and isinstance(result, RicciFlowResult)
    assert result.layer_names == ("input", "1", "3", "5", "7", "9")
    assert result.k == default_k(80) == 5
    expected = ricci_flow(manual_layers(net, x), 5, convention=convention, curvature="augmented_forman")
    assert_same(result, expected)


def test_analyze_layer_selection_rules() -> None:
    net, x = mlp(depth=3), probe()
    by_class = analyze(net, x, layers=nn.ReLU, k=6)
    assert by_class.layer_names == ("input", "1", "3", "5")
    by_name = analyze(net, (x, torch.zeros(80)), layers=["3", "5", "7"], k=6)  # (inputs, labels) probe
    assert by_name.layer_names == ("input", "3", "5", "7")
    assert by_name.num_layers == 4 and by_name.k == 6
    by_predicate = analyze(net, x, layers=lambda name, module: isinstance(module, nn.Linear), k=6)
    assert by_predicate.layer_names == ("input", "0", "2", "4", "6")


def test_analyze_reused_module_and_input_name_clash() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.input = nn.Linear(2, 8)  # a module called "input"
            self.hidden = nn.Linear(8, 8)
            self.act = nn.Tanh()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.hidden(self.act(self.hidden(self.act(self.input(x))))))

    result = analyze(Shared(), probe(), layers=["input", "act"], k=5)
    assert result.layer_names == ("probe_input", "input", "act:0", "act:1", "act:2")
    assert analyze(Shared(), probe(), k=5).layer_names == ("input", "act:0", "act:1", "act:2")


def test_analyze_batches_modes_hooks_and_float64() -> None:
    net, x = mlp(), probe(n=70)
    net.train()
    whole = analyze(net, x, batch_size=256)
    chunked = analyze(net, x, batch_size=16)
    assert_same(whole, chunked)
    assert all(m.training for m in net.modules())  # training flags restored
    assert all(not m._forward_hooks for m in net.modules())  # no hooks left
    double = analyze(mlp().double(), x.double())
    assert double.total_curvature.dtype == torch.float64 and double.layer_names == whole.layer_names


def test_analyze_matches_the_monitor() -> None:
    pytest.importorskip("lightning")
    from lightning.pytorch import LightningModule, Trainer
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_ricci import RicciFlowMonitor

    class Module(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp(depth=3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.binary_cross_entropy(self(x).squeeze(-1), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            pass

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    x = probe(n=64)
    data = DataLoader(TensorDataset(x, (x.norm(dim=1) > 1).float()), batch_size=32)
    model = Module()
    monitor = RicciFlowMonitor(probe=x, convention="hehl", log_histograms=False, log_figures=False)
    Trainer(
        max_epochs=1, callbacks=[monitor], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    ).fit(model, data, data)  # fmt: skip
    result = analyze(model, x, convention="hehl")
    assert monitor.last_result is not None
    assert list(result.layer_names) == monitor.layer_names == ["input", "net.1", "net.3", "net.5", "net.7"]
    assert_same(result, monitor.last_result)


def test_analyze_to_pyg() -> None:
    pytest.importorskip("torch_geometric")
    from lightning_ricci import to_pyg

    result = analyze(mlp(depth=2), probe(), k=5)
    data = to_pyg(result, 1)
    assert data.num_nodes == 80 and data.edge_index.shape[1] == 2 * result.edge_index[1].shape[1]


def test_analyze_errors() -> None:
    net, x = mlp(depth=2), probe(n=20)
    with pytest.raises(
        ValueError, match=r"`k` must be smaller than the number of probe points 20 \(got 20\)"
    ):
        analyze(net, x, k=20)
    with pytest.raises(ValueError, match=r"`k` must be a positive int or None \(got 0\)"):
        analyze(net, x, k=0)
    with pytest.raises(
        ValueError, match=r"does not exist in Sequential \(got 'nope'\).*Modules that exist: '0'"
    ):
        analyze(net, x, layers=["1", "nope"])
    with pytest.raises(TypeError, match=r"`layers` must be a list of module names, not a str \(got '1'"):
        analyze(net, x, layers="1")
    with pytest.raises(
        ValueError, match=r"`layers` must select at least 2 layers of Sequential .*\(got \['1'\]\)"
    ):
        analyze(net, x, layers=["1"])
    with pytest.raises(ValueError, match=r"`convention` must be one of .* \(got 'r'\)"):
        analyze(net, x, convention="r")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`curvature` must be one of .* \(got 'ricci'\)"):
        analyze(net, x, curvature="ricci")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"`probe` must hold at least 3 samples along dim 0 \(got shape \(2, 2\)\)"
    ):
        analyze(net, x[:2])
    with pytest.raises(TypeError, match=r"`probe` must be a tensor .* \(got list\)"):
        analyze(net, [[0.0, 1.0]])
    with pytest.raises(TypeError, match=r"`model` must be an nn.Module \(got function\)"):
        analyze(lambda t: t, x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`batch_size` must be an int >= 1 \(got 0\)"):
        analyze(net, x, batch_size=0)
    with pytest.raises(ValueError, match="Linear has no submodule whose output can be a layer"):
        analyze(nn.Linear(2, 3), x)


def test_mean_layer_curve_and_critical_depth() -> None:
    nan = math.nan
    curves = [[-0.2, -0.6, -0.4], [-0.4, -0.8, -0.6, -0.1], [nan, -0.7]]
    expected = torch.tensor([-0.3, -0.7, -0.5, -0.1], dtype=torch.float64)
    assert torch.allclose(mean_layer_curve(curves), expected)
    assert critical_depth(curves) == 1
    assert critical_depth([-0.1, -0.5, -0.5, 0.2]) == 1  # first index on a tie
    assert critical_depth(torch.tensor([0.3, nan, 0.1])) == 2  # NaN ignored
    assert critical_depth([nan, nan]) == -1 and critical_depth(torch.tensor([])) == -1
    table = torch.tensor([[-0.2, -0.6, nan], [-0.4, -0.8, -0.9]])
    assert critical_depth(table) == 2 and torch.allclose(
        mean_layer_curve(table)[2], torch.tensor(-0.9).double()
    )
    result = analyze(mlp(), probe(), k=5)
    assert critical_depth(result) == result.critical_layer >= 0
    assert critical_depth([result, result.layer]) == result.critical_layer


def test_critical_depth_errors() -> None:
    with pytest.raises(ValueError, match=r"must hold at least one network \(got an empty sequence\)"):
        critical_depth([])
    with pytest.raises(
        TypeError, match=r"`layer_coefficients\[1\]` must be a RicciFlowResult, .* \(got str\)"
    ):
        critical_depth([[0.1, 0.2], "abc"])
    with pytest.raises(TypeError, match=r"`layer_coefficients\[0\]` must hold numbers"):
        critical_depth([[0.1, None]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"must be \[T\] or \[M, T\] \(got shape \(1, 2, 3\)\)"):
        critical_depth(torch.zeros(1, 2, 3))
    with pytest.raises(
        TypeError, match=r"`layer_coefficients` must be a RicciFlowResult, a tensor .* \(got int\)"
    ):
        critical_depth(3)  # type: ignore[arg-type]


def test_analyze_k_scan_equals_single_k_calls() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh())
    x = torch.randn(60, 2)
    scan = analyze(net, x, k=[8, 4], convention="hehl")
    assert scan.ks == [8, 4] and [r.k for r in scan.results] == [8, 4]
    for result, k in zip(scan.results, [8, 4]):
        single = analyze(net, x, k=k, convention="hehl")
        assert isinstance(result, AnalysisResult) and result.layer_names == single.layer_names
        torch.testing.assert_close(result.total_curvature, single.total_curvature)
        assert result.coefficient == pytest.approx(single.coefficient, nan_ok=True)
    with pytest.raises(ValueError, match=r"`k` must be smaller than the number of probe points 60"):
        analyze(net, x, k=[4, 60])
    with pytest.raises(ValueError, match=r"`k` must hold distinct values"):
        analyze(net, x, k=[4, 4])

"""RicciFlowMonitor with zero configuration on the model families people train (real Trainer.fit runs).

Each family of ``model_zoo`` at a small width: the chosen layers, their reductions, the labels, finite
logged values with ``ricci/failed`` = 0, no hooks left; dict batches; a PyG graph probe; ``analyze``
giving the monitor's numbers on the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _results import assert_same
from lightning.pytorch import Trainer
from model_zoo import ZOO, make_circles_mlp, make_gcn, make_gcn_stack
from torch import nn

from lightning_ricci import RicciFlowMonitor, analyze

#: family -> (layer names after "input", reductions of the test-size model by the documented rule)
EXPECTED: dict[str, tuple[list[str], dict[str, str]]] = {
    "cifar_resnet18": (
        [f"net.layer{s}.{b}" for s in (1, 2, 3, 4) for b in (0, 1)] + ["net.fc"],
        # width 8: layer1 maps are [8, 32, 32] = 8192 values > 4096: pooled to 11 x 11 (8 * 121 <= 1024)
        {
            "input": "flatten",
            "net.layer1.0": "pool11x11",
            "net.layer1.1": "pool11x11",
            "net.layer2.0": "flatten",
        },
    ),
    "resnet50_224": (
        # 16 bottlenecks + fc = 17 layers, capped at 12, evenly spaced, first and last kept
        [
            "net.layer1.0",
            "net.layer1.1",
            "net.layer2.0",
            "net.layer2.1",
            "net.layer2.3",
            "net.layer3.0",
            "net.layer3.2",
            "net.layer3.3",
            "net.layer3.5",
            "net.layer4.0",
            "net.layer4.2",
            "net.fc",
        ],
        # the 64 x 64 input is 12288 values: pooled (3 * 18^2 = 972 <= 1024); layer1 is [32, 16, 16]
        {"input": "pool18x18", "net.layer1.0": "pool5x5", "net.layer4.2": "flatten", "net.fc": "flatten"},
    ),
    "vit": (
        ["net.encoder.layers.0", "net.encoder.layers.1", "net.encoder.layers.2", "net.head"],
        # [65 tokens, 24] = 1560 values: flattened, as the papers flatten small layers
        {"net.encoder.layers.0": "flatten", "net.head": "flatten"},
    ),
    "token_transformer": (
        ["net.encoder.layers.0", "net.encoder.layers.1", "net.encoder.layers.2", "net.classifier"],
        {"input": "flatten", "net.encoder.layers.2": "flatten"},
    ),
    "functional_cnn": (
        ["net.conv1", "net.conv2", "net.conv3", "net.fc1", "net.fc2"],
        {"net.conv1": "pool11x11", "net.conv2": "flatten", "net.fc1": "flatten"},
    ),
    "se_cnn": (
        [
            "net.features.0",
            "net.features.1",
            "net.features.2",
            "net.features.3",
            "net.features.4",
            "net.classifier",
        ],
        {"net.features.0": "pool11x11", "net.features.1": "flatten"},
    ),
    "gcn": (["gnn.convs.0", "gnn.convs.1", "gnn.convs.2", "gnn.convs.3"], {"input": "flatten"}),
    "circles_mlp": (["net.1", "net.3", "net.5", "net.7", "net.9"], {"input": "flatten", "net.9": "flatten"}),
}


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def fit(model: Any, tmp_path: Path, monitor: RicciFlowMonitor, **kwargs: Any) -> Trainer:
    options: dict[str, Any] = {
        "max_epochs": 2,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": str(tmp_path),
    }
    options.update(kwargs)
    trainer = Trainer(callbacks=[monitor], **options)
    trainer.fit(model)
    return trainer


@pytest.mark.parametrize("family", list(EXPECTED))
def test_zero_config_on_each_family(family: str, tmp_path: Path) -> None:
    model = ZOO[family][1]()
    monitor = RicciFlowMonitor(num_samples=48, log_figures=False)
    trainer = fit(model, tmp_path, monitor)

    names, reductions = EXPECTED[family]
    assert monitor.layer_names == ["input", *names]
    assert {name: monitor.reductions[name] for name in reductions} == reductions
    assert monitor.history[-1]["reductions"] == monitor.reductions
    assert [h["failed"] for h in monitor.history] == [False, False]
    # Read from the validation loop (its one batch: the points are drawn first among what it visits),
    # except the graph, whose forward runs whole.
    if family == "gcn":
        assert [h["from_loop"] for h in monitor.history] == [0, 0]
    else:
        size, batch = len(model.val_dataloader().dataset), model.val_dataloader().batch_size
        visited = min(size, batch)
        assert [h["from_loop"] for h in monitor.history] == [min(48, size, visited)] * 2
    assert trainer.callback_metrics["ricci/failed"].item() == 0.0
    # every logged value measured, none carried
    assert trainer.callback_metrics["ricci/carried"].item() == 0.0
    assert hook_count(model) == 0
    result = monitor.last_result
    assert result is not None and result.num_layers == len(names) + 1
    # The probe's labels reached ricci_flow: the class keys are those of the last layer.
    assert result.class_modularity is not None
    logged = trainer.callback_metrics["ricci/class/modularity"].item()
    assert logged == pytest.approx(float(result.class_modularity[-1]), abs=1e-6)
    mixing = trainer.callback_metrics[f"ricci/class/mixing/{names[0]}"].item()
    assert mixing == pytest.approx(float(result.class_mixing[1]), abs=1e-6)


def test_graph_probe_is_the_validation_nodes_and_matches_analyze(tmp_path: Path) -> None:
    pytest.importorskip("torch_geometric")
    model = make_gcn(num_nodes=120, hidden=16)
    monitor = RicciFlowMonitor(log_figures=False)
    fit(model, tmp_path, monitor)
    data = model.data
    assert monitor.probe_indices == data.val_mask.nonzero().flatten().tolist()  # the whole graph once
    result = monitor.last_result
    assert result is not None and result.num_points == int(data.val_mask.sum())
    # The class structure is that of the validation nodes' own labels.
    assert result.class_modularity is not None
    again = analyze(model, data)
    assert list(again.layer_names) == monitor.layer_names
    assert_same(again, result)
    # Node features of the probe nodes are layer 0.
    assert again.layer_rule == "blocks"


def test_gcnconv_stack_with_functional_relu(tmp_path: Path) -> None:
    pytest.importorskip("torch_geometric")
    model = make_gcn_stack(num_nodes=120, hidden=16)
    monitor = RicciFlowMonitor(node_mask=None, convention="hehl", log_figures=False)
    fit(model, tmp_path, monitor)
    assert monitor.layer_names == ["input", "gnn.conv1", "gnn.conv2", "gnn.conv3"]
    assert monitor.layer_rule == "children"
    assert monitor.probe_indices == list(range(120))  # node_mask=None: all nodes
    assert [h["failed"] for h in monitor.history] == [False, False]


def test_dict_batches(tmp_path: Path) -> None:
    model = make_circles_mlp(n_val=96, n_train=128, dict_batches=True)
    monitor = RicciFlowMonitor(log_figures=False)
    trainer = fit(model, tmp_path, monitor)
    assert monitor.layer_names == ["input", "net.1", "net.3", "net.5", "net.7", "net.9"]
    torch.testing.assert_close(monitor.probe, model.val_xy[0])  # input_key "x" found, all 96 points
    assert trainer.callback_metrics["ricci/failed"].item() == 0.0
    assert "ricci/class/mixing" in trainer.callback_metrics  # label_key "y" found
    explicit = RicciFlowMonitor(input_key="x", label_key="y", log_figures=False, log_prefix="e/")
    trainer = fit(
        make_circles_mlp(n_val=96, n_train=128, dict_batches=True), tmp_path, explicit, max_epochs=1
    )
    assert trainer.callback_metrics["e/ricci/coefficient"].item() == pytest.approx(
        monitor.history[0]["coefficient"], abs=1e-6
    )


def test_analyze_equals_the_monitor_on_a_resnet(tmp_path: Path) -> None:
    model = ZOO["cifar_resnet18"][1]()
    monitor = RicciFlowMonitor(num_samples=40, log_figures=False)
    fit(model, tmp_path, monitor, max_epochs=1)
    indices = monitor.probe_indices
    assert indices is not None
    x, y = model.val_xy[0][indices], model.val_xy[1][indices]
    result = analyze(model, (x, y))
    assert list(result.layer_names) == monitor.layer_names
    assert dict(zip(result.layer_names, result.reductions)) == monitor.reductions
    assert monitor.last_result is not None
    assert_same(result, monitor.last_result)


def test_batch_transfer_hooks_reach_the_default_probe(tmp_path: Path) -> None:
    class Normalised(type(make_circles_mlp())):  # type: ignore[misc]
        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            x, y = batch
            return 10.0 * x, y

    model = make_circles_mlp(n_val=64, n_train=64)
    model.__class__ = Normalised
    monitor = RicciFlowMonitor(log_figures=False)
    fit(model, tmp_path, monitor, max_epochs=1)
    result = analyze(model, (10.0 * model.val_xy[0], model.val_xy[1]))
    assert monitor.last_result is not None
    assert_same(result, monitor.last_result)  # measured on what the model saw: the scaled inputs

    given = RicciFlowMonitor(probe=model.val_xy, log_figures=False)
    with pytest.warns(UserWarning, match="`probe=` is used as given"):
        fit(model, tmp_path, given, max_epochs=1)

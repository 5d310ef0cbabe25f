"""The study scripts run end to end with ``--fast``; the early-stopping replay matches Lightning's."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from _scripts import EXAMPLES, run_example


def run_script(script: str, out: Path) -> subprocess.CompletedProcess[str]:
    return run_example(script, "--fast", "--out", str(out))


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_early_stopping_study_fast(tmp_path: Path) -> None:
    completed = run_script("early_stopping_study.py", tmp_path)
    assert "| data | stopping rule (patience 1) |" in completed.stdout
    assert "rules that beat val loss at equal accuracy" in completed.stdout
    report = json.loads((tmp_path / "early_stopping.json").read_text())
    study = load_script("early_stopping_study")
    names = {run["data"] for run in report["runs"]}
    assert "circles" in names and names <= {"circles", "mnist_1v7"}
    assert len(report["runs"]) == len(names) * len(report["seeds"])
    for run in report["runs"]:
        epochs = report["config"]["data"][run["data"]]["epochs"]
        assert run["epochs"] == epochs
        for key in (
            "val_loss",
            "test_acc",
            "ricci/local_mean",
            "ricci/coefficient",
            "baptista/ricci/coefficient",
        ):
            assert len(run[key]) == epochs and all(v is not None and math.isfinite(v) for v in run[key]), key
        for prefix in ("", "baptista/"):
            modularity, mixing = run[f"{prefix}ricci/class/modularity"], run[f"{prefix}ricci/class/mixing"]
            assert len(modularity) == len(mixing) == epochs
            assert all(-0.5 <= q <= 1.0 for q in modularity) and all(0.0 <= m <= 1.0 for m in mixing)
            assert len(run[f"{prefix}ricci/class/normalized_cut"]) == epochs
        assert run["layers_hehl"][0] == "input" and run["layers_baptista"][0] == "input"
    assert {row["rule"] for row in report["summary"]} == {*study.RULES, "hindsight", "last"}
    for row in report["summary"]:
        assert row["patience"] == report["config"]["patience"]
        assert 0.0 <= row["acc_stop"] <= 1.0
        assert isinstance(row["matches_val_loss"], bool)
        if row["rule"] == "val_loss":  # the baseline against itself
            assert row["epochs_saved"] == 0 and row["acc_lost"] == 0 and row["matches_val_loss"]
    patiences = {int(p) for p in report["patience_sensitivity"]}
    assert {row["patience"] for row in report["overall"]} == patiences
    for row in report["overall"]:
        assert row["data_sets"] == len(names) and 0 <= row["data_matched"] <= row["data_sets"]
        assert isinstance(row["beats_val_loss"], bool)
        assert not (row["rule"] == "val_loss" and row["beats_val_loss"])
    assert (tmp_path / "early_stopping.png").stat().st_size > 1000


def test_class_fields_match_networkx() -> None:
    """The study's class fields of the last measured layer equal networkx's on that layer's graph."""
    nx = pytest.importorskip("networkx")
    from types import SimpleNamespace

    from lightning_ricci import ricci_flow

    study = load_script("early_stopping_study")
    gen = torch.Generator().manual_seed(3)
    labels = torch.arange(120) % 2
    x = torch.randn(120, 4, generator=gen) + 1.5 * labels[:, None]
    h1 = torch.relu(x @ torch.randn(4, 8, generator=gen))
    h2 = torch.relu(h1 @ torch.randn(8, 8, generator=gen))
    result = ricci_flow([x, h1, h2], k=6, convention="hehl", curvature="approx_ollivier")
    fields = study.class_fields(SimpleNamespace(last_result=result), labels)
    graph = nx.Graph()
    graph.add_nodes_from(range(120))
    edges = result.edge_index[-1].T.tolist()
    graph.add_edges_from(edges)
    groups = [{i for i in range(120) if labels[i] == c} for c in (0, 1)]
    assert fields["modularity"] == pytest.approx(nx.community.modularity(graph, groups), abs=1e-12)
    assert fields["normalized_cut"] == pytest.approx(0.5 * nx.normalized_cut_size(graph, *groups), abs=1e-12)
    ends = labels.tolist()
    mixed = sum(ends[i] != ends[j] for i, j in edges) / len(edges)
    assert fields["mixing"] == pytest.approx(mixed, abs=1e-12)
    # A result that carries the class fields (a monitor that passed the probe labels) gives the same.
    labelled = ricci_flow([x, h1, h2], k=6, convention="hehl", curvature="approx_ollivier", labels=labels)
    assert labelled.class_modularity is not None
    from_result = study.class_fields(SimpleNamespace(last_result=labelled), labels)
    assert from_result == pytest.approx(fields, abs=1e-12, nan_ok=True)


def test_depth_study_fast(tmp_path: Path) -> None:
    completed = run_script("depth_study.py", tmp_path)
    assert "critical depth t*" in completed.stdout
    report = json.loads((tmp_path / "depth.json").read_text())
    assert [block["data"] for block in report["summary"]] == ["circles", "discs"]
    for run in report["runs"]:
        assert len(run["layer"]) == run["depth"] + 1  # input, hidden layers, sigmoid output
        assert run["layer_names"][0] == "input" and len(run["layer_names"]) == run["depth"] + 2
    for block in report["summary"]:
        assert -1 <= block["critical_depth"] < len(block["curve"])
        assert block["verdict"]
    assert (tmp_path / "depth.png").stat().st_size > 1000


SEQUENCES = [
    [0.5, 0.4, 0.45, 0.41, 0.39, 0.5, 0.6, 0.7, 0.8],  # improves late, then stops
    [0.5, 0.5, 0.5, 0.5, 0.5],  # ties do not improve
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # never stops
    [0.3, 0.2, math.nan, 0.1, 0.0],  # a NaN stops at once
    [0.1, 0.3, 0.305, 0.32, 0.5, 0.5, 0.4],  # mode="max" with min_delta: small rises do not count
]


def test_replay_matches_lightning_early_stopping() -> None:
    pytest.importorskip("lightning")
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.callbacks import EarlyStopping
    from torch.utils.data import DataLoader, TensorDataset

    study = load_script("early_stopping_study")

    class Scripted(LightningModule):
        def __init__(self, values: list[float]) -> None:
            super().__init__()
            self.values = values
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.layer(batch[0]).sum()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("metric", self.values[self.current_epoch])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    data = DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=2)
    patience = 2
    settings = [("min", 0.0), ("max", 0.0), ("max", 0.01), ("min", 0.01)]
    for (mode, min_delta), values in ((s, v) for s in settings for v in SEQUENCES):
        stopper = EarlyStopping(monitor="metric", mode=mode, patience=patience, min_delta=min_delta)
        trainer = Trainer(
            max_epochs=len(values), callbacks=[stopper], logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        )  # fmt: skip
        trainer.fit(Scripted(values), data, data)
        stop, _ = study.early_stopping_replay(values, patience, min_delta=min_delta, mode=mode)
        last_epoch = trainer.current_epoch - 1  # current_epoch counts finished epochs after fit
        assert stop == last_epoch, (mode, min_delta, values)
        if stop < len(values) - 1:
            assert stopper.stopped_epoch == stop, (mode, min_delta, values)

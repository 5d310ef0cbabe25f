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
    pytest.importorskip("sklearn")
    completed = run_script("early_stopping_study.py", tmp_path)
    assert "| data | stopping rule (patience 1) |" in completed.stdout
    report = json.loads((tmp_path / "early_stopping.json").read_text())
    assert {run["data"] for run in report["runs"]} == {"circles", "digits"}
    for run in report["runs"]:
        epochs = report["config"]["epochs"]
        for key in (
            "val_loss",
            "test_acc",
            "ricci/local_mean",
            "ricci/coefficient",
            "baptista/ricci/coefficient",
        ):
            assert len(run[key]) == epochs and all(math.isfinite(v) for v in run[key]), key
    rules = {row["rule"] for row in report["summary"]}
    assert rules == {
        "val_loss",
        "ricci/local_mean",
        "ricci/coefficient",
        "baptista/ricci/coefficient",
        "hindsight",
        "last",
    }
    assert (tmp_path / "early_stopping.png").stat().st_size > 1000


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
    for values in SEQUENCES:
        stopper = EarlyStopping(monitor="metric", mode="min", patience=patience)
        trainer = Trainer(
            max_epochs=len(values), callbacks=[stopper], logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        )  # fmt: skip
        trainer.fit(Scripted(values), data, data)
        stop, _ = study.early_stopping_replay(values, patience)
        last_epoch = trainer.current_epoch - 1  # current_epoch counts finished epochs after fit
        assert stop == last_epoch, values
        if stop < len(values) - 1:
            assert stopper.stopped_epoch == stop, values

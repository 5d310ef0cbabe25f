"""RicciFlowMonitor under 2-process CPU DDP (``ddp_spawn``, gloo): one value on every rank, same stop epoch."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_ricci import RicciFlowMonitor

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform == "win32",
    reason="needs torch.distributed with gloo",
)

HIDDEN = ["net.1", "net.3", "net.5", "net.7"]


def _circles(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=generator) * 2 * math.pi
    label = torch.arange(n) % 2
    radius = torch.where(label == 0, 1.0, 0.5) + 0.05 * torch.randn(n, generator=generator)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1), label


class DDPNet(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Linear(2, 16), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Linear(16, 16), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.02)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(*_circles(128, seed=1)), batch_size=16)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(*_circles(64, seed=2)), batch_size=16)


class RankRecorder(Callback):
    """Writes what every rank saw to `out/rank{r}.json`."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.values: list[float] = []

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics["ricci/coefficient"]))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        monitor = next(cb for cb in trainer.callbacks if isinstance(cb, RicciFlowMonitor))
        record = {
            "values": self.values,
            "epoch": trainer.current_epoch,
            "history": [h["coefficient"] for h in monitor.history],
            "failed": [h["failed"] for h in monitor.history],
            "has_result": monitor.last_result is not None,
            "result_coefficient": (
                repr(monitor.last_result.coefficient_connected) if monitor.last_result is not None else None
            ),
            "result_geodesic_sum": (
                monitor.last_result.geodesic_sum.tolist() if monitor.last_result is not None else None
            ),
            "probe_sum": float(monitor.probe.sum()) if monitor.probe is not None else None,
        }
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def test_ddp_spawn_same_value_on_every_rank(tmp_path: Path) -> None:
    monitor = RicciFlowMonitor(num_samples=48, layers=HIDDEN, k=5)
    # Any coefficient is below 1.01: with min_epochs=2, EarlyStopping stops after epoch 1 on every rank.
    early = EarlyStopping(monitor="ricci/coefficient", mode="min", stopping_threshold=1.01)
    trainer = Trainer(
        strategy="ddp_spawn",
        accelerator="cpu",
        devices=2,
        max_epochs=5,
        min_epochs=2,
        limit_train_batches=2,
        limit_val_batches=2,
        callbacks=[monitor, early, RankRecorder(str(tmp_path))],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(DDPNet())
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["values"] == ranks[1]["values"]  # the broadcast value, logged on both ranks
    assert ranks[0]["history"] == ranks[1]["history"]
    assert ranks[0]["history"] == pytest.approx(ranks[0]["values"], abs=1e-6)  # logged as float32
    assert ranks[0]["epoch"] == ranks[1]["epoch"] == 2  # EarlyStopping stopped both at once
    assert len(ranks[0]["values"]) == 2
    assert ranks[0]["probe_sum"] == ranks[1]["probe_sum"]  # the same probe points on every rank
    # ricci_flow shared between the ranks (gloo, CPU): both computed, and got the same numbers
    assert [r["has_result"] for r in ranks] == [True, True]
    assert ranks[0]["result_geodesic_sum"] == ranks[1]["result_geodesic_sum"]
    assert ranks[0]["result_coefficient"] == ranks[1]["result_coefficient"]
    assert ranks[0]["failed"] == ranks[1]["failed"] == [False, False]

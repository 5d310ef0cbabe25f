"""Lightning callbacks that time training epochs and validation runs, for the benchmarks that compare whole fits."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, Trainer


class EpochTimer(Callback):
    """Wall time of every training epoch, validation included."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


class ValidationTimer(Callback):
    """Wall time of every validation run outside the sanity check. Put it after the callbacks it should
    include: its ``on_validation_epoch_end`` runs after theirs."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.times.append(time.perf_counter() - self._start)

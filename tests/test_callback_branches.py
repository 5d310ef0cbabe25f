"""RicciFlowMonitor branches the main Trainer tests do not reach: several validation loaders, an
IterableDataset, restored probe indices out of range, ``val_check_interval < 1``, a failing logger and
the figure schedule as a function."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from test_callback import HIDDEN, TinyNet, circles, make_trainer, read_events
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import lightning_ricci.sinks as sinks
from lightning_ricci import RicciFlowMonitor
from lightning_ricci.callback import figure_due


def probe_rows(monitor: RicciFlowMonitor) -> torch.Tensor:
    """The probe's input points as a tensor [N, 2]."""
    probe = monitor._probe
    assert probe is not None
    inputs = probe.batch if isinstance(probe.batch, torch.Tensor) else probe.batch[0]
    assert isinstance(inputs, torch.Tensor)
    return inputs


# ---------------------------------------------------------------------- several validation loaders


class TwoLoaders(TinyNet):
    """Two validation loaders over disjoint data sets of different sizes."""

    def __init__(self) -> None:
        super().__init__(n_val=80)
        other_x, other_y = circles(50, seed=9)
        self.other_data = TensorDataset(other_x + 10.0, other_y)  # far from the first set: no row in common

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y), add_dataloader_idx=True)

    def val_dataloader(self) -> list[DataLoader]:  # type: ignore[override]
        return [DataLoader(self.val_data, batch_size=32), DataLoader(self.other_data, batch_size=32)]


def test_several_validation_loaders_sample_the_first(tmp_path: Path) -> None:
    """Documented: the default probe samples the *first* validation dataloader's dataset."""
    model = TwoLoaders()
    monitor = RicciFlowMonitor(num_samples=30, seed=3, layers=HIDDEN, k=5)
    make_trainer(tmp_path, [monitor], max_epochs=1).fit(model)

    # limit_val_batches=2 batches of 32 visit the first 64 of the 80 points: the 30 are drawn among them.
    expected = torch.randperm(64, generator=torch.Generator().manual_seed(3))[:30].sort().values.tolist()
    assert monitor.probe_indices == expected
    assert [h["from_loop"] for h in monitor.history] == [30]
    x, _ = model.val_data.tensors
    torch.testing.assert_close(probe_rows(monitor), x[expected])
    assert probe_rows(monitor).abs().max() < 5.0  # none of the second loader's points (shifted by 10)
    assert [h["failed"] for h in monitor.history] == [False]


# ---------------------------------------------------------------------- IterableDataset


class Stream(IterableDataset):  # type: ignore[type-arg]
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self) -> Any:
        return iter(zip(self.x, self.y))


class StreamNet(TinyNet):
    def val_dataloader(self) -> DataLoader:
        return DataLoader(Stream(*self.val_data.tensors), batch_size=32)


def test_iterable_validation_dataset_raises_a_clear_error(tmp_path: Path) -> None:
    """The default probe cannot sample a dataset without len(): a ValueError naming the way out."""
    monitor = RicciFlowMonitor(num_samples=30, layers=HIDDEN, k=5)
    with pytest.raises(ValueError, match=r"IterableDataset.*pass `probe=`"):
        make_trainer(tmp_path, [monitor], max_epochs=1).fit(StreamNet())


def test_iterable_validation_dataset_with_given_probe_trains(tmp_path: Path) -> None:
    probe = circles(40, seed=4)
    monitor = RicciFlowMonitor(probe=probe, layers=HIDDEN, k=5)
    make_trainer(tmp_path, [monitor], max_epochs=2).fit(StreamNet())
    assert [h["failed"] for h in monitor.history] == [False, False]
    torch.testing.assert_close(probe_rows(monitor), probe[0])


# ---------------------------------------------------------------------- restored indices


def test_restored_indices_out_of_range_raise(tmp_path: Path) -> None:
    """Indices from a checkpoint of a larger data set: a ValueError, not a silent resample."""
    monitor = RicciFlowMonitor(num_samples=30, layers=HIDDEN, k=5)
    monitor.load_state_dict({"history": [], "probe_indices": [0, 5, 95], "critical_layer": None})
    model = TinyNet(n_val=50)
    with pytest.raises(ValueError, match=r"restored probe indices go up to 95, but the dataset has 50"):
        make_trainer(tmp_path, [monitor], max_epochs=1).fit(model)


def test_restored_indices_in_range_are_used(tmp_path: Path) -> None:
    monitor = RicciFlowMonitor(num_samples=30, layers=HIDDEN, k=3)
    restored = [1, 4, 9, 16, 25, 36, 49]
    monitor.load_state_dict({"history": [], "probe_indices": restored, "critical_layer": None})
    model = TinyNet(n_val=50)
    make_trainer(tmp_path, [monitor], max_epochs=1).fit(model)
    assert monitor.probe_indices == restored
    torch.testing.assert_close(probe_rows(monitor), model.val_data.tensors[0][restored])


# ---------------------------------------------------------------------- val_check_interval < 1


class CountValidations(Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.steps.append(trainer.global_step)


def test_val_check_interval_half_measures_every_validation_run(tmp_path: Path) -> None:
    counter = CountValidations()
    monitor = RicciFlowMonitor(num_samples=40, layers=HIDDEN, k=5, log_histograms=False, log_figures=0)
    logger = CSVLogger(str(tmp_path), name="csv")
    trainer = make_trainer(tmp_path, [monitor, counter], logger=logger, max_epochs=2, val_check_interval=0.5)
    trainer.fit(TinyNet())

    assert counter.steps == [2, 4, 6, 8]  # 4 train batches per epoch, validation every 2
    assert len(monitor.history) == len(counter.steps)
    steps = [int(h["global_step"]) for h in monitor.history]
    assert all(a < b for a, b in zip(steps, steps[1:]))
    assert [h["epoch"] for h in monitor.history] == [0, 0, 1, 1]
    assert not any(h["failed"] for h in monitor.history)
    # The CSV logger has one ricci/coefficient row per validation run, at the history's steps.
    with open(Path(logger.log_dir) / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("ricci/coefficient")]
    assert [int(r["step"]) for r in rows] == steps
    assert [float(r["ricci/coefficient"]) for r in rows] == pytest.approx(
        [h["coefficient"] for h in monitor.history]
    )


# ---------------------------------------------------------------------- logger guard


def test_failing_logger_experiment_warns_once_and_training_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(sinks, "_warned", set())
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    calls = {"add_figure": 0, "add_histogram": 0}

    def failing(name: str) -> Any:
        def raise_(*args: Any, **kwargs: Any) -> None:
            calls[name] += 1
            raise OSError(f"{name} broken")

        return raise_

    for name in calls:
        monkeypatch.setattr(logger.experiment, name, failing(name))
    monitor = RicciFlowMonitor(num_samples=40, layers=HIDDEN, k=5, log_figures=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(tmp_path, [monitor], logger=logger, max_epochs=3).fit(TinyNet())

    assert calls["add_figure"] == 3  # every measurement tried (log_figures=True) ...
    assert calls["add_histogram"] >= 3
    messages = [str(w.message) for w in caught if "could not write a" in str(w.message)]
    assert len([m for m in messages if "figure" in m and "add_figure broken" in m]) == 1  # ... warned once
    assert len([m for m in messages if "histogram" in m and "add_histogram broken" in m]) == 1
    assert len(messages) == 2
    assert len(monitor.history) == 3 and not any(h["failed"] for h in monitor.history)
    logger.experiment.flush()
    events = read_events(logger.log_dir)
    assert [e.step for e in events.Scalars("ricci/coefficient")] == [
        h["global_step"] for h in monitor.history
    ]


# ---------------------------------------------------------------------- the figure schedule


@pytest.mark.parametrize(
    ("index", "log_figures", "fitting", "due"),
    [
        (0, 10, True, True),  # the first measurement of a fit
        (1, 10, True, False),
        (9, 10, True, False),
        (10, 10, True, True),
        (20, 10, True, True),
        (21, 10, True, False),
        (3, 10, False, True),  # validate / test: always
        (0, 0, True, False),  # log_figures=0: never
        (0, 0, False, False),
        (7, 0, False, False),
        (0, -1, False, False),
        (4, 1, True, True),  # every measurement
        (5, True, True, True),  # True is every measurement
        (5, False, True, False),
        (5, False, False, False),
        (2, 2, True, True),
        (3, 2, True, False),
    ],
)
def test_figure_due_table(index: int, log_figures: int, fitting: bool, due: bool) -> None:
    assert figure_due(index, log_figures, fitting) is due


def test_figure_due_matches_the_first_and_every_nth() -> None:
    for n in range(1, 7):
        assert [i for i in range(30) if figure_due(i, n, True)] == list(range(0, 30, n))

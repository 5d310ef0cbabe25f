"""Reading the probe from the validation loop: the plan, the stream, and the monitor that uses them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset

from lightning_ricci import RicciFlowMonitor
from lightning_ricci.pipeline import Pipeline
from lightning_ricci.probes import make_probe, probe_from_dataset
from lightning_ricci.stream import ProbeStream, loop_plan

# --------------------------------------------------------------------------- the plan


def _where_the_loader_puts(loader: DataLoader, indices: list[int]) -> dict[int, tuple[list[int], list[int]]]:
    """Reference: iterate the loader over a dataset of its own indices and find each probe point."""
    found: dict[int, tuple[list[int], list[int]]] = {}
    for batch_idx, (ids,) in enumerate(loader):
        for row, dataset_index in enumerate(ids.tolist()):
            if dataset_index in indices:
                rows, positions = found.setdefault(batch_idx, ([], []))
                rows.append(row)
                positions.append(indices.index(dataset_index))
    return found


@pytest.mark.parametrize(
    ("size", "batch_size", "drop_last"), [(10, 4, False), (10, 4, True), (37, 5, False), (8, 8, True)]
)
def test_plan_matches_iterating_the_loader(size: int, batch_size: int, drop_last: bool) -> None:
    loader = DataLoader(TensorDataset(torch.arange(size)), batch_size=batch_size, drop_last=drop_last)
    indices = sorted(
        torch.randperm(size, generator=torch.Generator().manual_seed(size))[: size // 2].tolist()
    )
    plan = loop_plan(loader, indices)
    assert plan is not None
    got = {b: (rows.tolist(), positions.tolist()) for b, (rows, positions) in plan.items()}
    assert got == _where_the_loader_puts(loader, indices)


def test_probe_is_drawn_first_among_the_visited_items() -> None:
    data = [(torch.tensor([float(i)]), i % 2) for i in range(50)]
    collate = torch.utils.data.default_collate
    whole, whole_indices = probe_from_dataset(data, collate, 10, seed=3)
    same, same_indices = probe_from_dataset(data, collate, 10, seed=3, among=50)
    assert same_indices == whole_indices  # a loop that visits everything: the sample is unchanged
    _, inside = probe_from_dataset(data, collate, 10, seed=3, among=20)
    assert len(inside) == 10 and max(inside) < 20 and inside == sorted(inside)
    _, mixed = probe_from_dataset(data, collate, 10, seed=3, among=4)
    assert len(mixed) == len(set(mixed)) == 10 and {0, 1, 2, 3} <= set(mixed)


def test_plan_refuses_loaders_it_cannot_predict() -> None:
    data = TensorDataset(torch.arange(10))
    assert loop_plan(DataLoader(data, batch_size=4, shuffle=True), [1, 2]) is None
    assert loop_plan(DataLoader(data, sampler=RandomSampler(data), batch_size=4), [1]) is None
    assert loop_plan(DataLoader(data, batch_size=None), [1]) is None  # no BatchSampler
    assert loop_plan([torch.zeros(2)], [1]) is None
    assert loop_plan(DataLoader(data, batch_size=4), []) is None


# --------------------------------------------------------------------------- the stream


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 36, 8), nn.ReLU(), nn.Linear(8, 3),
    )  # fmt: skip


def _run_loop(
    stream: ProbeStream, model: nn.Module, loader: DataLoader, skip: set[int] = frozenset()
) -> None:
    stream.start()
    try:
        with torch.no_grad():
            for batch_idx, batch in enumerate(loader):
                if batch_idx in skip:
                    continue
                stream.batch_start(batch_idx, batch)
                model(batch[0])
                stream.batch_end()
    finally:
        stream.stop()


@pytest.mark.parametrize("skip", [set(), {1, 3}])
def test_stream_gives_the_probe_pass(skip: set[int]) -> None:
    x, y = torch.randn(50, 3, 6, 6), torch.arange(50) % 3
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    indices = [0, 3, 9, 10, 11, 20, 33, 41, 42, 49]
    probe = make_probe((x[indices], y[indices]))
    model = _cnn().eval()
    pipeline = Pipeline(reduce="flatten")
    names = ["1", "3", "6"]
    stream = ProbeStream(
        pipeline, model, probe, names, loop_plan(loader, indices), pipeline.input_layer(probe)
    )
    _run_loop(stream, model, loader, skip)
    expected_written = torch.tensor([i // 8 not in skip for i in indices])
    assert torch.equal(stream.written, expected_written)
    passes: list[int] = []

    def run_pass(sub: Any) -> Any:
        passes.append(sub.num_points)
        return pipeline.capture(model, sub, names)

    assert stream.verify(run_pass) and stream.broken is None
    captured = stream.result(run_pass)
    assert passes == [int(expected_written.sum()), int((~expected_written).sum())] if skip else passes == [10]
    reference = pipeline.capture(model, probe, names)
    assert captured.names == reference.names == ["input", *names]
    for got, want in zip(captured.layers, reference.layers):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(captured.labels, y[indices])
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_stream_refuses_other_inputs_and_other_layers() -> None:
    x = torch.randn(40, 3, 6, 6)
    indices = [1, 5, 17, 30]
    probe = make_probe(x[indices])
    model = _cnn().eval()
    pipeline = Pipeline(reduce="flatten")
    plan = loop_plan(DataLoader(TensorDataset(x), batch_size=8), indices)
    assert plan is not None
    # The loop's data are not the probe's (a random validation transform).
    noisy = DataLoader(TensorDataset(x + 0.1 * torch.randn_like(x)), batch_size=8)
    stream = ProbeStream(pipeline, model, probe, ["1", "3"], plan, pipeline.input_layer(probe))
    _run_loop(stream, model, noisy)
    assert stream.broken is not None and "not the probe's" in stream.broken and not stream.written.any()
    # Same inputs, but the step runs the model on something else (here: the inputs scaled).
    stream = ProbeStream(pipeline, model, probe, ["1", "3"], plan, pipeline.input_layer(probe))
    stream.start()
    with torch.no_grad():
        for batch_idx, (batch,) in enumerate(DataLoader(TensorDataset(x), batch_size=8)):
            stream.batch_start(batch_idx, (batch,))
            model(2 * batch)
            stream.batch_end()
    stream.stop()
    assert stream.written.all()
    assert not stream.verify(lambda sub: pipeline.capture(model, sub, ["1", "3"]))
    assert "layer '1'" in str(stream.broken) and "differs from the probe pass" in str(stream.broken)


def test_a_batch_whose_layer_does_not_run_is_skipped_not_raised() -> None:
    x = torch.randn(24, 3, 6, 6)
    indices = [2, 12, 20]
    probe = make_probe(x[indices])
    model = _cnn().eval()
    pipeline = Pipeline(reduce="flatten")
    stream = ProbeStream(
        pipeline,
        model,
        probe,
        ["1", "6"],
        loop_plan(DataLoader(TensorDataset(x), batch_size=8), indices),
        pipeline.input_layer(probe),
    )
    stream.start()
    with torch.no_grad():
        for batch_idx, (batch,) in enumerate(DataLoader(TensorDataset(x), batch_size=8)):
            stream.batch_start(batch_idx, (batch,))
            if batch_idx == 1:
                model[:4](batch)  # the head ("6") does not run in this batch
            else:
                model(batch)
            stream.batch_end()
    stream.stop()
    assert stream.written.tolist() == [True, False, True] and stream.skipped == 1
    assert "did not run" in str(stream.last_skip)


# --------------------------------------------------------------------------- the monitor


class Images(LightningModule):
    def __init__(self, n_val: int = 120, step_scale: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(8 * 64, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2),
        )  # fmt: skip
        g = torch.Generator().manual_seed(1)
        x = torch.randn(200 + n_val, 3, 8, 8, generator=g)
        y = (x[:, 0].mean((1, 2)) > 0).long()
        self.train_data = TensorDataset(x[:200], y[:200])
        self.val_data: Dataset[Any] = TensorDataset(x[200:], y[200:])
        self.step_scale = step_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", nn.functional.cross_entropy(self(self.step_scale * batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_data, batch_size=50, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_data, batch_size=16)


def _fit(tmp_path: Path, model: LightningModule, **options: Any) -> tuple[RicciFlowMonitor, Trainer]:
    trainer_options = {"max_epochs": 2, "limit_train_batches": 2, **options.pop("trainer", {})}
    monitor = RicciFlowMonitor(num_samples=60, log_figures=0, log_histograms=False, **options)
    trainer = Trainer(
        callbacks=[monitor], accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path), **trainer_options,
    )  # fmt: skip
    trainer.fit(model)
    return monitor, trainer


def _same_results(a: RicciFlowMonitor, b: RicciFlowMonitor) -> None:
    assert a.last_result is not None and b.last_result is not None
    torch.testing.assert_close(a.last_result.total_curvature, b.last_result.total_curvature)
    torch.testing.assert_close(a.last_result.geodesic_sum, b.last_result.geodesic_sum)
    for field in ("coefficient", "coefficient_connected", "local_mean"):
        x, y = float(getattr(a.last_result, field)), float(getattr(b.last_result, field))
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, abs=1e-6), field


def test_monitor_reads_the_probe_from_the_loop(tmp_path: Path) -> None:
    loop, _ = _fit(tmp_path, Images())
    single, _ = _fit(tmp_path, Images(), capture="pass")
    assert [entry["from_loop"] for entry in loop.history] == [60, 60]
    assert [entry["from_loop"] for entry in single.history] == [0, 0]
    assert loop._loop.stream is not None and loop._loop.stream.verified  # checked once, at the sanity check
    assert loop.layer_names == single.layer_names and len(loop.layer_names) == 5
    _same_results(loop, single)


def test_monitor_leaves_no_hooks_between_validation_runs(tmp_path: Path) -> None:
    model = Images()
    _fit(tmp_path, model)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_partial_loop_fills_the_rest_with_a_pass(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"of the 60 probe points were not in the validation batches"):
        partial, _ = _fit(tmp_path, Images(), trainer={"limit_val_batches": 3})
    single, _ = _fit(tmp_path, Images(), capture="pass", trainer={"limit_val_batches": 3})
    counts = {entry["from_loop"] for entry in partial.history}
    assert len(counts) == 1 and 0 < counts.pop() < 60
    _same_results(partial, single)


def test_limited_loop_holds_the_probe(tmp_path: Path) -> None:
    # 8 batches of 16; half of them visit 64 items, enough for the 60 probe points.
    monitor, _ = _fit(tmp_path, Images(), trainer={"limit_val_batches": 0.5})
    assert [entry["from_loop"] for entry in monitor.history] == [60, 60]
    assert monitor.probe_indices is not None and max(monitor.probe_indices) < 64


def test_a_step_that_feeds_the_model_otherwise_falls_back(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"reading the probe from the validation loop stopped: layer"):
        monitor, _ = _fit(tmp_path, Images(step_scale=3.0))
    single, _ = _fit(tmp_path, Images(step_scale=3.0), capture="pass")
    assert [entry["from_loop"] for entry in monitor.history] == [0, 0]
    _same_results(monitor, single)


class Jittered(Dataset[Any]):
    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        x, y = self.data[index]
        return x + 0.05 * torch.randn_like(x), y


def test_random_validation_transforms_fall_back(tmp_path: Path) -> None:
    model = Images()
    model.val_data = Jittered(model.val_data)  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match=r"the inputs of the validation loop are not the probe's"):
        monitor, trainer = _fit(tmp_path, model)
    assert [entry["from_loop"] for entry in monitor.history] == [0, 0]
    assert trainer.callback_metrics["ricci/failed"].item() == 0.0


def test_shuffled_validation_loader_uses_a_pass(tmp_path: Path) -> None:
    class Shuffled(Images):
        def val_dataloader(self) -> DataLoader:
            return DataLoader(self.val_data, batch_size=16, shuffle=True)

    monitor, _ = _fit(tmp_path, Shuffled())
    single, _ = _fit(tmp_path, Shuffled(), capture="pass")
    assert monitor._loop.stream is None and [entry["from_loop"] for entry in monitor.history] == [0, 0]
    _same_results(monitor, single)


def test_given_probe_and_bad_capture_argument() -> None:
    with pytest.raises(ValueError, match=r"`capture` must be 'auto' or 'pass' \(got 'loop'\)"):
        RicciFlowMonitor(capture="loop")  # type: ignore[arg-type]

"""Tests of RicciFlowMonitor with real Trainer runs on tiny models (CPU, a few seconds each)."""

from __future__ import annotations

import csv
import dataclasses
import glob
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_ricci.callback as callback_module
import lightning_ricci.pipeline as pipeline_module
from lightning_ricci import RicciFlowMonitor, ricci_flow
from lightning_ricci.callback import default_k
from lightning_ricci.capture import CaptureError

WIDTH = 16
HIDDEN = ["net.1", "net.3", "net.5", "net.7"]  # the ReLUs of TinyNet, in forward order


def circles(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two noisy concentric circles (radii 1 and 0.5), labels 0/1."""
    generator = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=generator) * 2 * math.pi
    label = torch.arange(n) % 2
    radius = torch.where(label == 0, 1.0, 0.5) + 0.05 * torch.randn(n, generator=generator)
    x = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    return x, label


class TinyNet(LightningModule):
    def __init__(self, depth: int = 4, n_val: int = 96, lr: float = 0.02) -> None:
        super().__init__()
        torch.manual_seed(0)
        blocks: list[nn.Module] = [nn.Linear(2, WIDTH), nn.ReLU()]
        for _ in range(depth - 1):
            blocks += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
        self.net = nn.Sequential(*blocks, nn.Linear(WIDTH, 2))
        self.lr = lr
        self.train_data = TensorDataset(*circles(256, seed=1))
        self.val_data = TensorDataset(*circles(n_val, seed=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_data, batch_size=32, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_data, batch_size=32)


def make_trainer(tmp_path: Path, callbacks: list[Callback], logger: Any = False, **kwargs: Any) -> Trainer:
    options: dict[str, Any] = {
        "max_epochs": 2,
        "limit_train_batches": 4,
        "limit_val_batches": 2,
        "accelerator": "cpu",
        "devices": 1,
        "logger": logger,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "default_root_dir": str(tmp_path),
    }
    options.update(kwargs)
    return Trainer(callbacks=callbacks, **options)


def read_events(log_dir: str) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = glob.glob(str(Path(log_dir) / "events.out.tfevents.*"))
    assert files, f"no event file in {log_dir}"
    accumulator = EventAccumulator(log_dir, size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def reference_layers(model: TinyNet, probe: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
    """Our own hooks, independent of ActivationCapture: [probe, outputs of `names`]."""
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = [
        modules[name].register_forward_hook(
            lambda m, a, out, name=name: outputs.__setitem__(name, out.detach())
        )
        for name in names
    ]
    try:
        model.eval()
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return [probe, *(outputs[name].float().reshape(len(probe), -1) for name in names)]


def expected_logged(result: Any) -> tuple[float, float]:
    """(logged coefficient, excluded flag) of a first measurement, by the documented fallback rule."""
    if math.isfinite(result.coefficient):
        return result.coefficient, 0.0
    if math.isfinite(result.coefficient_connected):
        return result.coefficient_connected, 1.0
    return 1.0, 1.0  # nothing valid to carry forward yet: the upper end of the range


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# --------------------------------------------------------------------------- zero configuration


def test_zero_config_tensorboard_events(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monitor = RicciFlowMonitor()
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = make_trainer(tmp_path, [monitor], logger=logger)
    model = TinyNet()
    with caplog.at_level("INFO"):
        trainer.fit(model)
    assert all(0 < h["seconds"] < 60 for h in monitor.history)
    assert "2 measurements of 96 probe points took" in caplog.text

    assert monitor.layer_names == ["input", *HIDDEN]
    assert monitor.probe is not None and monitor.probe.shape == (96, 2)  # capped by the dataset size
    assert monitor.probe_indices == list(range(96))
    assert len(monitor.history) == 2 and [h["epoch"] for h in monitor.history] == [0, 1]
    assert monitor.last_result is not None and monitor.last_result.k == default_k(96)

    events = read_events(logger.log_dir)
    scalars = events.Tags()["scalars"]
    coefficient = [e.value for e in events.Scalars("ricci/coefficient")]
    assert coefficient == pytest.approx([h["coefficient"] for h in monitor.history], abs=1e-6)
    assert coefficient[-1] == pytest.approx(monitor.history[-1]["coefficient"], abs=1e-6)
    for key in (
        "ricci/excluded",
        "ricci/failed",
        "ricci/local_mean",
        "ricci/local_negative_share",
        "ricci/critical_layer",
    ):
        assert key in scalars
    # The flags as the history recorded them, measurement by measurement, and no failure.
    assert [e.value for e in events.Scalars("ricci/excluded")] == [
        float(h["excluded"]) for h in monitor.history
    ]
    assert [e.value for e in events.Scalars("ricci/failed")] == [0.0, 0.0]
    expected_excluded = [0.0 if math.isfinite(h["coefficient_paper"]) else 1.0 for h in monitor.history]
    assert [float(h["excluded"]) for h in monitor.history] == expected_excluded
    # Scalars, histograms and the history share one step per measurement.
    steps = [e.step for e in events.Scalars("ricci/coefficient")]
    assert steps == [h["global_step"] for h in monitor.history]
    assert [e.step for e in events.Histograms("ricci/union_edge_curvature/input")] == steps
    for name in monitor.layer_names:
        assert f"ricci/curvature/{name}" in scalars and f"ricci/geodesic_sum/{name}" in scalars
    curvature = events.Scalars("ricci/curvature/net.3")[-1].value
    assert curvature == pytest.approx(float(monitor.last_result.total_curvature[2]))
    histograms = events.Tags()["histograms"]
    assert {f"ricci/union_edge_curvature/{name}" for name in monitor.layer_names} <= set(histograms)
    assert "ricci/local_coefficients" in histograms
    pytest.importorskip("matplotlib")
    assert "ricci/flow" in events.Tags()["images"]
    assert len(events.Images("ricci/flow")) == 2


@pytest.mark.parametrize(
    ("log_figures", "plotted"),
    [(True, [0, 1, 2, 3, 4]), (2, [0, 2, 4]), (3, [0, 3, 4]), (10, [0, 4]), (False, [])],
)
def test_figure_schedule_and_last_measurement(
    tmp_path: Path, log_figures: bool | int, plotted: list[int]
) -> None:
    """Figures at measurements 0, n, 2n, ... and the last one at the end of training; histograms always."""
    pytest.importorskip("matplotlib")
    monitor = RicciFlowMonitor(log_figures=log_figures)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    make_trainer(tmp_path, [monitor], logger=logger, max_epochs=5).fit(TinyNet())

    events = read_events(logger.log_dir)
    steps = [int(h["global_step"]) for h in monitor.history]
    assert len(steps) == 5 and len(set(steps)) == 5
    images = [e.step for e in events.Images("ricci/flow")] if "ricci/flow" in events.Tags()["images"] else []
    assert images == [steps[i] for i in plotted]
    assert [e.step for e in events.Histograms("ricci/union_edge_curvature/input")] == steps
    assert [e.step for e in events.Scalars("ricci/coefficient")] == steps


def test_validate_always_writes_its_figure(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    monitor = RicciFlowMonitor(log_figures=10)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = make_trainer(tmp_path, [monitor], logger=logger, max_epochs=3)
    model = TinyNet()
    trainer.fit(model)
    trainer.validate(model, verbose=False)
    assert len(monitor.history) == 4
    events = read_events(logger.log_dir)
    # fit: the first measurement and, at the end of training, the last; then the validate run's own
    assert len(events.Images("ricci/flow")) == 3


@pytest.mark.parametrize(("convention", "k"), [("hehl", 7), ("baptista", 12)])
def test_logged_coefficient_equals_ricci_flow_on_same_activations(
    tmp_path: Path, convention: str, k: int
) -> None:
    probe_x, probe_y = circles(80, seed=5)
    monitor = RicciFlowMonitor(probe=(probe_x, probe_y), layers=HIDDEN, k=k, convention=convention)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    model = TinyNet()
    trainer = make_trainer(tmp_path, [monitor], logger=logger, max_epochs=3)
    trainer.fit(model)

    result = ricci_flow(reference_layers(model, probe_x, HIDDEN), k, convention=convention)
    value, excluded = expected_logged(result)
    assert trainer.callback_metrics["ricci/coefficient"].item() == pytest.approx(value, abs=1e-6)
    assert trainer.callback_metrics["ricci/excluded"].item() == excluded
    last = read_events(logger.log_dir).Scalars("ricci/coefficient")[-1].value
    assert last == pytest.approx(value, abs=1e-6)
    torch.testing.assert_close(monitor.last_result.total_curvature, result.total_curvature)
    torch.testing.assert_close(monitor.last_result.geodesic_sum, result.geodesic_sum)


def test_two_hidden_layers_warn_at_setup_and_never_log_nan(tmp_path: Path) -> None:
    # Two hidden layers under "baptista" leave one (Ric, eta) pair: both coefficients are undefined.
    probe_x = circles(64, seed=3)[0]
    monitor = RicciFlowMonitor(probe=probe_x, layers=HIDDEN[:2], k=5)
    trainer = make_trainer(tmp_path, [monitor], max_epochs=2)
    with pytest.warns(UserWarning) as record:
        trainer.fit(TinyNet())
    messages = [str(w.message) for w in record]
    assert (
        sum('convention="baptista" with 2 chosen layers' in m for m in messages) == 1
    )  # once, with the count
    assert sum("some values are undefined" in m for m in messages) == 1
    assert math.isnan(monitor.history[-1]["coefficient_paper"])
    assert math.isnan(monitor.history[-1]["coefficient_connected"])
    # Nothing valid to carry: the upper end of the coefficient's range, flagged as carried.
    assert trainer.callback_metrics["ricci/coefficient"].item() == 1.0
    assert trainer.callback_metrics["ricci/excluded"].item() == 1.0
    assert trainer.callback_metrics["ricci/carried"].item() == 1.0
    assert trainer.callback_metrics["ricci/failed"].item() == 0.0


def test_connected_fallback_when_paper_rule_excludes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pipeline_module.ricci_flow

    def excluded(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        return dataclasses.replace(result, coefficient=math.nan, excluded=True, coefficient_connected=-0.25)

    monkeypatch.setattr(pipeline_module, "ricci_flow", excluded)
    monitor = RicciFlowMonitor(probe=circles(64, seed=3)[0], layers=HIDDEN, k=5)
    trainer = make_trainer(tmp_path, [monitor], max_epochs=1)
    with pytest.warns(UserWarning, match="both-layers-connected"):
        trainer.fit(TinyNet())
    assert trainer.callback_metrics["ricci/coefficient"].item() == pytest.approx(-0.25)
    assert trainer.callback_metrics["ricci/excluded"].item() == 1.0


# --------------------------------------------------------------------------- failures


def test_geometry_exception_is_reported_once_and_training_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom in the geometry")

    monkeypatch.setattr(pipeline_module, "ricci_flow", boom)
    monitor = RicciFlowMonitor(probe=circles(64, seed=3)[0], layers=HIDDEN, k=5)
    trainer = make_trainer(tmp_path, [monitor], max_epochs=3)
    with pytest.warns(UserWarning, match="boom in the geometry") as record:
        trainer.fit(TinyNet())
    assert sum("boom in the geometry" in str(w.message) for w in record) == 1
    assert trainer.current_epoch == 3
    assert [h["failed"] for h in monitor.history] == [True, True, True]
    assert trainer.callback_metrics["ricci/coefficient"].item() == 1.0  # no valid value yet: the worst
    assert trainer.callback_metrics["ricci/failed"].item() == 1.0
    assert trainer.callback_metrics["ricci/carried"].item() == 1.0


def test_diverged_model_with_nan_activations_does_not_stop_training(tmp_path: Path) -> None:
    model = TinyNet()
    with torch.no_grad():
        model.net[2].weight[0, 0] = float("nan")  # every activation from the second layer on is NaN
    monitor = RicciFlowMonitor(probe=circles(64, seed=3)[0], layers=HIDDEN, k=5)
    stop = EarlyStopping(monitor="ricci/coefficient", mode="min", patience=5)
    trainer = make_trainer(tmp_path, [monitor, stop], max_epochs=2)
    with pytest.warns(UserWarning, match="must be finite"):
        trainer.fit(model)
    assert trainer.current_epoch == 2 and not trainer.should_stop
    assert [h["failed"] for h in monitor.history] == [True, True]
    assert trainer.callback_metrics["ricci/coefficient"].item() == 1.0
    assert trainer.callback_metrics["ricci/failed"].item() == 1.0


def test_strict_reraises_geometry_exception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom in the geometry")

    monkeypatch.setattr(pipeline_module, "ricci_flow", boom)
    model = TinyNet()
    trainer = make_trainer(tmp_path, [RicciFlowMonitor(probe=circles(64, 3)[0], layers=HIDDEN, strict=True)])
    with pytest.raises(RuntimeError, match="boom in the geometry"):
        trainer.fit(model)
    assert hook_count(model) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_computes_on_gpu_and_oom_falls_back_to_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pipeline_module.ricci_flow
    devices: list[str] = []

    def oom_on_gpu(layers: Any, *args: Any, **kwargs: Any) -> Any:
        devices.append(layers[0].device.type)
        if layers[0].device.type == "cuda" and len(devices) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(layers, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "ricci_flow", oom_on_gpu)
    monitor = RicciFlowMonitor(probe=circles(64, 3)[0], layers=HIDDEN, k=5)
    trainer = make_trainer(tmp_path, [monitor], accelerator="gpu", max_epochs=2)
    with pytest.warns(UserWarning, match="out of GPU memory"):
        trainer.fit(TinyNet())
    # The second evaluation runs out of memory, retries with smaller chunks on the GPU, then on the CPU.
    assert devices == ["cuda", "cuda", "cuda", "cpu"]
    assert [h["failed"] for h in monitor.history] == [False, False]


def test_oom_retries_with_smaller_chunks_first(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def oom_once(layers: Any, k: int, **kwargs: Any) -> Any:
        calls.append(kwargs.get("memory_budget"))
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return "result"

    monkeypatch.setattr(pipeline_module, "ricci_flow", oom_once)
    pipeline = pipeline_module.Pipeline(k=3)
    layers = [torch.empty(10, 4, device="meta") for _ in range(3)]  # any non-CPU device takes the retry path
    captured = pipeline_module.Captured(["input", "a", "b"], layers, {})
    with pytest.warns(UserWarning, match="retried with smaller chunks"):
        assert pipeline.compute(captured) == "result"
    assert calls[0] is None and calls[1] is not None and calls[1] < (1 << 31)


# --------------------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, r"`k` must be a positive int or None \(got 0\)"),
        ({"k": 2.5}, ValueError, r"`k` must be a positive int"),
        ({"k": []}, ValueError, r"`k` must hold at least one value \(got an empty sequence\)"),
        ({"k": [5, True]}, TypeError, r"`k` must hold ints \(got True of type bool in \[5, True\]\)"),
        ({"k": [5, 2.0]}, TypeError, r"`k` must hold ints \(got 2.0 of type float"),
        ({"k": [5, 0]}, ValueError, r"`k` must hold ints >= 1 \(got \[5, 0\]\)"),
        ({"k": [5, 10, 5]}, ValueError, r"`k` must hold distinct values \(got \[5, 10, 5\]\)"),
        ({"k": [5, 1000]}, ValueError, r"`k` must be smaller than `num_samples` 1000 \(got \[5, 1000\]\)"),
        ({"convention": "weber"}, ValueError, r"`convention` must be one of .* \(got 'weber'\)"),
        ({"curvature": "ollivier"}, ValueError, r"`curvature` must be one of .* \(got 'ollivier'\)"),
        ({"knn_backend": "faiss"}, ValueError, r"`knn_backend` must be one of .* \(got 'faiss'\)"),
        ({"layers": "net.1"}, TypeError, r"`layers` must be a list of module names, not a str"),
        ({"layers": []}, ValueError, r"`layers` must name at least one module"),
        ({"layers": ["net.1", "net.1"]}, ValueError, r"`layers` lists a module twice"),
        ({"layers": [1]}, TypeError, r"`layers` entries must be non-empty module names"),
        ({"layers": (int,)}, TypeError, r"nn.Module subclasses"),
        ({"num_samples": 2}, ValueError, r"`num_samples` must be an int >= 3 \(got 2\)"),
        ({"every_n_epochs": 0}, ValueError, r"`every_n_epochs` must be an int >= 1 \(got 0\)"),
        ({"batch_size": 0}, ValueError, r"`batch_size` must be an int >= 1"),
        ({"k": 1000}, ValueError, r"`k` must be smaller than `num_samples` 1000 \(got 1000\)"),
        (
            {"probe": {"pixels": torch.zeros(4, 2)}},
            TypeError,
            r"`probe` is a dict batch without a known input key",
        ),
        (
            {"probe": {"x": torch.zeros(4, 2)}, "input_key": "z"},
            ValueError,
            r"`input_key` must be a key of the batch",
        ),
        ({"reduce": "max"}, ValueError, r"`reduce` must be one of .* \(got 'max'\)"),
        ({"max_layers": 0}, ValueError, r"`max_layers` must be an int >= 1 \(got 0\)"),
        ({"forward_fn": 3}, TypeError, r"`forward_fn` must be callable \(got int\)"),
        ({"probe": [1, 2, 3]}, TypeError, r"`probe` must be a tensor .* \(got int\)"),
        (
            {"probe": torch.zeros(2, 3)},
            ValueError,
            r"`probe` must hold at least 3 samples .* \(got shape \(2, 3\)\)",
        ),
        (
            {"probe": torch.zeros(6, 2), "k": 6},
            ValueError,
            r"`k` must be smaller than the number of probe points 6",
        ),
        ({"log_prefix": 3}, TypeError, r"`log_prefix` must be a str \(got int\)"),
        ({"log_figures": -1}, ValueError, r"`log_figures` must be a bool or an int >= 0 \(got -1\)"),
        (
            {"log_figures": "always"},
            ValueError,
            r"`log_figures` must be a bool or an int >= 0 \(got 'always'\)",
        ),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RicciFlowMonitor(**kwargs)


def test_unknown_layer_name_lists_modules(tmp_path: Path) -> None:
    model = TinyNet()
    trainer = make_trainer(tmp_path, [RicciFlowMonitor(layers=["net.1", "net.relu"])])
    with pytest.raises(
        ValueError, match=r"does not exist in TinyNet \(got 'net.relu'\).*Modules that exist: .*'net.1'"
    ):
        trainer.fit(model)
    assert hook_count(model) == 0


def test_functional_activations_measure_the_children(tmp_path: Path) -> None:
    class Functional(TinyNet):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(2, WIDTH), nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, 2)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.net[:-1]:
                x = torch.relu(layer(x))
            return self.net[-1](x)

    monitor = RicciFlowMonitor()
    trainer = make_trainer(tmp_path, [monitor])
    trainer.fit(Functional())
    assert monitor.layer_names == ["input", "net.0", "net.1", "net.2", "net.3"]
    assert monitor.layer_rule == "children"
    assert [h["failed"] for h in monitor.history] == [False, False]


def test_two_monitors_need_distinct_prefixes(tmp_path: Path) -> None:
    # Same `log_prefix`, same `state_key`: Lightning refuses the pair when the Trainer is built.
    with pytest.raises(RuntimeError, match=r"state_key` must be unique"):
        make_trainer(tmp_path, [RicciFlowMonitor(k=5), RicciFlowMonitor(k=8)])


def test_k_larger_than_dataset_probe(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, [RicciFlowMonitor(k=200)])
    with pytest.raises(
        ValueError, match=r"`k` must be smaller than the number of probe points 96 \(got 200\)"
    ):
        trainer.fit(TinyNet())


# --------------------------------------------------------------------------- lifecycle


class HookSpy(Callback):
    """Checks that no hook is left on the model outside the probe pass, and that modes are kept."""

    def __init__(self) -> None:
        self.checked = 0
        self.modes: list[bool] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        assert hook_count(pl_module) == 0
        self.checked += 1

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.modes = [m.training for m in pl_module.modules()]

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert hook_count(pl_module) == 0
        assert [m.training for m in pl_module.modules()] == self.modes
        self.checked += 1


def test_hooks_removed_and_modes_restored(tmp_path: Path) -> None:
    class WithFrozen(TinyNet):
        def on_validation_model_eval(self) -> None:
            super().on_validation_model_eval()
            self.net[2].train()  # a module deliberately left in train mode during validation

    spy = HookSpy()
    model = WithFrozen()
    monitor = RicciFlowMonitor()
    trainer = make_trainer(tmp_path, [monitor, spy], max_epochs=2)
    trainer.fit(model)
    assert spy.checked == 2 * 4 + 3  # train batches + validation runs (sanity check included)
    assert hook_count(model) == 0
    assert len(monitor.history) == 2


def test_every_n_epochs_and_sanity_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pipeline_module.ricci_flow
    calls: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "ricci_flow", counting)
    monitor = RicciFlowMonitor(probe=circles(64, 3)[0], layers=HIDDEN, k=5, every_n_epochs=2)
    early = EarlyStopping(monitor="ricci/coefficient", mode="min", patience=10, strict=False)
    trainer = make_trainer(tmp_path, [monitor, early], max_epochs=4)
    with pytest.warns(UserWarning, match="stale 'ricci/coefficient'"):
        trainer.fit(TinyNet())
    assert [h["epoch"] for h in monitor.history] == [1, 3]
    assert len(calls) == 2

    calls.clear()
    sane = RicciFlowMonitor(probe=circles(64, 3)[0], layers=HIDDEN, k=5, run_on_sanity_check=True)
    trainer = make_trainer(tmp_path, [sane], max_epochs=1)
    trainer.fit(TinyNet())
    assert len(calls) == 2 and len(sane.history) == 1  # the sanity measurement is not in the history


def test_early_stopping_on_coefficient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pipeline_module.ricci_flow
    sequence = iter([-0.5, -0.6, -0.4, -0.3, -0.2, -0.1, 0.0, 0.1])

    def scripted(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(real(*args, **kwargs), coefficient=next(sequence))

    monkeypatch.setattr(pipeline_module, "ricci_flow", scripted)
    monitor = RicciFlowMonitor(probe=circles(64, 3)[0], layers=HIDDEN, k=5)
    early = EarlyStopping(monitor="ricci/coefficient", mode="min", patience=2, strict=True, check_finite=True)
    best = ModelCheckpoint(
        dirpath=str(tmp_path / "ckpt"), monitor="ricci/coefficient", mode="min", auto_insert_metric_name=False
    )
    trainer = make_trainer(tmp_path, [early, monitor, best], max_epochs=8, enable_checkpointing=True)
    trainer.fit(TinyNet())
    assert best.best_model_score is not None and best.best_model_score.item() == pytest.approx(-0.6)
    # Best at epoch 1 (-0.6); epochs 2 and 3 do not improve: stop after epoch 3.
    assert early.stopped_epoch == 3
    assert early.best_score.item() == pytest.approx(-0.6)
    assert [h["coefficient"] for h in monitor.history] == [-0.5, -0.6, -0.4, -0.3]


def test_resume_restores_history_and_probe(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    first = RicciFlowMonitor(num_samples=40, seed=7)
    trainer = make_trainer(tmp_path, [first, checkpoint], max_epochs=2, enable_checkpointing=True)
    trainer.fit(TinyNet())
    assert first.probe_indices is not None and len(first.probe_indices) == 40
    assert first.probe_indices != list(range(40))

    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert saved["callbacks"][first.state_key]["probe_indices"] == first.probe_indices

    resumed = RicciFlowMonitor(num_samples=40, seed=123)  # a different seed: the saved indices win
    trainer = make_trainer(tmp_path, [resumed], max_epochs=3)
    trainer.fit(TinyNet(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.probe_indices == first.probe_indices
    torch.testing.assert_close(resumed.probe, first.probe)
    assert len(resumed.history) == 3
    assert repr(resumed.history[:2]) == repr(first.history)  # repr: NaN == NaN
    assert resumed.history[2]["epoch"] == 2


def test_two_monitors_in_one_trainer(tmp_path: Path) -> None:
    probe = circles(64, 3)[0]
    a = RicciFlowMonitor(probe=probe, layers=HIDDEN, k=5, log_prefix="a/")
    b = RicciFlowMonitor(
        k=9, convention="hehl", curvature="augmented_forman", log_prefix="b/", num_samples=50
    )
    assert a.state_key != b.state_key
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    logger = CSVLogger(str(tmp_path), name="csv")  # a logger that takes no histograms or figures
    trainer = make_trainer(tmp_path, [a, b, checkpoint], logger=logger, enable_checkpointing=True)
    trainer.fit(TinyNet())
    metrics = trainer.callback_metrics
    assert "a/ricci/coefficient" in metrics and "b/ricci/coefficient" in metrics
    assert a.last_result is not None and b.last_result is not None
    assert (a.last_result.k, b.last_result.k) == (5, 9)
    assert b.last_result.convention == "hehl" and b.last_result.curvature_kind == "augmented_forman"
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert repr(saved["callbacks"][a.state_key]["history"]) == repr(a.history)  # repr: NaN == NaN
    assert repr(saved["callbacks"][b.state_key]["history"]) == repr(b.history)
    csv_text = Path(logger.log_dir, "metrics.csv").read_text()
    assert "a/ricci/coefficient" in csv_text and "b/ricci/curvature/input" in csv_text


def test_bf16_mixed_precision(tmp_path: Path) -> None:
    probe_x = circles(64, 3)[0]
    monitor = RicciFlowMonitor(probe=probe_x, layers=HIDDEN, k=5, convention="hehl")
    model = TinyNet()
    trainer = make_trainer(tmp_path, [monitor], precision="bf16-mixed")
    trainer.fit(model)
    assert trainer.callback_metrics["ricci/failed"].item() == 0.0
    # The activations were bf16 under autocast: the monitor's input equals the same autocast forward.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layers = reference_layers(model, probe_x, HIDDEN)
    result = ricci_flow(layers, 5, convention="hehl")
    assert trainer.callback_metrics["ricci/coefficient"].item() == pytest.approx(
        expected_logged(result)[0], abs=1e-6
    )


def logged_failed(logger: CSVLogger) -> list[float]:
    """The ``ricci/failed`` value of every logged measurement, in order (from the CSV file)."""
    logger.save()
    with open(Path(logger.log_dir) / "metrics.csv") as handle:
        return [float(row["ricci/failed"]) for row in csv.DictReader(handle) if row.get("ricci/failed")]


def test_compiled_model(tmp_path: Path) -> None:
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover
        pytest.skip("torch.compile unsupported")

    class Compiled(TinyNet):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.compile(self.net, backend="eager")  # type: ignore[assignment]

    counters.clear()
    monitor = RicciFlowMonitor(probe=circles(64, 3)[0], layers=HIDDEN, k=5)
    model = Compiled()
    logger = CSVLogger(str(tmp_path), name="csv")
    trainer = make_trainer(tmp_path, [monitor], logger=logger, max_epochs=3)
    try:
        trainer.fit(model)
    except RuntimeError as err:  # pragma: no cover - platforms without dynamo
        if "compile" in str(err).lower() or "dynamo" in str(err).lower():
            pytest.skip(f"torch.compile unsupported: {err}")
        raise
    assert monitor.layer_names == ["input", *HIDDEN]  # `_orig_mod.` normalised away
    assert len(monitor.history) == 3
    assert [h["failed"] for h in monitor.history] == [False, False, False]
    assert logged_failed(logger) == [0.0, 0.0, 0.0]  # every measurement succeeded, as logged
    plain = TinyNet()
    plain.net.load_state_dict(model.net._orig_mod.state_dict())  # the same weights, not compiled
    reference = ricci_flow(reference_layers(plain, circles(64, 3)[0], HIDDEN), 5)
    torch.testing.assert_close(monitor.last_result.total_curvature, reference.total_curvature)
    # The probe passes ran eagerly: no graph was recompiled for them.
    assert counters["stats"]["unique_graphs"] <= 2  # train + eval mode graphs
    assert hook_count(model) == 0


def test_compiled_lightning_module(tmp_path: Path) -> None:
    monitor = RicciFlowMonitor(probe=circles(64, 3)[0], k=5)
    compiled = torch.compile(TinyNet(), backend="eager")
    logger = CSVLogger(str(tmp_path), name="csv")
    trainer = make_trainer(tmp_path, [monitor], logger=logger)
    trainer.fit(compiled)
    assert monitor.layer_names == ["input", *HIDDEN]
    assert len(monitor.history) == 2
    assert [h["failed"] for h in monitor.history] == [False, False]
    assert logged_failed(logger) == [0.0, 0.0]  # every measurement succeeded, as logged


def test_validate_and_shared_activation(tmp_path: Path) -> None:
    class Shared(TinyNet):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.ModuleList([nn.Linear(2, WIDTH), nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)])
            self.head = nn.Linear(WIDTH, 2)
            self.act = nn.Tanh()
            del self.net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for fc in self.fc:
                x = self.act(fc(x))
            return self.head(x)

    monitor = RicciFlowMonitor(num_samples=64)
    trainer = make_trainer(tmp_path, [monitor])
    trainer.validate(Shared(), verbose=False)
    assert monitor.layer_names == ["input", "act:0", "act:1", "act:2"]
    assert "ricci/curvature/act:2" in trainer.callback_metrics
    assert len(monitor.history) == 1


def test_monitor_on_exception_leaves_no_hooks(tmp_path: Path) -> None:
    class Broken(TinyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training and x.shape[0] == 64:  # only the probe pass fails
                self.net(x)
                raise RuntimeError("probe forward failed")
            return self.net(x)

    model = Broken()
    monitor = RicciFlowMonitor(probe=circles(64, 3)[0], layers=HIDDEN, k=5)
    trainer = make_trainer(tmp_path, [monitor])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="probe forward failed"):
            trainer.fit(model)
    assert hook_count(model) == 0
    assert not any(m.training for m in model.modules())  # as validation left it: the probe pass restored it


def test_layers_by_module_class_and_predicate(tmp_path: Path) -> None:
    by_class = RicciFlowMonitor(layers=nn.Linear, num_samples=64, log_prefix="cls/")
    by_predicate = RicciFlowMonitor(
        layers=lambda name, module: name in {"net.3", "net.1"}, num_samples=64, log_prefix="pred/"
    )
    trainer = make_trainer(tmp_path, [by_class, by_predicate])
    trainer.validate(TinyNet(), verbose=False)
    assert by_class.layer_names == ["input", "net.0", "net.2", "net.4", "net.6", "net.8"]
    assert by_predicate.layer_names == ["input", "net.1", "net.3"]  # forward order
    assert "cls/ricci/curvature/net.8" in trainer.callback_metrics


# --------------------------------------------------------------------------- failures never win


class TurnsNaN(TinyNet):
    """Weights become NaN at the start of epoch `at` (after good epochs), as a diverged run's do."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def on_train_epoch_start(self) -> None:
        if self.current_epoch == self.at:
            with torch.no_grad():
                for parameter in self.parameters():
                    parameter.fill_(float("nan"))


@pytest.mark.parametrize("key", ["ricci/coefficient", "ricci/local_mean"])
def test_nan_weights_are_never_best_and_never_stop_training(tmp_path: Path, key: str) -> None:
    monitor = RicciFlowMonitor(probe=circles(64, 3)[0], layers=HIDDEN, k=5)
    early = EarlyStopping(monitor=key, mode="min", patience=2, check_finite=True, strict=True)
    best = ModelCheckpoint(
        dirpath=str(tmp_path / "ckpt"), monitor=key, mode="min", filename="{epoch}", save_top_k=1
    )
    trainer = make_trainer(tmp_path, [monitor, early, best], max_epochs=7, enable_checkpointing=True)
    with pytest.warns(UserWarning, match="a measurement failed"):
        trainer.fit(TurnsNaN(at=2))
    assert [h["failed"] for h in monitor.history] == [False, False, True, True, True, True, True]
    assert (
        trainer.current_epoch == 7 and early.stopped_epoch == 0
    )  # five failed epochs, patience 2: not stopped
    valid = [monitor.history[i][key.split("/")[1]] for i in (0, 1)]
    assert best.best_model_score is not None and best.best_model_score.item() == pytest.approx(min(valid))
    assert Path(best.best_model_path).name == f"epoch={valid.index(min(valid))}.ckpt"
    # The failed epochs logged the last valid value, flagged.
    assert trainer.callback_metrics[key].item() == pytest.approx(valid[1])
    assert trainer.callback_metrics["ricci/failed"].item() == 1.0
    assert trainer.callback_metrics["ricci/carried"].item() == 1.0
    assert early.wait_count == (0 if valid[1] < valid[0] else 1)  # the carried checks were held


def test_hold_does_not_touch_unrelated_early_stopping(tmp_path: Path) -> None:
    monitor = RicciFlowMonitor(probe=circles(64, 3)[0], layers=HIDDEN, k=5)
    other = EarlyStopping(monitor="val_loss", mode="min", patience=100, check_finite=False)
    trainer = make_trainer(tmp_path, [monitor, other], max_epochs=4)
    with pytest.warns(UserWarning, match="a measurement failed"):
        trainer.fit(TurnsNaN(at=1))
    assert other.wait_count == 3  # val_loss NaN from epoch 1 on: Lightning's own counting, untouched


def test_layer_that_stops_running_is_flagged_not_fatal(tmp_path: Path) -> None:
    class Skips(TinyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for i, module in enumerate(self.net):
                skip = i == 5 and self.current_epoch >= 1
                x = torch.relu(x) if skip else module(x)  # net.5 stops running as a module
            return x

    monitor = RicciFlowMonitor(layers=HIDDEN, num_samples=64)
    trainer = make_trainer(tmp_path, [monitor], max_epochs=3)
    with pytest.warns(UserWarning, match="net.5' did not run") as record:
        trainer.fit(Skips())
    assert sum("did not run" in str(w.message) for w in record) == 1
    assert [h["failed"] for h in monitor.history] == [False, True, True]
    assert trainer.current_epoch == 3

    strict = RicciFlowMonitor(layers=HIDDEN, num_samples=64, strict=True)
    with pytest.raises(CaptureError, match="did not run"):
        make_trainer(tmp_path, [strict], max_epochs=3).fit(Skips())


def test_integer_output_layer_is_reported_at_setup_and_flagged(tmp_path: Path) -> None:
    class Counts(TinyNet):
        def __init__(self) -> None:
            super().__init__()
            self.bucket = Bucket()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.bucket(x)
            return self.net(x)

    class Bucket(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x > 0).long()

    monitor = RicciFlowMonitor(layers=[*HIDDEN, "bucket"], num_samples=64)
    trainer = make_trainer(tmp_path, [monitor], max_epochs=2)
    with pytest.warns(UserWarning, match=r"'bucket' returned a torch.int64 tensor") as record:
        trainer.fit(Counts())
    messages = [str(w.message) for w in record]
    assert sum("every measurement will fail" in m for m in messages) == 1  # said at setup
    assert sum("a measurement failed" in m for m in messages) == 1  # then flagged, warned once
    assert [h["failed"] for h in monitor.history] == [True, True]
    with pytest.raises(ValueError, match=r"`layers`: layer 'bucket' returned a torch.int64 tensor"):
        make_trainer(tmp_path, [RicciFlowMonitor(layers=["bucket"], strict=True)]).fit(Counts())


# --------------------------------------------------------------------------- labels, stages, messages


def test_probe_labels_give_the_class_keys(tmp_path: Path) -> None:
    probe_x, probe_y = circles(80, seed=5)
    monitor = RicciFlowMonitor(probe=(probe_x, probe_y), layers=HIDDEN, k=7, convention="hehl")
    model = TinyNet()
    trainer = make_trainer(tmp_path, [monitor], max_epochs=1)
    trainer.fit(model)
    result = ricci_flow(reference_layers(model, probe_x, HIDDEN), 7, convention="hehl", labels=probe_y)
    metrics = trainer.callback_metrics
    for field, attribute in (("modularity", "class_modularity"), ("mixing", "class_mixing")):
        values = getattr(result, attribute)
        assert metrics[f"ricci/class/{field}"].item() == pytest.approx(float(values[-1]), abs=1e-6)
        assert metrics[f"ricci/class/{field}/net.3"].item() == pytest.approx(float(values[2]), abs=1e-6)


def test_no_validation_loop_warns_once(tmp_path: Path) -> None:
    monitor = RicciFlowMonitor()
    trainer = make_trainer(tmp_path, [monitor], limit_val_batches=0)
    with pytest.warns(UserWarning, match="will never measure during this fit") as record:
        trainer.fit(TinyNet())
    assert sum("will never measure" in str(w.message) for w in record) == 1
    assert monitor.history == []


def test_trainer_test_measures(tmp_path: Path) -> None:
    class WithTest(TinyNet):
        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("test_loss", nn.functional.cross_entropy(self(x), y))

        def test_dataloader(self) -> DataLoader:
            return DataLoader(TensorDataset(*circles(50, seed=9)), batch_size=25)

    monitor = RicciFlowMonitor()
    model = WithTest()
    trainer = make_trainer(tmp_path, [monitor])
    results = trainer.test(model, verbose=False)
    assert [h["stage"] for h in monitor.history] == ["test"]
    assert monitor.probe is not None and monitor.probe.shape == (50, 2)  # from the test data
    assert results[0]["ricci/coefficient"] == pytest.approx(monitor.history[0]["coefficient"], abs=1e-6)


def test_progress_line_cost_guard_and_prefixed_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(callback_module, "PROGRESS_SECONDS", 0.0)
    monkeypatch.setattr(pipeline_module, "ACTIVATION_BUDGET_MB", 0.001)
    monitor = RicciFlowMonitor(log_prefix="a/")
    trainer = make_trainer(tmp_path, [monitor], max_epochs=2)
    with caplog.at_level("INFO"), pytest.warns(UserWarning, match="projects") as record:
        trainer.fit(TinyNet())
    # 96 points x (2 + 4 x 16) float32 values, in MB, as the warning prints it
    megabytes = 96 * (2 + 4 * WIDTH) * 4 / 2**20
    assert any(f"projects {megabytes:.3g} MB" in str(w.message) for w in record)
    assert any("lower `num_samples`" in str(w.message) for w in record)
    assert caplog.text.count("RicciFlowMonitor(log_prefix='a/'): measuring 96 probe points on 5 layers") == 2
    assert "RicciFlowMonitor(log_prefix='a/'): 2 measurements of 96 probe points took" in caplog.text
    assert "5 layers (rule: activations): input [flatten, 2], net.1 [flatten, 16]" in caplog.text


class NaNFirst(TinyNet):
    """Weights are NaN at the first validation run only (set after the first training epoch, restored at
    the start of the second), so the first measurement fails and the later ones are valid."""

    def on_validation_epoch_start(self) -> None:
        if self.current_epoch == 0 and not self.trainer.sanity_checking:
            self.saved = {k: v.clone() for k, v in self.state_dict().items()}
            with torch.no_grad():
                for parameter in self.parameters():
                    parameter.fill_(float("nan"))

    def on_train_epoch_start(self) -> None:
        if self.current_epoch == 1:
            self.load_state_dict(self.saved)


class Recorder(Callback):
    def __init__(self, key: str) -> None:
        self.key, self.values = key, []  # type: tuple[str, list[float]]

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.values.append(trainer.callback_metrics[self.key].item())


@pytest.mark.parametrize("prefix", ["", "p/"])
def test_failed_first_measurement_never_wins_under_mode_max(tmp_path: Path, prefix: str) -> None:
    key = f"{prefix}ricci/class/modularity"
    monitor = RicciFlowMonitor(probe=circles(64, 3), layers=HIDDEN, k=5, log_prefix=prefix)
    recorder = Recorder(key)
    early = EarlyStopping(monitor=key, mode="max", min_delta=0.01, patience=5, check_finite=True)
    best = ModelCheckpoint(
        dirpath=str(tmp_path / "ckpt"), monitor=key, mode="max", filename="{epoch}", save_top_k=1
    )
    trainer = make_trainer(
        tmp_path,
        [monitor, recorder, early, best],
        max_epochs=6,
        enable_checkpointing=True,
        limit_train_batches=8,
    )
    with pytest.warns(UserWarning, match="a measurement failed"):
        trainer.fit(NaNFirst())
    assert [h["failed"] for h in monitor.history] == [True, False, False, False, False, False]
    assert recorder.values[0] == -0.5  # the bottom of modularity's range: the worst for mode="max"
    valid = recorder.values[1:]
    assert all(-0.5 < v <= 1.0 for v in valid)
    # Later valid epochs improve on the placeholder: the best checkpoint is the first argmax of the
    # valid epochs, never the failed epoch 0.
    assert best.best_model_score is not None and best.best_model_score.item() == pytest.approx(max(valid))
    assert Path(best.best_model_path).name == f"epoch={1 + valid.index(max(valid))}.ckpt"
    # EarlyStopping's best moved off the placeholder: within min_delta of the best valid value.
    assert max(valid) - 0.01 <= early.best_score.item() <= max(valid)


def test_unmonitored_keys_get_their_natural_placeholder(tmp_path: Path) -> None:
    monitor = RicciFlowMonitor(probe=circles(64, 3), layers=HIDDEN, k=5)
    trainer = make_trainer(tmp_path, [monitor], max_epochs=1)
    with pytest.warns(UserWarning, match="a measurement failed"):
        trainer.fit(NaNFirst())
    metrics = trainer.callback_metrics
    assert metrics["ricci/coefficient"].item() == 1.0  # lower is better: the top
    assert metrics["ricci/class/mixing"].item() == 1.0
    assert metrics["ricci/class/normalized_cut"].item() == 1.0  # two classes: [0, 1]
    assert metrics["ricci/class/modularity"].item() == -0.5  # higher is better: the bottom
    assert metrics["ricci/class/modularity/net.3"].item() == -0.5


# --------------------------------------------------------------------------- stability across k


def test_k_scan_logs_every_k_as_separate_calls_give(tmp_path: Path) -> None:
    probe_x = circles(80, seed=5)[0]
    ks = [10, 5, 20]
    monitor = RicciFlowMonitor(probe=probe_x, layers=HIDDEN, k=ks, log_prefix="s/")
    model = TinyNet()
    trainer = make_trainer(tmp_path, [monitor], max_epochs=1)
    trainer.fit(model)
    metrics = trainer.callback_metrics
    layers = reference_layers(model, probe_x, HIDDEN)
    separate = [ricci_flow(layers, k) for k in ks]
    expected = [r.coefficient if math.isfinite(r.coefficient) else r.coefficient_connected for r in separate]
    for k, value in zip(ks, expected):
        assert metrics[f"s/ricci/k/{k}/coefficient"].item() == pytest.approx(value, abs=1e-6)
    # The usual keys are the first k's result.
    assert metrics["s/ricci/coefficient"].item() == pytest.approx(expected[0], abs=1e-6)
    assert metrics["s/ricci/local_mean"].item() == pytest.approx(separate[0].local_mean, abs=1e-6)
    assert monitor.last_result is not None and monitor.last_result.k == 10
    assert monitor.last_scan is not None and monitor.last_scan.ks == ks
    finite = [v for v in expected if math.isfinite(v)]
    assert metrics["s/ricci/k/spread"].item() == pytest.approx(max(finite) - min(finite), abs=1e-6)
    positive = sum(v > 0 for v in finite)
    majority = max(positive, sum(v < 0 for v in finite), sum(v == 0 for v in finite))
    assert metrics["s/ricci/k/sign_agreement"].item() == pytest.approx(majority / len(finite))


def test_k_scan_keys_are_carried_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom in the geometry")

    monkeypatch.setattr(pipeline_module, "ricci_flow", boom)
    monitor = RicciFlowMonitor(probe=circles(64, seed=3)[0], layers=HIDDEN, k=[5, 10])
    trainer = make_trainer(tmp_path, [monitor], max_epochs=1)
    with pytest.warns(UserWarning, match="boom in the geometry"):
        trainer.fit(TinyNet())
    metrics = trainer.callback_metrics
    # Nothing valid yet: the worst of each range for its natural direction (lower spread, higher agreement).
    assert metrics["ricci/k/5/coefficient"].item() == 1.0 and metrics["ricci/k/10/coefficient"].item() == 1.0
    assert metrics["ricci/k/spread"].item() == 2.0
    assert metrics["ricci/k/sign_agreement"].item() == 0.0
    assert metrics["ricci/failed"].item() == 1.0 and metrics["ricci/carried"].item() == 1.0

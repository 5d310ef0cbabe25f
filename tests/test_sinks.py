"""Tests of lightning_ricci.sinks: figures and histograms reach each logger, at the given step.

Every logger runs offline or on a local store in ``tmp_path``, and what it wrote is read back with that
logger's own storage format (TensorBoard event files, the W&B run file and media, MLflow's artifacts).
"""

from __future__ import annotations

import io
import json
import math
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch

from lightning_ricci import sinks
from lightning_ricci.sinks import log_figure, log_histogram

pytest.importorskip("matplotlib")
pytest.importorskip("tensorboard")

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

STEP = 15
# Ten finite values and two that no histogram can take: 0..9, sum 45, population std sqrt(8.25).
VALUES = torch.tensor([3.0, 0.0, 9.0, 1.0, 8.0, math.nan, 2.0, 7.0, 4.0, math.inf, 6.0, 5.0])
WIDTH, HEIGHT = 200, 150  # pixels of the figure below: 4 x 3 inches at 50 dpi


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "_warned", set())


@pytest.fixture
def figure() -> Iterator[Figure]:
    fig = Figure(figsize=(WIDTH / 50, HEIGHT / 50), dpi=50)
    fig.subplots().plot([0, 1, 2], [2, 0, 1])
    yield fig
    fig.clear()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _sink_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if "lightning_ricci: could not write" in str(w.message)]


def _tensorboard_events(log_dir: str) -> EventAccumulator:
    accumulator = EventAccumulator(log_dir, size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


class _Unknown(Logger):
    """A logger of no known kind whose experiment has neither add_figure nor add_histogram."""

    def __init__(self) -> None:
        super().__init__()
        self.touched = False

    @property
    def name(self) -> str:
        return "unknown"

    @property
    def version(self) -> int:
        return 0

    @property
    def experiment(self) -> object:
        self.touched = True
        return object()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        raise AssertionError("sinks must not call log_metrics on an unknown logger")

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


# ------------------------------------------------------------------ TensorBoard


def test_tensorboard_gets_figure_and_histogram_at_the_step_of_the_scalars(
    tmp_path: Path, figure: Figure
) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb", prefix="fold0")
    logger.log_metrics({"ricci/coefficient": -0.25}, step=STEP)
    log_figure(logger, "ricci/flow", figure, STEP)
    log_histogram([logger], "ricci/local", VALUES, STEP)
    logger.experiment.flush()

    events = _tensorboard_events(logger.log_dir)
    # The logger's prefix is joined to every tag as log_metrics joins it to the scalars.
    assert events.Tags()["scalars"] == ["fold0-ricci/coefficient"]
    assert events.Tags()["images"] == ["fold0-ricci/flow"]
    assert events.Tags()["histograms"] == ["fold0-ricci/local"]
    (scalar,) = events.Scalars("fold0-ricci/coefficient")
    (image,) = events.Images("fold0-ricci/flow")
    (histogram,) = events.Histograms("fold0-ricci/local")
    assert scalar.step == image.step == histogram.step == STEP
    assert (image.width, image.height) == (WIDTH, HEIGHT)
    assert _png_size(image.encoded_image_string) == (WIDTH, HEIGHT)
    value = histogram.histogram_value
    assert (value.num, value.min, value.max, value.sum) == (10, 0.0, 9.0, 45.0)  # nan and inf left out
    assert value.sum_squares == pytest.approx(sum(i * i for i in range(10)))


def test_histogram_without_finite_values_writes_nothing(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb")
    log_histogram(logger, "ricci/local", torch.tensor([math.nan, math.inf]), STEP)
    log_histogram(logger, "ricci/empty", np.zeros(0), STEP)
    logger.log_metrics({"x": 1.0}, step=STEP)  # so that an event file exists to read
    logger.experiment.flush()
    assert _tensorboard_events(logger.log_dir).Tags()["histograms"] == []


# ------------------------------------------------------------------ CSV, unknown, several at once


def test_csv_and_unknown_loggers_get_nothing(tmp_path: Path, figure: Figure) -> None:
    csv = CSVLogger(tmp_path / "csv")
    unknown = _Unknown()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        log_figure([csv, unknown], "ricci/flow", figure, STEP)
        log_histogram([csv, unknown], "ricci/local", VALUES, STEP)
    assert _sink_warnings(record) == []
    assert not (tmp_path / "csv").exists()  # the CSV logger's experiment was never even created
    assert unknown.touched  # asked, found no figure method, and left alone (log_metrics would raise)


def test_several_loggers_at_once(tmp_path: Path, figure: Figure) -> None:
    first = TensorBoardLogger(tmp_path, name="first")
    second = TensorBoardLogger(tmp_path, name="second")
    loggers = [first, CSVLogger(tmp_path / "csv"), _Unknown(), second]
    log_figure(loggers, "ricci/flow", figure, STEP)
    log_histogram(loggers, "ricci/local", VALUES, STEP + 1)
    for logger in (first, second):
        logger.experiment.flush()
        events = _tensorboard_events(logger.log_dir)
        assert [e.step for e in events.Images("ricci/flow")] == [STEP]
        assert [e.step for e in events.Histograms("ricci/local")] == [STEP + 1]
    assert not (tmp_path / "csv").exists()


# ------------------------------------------------------------------ failures


class _Broken:
    """A SummaryWriter whose every write fails, as a closed or full-disk writer does."""

    def add_figure(self, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    def add_histogram(self, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")


class _BrokenLogger(_Unknown):
    @property
    def experiment(self) -> _Broken:
        return _Broken()


def test_a_failing_logger_warns_once_per_kind_and_the_others_still_get_their_output(
    tmp_path: Path, figure: Figure
) -> None:
    healthy = TensorBoardLogger(tmp_path, name="tb")
    loggers = [_BrokenLogger(), healthy]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for step in (STEP, STEP + 1):
            log_figure(loggers, "ricci/flow", figure, step)
            log_histogram(loggers, "ricci/local", VALUES, step)
    messages = _sink_warnings(record)
    assert len(messages) == 2, messages
    assert "a figure to _BrokenLogger (OSError: disk full)" in messages[0]
    assert "a histogram to _BrokenLogger (OSError: disk full)" in messages[1]
    healthy.experiment.flush()
    events = _tensorboard_events(healthy.log_dir)
    assert [e.step for e in events.Images("ricci/flow")] == [STEP, STEP + 1]
    assert [e.step for e in events.Histograms("ricci/local")] == [STEP, STEP + 1]


def test_bad_arguments(figure: Figure) -> None:
    with pytest.raises(TypeError, match=r"`tag` must be a str \(got int\)"):
        log_figure([], 3, figure, STEP)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`tag` must not be empty"):
        log_figure([], "", figure, STEP)
    with pytest.raises(TypeError, match=r"`step` must be an int \(got bool\)"):
        log_figure([], "ricci/flow", figure, True)
    with pytest.raises(TypeError, match=r"`step` must be an int \(got float\)"):
        log_histogram([], "ricci/local", VALUES, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`step` must be >= 0 \(got -1\)"):
        log_histogram([], "ricci/local", VALUES, -1)
    with pytest.raises(ValueError, match=r"`values` must be 1-D \(got shape \(2, 3\)\)"):
        log_histogram([], "ricci/local", np.zeros((2, 3)), STEP)
    with pytest.raises(TypeError, match=r"`values` must be a Tensor or a NumPy array \(got list\)"):
        log_histogram([], "ricci/local", [1.0, 2.0], STEP)
    with pytest.raises(TypeError, match=r"`values` must be real \(got dtype torch.complex64\)"):
        log_histogram([], "ricci/local", torch.zeros(3, dtype=torch.complex64), STEP)
    with pytest.raises(TypeError, match=r"`values` must hold real numbers \(got dtype <U1\)"):
        log_histogram([], "ricci/local", np.array(["a"]), STEP)


# ------------------------------------------------------------------ W&B (offline)


def _wandb_records(run_file: Path) -> list[Any]:
    """The records of a ``.wandb`` run file: a 7-byte header, then LevelDB-log framed protobufs."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, payloads = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:  # FULL
            payloads.append(chunk)
        elif kind == 2:  # FIRST
            pending = chunk
        elif kind == 3:  # MIDDLE
            pending += chunk
        elif kind == 4:  # LAST
            payloads.append(pending + chunk)
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def _wandb_history(run_dir: Path) -> list[dict[str, Any]]:
    (run_file,) = run_dir.glob("run-*.wandb")
    rows = []
    for record in _wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def test_wandb_offline_gets_image_and_histogram_at_the_step_of_the_scalars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figure: Figure
) -> None:
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="sinks")
    try:
        run_dir = Path(logger.experiment.dir).parent
        logger.log_metrics({"ricci/coefficient": -0.25}, step=STEP)
        log_figure([logger], "ricci/flow", figure, STEP)
        log_histogram([logger], "ricci/local", VALUES, STEP)
    finally:
        wandb.finish()

    rows = _wandb_history(run_dir)
    scalar = next(r for r in rows if "ricci/coefficient" in r)
    image = next(r for r in rows if "ricci/flow/_type" in r)
    histogram = next(r for r in rows if "ricci/local/_type" in r)
    # W&B plots every metric against trainer/global_step, which the logger sets to the step given.
    assert scalar["trainer/global_step"] == image["trainer/global_step"] == STEP
    assert histogram["trainer/global_step"] == STEP
    assert (image["ricci/flow/width"], image["ricci/flow/height"]) == (WIDTH, HEIGHT)
    (media,) = image["ricci/flow/filenames"]
    assert _png_size((run_dir / "files" / media).read_bytes()) == (WIDTH, HEIGHT)
    assert histogram["ricci/local/_type"] == "histogram"
    counts, edges = histogram["ricci/local/values"], histogram["ricci/local/bins"]
    assert sum(counts) == 10  # nan and inf left out
    assert (edges[0], edges[-1]) == (0.0, 9.0)


def test_wandb_failure_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figure: Figure) -> None:
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)  # the run starts lazily: never here

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(logger, "log_image", refuse)
    monkeypatch.setattr(logger, "log_metrics", refuse)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            log_figure(logger, "ricci/flow", figure, STEP)
            log_histogram(logger, "ricci/local", VALUES, STEP)
    messages = _sink_warnings(record)
    assert len(messages) == 2, messages
    assert all("to WandbLogger (ConnectionError: no network)" in m for m in messages)


# ------------------------------------------------------------------ MLflow (local file store)


def _mlflow_logger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    pytest.importorskip("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 otherwise refuses a file store
    return MLFlowLogger(experiment_name="sinks", tracking_uri=(tmp_path / "mlruns").as_uri())


def test_mlflow_gets_figure_and_histogram_artifacts_named_by_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figure: Figure
) -> None:
    logger = _mlflow_logger(tmp_path, monkeypatch)
    logger.log_metrics({"ricci/coefficient": -0.25}, step=STEP)
    log_figure([logger], "ricci/flow", figure, STEP)
    log_histogram([logger], "ricci/local", VALUES, STEP)
    logger.finalize()

    run = logger.experiment.get_run(logger.run_id)
    artifacts = Path(unquote(urlparse(run.info.artifact_uri).path))
    files = sorted(str(p.relative_to(artifacts)) for p in artifacts.rglob("*") if p.is_file())
    assert files == ["ricci/flow/step_000015.png", "ricci/local/step_000015.json"]
    assert _png_size((artifacts / files[0]).read_bytes()) == (WIDTH, HEIGHT)
    summary = json.loads((artifacts / files[1]).read_text())
    assert summary["step"] == STEP
    assert (summary["count"], summary["min"], summary["max"]) == (10, 0.0, 9.0)
    assert summary["mean"] == pytest.approx(4.5)
    assert summary["std"] == pytest.approx(math.sqrt(8.25))
    assert sum(summary["counts"]) == 10
    assert len(summary["bin_edges"]) == len(summary["counts"]) + 1
    assert (summary["bin_edges"][0], summary["bin_edges"][-1]) == (0.0, 9.0)
    (metric,) = logger.experiment.get_metric_history(logger.run_id, "ricci/coefficient")
    assert metric.step == STEP  # the step the artifacts are named by


def test_mlflow_failure_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figure: Figure) -> None:
    logger = _mlflow_logger(tmp_path, monkeypatch)
    healthy = TensorBoardLogger(tmp_path, name="tb")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError("read-only artifact store")

    monkeypatch.setattr(logger.experiment, "log_figure", refuse)
    monkeypatch.setattr(logger.experiment, "log_dict", refuse)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):
            log_figure([logger, healthy], "ricci/flow", figure, STEP)
            log_histogram([logger, healthy], "ricci/local", VALUES, STEP)
    messages = _sink_warnings(record)
    assert len(messages) == 2, messages
    assert all("to MLFlowLogger (PermissionError: read-only artifact store)" in m for m in messages)
    healthy.experiment.flush()
    assert len(_tensorboard_events(healthy.log_dir).Images("ricci/flow")) == 2


# ------------------------------------------------------------------ the step inside a Trainer


def test_logged_step_puts_figures_beside_the_epoch_end_scalars(tmp_path: Path, figure: Figure) -> None:
    import lightning as L

    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            return self.linear(batch[0]).sum()

        def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
            pass

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Measure(L.Callback):
        def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            pl_module.log("ricci/coefficient", -0.25)
            log_figure(trainer.loggers, "ricci/flow", figure, sinks.logged_step(trainer))
            log_histogram(trainer.loggers, "ricci/local", VALUES, sinks.logged_step(trainer))

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=1)
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = L.Trainer(
        max_epochs=2,
        logger=[logger, CSVLogger(tmp_path, name="csv")],
        callbacks=[Measure()],
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(Model(), data, data)
    trainer.validate(Model(), data, verbose=False)
    logger.experiment.flush()
    events = _tensorboard_events(logger.log_dir)
    scalar_steps = [e.step for e in events.Scalars("ricci/coefficient")]
    assert scalar_steps == [3, 7, 8]  # 4 batches an epoch: one less than global_step in fit, then validate
    assert [e.step for e in events.Images("ricci/flow")] == scalar_steps
    assert [e.step for e in events.Histograms("ricci/local")] == scalar_steps

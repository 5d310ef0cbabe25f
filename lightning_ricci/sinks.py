"""Figures and histograms for whichever Lightning loggers a run has.

Lightning's loggers share ``log_metrics`` for scalars but have no common call for figures or
histograms. :func:`log_figure` and :func:`log_histogram` send one figure or one distribution to every
logger that can take it, at the step the caller gives: the step the scalars of the same measurement
are filed under, which :func:`logged_step` reads from the trainer, so that they line up.

* TensorBoard, or any logger whose ``experiment`` has callable ``add_figure`` / ``add_histogram`` (a
  ``SummaryWriter``): ``experiment.add_figure(tag, figure, step)`` and
  ``experiment.add_histogram(tag, values, step)``.
* ``WandbLogger``: ``logger.log_image(tag, [image], step=step)`` (the figure rendered to PNG once) and
  ``logger.log_metrics({tag: wandb.Histogram(values, num_bins=64)}, step=step)``.
* ``MLFlowLogger``: the artifacts ``{tag}/step_{step:06d}.png`` (``log_figure``) and, as MLflow has no
  histogram type, ``{tag}/step_{step:06d}.json`` (``log_dict``) with the bin edges and counts (64 bins)
  and the count, min, max, mean and standard deviation of the values.
* ``CSVLogger`` and any other logger: nothing (no error, no file).

W&B rows carry ``trainer/global_step = step``, the x axis ``WandbLogger`` gives every metric, so the
figures and histograms sit at the scalars' step in the W&B UI. TensorBoard and MLflow tags get the
logger's own ``prefix`` as its ``log_metrics`` does (W&B applies it itself).

A logger that fails (a closed writer, a full disk, a network error) never stops training: the error is
warned about once per logger type and kind (figure or histogram) per process, and the other loggers
still get their output. matplotlib is not imported here; W&B and MLflow are imported only when a run
uses their loggers.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

if TYPE_CHECKING:
    from lightning.fabric.loggers.logger import Logger as FabricLogger
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import Logger
    from matplotlib.figure import Figure

    from lightning_ricci.geometry.result import RicciFlowResult

__all__ = ["log_figure", "log_flow_figure", "log_histogram", "log_result_histograms", "logged_step"]

_Kind = Literal["tensorboard", "wandb", "mlflow"]
_HISTOGRAM_BINS = 64
# (logger type name, "figure" | "histogram") pairs already warned about in this process.
_warned: set[tuple[str, str]] = set()


def logged_step(trainer: Trainer) -> int:
    """The step Lightning files metrics logged now under, for figures that belong with them.

    Lightning writes ``self.log(...)`` calls of an epoch-end hook at
    ``trainer.fit_loop.epoch_loop._batches_that_stepped``, which during validation at the end of a
    training epoch is one less than ``trainer.global_step`` (scalars at 15, 31, ... with 16 batches per
    epoch while ``global_step`` reads 16, 32, ...), and which is also the step of ``trainer.validate()``.
    Pass this to :func:`log_figure` and :func:`log_histogram` to put them beside those scalars.

    Args:
        trainer (Trainer): the running trainer.

    Returns:
        int: the step, ``trainer.global_step`` where the loop does not expose its counter.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> logged_step(Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False))
        0
    """
    epoch_loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(epoch_loop, "_batches_that_stepped", None)
    if isinstance(step, int) and not isinstance(step, bool):
        return step
    return int(trainer.global_step)


def _check_common(tag: Any, step: Any) -> None:
    if not isinstance(tag, str):
        raise TypeError(f"`tag` must be a str (got {type(tag).__name__})")
    if not tag:
        raise ValueError("`tag` must not be empty (got '')")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"`step` must be an int (got {type(step).__name__})")
    if step < 0:
        raise ValueError(f"`step` must be >= 0 (got {step})")


def _as_list(loggers: Any) -> list[Any]:
    if loggers is None:
        return []
    if isinstance(loggers, Iterable) and not isinstance(loggers, (str, bytes)):
        return list(loggers)
    return [loggers]


def _logger_classes() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(W&B, MLflow, CSV) logger classes of ``lightning`` and, if it is loaded, ``pytorch_lightning``."""
    from lightning.fabric.loggers.csv_logs import CSVLogger as FabricCSVLogger
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, WandbLogger

    wandb_types: list[type] = [WandbLogger]
    mlflow_types: list[type] = [MLFlowLogger]
    csv_types: list[type] = [CSVLogger, FabricCSVLogger]
    if "pytorch_lightning" in sys.modules:  # the standalone package has its own, unrelated classes
        try:
            import pytorch_lightning.loggers as pl_loggers

            wandb_types.append(pl_loggers.WandbLogger)
            mlflow_types.append(pl_loggers.MLFlowLogger)
            csv_types.append(pl_loggers.CSVLogger)
        except (ImportError, AttributeError):  # pragma: no cover - a broken side install changes nothing
            pass
    return tuple(wandb_types), tuple(mlflow_types), tuple(csv_types)


def _kind(logger: Any, method: str) -> tuple[_Kind | None, Any]:
    """Which sink ``logger`` is, and its TensorBoard experiment (``None`` for the others)."""
    wandb_types, mlflow_types, csv_types = _logger_classes()
    if isinstance(logger, wandb_types):
        return "wandb", None
    if isinstance(logger, mlflow_types):
        return "mlflow", None
    if isinstance(logger, csv_types):
        return None, None
    try:
        experiment = getattr(logger, "experiment", None)
    except Exception:  # noqa: BLE001 - an unknown logger without a usable experiment gets nothing
        return None, None
    if callable(getattr(experiment, method, None)):
        return "tensorboard", experiment
    return None, None


def _prefixed(logger: Any, tag: str) -> str:
    """``tag`` with the logger's ``prefix``, joined as its ``log_metrics`` joins them."""
    prefix = getattr(logger, "_prefix", "")
    if not isinstance(prefix, str) or not prefix:
        return tag
    join = getattr(logger, "LOGGER_JOIN_CHAR", "-")
    return f"{prefix}{join if isinstance(join, str) else '-'}{tag}"


def _warn_once(logger: Any, what: str, err: BaseException) -> None:
    key = (type(logger).__name__, what)
    if key in _warned:
        return
    _warned.add(key)
    rank_zero_warn(
        f"lightning_ricci: could not write a {what} to {type(logger).__name__} "
        f"({type(err).__name__}: {err}); further {what} errors of this logger type are not reported."
    )


def _artifact_file(logger: Any, tag: str, step: int, extension: str) -> str:
    return f"{_prefixed(logger, tag)}/step_{step:06d}.{extension}"


def _png_image(figure: Figure) -> Any:
    """``figure`` rendered once to a PIL image (what W&B stores), at the figure's own dpi."""
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    image = Image.open(buffer)
    image.load()
    return image


def log_figure(
    loggers: Logger | FabricLogger | Iterable[Any] | None, tag: str, figure: Figure, step: int
) -> None:
    """Send a matplotlib figure to every logger that can store one.

    The figure is not closed or cleared: the caller owns it (``figure.clear()`` afterwards frees it).

    Args:
        loggers (Logger | Iterable[Logger] | None): a logger or several (``trainer.loggers``).
        tag (str): the name of the figure, e.g. ``"ricci/flow"``.
        figure (matplotlib.figure.Figure): the figure.
        step (int): the global step to file it under (the step of the scalars it belongs to).

    Raises:
        TypeError: ``tag`` is not a str or ``step`` not an int.
        ValueError: ``tag`` is empty or ``step`` negative.

    Example:
        >>> import tempfile
        >>> from lightning.pytorch.loggers import CSVLogger
        >>> from matplotlib.figure import Figure
        >>> csv = CSVLogger(tempfile.mkdtemp())
        >>> log_figure([csv], "ricci/flow", Figure(), step=15)  # CSV takes no figures: a no-op
    """
    _check_common(tag, step)
    step = int(step)
    image: Any = None
    for logger in _as_list(loggers):
        kind, experiment = _kind(logger, "add_figure")
        if kind is None:
            continue
        try:
            if kind == "tensorboard":
                experiment.add_figure(_prefixed(logger, tag), figure, step, close=False)
            elif kind == "wandb":
                if image is None:
                    image = _png_image(figure)
                logger.log_image(key=tag, images=[image], step=step)
            else:
                logger.experiment.log_figure(logger.run_id, figure, _artifact_file(logger, tag, step, "png"))
        except Exception as err:  # noqa: BLE001 - a logger failure must not stop training
            _warn_once(logger, "figure", err)


def _finite_values(values: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
    if isinstance(values, torch.Tensor):
        if values.is_complex():
            raise TypeError(f"`values` must be real (got dtype {values.dtype})")
        array = values.detach().to(device="cpu", dtype=torch.float64).numpy()
    elif isinstance(values, np.ndarray):
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_) or np.iscomplexobj(
            values
        ):
            raise TypeError(f"`values` must hold real numbers (got dtype {values.dtype})")
        array = values.astype(np.float64)
    else:
        raise TypeError(f"`values` must be a Tensor or a NumPy array (got {type(values).__name__})")
    if array.ndim != 1:
        raise ValueError(f"`values` must be 1-D (got shape {tuple(array.shape)})")
    finite: np.ndarray[Any, np.dtype[np.float64]] = array[np.isfinite(array)]
    return finite


def _histogram_summary(values: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, Any]:
    counts, edges = np.histogram(values, bins=_HISTOGRAM_BINS)
    return {
        "count": int(values.size),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "bin_edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
    }


def log_histogram(
    loggers: Logger | FabricLogger | Iterable[Any] | None, tag: str, values: Any, step: int
) -> None:
    """Send the distribution of ``values`` to every logger that can store one.

    Non-finite values are left out (no logger's histogram takes them); if none remain, nothing is
    written.

    Args:
        loggers (Logger | Iterable[Logger] | None): a logger or several (``trainer.loggers``).
        tag (str): the name of the histogram, e.g. ``"ricci/local"``.
        values (Tensor | numpy.ndarray): [M] real values, on any device.
        step (int): the global step to file it under (the step of the scalars it belongs to).

    Raises:
        TypeError: ``tag`` is not a str, ``step`` not an int, or ``values`` neither a real Tensor nor a
            real NumPy array.
        ValueError: ``tag`` is empty, ``step`` negative, or ``values`` not 1-D.

    Example:
        >>> import tempfile, torch
        >>> from lightning.pytorch.loggers import CSVLogger
        >>> log_histogram(CSVLogger(tempfile.mkdtemp()), "ricci/local", torch.rand(100), step=15)
        >>> log_histogram([], "ricci/local", torch.rand(2, 3), step=15)
        Traceback (most recent call last):
        ValueError: `values` must be 1-D (got shape (2, 3))
    """
    _check_common(tag, step)
    step = int(step)
    finite = _finite_values(values)
    if finite.size == 0:
        return
    for logger in _as_list(loggers):
        kind, experiment = _kind(logger, "add_histogram")
        if kind is None:
            continue
        try:
            if kind == "tensorboard":
                experiment.add_histogram(_prefixed(logger, tag), finite, step)
            elif kind == "wandb":
                import wandb

                histogram = wandb.Histogram(finite.tolist(), num_bins=_HISTOGRAM_BINS)
                logger.log_metrics({tag: histogram}, step=step)
            else:
                summary = _histogram_summary(finite)
                summary["step"] = step
                logger.experiment.log_dict(logger.run_id, summary, _artifact_file(logger, tag, step, "json"))
        except Exception as err:  # noqa: BLE001 - a logger failure must not stop training
            _warn_once(logger, "histogram", err)


def log_result_histograms(
    loggers: Logger | FabricLogger | Iterable[Any] | None,
    result: RicciFlowResult,
    layer_names: list[str],
    prefix: str,
    step: int,
) -> None:
    """The histograms of one measurement: ``{prefix}ricci/union_edge_curvature/{layer}`` (the result's
    ``edge_curvature`` of every layer) and ``{prefix}ricci/local_coefficients`` (its defined local
    coefficients), each through :func:`log_histogram`."""
    for name, values in zip(layer_names, result.edge_curvature):
        if values.numel():
            log_histogram(loggers, f"{prefix}ricci/union_edge_curvature/{name}", values, step)
    local = result.local[~result.local.isnan()]
    if local.numel():
        log_histogram(loggers, f"{prefix}ricci/local_coefficients", local, step)


def log_flow_figure(
    loggers: Logger | FabricLogger | Iterable[Any] | None,
    result: RicciFlowResult,
    layer_names: list[str],
    tag: str,
    step: int,
) -> None:
    """Draw :func:`~lightning_ricci.plotting.flow_figure` of ``result`` and send it through
    :func:`log_figure` (nothing without loggers); the figure is cleared afterwards.

    Raises:
        ModuleNotFoundError: matplotlib is not installed (the ``plots`` extra).
    """
    if not _as_list(loggers):
        return
    from lightning_ricci.plotting import flow_figure

    figure = flow_figure(result, layer_names)
    log_figure(loggers, tag, figure, step)
    figure.clear()

"""What RicciFlowMonitor adds to training: time per epoch and peak memory, with and without it.

Usage::

    python benchmarks/bench_callback_overhead.py                  # the two_circles example's model
    python benchmarks/bench_callback_overhead.py --train 20000    # a larger epoch

Trains the two-circles MLP of ``examples/two_circles.py`` in one process, plain and with
``RicciFlowMonitor()`` at its defaults (1000 probe points, k = 50), each without a logger and with the
example's TensorBoard logger (which adds the monitor's histograms at every measurement and its figure
every 10th). Prints the mean epoch time of each run (the first epoch, warm-up, left out), the monitor's
share, the time of one monitor evaluation, and the peak memory the monitor adds (CUDA: peak allocated
by one evaluation; CPU: growth of the peak RSS).
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from _epochs import EpochTimer  # benchmarks/_epochs.py
from _memory import cpu_peak_growth  # benchmarks/_memory.py
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_ricci import RicciFlowMonitor, ricci_flow
from lightning_ricci.capture import ActivationCapture

_EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "two_circles.py"
_spec = importlib.util.spec_from_file_location("two_circles", _EXAMPLE)
assert _spec is not None and _spec.loader is not None
two_circles_example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(two_circles_example)


def run(
    train: int, epochs: int, monitor: RicciFlowMonitor | None, accelerator: str, tensorboard: bool
) -> tuple[list[float], Any]:
    """Epoch times (the first, warm-up, left out) and the trained model."""
    seed_everything(0, verbose=False)
    data = TensorDataset(*two_circles_example.two_circles(train, seed=0))
    val = TensorDataset(*two_circles_example.two_circles(1000, seed=1))
    timer = EpochTimer()
    callbacks: list[Callback] = [timer] + ([monitor] if monitor is not None else [])
    trainer = Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        callbacks=callbacks,
        logger=TensorBoardLogger(tempfile.mkdtemp(), name="bench") if tensorboard else False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    model = two_circles_example.CirclesMLP()
    trainer.fit(model, DataLoader(data, batch_size=64, shuffle=True), DataLoader(val, batch_size=256))
    return timer.times[1:], model


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=1000, help="training points per epoch")
    parser.add_argument("--epochs", type=int, default=21, help="epochs per run (the first is not timed)")
    parser.add_argument(
        "--log-figures",
        type=int,
        default=10,
        help="RicciFlowMonitor(log_figures=...): 1 draws every measurement",
    )
    args = parser.parse_args()
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"

    means: dict[tuple[bool, bool], float] = {}
    monitor, model = RicciFlowMonitor(log_figures=args.log_figures), None
    for tensorboard in (False, True):
        means[False, tensorboard] = statistics.mean(
            run(args.train, args.epochs, None, accelerator, tensorboard)[0]
        )
        monitor = RicciFlowMonitor(log_figures=args.log_figures)
        times, model = run(args.train, args.epochs, monitor, accelerator, tensorboard)
        means[True, tensorboard] = statistics.mean(times)

    # The geometry alone, on the trained model's probe activations (as at the last measurement):
    # median time of 5 evaluations, and the peak memory of one evaluation after a warm-up.
    result = monitor.last_result
    assert result is not None and monitor.probe is not None and model is not None
    model = model.to(torch.device("cuda" if accelerator == "gpu" else "cpu")).eval()
    probe = monitor.probe.reshape(monitor.probe.shape[0], -1).float().to(model.device)
    with ActivationCapture(model, monitor.layer_names[1:]) as capture, torch.no_grad():
        capture.forward(lambda: model(probe))
    acts = [probe, *capture.activations().values()]

    def evaluate() -> None:
        ricci_flow(acts, result.k, convention=result.convention)
        if accelerator == "gpu":
            torch.cuda.synchronize()

    evaluate()
    t_geometry = statistics.median(_timed(evaluate) for _ in range(5))
    if accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        evaluate()
        peak: float | None = (torch.cuda.max_memory_allocated() - base) / 2**20
        where = "peak GPU memory it allocates"
    else:
        growths = [cpu_peak_growth(evaluate) for _ in range(3)]
        peak = None if None in growths else statistics.median(g for g in growths if g is not None)
        where = "peak resident memory it adds (Linux VmHWM, median of 3 after a warm-up evaluation)"
    held = sum(a.numel() * a.element_size() for a in acts) / 2**20

    print(
        f"device: {accelerator}, torch threads: {torch.get_num_threads()}, train points per epoch: {args.train}"
    )
    print(f"probe: {result.num_points} points, {result.num_layers} layers, k = {result.k}")
    print(
        f"| logger | mean epoch s, without monitor | with RicciFlowMonitor(log_figures={args.log_figures}) | share |"
    )
    print("| --- | --- | --- | --- |")
    for tensorboard, name in ((False, "none"), (True, "TensorBoard")):
        plain, monitored = means[False, tensorboard], means[True, tensorboard]
        share = (monitored - plain) / plain * 100
        print(f"| {name} | {plain:.3f} | {monitored:.3f} | +{share:.0f} % |")
    shown = "n/a (needs Linux /proc)" if peak is None else f"{peak:.1f} MB"
    print(f"one ricci_flow evaluation: {t_geometry:.3f} s (median of 5); {where}: {shown}")
    print(f"captured probe activations held during an evaluation: {held:.1f} MB")


if __name__ == "__main__":
    main()

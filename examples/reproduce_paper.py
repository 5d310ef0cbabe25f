"""Does it reproduce? Train a grid of small ReLU MLPs and test the papers' headline claims.

Claims tested (the papers' abstracts and the numbers stored in Hehl et al.'s notebooks):

* Baptista et al. (2024), [B]: a more negative *global* Ricci coefficient goes with higher test accuracy
  among well-trained networks (accuracy > 0.98), across depths, widths and data sets.
* Hehl et al. (2025), [H]: trained networks have a clearly negative mean *local* coefficient (most probe
  points negative), untrained ones sit near zero, while the global coefficient is already negative at
  initialisation (their App. A.1.1).

Data (no download, from ``examples/datasets.py``): the four synthetic sets of [H] (Syn-I circles, Syn-II
disc with four discs, Syn-III concentric cylinders, Syn-IV interlocked solid tori, generated as in their
``datasets.py``), entangled spirals in the spirit of [B], and scikit-learn's 8x8 digits, 1 vs 7 and 6 vs 9
(pixels / 16). The papers' own data (MNIST, Fashion-MNIST) and protocols: ``reproduce_real.py``.

Networks: ``depth`` x (Linear(width) + ReLU), then Linear(1); PyTorch's default initialisation; trained
with Lightning as [H] trains (Adam, lr 1e-3, binary cross-entropy, full batch) until the training accuracy
reaches 99 % or ``--max-steps`` updates. Every network is measured twice on the same fixed probe set of
test points: at initialisation (untrained, [H] App. A.1.1) and after training.

Measurements per network and state, with :func:`lightning_ricci.ricci_flow` on activations captured by
:class:`lightning_ricci.capture.ActivationCapture`:

* [B]: ``convention="baptista"`` on [input, h_1..h_L] (the sigmoid output dropped, as in the R code),
  at k = 1.5 %, 6 % and 15 % of the probe size (the R script's 30/120/300 of 2000). ``coefficient`` is
  the paper's (``null`` when its exclusion rule drops the network), ``coefficient_connected`` the
  both-layers-connected fallback. The headline k is 6 % (k = 30 at 500 probe points).
* [H]: ``convention="hehl"`` on [input, h_1..h_L, sigmoid output], k = 5 % of the probe size (their
  k = 50 of 1000): the mean local coefficient and the share of negative points, with augmented Forman
  curvature (their width/depth table) and approximate Ollivier curvature (closest to the exact Ollivier
  of their untrained comparison), plus [H]'s global coefficient (``null`` when a layer graph is
  disconnected, where their code raises).

Per data set: Pearson and Spearman correlations of each coefficient with test accuracy (95 % percentile
bootstrap intervals over networks), over all networks and over the well-trained ones; exclusion counts;
trained-versus-untrained means and shares of negative values.

Outputs in ``--out``:

* ``results.json``: ``{"config", "networks": [...], "datasets": {name: ...}, "pooled", "wall_seconds"}``;
  only finite numbers or ``null``, never NaN (layout documented in :func:`write_outputs`).
* ``networks.csv`` (one row per network) and ``summary.csv`` (one row per data set).
* ``summary.md``: the tables printed at the end (the README's "Does it reproduce?" tables).
* ``coefficient_vs_accuracy.png``, ``trained_vs_untrained.png``, ``k_effect.png``.

Run::

    python examples/reproduce_paper.py --fast --out /tmp/repro       # a handful of networks, < 1 min
    OMP_NUM_THREADS=2 python examples/reproduce_paper.py --workers 2 --out docs/reproduction

Needs the ``dev`` extras (scikit-learn, scipy, matplotlib, tqdm).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datasets

from lightning_ricci import ricci_flow
from lightning_ricci.capture import ActivationCapture
from lightning_ricci.geometry.result import CurvatureKind

WELL_TRAINED = 0.98  # [B] drops networks with test accuracy <= 0.98 before any correlation
TRAIN_TARGET = 0.99  # [H] trains until the training accuracy reaches 99 %
K_FRACTIONS_B = (0.015, 0.06, 0.15)  # [B] R script: k = 30 / 120 / 300 of 2000 test points
K_HEADLINE_B = 0.06
K_FRACTION_H = 0.05  # [H]: k = 50 of 1000 test points
H_DEPTHS = (7, 10, 15)  # [H] Table 1: widths {15, 25, 50} x depths {7, 10, 15}
CURVATURES_H: tuple[CurvatureKind, ...] = ("augmented_forman", "approx_ollivier")
STATES = ("untrained", "trained")


# --------------------------------------------------------------------------------------- data sets
# The generators live in examples/datasets.py, shared by every study.
SYNTHETIC = {name: description for name, (_, description) in datasets.SYNTHETIC.items()}
DIGIT_PAIRS = datasets.DIGIT_PAIRS
DATASETS = (*SYNTHETIC, *DIGIT_PAIRS)


@dataclass(frozen=True)
class Split:
    """Train and test tensors; the probe set is the first ``n_probe`` test points."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_probe: int
    description: str

    @property
    def probe(self) -> torch.Tensor:
        return self.x_test[: self.n_probe]


@cache
def load_split(name: str, seed: int, n_train: int, n_test: int, n_probe: int) -> Split:
    """The data set ``name``, fixed by ``seed``: the same points for every network of the grid."""
    rng = np.random.default_rng([seed, DATASETS.index(name)])
    if name in SYNTHETIC:
        description = SYNTHETIC[name]
        xt, yt = datasets.synthetic(name, n_train + n_test, seed=rng)  # shuffled with the same generator
        x, y = xt.numpy(), yt.numpy()
        x_train, y_train, x_test, y_test = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    else:
        images = datasets.digits(DIGIT_PAIRS[name])
        x, y = images.x.numpy(), images.y.numpy()
        order = rng.permutation(len(x))
        cut = len(x) // 3  # about 120 training images; the whole test part (about 240) is the probe set
        x_train, y_train, x_test, y_test = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
        n_probe = len(x_test)
        description = f"{images.description}, 1/3 train, 2/3 test"

    def tensor(v: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(v), dtype=dtype)

    return Split(
        tensor(x_train, torch.float32),
        tensor(y_train, torch.float32),
        tensor(x_test, torch.float32),
        tensor(y_test, torch.float32),
        min(n_probe, len(x_test)),
        description,
    )


# ------------------------------------------------------------------------------------------ model
class MLP(LightningModule):
    """``depth`` x (Linear(width) + ReLU), then one logit; trained full batch until ``target`` train accuracy."""

    def __init__(self, in_dim: int, width: int, depth: int, lr: float = 1e-3, target: float = TRAIN_TARGET):
        super().__init__()
        layers: list[nn.Module] = []
        fan_in = in_dim
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        self.net = nn.Sequential(*layers, nn.Linear(fan_in, 1))
        self.sigmoid = nn.Sigmoid()  # only for the probe: [H] take the sigmoid output as the last layer
        self.lr, self.target = lr, target
        self.reached, self.updates, self.train_accuracy = False, 0, math.nan

    @property
    def layer_names(self) -> list[str]:
        """The ReLU modules (h_1..h_L) and the sigmoid output."""
        return [f"net.{2 * i + 1}" for i in range(len(self.net) // 2)] + ["sigmoid"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x)
        return logits.squeeze(-1)

    def probe_forward(self, x: torch.Tensor) -> torch.Tensor:
        probability: torch.Tensor = self.sigmoid(self.net(x))
        return probability

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        return -1 if self.reached else None  # -1 ends the (single) epoch, hence the fit

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        x, y = batch
        logits = self(x)
        self.train_accuracy = float(((logits > 0).float() == y).float().mean())
        if self.train_accuracy >= self.target:  # as [H]: check before the update, stop without stepping
            self.reached = True
            return None
        self.updates += 1
        return nn.functional.binary_cross_entropy_with_logits(logits, y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class _FullBatch(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The whole training set as one batch, ``steps`` times: one epoch = the whole training run."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
        self.x, self.y, self.steps = x, y, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y


def accuracy(model: MLP, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(x) > 0).float() == y).float().mean())


# ---------------------------------------------------------------------------------- measurement
@dataclass(frozen=True)
class Config:
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    seeds: int
    datasets: tuple[str, ...]
    n_train: int
    n_test: int
    n_probe: int
    max_steps: int
    lr: float
    seed: int
    n_boot: int
    ks_baptista: dict[str, tuple[int, ...]] = field(default_factory=dict)
    k_hehl: dict[str, int] = field(default_factory=dict)


def k_values(n_probe: int) -> tuple[tuple[int, ...], int]:
    """[B] k at 1.5 / 6 / 15 % and [H] k at 5 % of the probe size (at least 3)."""
    return tuple(max(3, round(f * n_probe)) for f in K_FRACTIONS_B), max(3, round(K_FRACTION_H * n_probe))


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def measure(model: MLP, split: Split, ks_b: Sequence[int], k_h: int) -> dict[str, Any]:
    """Both papers' quantities for one network on the probe set, plus its test accuracy."""
    model.eval()
    x = split.probe
    with torch.no_grad(), ActivationCapture(model, model.layer_names) as capture:
        capture.forward(lambda: model.probe_forward(x), batch_size=len(x))
    acts = list(capture.activations().values())
    hidden, output = acts[:-1], acts[-1]
    # A layer whose probe points all coincide (every ReLU dead) leaves some correlations undefined.
    degenerate = any(bool((h == h[:1]).all()) for h in hidden)
    record: dict[str, Any] = {
        "accuracy": accuracy(model, split.x_test, split.y_test),
        "degenerate": degenerate,
    }
    baptista = {}
    for k in ks_b:
        r = ricci_flow([x, *hidden], k, convention="baptista")  # [B]: no sigmoid output
        baptista[str(k)] = {
            "coefficient": _finite(r.coefficient),
            "coefficient_connected": _finite(r.coefficient_connected),
            "excluded": r.excluded,
            "disconnected_layers": int((r.num_components > 1).sum()),
            # Transitions whose change is NaN under R's rules (every point sees +Inf and -Inf pairs): the
            # rule keeps the network but drops them, and coefficient_connected drops them too.
            "nan_transitions": int(r.eta.isnan().sum()),
        }
    record["baptista"] = baptista
    hehl: dict[str, Any] = {}
    for curvature in CURVATURES_H:
        r = ricci_flow([x, *hidden, output], k_h, convention="hehl", curvature=curvature)
        hehl.setdefault("coefficient", _finite(r.coefficient))  # Forman for both: the same global value
        hehl.setdefault("coefficient_connected", _finite(r.coefficient_connected))
        hehl.setdefault("excluded", r.excluded)
        hehl.setdefault("disconnected_layers", int((r.num_components > 1).sum()))
        hehl[curvature] = {
            "local_mean": _finite(r.local_mean),
            "local_negative_share": _finite(r.local_negative_share),
            "local_defined_share": float((~r.local.isnan()).double().mean()),
            "layer": [_finite(float(v)) for v in r.layer_coefficient],
        }
    record["hehl"] = hehl
    return record


@dataclass(frozen=True)
class Job:
    index: int
    dataset: str
    width: int
    depth: int
    replicate: int


def grid(cfg: Config) -> list[Job]:
    jobs, index = [], 0
    for name in cfg.datasets:
        for depth in cfg.depths:
            for width in cfg.widths:
                for replicate in range(cfg.seeds):
                    jobs.append(Job(index, name, width, depth, replicate))
                    index += 1
    return jobs


def run_job(job: Job, cfg: Config) -> dict[str, Any]:
    """Build, measure at initialisation, train with Lightning, measure again."""
    start = time.perf_counter()
    split = load_split(job.dataset, cfg.seed, cfg.n_train, cfg.n_test, cfg.n_probe)
    ks_b, k_h = cfg.ks_baptista[job.dataset], cfg.k_hehl[job.dataset]
    net_seed = cfg.seed * 100_003 + job.index
    seed_everything(net_seed, verbose=False)
    model = MLP(split.x_train.shape[1], job.width, job.depth, lr=cfg.lr)
    untrained = measure(model, split, ks_b, k_h)
    model.train()
    trainer = Trainer(
        max_epochs=1,
        max_steps=cfg.max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    data = DataLoader(_FullBatch(split.x_train, split.y_train, cfg.max_steps + 1), batch_size=None)
    trainer.fit(model, data)
    train_accuracy = accuracy(model, split.x_train, split.y_train)
    trained = measure(model, split, ks_b, k_h)
    return {
        "index": job.index,
        "dataset": job.dataset,
        "width": job.width,
        "depth": job.depth,
        "replicate": job.replicate,
        "net_seed": net_seed,
        "k_baptista": list(ks_b),
        "k_hehl": k_h,
        "steps": model.updates,
        "reached_target": model.reached,
        "train_accuracy": train_accuracy,
        "test_accuracy": trained["accuracy"],
        "untrained": untrained,
        "trained": trained,
        "seconds": time.perf_counter() - start,
    }


def _quiet() -> None:
    """Silence Lightning's per-fit chatter (device summary, 'few workers' hints)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*max_epochs.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*`training_step` returned `None`.*")  # on purpose: the stop step


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)
    _quiet()


def _run_job_star(args: tuple[Job, Config]) -> dict[str, Any]:
    return run_job(*args)


def run_grid(cfg: Config, workers: int) -> Iterator[dict[str, Any]]:
    jobs = grid(cfg)
    if workers <= 1:
        for job in jobs:
            yield run_job(job, cfg)
        return
    import multiprocessing

    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")  # no fork after OpenMP started in this process
    # Longest jobs (deep, wide) first, so the pool does not end on one slow straggler.
    order = sorted(jobs, key=lambda j: (-j.depth * j.width, j.index))
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_init, initargs=(threads,)
    ) as pool:
        yield from pool.map(_run_job_star, [(job, cfg) for job in order])


# ---------------------------------------------------------------------------------- statistics
def _ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return np.asarray(rankdata(a, axis=-1), dtype=np.float64)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xm, ym = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    den = np.sqrt((xm * xm).sum(-1) * (ym * ym).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xm * ym).sum(-1) / den
    constant = (np.ptp(x, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0)
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def correlation(
    x: Sequence[float | None], y: Sequence[float | None], rng: np.random.Generator, n_boot: int
) -> dict[str, Any]:
    """Pearson and Spearman correlation over the pairs where both are finite, with 95 % bootstrap intervals.

    The interval is the 2.5 / 97.5 percentile of the correlation over ``n_boot`` resamples of the pairs
    (resamples with a constant series are skipped); ``null`` below 4 pairs.
    """
    xa = np.array([np.nan if v is None else v for v in x], dtype=np.float64)
    ya = np.array([np.nan if v is None else v for v in y], dtype=np.float64)
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    n = len(xa)
    out: dict[str, Any] = {"n": n}
    for name, transform in (("pearson", lambda a: a), ("spearman", _ranks)):
        value = float(_pearson_rows(transform(xa), transform(ya))) if n >= 3 else math.nan
        out[name], out[f"{name}_ci"] = value, [math.nan, math.nan]
        if n >= 4 and math.isfinite(value):
            idx = rng.integers(0, n, size=(n_boot, n))
            boot = _pearson_rows(transform(xa[idx]), transform(ya[idx]))
            boot = boot[np.isfinite(boot)]
            if len(boot) >= n_boot // 2:
                out[f"{name}_ci"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
    return out


def describe(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, standard deviation, range and share of negative values over the finite entries."""
    a = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(a) == 0:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None, "negative_share": None}
    return {
        "n": len(a),
        "mean": float(a.mean()),
        "sd": float(a.std()),
        "min": float(a.min()),
        "max": float(a.max()),
        "negative_share": float((a < 0).mean()),
    }


def summarise(
    nets: list[dict[str, Any]], ks_b: Sequence[int], k_h: int, rng: np.random.Generator, n_boot: int
) -> dict[str, Any]:
    """The per-data-set statistics (see :func:`write_outputs` for the layout)."""
    acc = [n["test_accuracy"] for n in nets]
    well = [a > WELL_TRAINED for a in acc]

    def corr(values: list[float | None]) -> dict[str, Any]:
        return {
            "all": correlation(values, acc, rng, n_boot),
            "well_trained": correlation(
                [v for v, w in zip(values, well) if w], [a for a, w in zip(acc, well) if w], rng, n_boot
            ),
        }

    out: dict[str, Any] = {
        "n_networks": len(nets),
        "n_well_trained": int(sum(well)),
        "n_reached_target": int(sum(n["reached_target"] for n in nets)),
        "test_accuracy": describe(acc),
        "untrained_accuracy": describe([n["untrained"]["accuracy"] for n in nets]),
        "k_baptista": list(ks_b),
        "k_hehl": k_h,
        "baptista": {},
        "hehl": {},
    }
    for k in ks_b:
        key = str(k)
        entry: dict[str, Any] = {}
        for state in STATES:
            rows = [n[state]["baptista"][key] for n in nets]
            entry[state] = {
                "n_excluded": int(sum(r["excluded"] for r in rows)),
                "n_disconnected": int(sum(r["disconnected_layers"] > 0 for r in rows)),
                # kept by the rule, yet undefined: too few transitions with a finite change (R's NaN rows)
                "n_undefined": int(sum(r["coefficient"] is None and not r["excluded"] for r in rows)),
                "coefficient": describe([r["coefficient"] for r in rows]),
                "coefficient_connected": describe([r["coefficient_connected"] for r in rows]),
            }
        rows = [n["trained"]["baptista"][key] for n in nets]
        entry["corr_accuracy"] = corr([r["coefficient"] for r in rows])
        entry["corr_accuracy_connected"] = corr([r["coefficient_connected"] for r in rows])
        out["baptista"][key] = entry
    hehl: dict[str, Any] = {}
    for state in STATES:
        rows = [n[state]["hehl"] for n in nets]
        hehl[state] = {
            "n_excluded": int(sum(r["excluded"] for r in rows)),
            "coefficient": describe([r["coefficient"] for r in rows]),
            "coefficient_connected": describe([r["coefficient_connected"] for r in rows]),
        }
        for curvature in CURVATURES_H:
            hehl[state][curvature] = {
                "local_mean": describe([r[curvature]["local_mean"] for r in rows]),
                "local_negative_share": describe([r[curvature]["local_negative_share"] for r in rows]),
                "local_defined_share": describe([r[curvature]["local_defined_share"] for r in rows]),
            }
    for curvature in CURVATURES_H:
        hehl[f"corr_accuracy_local_mean_{curvature}"] = corr(
            [n["trained"]["hehl"][curvature]["local_mean"] for n in nets]
        )
    hehl["corr_accuracy_coefficient_connected"] = corr(
        [n["trained"]["hehl"]["coefficient_connected"] for n in nets]
    )
    # [H] Table 1 reports, per (width, depth), the mean over networks of the mean local coefficient
    # (augmented Forman) and of the share of negative points; then the range over their 9 configurations.
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for n in nets:
        groups.setdefault((n["width"], n["depth"]), []).append(n["trained"]["hehl"]["augmented_forman"])
    configs = [
        {
            "width": width,
            "depth": depth,
            "n": len(rows),
            "local_mean": describe([r["local_mean"] for r in rows])["mean"],
            "local_negative_share": describe([r["local_negative_share"] for r in rows])["mean"],
        }
        for (width, depth), rows in sorted(groups.items())
    ]
    on_grid = [c for c in configs if c["depth"] in H_DEPTHS and c["local_mean"] is not None]
    hehl["configs_augmented_forman"] = configs
    hehl["config_range_augmented_forman"] = {
        "depths": list(H_DEPTHS),
        "n_configs": len(on_grid),
        "local_mean": [min(c["local_mean"] for c in on_grid), max(c["local_mean"] for c in on_grid)]
        if on_grid
        else [None, None],
        "local_negative_share": [
            min(c["local_negative_share"] for c in on_grid),
            max(c["local_negative_share"] for c in on_grid),
        ]
        if on_grid
        else [None, None],
    }
    out["hehl"] = hehl
    return out


def pooled(nets: list[dict[str, Any]], rng: np.random.Generator, n_boot: int) -> dict[str, Any]:
    """All data sets together, by k fraction (k differs per data set for the digits' smaller probe)."""
    out: dict[str, Any] = {"n_networks": len(nets), "baptista": {}}
    acc = [n["test_accuracy"] for n in nets]
    well = [a > WELL_TRAINED for a in acc]
    for i, fraction in enumerate(K_FRACTIONS_B):
        values = [list(n["trained"]["baptista"].values())[i] for n in nets]
        coef = [v["coefficient"] for v in values]
        conn = [v["coefficient_connected"] for v in values]
        out["baptista"][f"{fraction:g}"] = {
            "n_excluded": int(sum(v["excluded"] for v in values)),
            "corr_accuracy": correlation(coef, acc, rng, n_boot),
            "corr_accuracy_well_trained": correlation(
                [c for c, w in zip(coef, well) if w], [a for a, w in zip(acc, well) if w], rng, n_boot
            ),
            "corr_accuracy_connected_well_trained": correlation(
                [c for c, w in zip(conn, well) if w], [a for a, w in zip(acc, well) if w], rng, n_boot
            ),
        }
    return out


# --------------------------------------------------------------------------------------- output
def _clean(obj: Any) -> Any:
    """Replace NaN / inf by None everywhere, so that the JSON is strict."""
    if isinstance(obj, float):
        return float(f"{obj:.6g}") if math.isfinite(obj) else None  # 6 digits keep the file small
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _csv_row(n: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        key: n[key]
        for key in (
            "dataset",
            "width",
            "depth",
            "replicate",
            "net_seed",
            "steps",
            "reached_target",
            "train_accuracy",
            "test_accuracy",
        )
    }
    for state in STATES:
        s = n[state]
        row[f"{state}_accuracy"] = s["accuracy"]
        for fraction, (k, b) in zip(K_FRACTIONS_B, s["baptista"].items()):
            tag = (
                f"{fraction * 100:g}pct"  # k differs per data set: columns by k fraction, k in its own column
            )
            row[f"B_{tag}_k"] = int(k)
            row[f"{state}_B_{tag}_coefficient"] = b["coefficient"]
            row[f"{state}_B_{tag}_connected"] = b["coefficient_connected"]
            row[f"{state}_B_{tag}_excluded"] = b["excluded"]
        h = s["hehl"]
        row["H_k"] = n["k_hehl"]
        row[f"{state}_H_coefficient"] = h["coefficient"]
        row[f"{state}_H_connected"] = h["coefficient_connected"]
        row[f"{state}_H_excluded"] = h["excluded"]
        for curvature, tag in zip(CURVATURES_H, ("af", "ao")):
            row[f"{state}_H_{tag}_local_mean"] = h[curvature]["local_mean"]
            row[f"{state}_H_{tag}_negative_share"] = h[curvature]["local_negative_share"]
    return {k: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}


def _fmt(v: float | None, digits: int = 2, sign: bool = True) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _fmt_corr(c: dict[str, Any], kind: str = "spearman") -> str:
    lo, hi = c[f"{kind}_ci"]
    if c[kind] is None or not math.isfinite(c[kind] if c[kind] is not None else math.nan):
        return f"– (n={c['n']})"
    interval = f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and math.isfinite(lo) else ""
    return f"{_fmt(c[kind])}{interval} (n={c['n']})"


def tables(summary: dict[str, Any], pooled_summary: dict[str, Any]) -> str:
    """Markdown tables of the headline numbers (printed, and saved as summary.md)."""
    head = K_FRACTIONS_B.index(K_HEADLINE_B)
    lines = [
        (
            f"**[B] global coefficient ρ, k = {K_HEADLINE_B:.0%} of the probe.** excl.: networks the paper's "
            "rule drops (trained / untrained); ρ: mean over the kept trained networks (share < 0); correlations "
            "of ρ with test accuracy over trained networks, 95 % bootstrap interval, n networks."
        ),
        "",
        (
            "| data set | nets | test acc. mean [min, max] | acc. > 0.98 | k | excl. | ρ trained | "
            "Spearman, all | Pearson, acc. > 0.98 | Spearman, acc. > 0.98 | Spearman of ρ_connected, acc. > 0.98 |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        k = str(s["k_baptista"][head])
        b = s["baptista"][k]
        acc = s["test_accuracy"]
        coef = b["trained"]["coefficient"]
        well = b["corr_accuracy"]["well_trained"]
        lines.append(
            f"| {name} | {s['n_networks']} | {_fmt(acc['mean'], 3, False)} [{_fmt(acc['min'], 2, False)}, "
            f"{_fmt(acc['max'], 2, False)}] | {s['n_well_trained']} | {k} | "
            f"{b['trained']['n_excluded']} / {b['untrained']['n_excluded']} | "
            f"{_fmt(coef['mean'])} ({_fmt(coef['negative_share'], 2, False)}) | "
            f"{_fmt_corr(b['corr_accuracy']['all'])} | {_fmt_corr(well, 'pearson')} | {_fmt_corr(well)} | "
            f"{_fmt_corr(b['corr_accuracy_connected']['well_trained'])} |"
        )
    header = " | ".join(f"k = {f:.1%} of the probe" for f in K_FRACTIONS_B)
    lines += [
        "",
        (
            "**[B] what k does.** Per k: k, networks the rule drops (trained / untrained), mean ρ of the kept "
            "trained networks, Spearman(ρ, test accuracy) over the well-trained ones (acc. > 0.98)."
        ),
        "",
        f"| data set | {header} |",
        "|---|" + "---|" * len(K_FRACTIONS_B),
    ]
    for name, s in summary.items():
        cells = []
        for k in s["k_baptista"]:
            b = s["baptista"][str(k)]
            cells.append(
                f"k={k}: excl. {b['trained']['n_excluded']} / {b['untrained']['n_excluded']}, "
                f"ρ {_fmt(b['trained']['coefficient']['mean'])}, {_fmt_corr(b['corr_accuracy']['well_trained'])}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    pooled_cells = [
        f"excl. {p['n_excluded']}, all: {_fmt_corr(p['corr_accuracy'])}; "
        f"acc. > 0.98: {_fmt_corr(p['corr_accuracy_well_trained'])}"
        for p in pooled_summary["baptista"].values()
    ]
    lines.append("| all pooled (Spearman) | " + " | ".join(pooled_cells) + " |")
    lines += [
        "",
        (
            f"**[H] trained vs untrained: the same networks at initialisation, k = {K_FRACTION_H:.0%} of the probe.** "
            "Local: mean over networks of the mean local coefficient (mean share of probe points with ρ(x) < 0); "
            "[H]-grid range: min … max over the (width, depth) configurations with depth 7, 10, 15 of the per-"
            "configuration mean, as in [H] Table 1. "
            "Global: mean of the coefficient over networks whose layer graphs are all connected (share of them < 0; "
            "networks left out)."
        ),
        "",
        (
            "| data set | k | local, aug. Forman, trained | untrained | [H]-grid range, trained | "
            "local, approx. Ollivier, trained | untrained "
            f"| [H] global, trained | untrained | [B] ρ (k = {K_HEADLINE_B:.0%}), trained | untrained |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        h = s["hehl"]
        b = s["baptista"][str(s["k_baptista"][head])]
        cells = []
        for curvature in CURVATURES_H:
            for state in ("trained", "untrained"):
                c = h[state][curvature]
                cells.append(
                    f"{_fmt(c['local_mean']['mean'])} ({_fmt(c['local_negative_share']['mean'], 2, False)})"
                )
            if curvature == "augmented_forman":
                r = h["config_range_augmented_forman"]
                (lo, hi), (slo, shi) = r["local_mean"], r["local_negative_share"]
                cells.append(f"{_fmt(lo)} … {_fmt(hi)} ({_fmt(slo, 2, False)} … {_fmt(shi, 2, False)})")
        for state in ("trained", "untrained"):
            g = h[state]["coefficient"]
            cells.append(
                f"{_fmt(g['mean'])} ({_fmt(g['negative_share'], 2, False)}; {h[state]['n_excluded']} out)"
            )
        for state in ("trained", "untrained"):
            g = b[state]["coefficient"]
            cells.append(f"{_fmt(g['mean'])} ({_fmt(g['negative_share'], 2, False)})")
        lines.append(f"| {name} | {s['k_hehl']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figures(nets: list[dict[str, Any]], summary: dict[str, Any], out: Path) -> list[str]:
    """coefficient_vs_accuracy.png, trained_vs_untrained.png and k_effect.png; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    names = list(summary)
    head = K_FRACTIONS_B.index(K_HEADLINE_B)
    depths = sorted({n["depth"] for n in nets})
    cmap = plt.get_cmap("viridis", max(2, len(depths)))
    colour = {d: cmap(i) for i, d in enumerate(depths)}

    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        k = str(summary[name]["k_baptista"][head])
        sub = [n for n in nets if n["dataset"] == name]
        # A failed network (accuracy near 0.5) would squash the others: clip it to the bottom edge (a "v").
        floor = float(np.percentile([n["test_accuracy"] for n in sub], 10)) - 0.03
        for n in sub:
            b = n["trained"]["baptista"][k]
            kept = b["coefficient"] is not None
            x = b["coefficient"] if kept else b["coefficient_connected"]
            if x is None:
                continue
            clipped = n["test_accuracy"] < floor
            ax.scatter(
                x,
                floor if clipped else n["test_accuracy"],
                s=16,
                marker="v" if clipped else "o",
                color=colour[n["depth"]],
                facecolors=colour[n["depth"]] if kept else "none",
                linewidths=0.8,
            )
        if any(n["test_accuracy"] < floor for n in sub):
            ax.set_ylim(bottom=floor - 0.005)
        c = summary[name]["baptista"][k]["corr_accuracy"]["all"]
        ax.set_title(f"{name} (k={k})\nSpearman {_fmt(c['spearman'])}, n={c['n']}", fontsize=9)
        ax.axhline(WELL_TRAINED, color="grey", lw=0.6, ls="--")
        ax.axvline(0, color="grey", lw=0.6)
        ax.set_xlim(-1.05, 1.05)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    handles = [Line2D([], [], ls="", marker="o", color=colour[d], label=f"depth {d}") for d in depths]
    handles.append(
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            mfc="none",
            color="k",
            label="excluded by [B]'s rule\n(both-layers value)",
        )
    )
    (axes.flat[len(names)] if len(names) < rows * cols else axes.flat[-1]).legend(
        handles=handles, fontsize=7, loc="center"
    )
    fig.supxlabel("[B] global Ricci coefficient ρ (trained; < 0 = Ricci-flow-like)", fontsize=9)
    fig.supylabel("test accuracy", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "coefficient_vs_accuracy.png", dpi=90)
    plt.close(fig)

    panels: list[tuple[str, Callable[[dict[str, Any], str], float | None]]] = [
        (
            "[H] mean local coefficient\n(augmented Forman)",
            lambda n, s: n[s]["hehl"]["augmented_forman"]["local_mean"],
        ),
        (
            "[H] mean local coefficient\n(approx. Ollivier)",
            lambda n, s: n[s]["hehl"]["approx_ollivier"]["local_mean"],
        ),
        ("[H] global coefficient\n(connected graphs only)", lambda n, s: n[s]["hehl"]["coefficient"]),
        (
            f"[B] global coefficient, k = {K_HEADLINE_B:.0%}\n(rule applied)",
            lambda n, s: n[s]["baptista"][str(summary[n["dataset"]]["k_baptista"][head])]["coefficient"],
        ),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (title, get) in zip(axes.flat, panels):
        for j, name in enumerate(names):
            sub = [n for n in nets if n["dataset"] == name]
            for offset, state, col in ((-0.18, "untrained", "tab:grey"), (0.18, "trained", "tab:red")):
                vals = [v for v in (get(n, state) for n in sub) if v is not None]
                xs = j + offset + rng.uniform(-0.08, 0.08, len(vals))
                ax.scatter(xs, vals, s=6, color=col, alpha=0.6, label=state if j == 0 else None)
                if vals:
                    ax.plot([j + offset - 0.15, j + offset + 0.15], [np.mean(vals)] * 2, color="k", lw=1.2)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "trained_vs_untrained.png", dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.3))
    width = 0.8 / len(K_FRACTIONS_B)
    for i, fraction in enumerate(K_FRACTIONS_B):
        excl, mean = [], []
        for name in names:
            b = summary[name]["baptista"][str(summary[name]["k_baptista"][i])]
            excl.append(b["trained"]["n_excluded"] / max(1, summary[name]["n_networks"]))
            mean.append(b["trained"]["coefficient_connected"]["mean"] or 0.0)
        bars = np.arange(len(names)) + (i - (len(K_FRACTIONS_B) - 1) / 2) * width
        axes[0].bar(bars, excl, width, label=f"k = {fraction:.1%}")
        axes[1].bar(bars, mean, width, label=f"k = {fraction:.1%}")
    axes[0].set_title("[B] share of trained networks excluded", fontsize=9)
    axes[1].set_title("[B] mean ρ (both-layers value), trained", fontsize=9)
    for ax in axes:
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[1].axhline(0, color="grey", lw=0.6)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "k_effect.png", dpi=90)
    plt.close(fig)
    return ["coefficient_vs_accuracy.png", "trained_vs_untrained.png", "k_effect.png"]


def write_outputs(cfg: Config, nets: list[dict[str, Any]], wall: float, out: Path) -> dict[str, Any]:
    """Write results.json, networks.csv, summary.csv, summary.md and the figures into ``out``.

    ``results.json`` layout (every float finite or ``null``; keys ``k`` are the k values as strings):

    * ``config``: the grid and settings (k per data set under ``ks_baptista`` / ``k_hehl``);
    * ``networks``: one entry per network: ``index, dataset, width, depth, replicate, net_seed,
      k_baptista, k_hehl, steps, reached_target, train_accuracy, test_accuracy, seconds`` and, for
      ``untrained`` and ``trained``: ``accuracy``, ``degenerate``, ``baptista[k] = {coefficient,
      coefficient_connected, excluded, disconnected_layers, nan_transitions}`` and ``hehl =
      {coefficient, coefficient_connected, excluded, disconnected_layers, augmented_forman /
      approx_ollivier = {local_mean, local_negative_share, local_defined_share, layer}}``;
    * ``datasets[name]``: ``n_networks, n_well_trained, n_reached_target, test_accuracy,
      untrained_accuracy, k_baptista, k_hehl, description, n_probe, n_test, n_train``;
      ``baptista[k]`` with, per state, ``{n_excluded, n_disconnected, n_undefined, coefficient,
      coefficient_connected}`` (descriptive statistics ``{n, mean, sd, min, max, negative_share}``) and
      ``corr_accuracy`` / ``corr_accuracy_connected`` ``= {all, well_trained}``, each ``{n, pearson,
      pearson_ci, spearman, spearman_ci}``; ``hehl`` with, per state, ``n_excluded``, the global
      ``coefficient`` / ``coefficient_connected`` and, per curvature, ``local_mean``,
      ``local_negative_share``, ``local_defined_share``; ``corr_accuracy_local_mean_{curvature}``,
      ``corr_accuracy_coefficient_connected``; ``configs_augmented_forman`` (per width and depth) and
      ``config_range_augmented_forman`` (range over [H]'s depths, as in their Table 1);
    * ``pooled``: all data sets together, per k fraction;
    * ``wall_seconds``: the wall time of the grid.
    """
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    nets = sorted(nets, key=lambda n: n["index"])
    summary: dict[str, Any] = {}
    for name in cfg.datasets:
        sub = [n for n in nets if n["dataset"] == name]
        if not sub:
            continue
        split = load_split(name, cfg.seed, cfg.n_train, cfg.n_test, cfg.n_probe)
        s = summarise(sub, cfg.ks_baptista[name], cfg.k_hehl[name], rng, cfg.n_boot)
        s["description"], s["n_probe"], s["n_test"], s["n_train"] = (
            split.description,
            split.n_probe,
            len(split.x_test),
            len(split.x_train),
        )
        summary[name] = s
    pooled_summary = pooled(nets, rng, cfg.n_boot)
    results: dict[str, Any] = _clean(
        {
            "config": asdict(cfg)
            | {
                "well_trained": WELL_TRAINED,
                "train_target": TRAIN_TARGET,
                "k_fractions_baptista": K_FRACTIONS_B,
                "k_headline_baptista": K_HEADLINE_B,
                "k_fraction_hehl": K_FRACTION_H,
                "curvatures_hehl": CURVATURES_H,
                "torch": torch.__version__,
                "python": sys.version.split()[0],
            },
            "networks": nets,
            "datasets": summary,
            "pooled": pooled_summary,
            "wall_seconds": wall,
        }
    )
    (out / "results.json").write_text(json.dumps(results, separators=(",", ":"), allow_nan=False) + "\n")
    rows = [_csv_row(n) for n in nets]
    with open(out / "networks.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "summary.csv", "w", newline="") as fh:
        table = csv.writer(fh)
        head = K_FRACTIONS_B.index(K_HEADLINE_B)
        table.writerow(
            [
                "dataset",
                "networks",
                "acc_mean",
                "well_trained",
                "k_B",
                "excluded_B",
                "rho_B_mean",
                "spearman_B_all",
                "spearman_B_well",
                "k_H",
                "local_af_trained",
                "local_af_untrained",
                "local_ao_trained",
                "local_ao_untrained",
                "global_H_trained",
                "global_H_untrained",
            ]
        )
        for name, s in results["datasets"].items():
            k = str(s["k_baptista"][head])
            b, h = s["baptista"][k], s["hehl"]
            table.writerow(
                [
                    name,
                    s["n_networks"],
                    s["test_accuracy"]["mean"],
                    s["n_well_trained"],
                    k,
                    b["trained"]["n_excluded"],
                    b["trained"]["coefficient"]["mean"],
                    b["corr_accuracy"]["all"]["spearman"],
                    b["corr_accuracy"]["well_trained"]["spearman"],
                    s["k_hehl"],
                    h["trained"]["augmented_forman"]["local_mean"]["mean"],
                    h["untrained"]["augmented_forman"]["local_mean"]["mean"],
                    h["trained"]["approx_ollivier"]["local_mean"]["mean"],
                    h["untrained"]["approx_ollivier"]["local_mean"]["mean"],
                    h["trained"]["coefficient"]["mean"],
                    h["untrained"]["coefficient"]["mean"],
                ]
            )
    text = tables(results["datasets"], results["pooled"])
    (out / "summary.md").write_text(text + "\n")
    figures(nets, results["datasets"], out)
    return results


# ----------------------------------------------------------------------------------------- main
# The full grid: [H]'s widths, [B]'s and [H]'s depths, 5 seeds: 7 x 60 = 420 networks; with 2 workers 13 min
# on the idle 2-core machine, about 20 min while other jobs load it.
FULL: dict[str, Any] = {
    "widths": (15, 25, 50),
    "depths": (5, 7, 10, 15),
    "seeds": 5,
    "n_train": 1000,
    "n_test": 2000,
    "n_probe": 500,
    "max_steps": 3000,
}
FAST: dict[str, Any] = {
    "widths": (12, 24),
    "depths": (4, 6),
    "seeds": 1,
    "n_train": 300,
    "n_test": 300,
    "n_probe": 120,
    "max_steps": 100,
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fast", action="store_true", help="a handful of small networks (for tests), < 1 min"
    )
    parser.add_argument("--out", default="reproduction", help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="data sets and network seeds")
    parser.add_argument("--workers", type=int, default=1, help="processes (each with OMP threads / workers)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--widths", type=int, nargs="+")
    parser.add_argument("--depths", type=int, nargs="+")
    parser.add_argument("--seeds", type=int, help="networks per (data set, width, depth)")
    parser.add_argument("--max-steps", type=int, help="cap on full-batch updates per network")
    parser.add_argument("--n-probe", type=int, help="probe points (test points) of the synthetic sets")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples per interval")
    args = parser.parse_args(argv)
    _quiet()

    preset = dict(FAST if args.fast else FULL)
    for key in ("widths", "depths", "seeds", "max_steps", "n_probe"):
        if getattr(args, key) is not None:
            preset[key] = tuple(getattr(args, key)) if key in ("widths", "depths") else getattr(args, key)
    cfg = Config(datasets=tuple(args.datasets), lr=1e-3, seed=args.seed, n_boot=args.n_boot, **preset)
    ks_b, k_h = {}, {}
    for name in cfg.datasets:
        split = load_split(name, cfg.seed, cfg.n_train, cfg.n_test, cfg.n_probe)
        ks_b[name], k_h[name] = k_values(split.n_probe)
    cfg = Config(**(asdict(cfg) | {"ks_baptista": ks_b, "k_hehl": k_h}))

    from tqdm.auto import tqdm

    jobs = grid(cfg)
    print(
        f"{len(jobs)} networks: {len(cfg.datasets)} data sets x widths {cfg.widths} x depths {cfg.depths} "
        f"x {cfg.seeds} seeds; probe {cfg.n_probe} test points; workers {args.workers}",
        flush=True,
    )
    start = time.perf_counter()
    nets = []
    with tqdm(total=len(jobs), desc="networks", unit="net", file=sys.stderr, mininterval=2) as bar:
        for net in run_grid(cfg, args.workers):
            nets.append(net)
            bar.set_postfix_str(f"{net['dataset']} w{net['width']} d{net['depth']}", refresh=False)
            bar.update()
    wall = time.perf_counter() - start
    results = write_outputs(cfg, nets, wall, Path(args.out))
    print(tables(results["datasets"], results["pooled"]))
    print(f"\nwall time of the grid: {wall:.0f} s ({len(nets)} networks); outputs in {args.out}")
    return results


if __name__ == "__main__":
    main()

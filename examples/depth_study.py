"""Does the critical depth of the layer Ricci coefficients predict where extra depth stops paying?

Hehl et al. (2025, Sec. 4.4) average the layer coefficients r_t of many trained networks and read a
"critical depth" off the layer where the curve bottoms out; layers beyond it no longer do
curvature-driven work, so deeper networks should gain little. They compared it with test accuracy only
by eye. This script measures it, without Lightning (plain PyTorch training, then
:func:`lightning_ricci.analyze` on the trained ``nn.Module``):

1. for each data set (see ``datasets.py``), depth in ``--depths`` and seed: train a width-25 MLP
   (Adam lr 1e-3, batch 64) until its training accuracy reaches 99 % or ``--max-epochs`` pass
   ([H]'s stopping rule, with mini-batches);
2. ``analyze(net, test_x, convention="hehl", curvature=...)`` on the test set (the probe, as in [H]:
   approximate Ollivier for synthetic data, augmented Forman for digits, k = 5 % of N): the layers are
   the input, the ReLUs and the sigmoid output, so r_t has depth + 1 transitions;
3. the depth-averaged curve (:func:`lightning_ricci.analysis.mean_layer_curve` over all networks of a
   data set) and its critical depth t* (:func:`lightning_ricci.critical_depth`), next to the test
   accuracy against depth. "Extra depth stops paying" at the smallest depth whose mean test accuracy is
   within ``--tolerance`` percentage points of the best depth's.

Run::

    python examples/depth_study.py --out docs/studies   # a few minutes on 2 cores
    python examples/depth_study.py --fast               # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datasets

from lightning_ricci import analyze, critical_depth
from lightning_ricci.analysis import mean_layer_curve

STUDY_SETS = ("circles", "discs", "digits")  # Syn-I, Syn-II (four_discs), digits 1 vs 7


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: dict[str, Any], seed: int) -> int:
    """Adam + BCE in mini-batches until training accuracy >= ``cfg["target"]``; returns the epochs run."""
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(1, cfg["max_epochs"] + 1):
        net.train()
        for idx in torch.randperm(x.shape[0], generator=generator).split(cfg["batch"]):
            loss = nn.functional.binary_cross_entropy(net(x[idx]).squeeze(-1), y[idx].float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if datasets.accuracy(net, x, y) >= cfg["target"]:
            return epoch
    return cfg["max_epochs"]


def run_one(name: str, depth: int, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    images = datasets.ALIASES.get(name, name) not in datasets.SYNTHETIC
    sizes = cfg["image_sizes"] if images else cfg["sizes"]
    (x_tr, y_tr), (x_te, y_te) = datasets.load(name, sizes, seed)
    torch.manual_seed(seed)
    net = datasets.mlp(x_tr.shape[1], cfg["width"], depth)
    epochs = train(net, x_tr, y_tr, cfg, seed)
    curvature = "augmented_forman" if images else "approx_ollivier"
    result = analyze(net, x_te, convention="hehl", curvature=curvature)
    return {
        "data": name,
        "depth": depth,
        "seed": seed,
        "epochs": epochs,
        "train_acc": datasets.accuracy(net, x_tr, y_tr),
        "test_acc": datasets.accuracy(net, x_te, y_te),
        "k": result.k,
        "n_probe": result.num_points,
        "curvature": curvature,
        "layer_names": list(result.layer_names),
        "layer": [round(float(v), 5) for v in result.layer_coefficient.tolist()],
        "critical_layer": result.critical_layer,
        "local_mean": round(result.local_mean, 5),
    }


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def summarize(runs: list[dict[str, Any]], tolerance: float) -> list[dict[str, Any]]:
    """Per data set: accuracy and layer curve per depth, the pooled critical depth and the saturation depth."""
    out = []
    for name in dict.fromkeys(run["data"] for run in runs):
        group = [run for run in runs if run["data"] == name]
        depths = sorted({run["depth"] for run in group})
        per_depth = []
        for depth in depths:
            nets = [run for run in group if run["depth"] == depth]
            curve = mean_layer_curve([run["layer"] for run in nets])
            accs = [run["test_acc"] for run in nets]
            per_depth.append(
                {
                    "depth": depth,
                    "test_acc": statistics.mean(accs),
                    "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    "epochs": statistics.mean(run["epochs"] for run in nets),
                    "reached_target": sum(run["train_acc"] >= 0.99 for run in nets),
                    "networks": len(nets),
                    "curve": [float(v) for v in curve.tolist()],
                    "critical_layer": critical_depth(curve),
                }
            )
        pooled = mean_layer_curve([run["layer"] for run in group])
        hidden_only = mean_layer_curve([run["layer"][:-1] for run in group])  # without h_L -> output
        best = max(row["test_acc"] for row in per_depth)
        saturation = next(row["depth"] for row in per_depth if row["test_acc"] >= best - tolerance / 100)
        t_star = critical_depth([run["layer"] for run in group])
        out.append(
            {
                "data": name,
                "per_depth": per_depth,
                "curve": [float(v) for v in pooled.tolist()],
                "critical_depth": t_star,
                "critical_depth_hidden_only": critical_depth(hidden_only),
                "curve_min": float(pooled[t_star]) if t_star >= 0 else math.nan,
                "best_acc": best,
                "saturation_depth": saturation,
                "verdict": verdict(t_star, saturation, depths),
            }
        )
    return out


def verdict(t_star: int, saturation: int, depths: list[int]) -> str:
    """Compare the critical depth with the saturation depth, at the resolution of the sampled depths."""
    if t_star < 0:
        return "undefined (no finite layer coefficient)"
    predicted = min((d for d in depths if d >= t_star), default=max(depths))
    if predicted == saturation:
        return f"consistent: the first sampled depth >= t* is {predicted}, where accuracy saturates"
    if predicted > saturation:
        return f"too deep: accuracy already saturates at depth {saturation}, t* = {t_star}"
    return f"too shallow: accuracy keeps improving up to depth {saturation}, t* = {t_star}"


def tables(summary: list[dict[str, Any]], tolerance: float) -> str:
    """Test accuracy and the critical layer per depth, then the depth-averaged curves and the verdicts."""
    depths = sorted({row["depth"] for block in summary for row in block["per_depth"]})
    lines = [
        "| data | depth: | " + " | ".join(str(d) for d in depths) + " |",
        "|---|---|" + "---|" * len(depths),
    ]
    for block in summary:
        rows = {row["depth"]: row for row in block["per_depth"]}
        acc = [f"{100 * rows[d]['test_acc']:.1f}" if d in rows else "" for d in depths]
        sd = [f"{100 * rows[d]['test_acc_std']:.1f}" if d in rows else "" for d in depths]
        hit = [f"{rows[d]['reached_target']}/{rows[d]['networks']}" if d in rows else "" for d in depths]
        crit = [str(rows[d]["critical_layer"]) if d in rows else "" for d in depths]
        lines += [
            f"| {block['data']} | test acc. (%) | " + " | ".join(acc) + " |",
            "| | sd (pp) | " + " | ".join(sd) + " |",
            "| | nets at 99 % train acc. | " + " | ".join(hit) + " |",
            "| | critical layer of this depth's curve | " + " | ".join(crit) + " |",
        ]
    lines += [
        "",
        (
            "| data | depth-averaged layer curve r_0, r_1, ... | critical depth t* (r) | "
            f"accuracy saturates at depth (within {tolerance:g} pp of the best) | verdict |"
        ),
        "|---|---|---|---|---|",
    ]
    for block in summary:
        curve = ", ".join(f"{v:+.2f}" for v in block["curve"])
        lines.append(
            f"| {block['data']} | {curve} | {block['critical_depth']} ({block['curve_min']:+.2f}) | "
            f"{block['saturation_depth']} (best {100 * block['best_acc']:.1f} %) | {block['verdict']} |"
        )
    return "\n".join(lines)


def figure(summary: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(summary), 6.4), layout="constrained")
    axes = fig.subplots(2, len(summary), squeeze=False)
    for col, block in enumerate(summary):
        top, bottom = axes[0][col], axes[1][col]
        rows = block["per_depth"]
        for i, row in enumerate(rows):
            shade = 0.15 + 0.75 * i / max(1, len(rows) - 1)
            top.plot(range(len(row["curve"])), row["curve"], color=(shade, 0.3, 1 - shade), linewidth=1,
                     label=f"depth {row['depth']}")  # fmt: skip
        top.plot(range(len(block["curve"])), block["curve"], color="k", linewidth=2.2, label="all depths")
        t_star = block["critical_depth"]
        if t_star >= 0:
            top.plot(t_star, block["curve"][t_star], marker="*", markersize=14, color="C3", linestyle="")
        top.axhline(0.0, color="0.7", linewidth=0.8)
        top.set_ylim(-1.05, 1.05)
        top.set_xlabel("transition t (layer t -> t+1)")
        top.set_ylabel("layer Ricci coefficient r_t")
        top.set_title(f"{block['data']}: critical depth t* = {t_star}")
        top.legend(fontsize="x-small", ncol=2, loc="upper left")
        depths = [row["depth"] for row in rows]
        bottom.errorbar(depths, [100 * r["test_acc"] for r in rows], yerr=[100 * r["test_acc_std"] for r in rows],
                        marker="o", capsize=3, color="k")  # fmt: skip
        if t_star >= 0:
            bottom.axvline(t_star, color="C3", linestyle="--", label="t*")
        bottom.axvline(block["saturation_depth"], color="C0", linestyle=":", label="accuracy saturates")
        bottom.set_xlabel("depth (hidden layers)")
        bottom.set_ylabel("test accuracy (%)")
        bottom.legend(fontsize="small", loc="lower right")
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny data, 2 depths, 1 seed (for tests)")
    parser.add_argument(
        "--data", nargs="+", default=list(STUDY_SETS), choices=[*datasets.DATASETS, *datasets.ALIASES]
    )
    parser.add_argument("--depths", nargs="+", type=int, default=[1, 2, 3, 4, 5, 6, 8, 10, 12])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--tolerance", type=float, default=1.0, help="percentage points of test accuracy")
    parser.add_argument("--out", type=Path, help="write depth.json and depth.png here")
    args = parser.parse_args(argv)

    cfg: dict[str, Any] = {
        "width": 25,
        "lr": 1e-3,
        "batch": 64,
        "target": 0.99,
        "max_epochs": args.max_epochs,
        "sizes": (1000, 1000),  # train, test (= probe)
        "image_sizes": (0.5, 0.5),  # shares of the images (digits: 361)
        "depths": args.depths,
    }
    seeds = list(range(args.seeds))
    if args.fast:
        cfg.update(max_epochs=3, sizes=(128, 96), depths=[2, 3])
        seeds = [0]
        args.data = args.data if args.data != list(STUDY_SETS) else ["circles", "discs"]

    runs = []
    started = time.perf_counter()
    for name in args.data:
        t0 = time.perf_counter()
        for depth in cfg["depths"]:
            for seed in seeds:
                runs.append(run_one(name, depth, seed, cfg))
        print(
            f"{name}: {len(cfg['depths']) * len(seeds)} networks, {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    wall = time.perf_counter() - started
    summary = summarize(runs, args.tolerance)
    print()
    print(tables(summary, args.tolerance))
    print(f"\nwall time {wall:.0f} s")
    report = {"config": cfg, "seeds": seeds, "tolerance_pp": args.tolerance, "wall_s": round(wall, 1),
              "summary": summary, "runs": runs}  # fmt: skip
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "depth.json").write_text(json.dumps(report, indent=1) + "\n")
        try:
            figure(summary, args.out / "depth.png")
        except ModuleNotFoundError:
            print("matplotlib is not installed: no figure")
        print(f"wrote {args.out / 'depth.json'} and depth.png")
    return report


if __name__ == "__main__":
    main()

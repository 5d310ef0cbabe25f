"""Side-by-side speed of ``ricci_flow`` against a straightforward dense scipy pipeline.

Usage::

    python benchmarks/bench_ricci_flow.py              # CPU cases (and GPU cases when CUDA is present)
    python benchmarks/bench_ricci_flow.py --quick      # smaller cases, for a smoke run
    python benchmarks/bench_ricci_flow.py --width      # only: knn_graph against the fp32 GEMM floor by width

Workload (as in the papers' timing): n probe points ~ N(0, I_784) through a random He-initialised
784 -> W ReLU MLP; ``convention="baptista"``, ``k = 10``. The reference implements the same definitions
the obvious way (float64 distance matrix as R's ``dist``, per-row k-th distance with ties, dense
curvature, ``scipy.sparse.csgraph.shortest_path``, R's infinity rules) and runs in the same process.
Every row checks that the two coefficients agree.

The width table (``--width``) times ``knn_graph`` (exact) against the floor of its approach, a plain fp32
GEMM + ``topk`` of the same size (not exact), and a float64 ``cdist`` + ``topk`` (the reference whose edges
it must reproduce), in one process, interleaved, best of ``--width-repeats``. Data: random ReLU features
``relu(randn(N, D))`` (``--width-data relu``), or ten tight clusters whose centred norms are far above the
neighbour distances (``clusters``: the hard case for a GEMM's rounding bound).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import platform
import sys
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import numpy as np
import torch
from _workloads import mlp_activations  # benchmarks/_workloads.py

from lightning_ricci import ricci_flow
from lightning_ricci.geometry.geodesics import multi_source_bfs
from lightning_ricci.geometry.knn import DEFAULT_MEMORY_BUDGET, exact_matmul, knn_graph

WIDTHS = [64, 784, 4096, 16384, 32768, 65536, 131072]
WIDTHS_N5000 = [64, 784, 4096, 16384, 32768]


def reference_baptista(layers: list[np.ndarray], k: int) -> float:
    """Dense scipy version of the R pipeline of Baptista et al. (per-network shifted coefficient)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path
    from scipy.spatial.distance import cdist

    totals, dists = [], []
    for x in layers:
        d = cdist(x, x)
        np.fill_diagonal(d, np.inf)
        kth = np.partition(d, k - 1, axis=1)[:, k - 1]
        adj = d <= kth[:, None]
        deg = adj.sum(0) + adj.sum(1)
        totals.append(float((adj * (4 - deg[:, None] - deg[None, :])).sum()))
        dists.append(shortest_path(csr_matrix(adj | adj.T), directed=False, unweighted=True))
    eta, excluded = [], False
    for prev, cur in itertools.pairwise(dists):
        with np.errstate(invalid="ignore"):
            diff = cur - prev
        rows = np.where(np.isnan(diff), 0.0, diff).sum(1)
        plus, minus = np.isposinf(diff).any(1), np.isneginf(diff).any(1)
        rows = np.where(plus & minus, np.nan, rows)
        value = np.nansum(rows) if not np.isnan(rows).all() else np.nan
        excluded |= bool(np.isinf(value))
        eta.append(value)
    if excluded:
        return math.nan
    x, y = np.array(totals[1:-1]), np.array(eta[1:])
    keep = ~np.isnan(y)
    return float(np.corrcoef(x[keep], y[keep])[0, 1])


def timed(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    best = math.inf
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def cpu_versus_reference(cases: list[tuple[int, int, int]], repeats: int) -> None:
    print("\n## CPU: ricci_flow vs dense scipy reference, same process, convention='baptista', k=10")
    print(f"machine: {platform.processor() or platform.machine()}, torch threads: {torch.get_num_threads()}")
    print(
        row(
            [
                "n",
                "layers",
                "width",
                "reference s",
                "ricci_flow s",
                "speed-up",
                "coefficient (ours / reference)",
            ]
        )
    )
    print(row(["---"] * 7))
    for n, depth, width in cases:
        layers = mlp_activations(n, [width] * depth)
        arrays = [x.double().numpy() for x in layers]
        t_ref, ref = timed(lambda a=arrays: reference_baptista(a, 10), "cpu", 1)
        t_ours, res = timed(lambda x=layers: ricci_flow(x, 10), "cpu", repeats)
        ours = res.coefficient  # type: ignore[attr-defined]
        agree = (math.isnan(ours) and math.isnan(ref)) or abs(ours - ref) < 1e-9  # type: ignore[arg-type]
        print(
            row(
                [
                    str(n),
                    f"784 + {depth}x{width}",
                    str(width),
                    f"{t_ref:.2f}",
                    f"{t_ours:.3f}",
                    f"{t_ref / t_ours:.1f}x",
                    f"{ours:.6f} / {ref:.6f} {'ok' if agree else 'MISMATCH'}",
                ]
            )
        )
        if not agree:
            raise SystemExit("coefficients disagree")


def torch_cluster_versus_gemm(n: int, device: str) -> None:
    try:
        import torch_cluster  # noqa: F401
    except ModuleNotFoundError:
        print("\n(torch-cluster not installed: backend comparison skipped)")
        return
    layers = mlp_activations(n, [512] * 5, device=device)
    t_gemm, a = timed(lambda: ricci_flow(layers, 10, convention="hehl"), device, 2)
    t_tc, b = timed(lambda: ricci_flow(layers, 10, convention="hehl", knn_backend="torch_cluster"), device, 2)
    print(f"\n## kNN backends, {device}, n={n}, 784 + 5x512, convention='hehl', k=10")
    print(row(["backend", "ricci_flow s", "coefficient"]))
    print(row(["---"] * 3))
    print(row(["gemm (default)", f"{t_gemm:.3f}", f"{a.coefficient:.6f}"]))  # type: ignore[attr-defined]
    print(row(["torch_cluster", f"{t_tc:.3f}", f"{b.coefficient:.6f}"]))  # type: ignore[attr-defined]


def bfs_level_kernels(sizes: list[int], depth: int, width: int) -> None:
    """The BFS alone and the whole ``ricci_flow`` with the torch and with the Triton level path (CUDA)."""
    try:
        import triton  # noqa: F401
    except ModuleNotFoundError:
        print("\n(triton not installed: BFS level path comparison skipped)")
        return
    print(f"\n## BFS level path on cuda: 784 + {depth}x{width}, k=10, convention='baptista'")
    header = ["n", "BFS torch s", "BFS triton s", "BFS speed-up", "ricci_flow torch s", "ricci_flow triton s"]
    print(row([*header, "coefficient (torch / triton)"]))
    print(row(["---"] * 7))
    for n in sizes:
        layers = mlp_activations(n, [width] * depth, device="cuda")
        cells, agree = _level_kernel_row(layers)
        print(row([str(n), *cells]))
        del layers
        if not agree:
            raise SystemExit("the torch and Triton level paths disagree")


def _level_kernel_row(layers: list[torch.Tensor]) -> tuple[list[str], bool]:
    flow_module = sys.modules["lightning_ricci.geometry.flow"]
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def record(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return multi_source_bfs(*args, **kwargs)

    with mock.patch.object(flow_module, "multi_source_bfs", record):
        ricci_flow(layers, 10)  # to capture the BFS inputs of this workload
    args, kwargs = calls[0]
    bfs_s, bfs, flow_s, coef = {}, {}, {}, {}
    for kernel in ("torch", "triton"):
        run = functools.partial(multi_source_bfs, *args, **kwargs, level_kernel=kernel)
        bfs_s[kernel], bfs[kernel] = timed(run, "cuda", 3)
        patched = functools.partial(multi_source_bfs, level_kernel=kernel)
        with mock.patch.object(flow_module, "multi_source_bfs", patched):
            flow_s[kernel], res = timed(lambda: ricci_flow(layers, 10), "cuda", 3)
        coef[kernel] = res.coefficient  # type: ignore[attr-defined]
    a, b = bfs["torch"], bfs["triton"]
    agree = (
        torch.equal(a.dist_sum, b.dist_sum)  # type: ignore[attr-defined]
        and torch.equal(a.query_dist, b.query_dist)  # type: ignore[attr-defined]
        and all(torch.equal(x, y) for x, y in zip(a.masked_sums, b.masked_sums))  # type: ignore[attr-defined]
        and ((math.isnan(coef["torch"]) and math.isnan(coef["triton"])) or coef["torch"] == coef["triton"])
    )
    cells = [
        f"{bfs_s['torch']:.4f}",
        f"{bfs_s['triton']:.4f}",
        f"{bfs_s['torch'] / bfs_s['triton']:.1f}x",
        f"{flow_s['torch']:.4f}",
        f"{flow_s['triton']:.4f}",
        f"{coef['torch']:.6f} / {coef['triton']:.6f} {'ok' if agree else 'MISMATCH'}",
    ]
    return cells, agree


def scaling(device: str, sizes: list[int], depth: int, width: int, limit_s: float) -> None:
    print(
        f"\n## Scaling on {device}: {depth} layers of width {width} (+ 784-D input), k=10, convention='baptista'"
    )
    print(row(["n", "seconds", "peak GPU memory MB" if device == "cuda" else "process peak RSS MB"]))
    print(row(["---"] * 3))
    ns, ts = [], []
    for n in sizes:
        layers = mlp_activations(n, [width] * depth, device=device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t, _ = timed(lambda x=layers: ricci_flow(x, 10), device, 2 if n <= 10000 else 1)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else _rss_mb()
        print(row([str(n), f"{t:.4f}", f"{peak:.0f}"]))
        ns.append(n)
        ts.append(t)
        del layers
        if t > limit_s:
            break
    if len(ns) >= 2:
        slope = np.polyfit(np.log(ns), np.log(ts), 1)[0]
        print(f"fitted growth exponent (time ~ n^p): p = {slope:.2f}")


def profile_flow(n: int, depth: int, width: int, device: str) -> None:
    """Where one ``ricci_flow`` spends its time: the profiler's table of operators and kernels."""
    from torch.profiler import ProfilerActivity, profile

    layers = mlp_activations(n, [width] * depth, device=device)
    ricci_flow(layers, 10)  # warm-up: kernels compiled, allocator primed
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        ricci_flow(layers, 10)
        if device == "cuda":
            torch.cuda.synchronize()
    key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    print(f"\n## Profile of one ricci_flow on {device}: n={n}, 784 + {depth}x{width}, k=10")
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))


def cpu_memory_at_gpu_budget(n: int, depth: int, width: int) -> None:
    """Time and peak extra memory on the CPU with the CUDA default budget: a proxy for GPU memory."""
    from _memory import cpu_peak_growth  # benchmarks/_memory.py

    layers = mlp_activations(n, [width] * depth)
    held = sum(t.numel() * t.element_size() for t in layers) / 2**30
    budget = DEFAULT_MEMORY_BUDGET["cuda"]
    out: list[Any] = []

    def call() -> None:
        out.append(ricci_flow(layers, 10, memory_budget=budget))

    start = time.perf_counter()
    peak = cpu_peak_growth(call)
    seconds = time.perf_counter() - start
    print(
        f"\n## Memory at the CUDA default budget ({budget / 2**30:.0f} GiB), on the CPU: n={n}, 784 + {depth}x{width}, k=10"
    )
    print(row(["n", "seconds", "activations GiB", "peak extra GiB", "coefficient"]))
    print(row(["---"] * 5))
    shown = "n/a" if peak is None else f"{peak / 1024:.2f}"
    print(row([str(n), f"{seconds:.1f}", f"{held:.2f}", shown, f"{out[0].coefficient:.6f}"]))


def width_features(n: int, dim: int, data: str, device: str, seed: int = 0) -> torch.Tensor:
    """[n, dim] float32: ``relu(randn)`` features, or ten tight clusters (centres 10x the spread)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if data == "relu":
        return torch.relu(torch.randn(n, dim, generator=gen)).to(device)
    centres = torch.randn(10, dim, generator=gen) * 10.0
    return (centres[torch.arange(n) % 10] + torch.randn(n, dim, generator=gen)).to(device)


def gemm_topk_floor(x: torch.Tensor, k: int) -> torch.Tensor:
    """Plain fp32 GEMM + ``topk`` (TF32 off): the floor of the GEMM approach, not exact."""
    with exact_matmul():
        sq = (x * x).sum(1)
        d2 = torch.addmm(sq.unsqueeze(0), x, x.T, beta=1.0, alpha=-2.0).add_(sq.unsqueeze(1))
    d2.fill_diagonal_(torch.inf)
    return torch.topk(d2, k, dim=1, largest=False).indices


def cdist64_topk(x: torch.Tensor, k: int) -> torch.Tensor:
    """Float64 ``cdist`` + ``topk``: the reference edges (ties are absent from this data)."""
    x64 = x.double()
    d = torch.cdist(x64, x64)
    d.fill_diagonal_(torch.inf)
    return torch.topk(d, k, dim=1, largest=False).indices


def width_table(device: str, n: int, dims: list[int], k: int, data: str, repeats: int) -> None:
    """``knn_graph`` against the fp32 GEMM + topk floor and a float64 cdist + topk, by width D."""
    print(f"\n## kNN by width on {device}: N={n}, k={k}, data={data!r}, best of {repeats}, one process")
    print(f"torch threads: {torch.get_num_threads()}")
    header = ["N", "D", "knn_graph s", "fp32 GEMM + topk s", "float64 cdist + topk s", "ratio knn / fp32"]
    print(row([*header, "edges agreeing with float64"]))
    print(row(["---"] * 7))
    for dim in dims:
        x = width_features(n, dim, data, device)
        runs: dict[str, Callable[[], torch.Tensor]] = {
            "knn": lambda x=x: knn_graph(x, k),
            "floor": lambda x=x: gemm_topk_floor(x, k),
            "f64": lambda x=x: cdist64_topk(x, k),
        }
        best = dict.fromkeys(runs, math.inf)
        out: dict[str, torch.Tensor] = {}
        for _ in range(repeats):  # interleaved, so that a busy machine slows all three alike
            for name, fn in runs.items():
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                out[name] = fn()
                if device == "cuda":
                    torch.cuda.synchronize()
                best[name] = min(best[name], time.perf_counter() - start)
        ref = out["f64"].cpu()
        ref_keys = set((torch.arange(n).repeat_interleave(k) * n + ref.reshape(-1)).tolist())
        ours = out["knn"].cpu()
        agree = len(ref_keys & set((ours[0] * n + ours[1]).tolist())) / len(ref_keys)
        exact = "" if agree == 1.0 and ours.shape[1] == len(ref_keys) else " MISMATCH"
        print(
            row(
                [
                    str(n),
                    str(dim),
                    f"{best['knn']:.3f}",
                    f"{best['floor']:.3f}",
                    f"{best['f64']:.3f}",
                    f"{best['knn'] / best['floor']:.2f}",
                    f"{agree:.6f}{exact}",
                ]
            ),
            flush=True,
        )
        del x, out, runs


def width_tables(device: str, max_dim: int, data: str, repeats: int) -> None:
    width_table(device, 1000, [d for d in WIDTHS if d <= max_dim], 50, data, repeats)
    width_table(device, 5000, [d for d in WIDTHS_N5000 if d <= max_dim], 50, data, repeats)


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small cases only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU tables (for a CUDA machine)")
    parser.add_argument("--profile", action="store_true", help="also print a profile of one n=5000 call")
    parser.add_argument(
        "--cpu-memory",
        type=int,
        metavar="N",
        help="only: time and peak memory of one n=N call (784 + 7x512) on the CPU with the CUDA memory budget",
    )
    parser.add_argument(
        "--width", action="store_true", help="only: the kNN width table (with --gpu-only: on CUDA)"
    )
    parser.add_argument(
        "--width-max-d", type=int, default=WIDTHS[-1], metavar="D", help="widest D in the width table"
    )
    parser.add_argument(
        "--width-data", choices=["relu", "clusters"], default="relu", help="data of the width table"
    )
    parser.add_argument("--width-repeats", type=int, default=2, help="timed runs per width-table cell")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.width:
        device = "cuda" if args.gpu_only else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--gpu-only: no CUDA device")
        width_tables(device, args.width_max_d, args.width_data, args.width_repeats)
        return
    if args.cpu_memory:
        cpu_memory_at_gpu_budget(args.cpu_memory, 7, 512)
        return
    if args.quick:
        cpu_versus_reference([(500, 5, 64)], args.repeats)
        scaling("cpu", [500, 1000], 5, 128, 5.0)
        return
    if not args.gpu_only:
        cpu_versus_reference([(1000, 5, 50), (1000, 5, 512), (2000, 5, 50), (2000, 5, 512)], args.repeats)
        torch_cluster_versus_gemm(2000, "cpu")
        scaling("cpu", [1000, 2000, 5000, 10000, 20000], 5, 512, 60.0)
        if args.profile:
            profile_flow(5000, 5, 512, "cpu")
    if torch.cuda.is_available():
        print(f"\nGPU: {torch.cuda.get_device_name()}")
        bfs_level_kernels([5000, 20000], 7, 512)
        scaling("cuda", [1000, 2000, 5000, 10000, 20000, 50000], 7, 512, 600.0)
        if args.profile:
            profile_flow(5000, 7, 512, "cuda")
        torch_cluster_versus_gemm(5000, "cuda")
    elif args.gpu_only:
        raise SystemExit("--gpu-only: no CUDA device")


if __name__ == "__main__":
    main()

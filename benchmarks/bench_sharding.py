"""``ricci_flow`` on 1 process x 1 thread against 2 processes x 1 thread (gloo), side by side.

Usage::

    python benchmarks/bench_sharding.py                 # N = 10,000, 784 + 5 x 512, k = 10
    python benchmarks/bench_sharding.py --n 3000        # a quicker run

Workload: N probe points ~ N(0, I_784) through a random He-initialised 784 -> 5 x 512 ReLU MLP,
``convention="baptista"``. Each run is a fresh process group on this machine (``torch.multiprocessing``
spawn, ``init_method="file://..."``): every rank builds the same layers, waits at a barrier, then times
one ``ricci_flow(..., process_group=WORLD)``. The single-process run is the same worker with a world of
one (no collectives). Reported per rank: wall seconds, CPU seconds, and the peak resident memory the
call added (Linux ``VmHWM`` after ``malloc_trim``). The results of the two runs are checked to be
identical. On a machine shared with other work the wall-clock speed-up is noisy; the CPU seconds per
rank show how the work was split.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import cpu_peak_growth  # noqa: E402
from _workloads import mlp_activations  # noqa: E402


def _worker(rank: int, world: int, n: int, k: int, tmp: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    from lightning_ricci import ricci_flow

    dist.init_process_group("gloo", init_method=f"file://{tmp}/init{world}", rank=rank, world_size=world)
    layers = mlp_activations(n, [512] * 5)
    ricci_flow([x[:200] for x in layers], 5, process_group=dist.group.WORLD)  # warm-up, collectives included
    dist.barrier()
    box: dict[str, object] = {}

    def call() -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        box["result"] = ricci_flow(layers, k, process_group=dist.group.WORLD)
        box["wall"], box["cpu"] = time.perf_counter() - wall, time.process_time() - cpu

    peak = cpu_peak_growth(call)
    result = box["result"]
    torch.save(
        {
            "wall": box["wall"],
            "cpu": box["cpu"],
            "peak_mb": peak,
            "coefficient": result.coefficient,  # type: ignore[attr-defined]
            "eta": result.eta,  # type: ignore[attr-defined]
            "local": result.local,  # type: ignore[attr-defined]
        },
        f"{tmp}/w{world}r{rank}.pt",
    )
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    runs = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for world in (1, 2):
            mp.spawn(_worker, args=(world, args.n, args.k, tmp), nprocs=world, join=True)
            runs[world] = [torch.load(f"{tmp}/w{world}r{r}.pt", weights_only=False) for r in range(world)]
    one, two = runs[1][0], runs[2]
    for rank in two:  # every rank returns the single-process result
        same = rank["coefficient"] == one["coefficient"] or (
            math.isnan(rank["coefficient"]) and math.isnan(one["coefficient"])
        )
        assert same and torch.equal(rank["eta"], one["eta"]), "sharded result differs"
        assert torch.allclose(rank["local"], one["local"], rtol=0, atol=1e-12, equal_nan=True)

    print(
        f"ricci_flow, N={args.n:,}, 784 + 5 x 512, k={args.k}, baptista; torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs visible (shared: wall times are noisy)"
    )
    print(f"{'':>22} {'wall s':>8} {'CPU s':>8} {'peak MB':>9}")

    def row(name: str, r: dict[str, float]) -> None:
        peak = "n/a" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        print(f"{name:>22} {r['wall']:8.2f} {r['cpu']:8.2f} {peak:>9}")

    row("1 process x 1 thread", one)
    for rank, r in enumerate(two):
        row(f"2 processes: rank {rank}", r)
    slowest = max(r["wall"] for r in two)
    busiest = max(r["cpu"] for r in two)
    print(f"speed-up (wall, slowest rank): {one['wall'] / slowest:.2f}x; results identical on every rank")
    print(f"speed-up (CPU s, busiest rank): {one['cpu'] / busiest:.2f}x")
    load = ", ".join(f"{a:.2f} -> {b:.2f}" for a, b in zip(load_before, os.getloadavg()))
    print(f"load average (1, 5, 15 min) before -> after: {load}")


if __name__ == "__main__":
    main()

"""One ``ricci_flow(layers, k=[...])`` scan against the same ks as separate calls, side by side.

Usage::

    python benchmarks/bench_k_scan.py                      # n = 2000, 784 + 5 x 512, k = 10, 30, 50
    python benchmarks/bench_k_scan.py --n 1000 --ks 10 20 50 100 --repeats 3

Workload: n probe points ~ N(0, I_784) through a random He-initialised 784 -> 5 x 512 ReLU MLP. The scan
searches the kNN graphs once, for the largest k, and reads every smaller k's graph off it; the BFS and
everything after it still run once per k. Both are timed in one process (best of ``--repeats``, the
order alternated, CPU seconds of this process); on a shared machine the ratio is the figure to read,
not the seconds. Every run
checks that the scan's coefficients equal the separate calls'.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
from _workloads import mlp_activations  # benchmarks/_workloads.py

from lightning_ricci import ricci_flow
from lightning_ricci.geometry import flow
from lightning_ricci.geometry.conventions import CONVENTION_SPECS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 30, 50])
    parser.add_argument("--convention", default="baptista", choices=["baptista", "hehl"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    layers = mlp_activations(args.n, [args.width] * args.depth)
    ricci_flow(layers, 5, convention=args.convention)  # warm-up

    scan_times, separate_times = [], []
    for rep in range(args.repeats):
        for which in ("scan", "separate") if rep % 2 == 0 else ("separate", "scan"):
            start = time.process_time()
            if which == "scan":
                scan = ricci_flow(layers, args.ks, convention=args.convention)
                scan_times.append(time.process_time() - start)
            else:
                separate = [ricci_flow(layers, k, convention=args.convention) for k in args.ks]
                separate_times.append(time.process_time() - start)
    for got, want in zip(scan.results, separate):
        same = got.coefficient == want.coefficient or (
            math.isnan(got.coefficient) and math.isnan(want.coefficient)
        )
        assert same and torch.equal(got.eta_connected, want.eta_connected), "scan and separate calls differ"

    # Where the difference comes from: the kNN stage alone, scan (largest k + its edge distances +
    # reading the smaller ks off it) against one search per k.
    spec = CONVENTION_SPECS[args.convention]  # type: ignore[index]
    start = time.process_time()
    flow._knn_graphs(layers, args.ks, spec, "auto", None, None)
    knn_scan = time.process_time() - start
    start = time.process_time()
    for k in args.ks:
        flow._knn_graphs(layers, [k], spec, "auto", None, None)
    knn_sep = time.process_time() - start

    t_scan, t_sep = min(scan_times), min(separate_times)
    print(
        f"n={args.n}, 784 + {args.depth} x {args.width}, convention={args.convention}, ks={args.ks}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', '-')}; best of {args.repeats}"
    )
    print(f"{'one scan call':>24} {t_scan:8.2f} s")
    print(f"{'sum of separate calls':>24} {t_sep:8.2f} s")
    print(f"{'scan / separate':>24} {t_scan / t_sep:8.2f}")
    print(
        f"{'kNN stage: scan':>24} {knn_scan:8.2f} s   separate {knn_sep:.2f} s   ratio {knn_scan / knn_sep:.2f}"
    )
    print(
        f"coefficients per k: {[round(float(v), 4) for v in scan.coefficients]}, "
        f"spread {scan.spread:.4f}, sign agreement {scan.sign_agreement:.2f}"
    )


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The checks that need a CUDA machine, in one run: the geometry tests (their CUDA tests run instead of
# skipping), the callback tests when Lightning is installed, the benchmark's GPU tables with a
# profile, and the kNN width table (knn_graph against a plain fp32 GEMM + topk, N = 1000 and 5000). Needs torch with CUDA, scipy and (for the fused BFS) Triton; installs nothing, so it also
# runs on a machine without network access. Usage: bash benchmarks/gpu_check.sh [OUTPUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-check}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$out/device.txt"
python -c "import triton; print('triton', triton.__version__)" 2>&1 | tail -1 | tee -a "$out/device.txt"
tests="tests/test_knn.py tests/test_knn_scale.py tests/test_knn_backends.py tests/test_geodesics.py tests/test_triton_bfs.py tests/test_flow.py"
if python -c "import lightning" 2>/dev/null; then
    tests="$tests tests/test_callback.py"
else
    echo "lightning is not installed: tests/test_callback.py left out" | tee -a "$out/device.txt"
fi
# shellcheck disable=SC2086
python -m pytest -q -p no:cacheprovider $tests 2>&1 | tee "$out/tests.txt" | tail -8
python benchmarks/bench_ricci_flow.py --gpu-only --profile 2>&1 | tee "$out/bench.txt"
python benchmarks/bench_ricci_flow.py --gpu-only --width --width-repeats 3 2>&1 | tee "$out/width.txt"
python benchmarks/bench_ricci_flow.py --gpu-only --width --width-data clusters --width-max-d 32768 2>&1 \
    | tee "$out/width_clusters.txt"

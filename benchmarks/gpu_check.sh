#!/usr/bin/env bash
# The checks that need a CUDA machine, in one run: the test suite (its CUDA tests run instead of
# skipping) and the benchmark's GPU tables. Usage: bash benchmarks/gpu_check.sh [OUTPUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-check}"
mkdir -p "$out"
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$out/device.txt"
python -m pip install -q -e ".[dev]" 2>&1 | tail -2
PYTHONUNBUFFERED=1 python -m pytest -q -x tests/test_knn.py tests/test_geodesics.py tests/test_flow.py \
    tests/test_callback.py 2>&1 | tee "$out/tests.txt" | tail -5
PYTHONUNBUFFERED=1 python benchmarks/bench_ricci_flow.py 2>&1 | tee "$out/bench.txt"

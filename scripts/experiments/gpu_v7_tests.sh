#!/usr/bin/env bash
# The GPU suite after the forward dispatch change (one device call; logs under $OUT, or ./out):
#   PYTHONPATH=src bash scripts/experiments/gpu_v7_tests.sh
# test_hopper.py verbose first (a hang names its test), then the rest but the two-GPU ring tests
# (scripts/experiments/ring_gpu.sh runs those), then the forward timings at d=128 and 64
set -u
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
timeout 200 python3 -m pytest -v -n 12 -p no:cacheprovider tests/test_hopper.py > "$OUT/pytest-hopper.log" 2>&1
tail -2 "$OUT/pytest-hopper.log"; grep -E "FAILED" "$OUT/pytest-hopper.log" | head -20
timeout 240 python3 -m pytest -q -n 12 -p no:cacheprovider tests/ --ignore=tests/test_hopper.py \
    --ignore=tests/test_distributed.py > "$OUT/pytest.log" 2>&1
tail -2 "$OUT/pytest.log"; grep -E "^FAILED" "$OUT/pytest.log" | head -20
timeout 100 python3 scripts/kernel_bench.py compare --modes fwd --json "$OUT/compare-fwd.json" > "$OUT/compare-fwd.log" 2>&1
grep -E "ours|cudnn" "$OUT/compare-fwd.log"

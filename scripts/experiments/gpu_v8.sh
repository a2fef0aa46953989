#!/usr/bin/env bash
# Eighth session (one H200), two device calls, each under the 10-minute limit:
#   PYTHONPATH=src bash scripts/experiments/gpu_v8.sh tests    (logs under $OUT, or ./out)
#   PYTHONPATH=src bash scripts/experiments/gpu_v8.sh bench
# tests: the GPU suite with the warp-specialized dK/dV (kernels/hopper_bwd_ws_kernel.py) and the
#        Gluon launches through the cached launcher (kernels/launch.py: LightDescriptor)
# bench: host microseconds per call (scripts/host_launch.py, bitwise fast-on/fast-off check
#        included), then compare (fwd, fwd+bwd against SDPA flash and cuDNN)
set -u
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
case "${1:-tests}" in
tests)
    timeout 200 python3 -m pytest -v -n 12 -p no:cacheprovider tests/test_hopper.py tests/test_launch.py \
        tests/test_launch_gluon.py > "$OUT/pytest-hopper.log" 2>&1
    tail -2 "$OUT/pytest-hopper.log"; grep -E "FAILED" "$OUT/pytest-hopper.log" | head -20
    timeout 300 python3 -m pytest -q -n 12 -p no:cacheprovider tests/ --ignore=tests/test_hopper.py \
        --ignore=tests/test_launch.py --ignore=tests/test_launch_gluon.py > "$OUT/pytest.log" 2>&1
    tail -2 "$OUT/pytest.log"; grep -E "^FAILED" "$OUT/pytest.log" | head -20
    ;;
bench)
    timeout 130 python3 scripts/host_launch.py > "$OUT/host.log" 2>&1; grep -E "RESULT|pyfa|sdpa|saves|cache" "$OUT/host.log" | head -30
    timeout 200 python3 scripts/kernel_bench.py compare --json "$OUT/compare.json" > "$OUT/compare.log" 2>&1
    grep -E "ours|sdpa" "$OUT/compare.log"
    ;;
esac

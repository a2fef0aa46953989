#!/usr/bin/env bash
# The seventh session's GPU check and bench of the warp-specialized Gluon forward (one device
# call, under the 10-minute limit; logs under $OUT, or ./out):
#   PYTHONPATH=src bash scripts/experiments/gpu_v7.sh
# 1. tests/test_hopper.py verbose (a hang, i.e. a wrong barrier phase, names its test), then
#    the rest of the GPU suite; the bench runs only if both pass
# 2. ours vs SDPA flash / cuDNN (kernel_bench.py compare, --json for the geomeans)
# 3. issue 5's features table with hopper_features off and on (now the warp-specialized kernel)
set -u
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
timeout 200 python3 -m pytest -v -n 8 -p no:cacheprovider tests/test_hopper.py > "$OUT/pytest-hopper.log" 2>&1
rc1=$?
tail -3 "$OUT/pytest-hopper.log"; grep -E "FAILED" "$OUT/pytest-hopper.log" | head -20
timeout 240 python3 -m pytest -q -n 8 -p no:cacheprovider tests/ --ignore=tests/test_hopper.py \
    --ignore=tests/test_distributed.py > "$OUT/pytest.log" 2>&1
rc2=$?
tail -3 "$OUT/pytest.log"; grep -E "^FAILED" "$OUT/pytest.log" | head -20
[ $rc1 = 0 ] && [ $rc2 = 0 ] || exit 1
timeout 150 python3 scripts/kernel_bench.py compare --json "$OUT/compare.json" > "$OUT/compare.log" 2>&1
grep ours "$OUT/compare.log"
(timeout 60 python3 scripts/kernel_bench.py features --seqlens 4096 16384 --modes fwd
 PYFLASHATTN_CONFIG='{"hopper_features": 1}' timeout 60 python3 scripts/kernel_bench.py features \
     --seqlens 4096 16384 --modes fwd) > "$OUT/features.log" 2>&1
grep -E "causal|window" "$OUT/features.log" | head -28

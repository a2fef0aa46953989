#!/usr/bin/env bash
# The prepared GPU work of the sixth session, in two device calls (each under the 10-minute limit):
#   PYTHONPATH=src bash scripts/experiments/next_gpu_session.sh tests    (logs under $OUT, or ./out)
#   PYTHONPATH=src bash scripts/experiments/next_gpu_session.sh bench
# tests: the GPU suite, which runs every Hopper case with the Gluon dK/dV kernel on and off and
#        the forward's varlen / softcap / ALiBi / window / empty-row paths on (tests/test_hopper.py);
#        if it passes, turn hopper_dkdv_block_n on in configs.py's d=128 row and hopper_features on
# bench: 1. forward+backward at d=128 with the Gluon dK/dV on, against the table (off), same run
#        2. issue 5's features table with hopper_features off and on
#        3. the warp-specialized forward: each config checked in a process of its own (a wrong
#           mbarrier phase hangs, hence the timeouts), then the correct ones timed against cuDNN
set -u
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
case "${1:-tests}" in
tests)
    # the new Gluon paths first and verbose, so that a hang (a wrong barrier phase) names its test
    timeout 240 python3 -m pytest -v -n 8 -p no:cacheprovider tests/test_hopper.py > "$OUT/pytest-hopper.log" 2>&1
    tail -3 "$OUT/pytest-hopper.log"; grep -E "FAILED" "$OUT/pytest-hopper.log" | head -20
    timeout 320 python3 -m pytest -q -n 8 -p no:cacheprovider tests/ --ignore=tests/test_hopper.py \
        > "$OUT/pytest.log" 2>&1
    tail -3 "$OUT/pytest.log"; grep -E "^FAILED" "$OUT/pytest.log" | head -20
    ;;
bench)
    (timeout 60 python3 scripts/kernel_bench.py compare --head-dims 128 --modes fwdbwd
     PYFLASHATTN_CONFIG='{"hopper_dkdv_block_n": 64}' timeout 60 python3 scripts/kernel_bench.py compare \
         --head-dims 128 --modes fwdbwd) > "$OUT/dkdv-compare.log" 2>&1
    grep ours "$OUT/dkdv-compare.log"
    (timeout 90 python3 scripts/kernel_bench.py features --seqlens 4096 16384 --modes fwd
     PYFLASHATTN_CONFIG='{"hopper_features": 1}' timeout 90 python3 scripts/kernel_bench.py features \
         --seqlens 4096 16384 --modes fwd) > "$OUT/features.log" 2>&1
    grep -E "causal|varlen|window" "$OUT/features.log" | head -24
    ok=""
    for c in 128,2 64,3; do
        timeout 60 python3 scripts/experiments/gluon_fwd_ws.py --check-only --configs "$c" >> "$OUT/ws-check.log" 2>&1
        rc=$?; echo "$c rc=$rc" >> "$OUT/ws-check.log"; [ $rc = 0 ] && ok="$ok $c"
    done
    grep -E "rc=|err" "$OUT/ws-check.log" | tail -12
    [ -n "$ok" ] && timeout 120 python3 scripts/experiments/gluon_fwd_ws.py --configs "$ok" > "$OUT/ws-time.log" 2>&1
    grep TFLOP "$OUT/ws-time.log" 2>/dev/null
    ;;
esac

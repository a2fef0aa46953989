#!/usr/bin/env bash
# Prepared in the eighth session, run in the ninth (docs/performance.md v9; one H200; two device calls, each under the
# 10-minute limit):
#   PYTHONPATH=src bash scripts/experiments/gpu_v9.sh tests    (logs under $OUT, or ./out)
#   PYTHONPATH=src bash scripts/experiments/gpu_v9.sh bench
# tests: the backward plan (kernels/bwd.py BackwardPlan, opt-in: PYFLASHATTN_BWD_PLAN=1) on a GPU
#        for the first time: its own tests (bitwise against the general path), then the suite
#        with it on
# bench: host time with the plan off and on (host_engine.py, host_launch.py), then compare with
#        it on (the 1k rows are host-bound: v8 in docs/performance.md), the GPT-2 step at 4k off and on
set -u
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
case "${1:-tests}" in
tests)
    timeout 120 python3 -m pytest -v -p no:cacheprovider tests/test_bwd_plan.py > "$OUT/pytest-plan.log" 2>&1
    tail -2 "$OUT/pytest-plan.log"; grep -E "FAILED" "$OUT/pytest-plan.log" | head
    PYFLASHATTN_BWD_PLAN=1 timeout 420 python3 -m pytest -q -n 12 -p no:cacheprovider tests/ \
        --ignore=tests/test_distributed.py > "$OUT/pytest.log" 2>&1
    tail -2 "$OUT/pytest.log"; grep -E "^FAILED" "$OUT/pytest.log" | head -20
    ;;
bench)
    export PYTHONPATH="${PYTHONPATH:-src}:scripts/experiments"
    for plan in 0 1; do
        echo "== PYFLASHATTN_BWD_PLAN=$plan"
        PYFLASHATTN_BWD_PLAN=$plan timeout 60 python3 scripts/experiments/host_engine.py | tail -10
    done
    PYFLASHATTN_BWD_PLAN=1 timeout 130 python3 scripts/host_launch.py > "$OUT/host.log" 2>&1
    grep -E "RESULT|pyfa|sdpa|saves" "$OUT/host.log" | head -30
    PYFLASHATTN_BWD_PLAN=1 timeout 200 python3 scripts/kernel_bench.py compare --json "$OUT/compare.json" \
        > "$OUT/compare.log" 2>&1
    grep -E "ours|sdpa" "$OUT/compare.log"
    # the GPT-2 step at 4k (host-bound in v7/v8) with the plan off and on, SDPA's backends beside
    for plan in 0 1; do
        PYFLASHATTN_BWD_PLAN=$plan timeout 120 python3 examples/train_gpt.py --compare sdpa_flash,sdpa_cudnn,pyfa \
            --seqlen 4096 --batch-size 2 --steps 30 >> "$OUT/train-plan$plan.log" 2>&1
        echo "== plan $plan"; grep -E " step " "$OUT/train-plan$plan.log" | tail -3
    done
    ;;
esac

#!/usr/bin/env bash
# Prepared for the next session (one H200; two device calls, each under the 10-minute limit):
#   PYTHONPATH=src bash scripts/experiments/gpu_next.sh tests    (logs under $OUT, or ./out)
#   PYTHONPATH=src bash scripts/experiments/gpu_next.sh bench
# tests: the GPU suite after the Gluon forwards' shared helpers (seventh session's last commit:
#        checked offline to compile to the same PTX instructions, not run on a GPU)
# bench: 1. compare on this machine (fwd, fwd+bwd: v7's numbers came from the two-GPU machine,
#           whose 1k timings looked host-bound)
#        2. host microseconds per call, where the Gluon launches (TMA descriptors built per
#           call, Gluon's own launcher) are the suspects at 1k
#        3. the GPT-2 step at 4k and 16k with the v7 kernels (issue 7)
set -u
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
case "${1:-tests}" in
tests)
    timeout 200 python3 -m pytest -v -n 12 -p no:cacheprovider tests/test_hopper.py > "$OUT/pytest-hopper.log" 2>&1
    tail -2 "$OUT/pytest-hopper.log"; grep -E "FAILED" "$OUT/pytest-hopper.log" | head -20
    timeout 300 python3 -m pytest -q -n 12 -p no:cacheprovider tests/ --ignore=tests/test_hopper.py \
        > "$OUT/pytest.log" 2>&1
    tail -2 "$OUT/pytest.log"; grep -E "^FAILED" "$OUT/pytest.log" | head -20
    ;;
bench)
    timeout 150 python3 scripts/kernel_bench.py compare --json "$OUT/compare.json" > "$OUT/compare.log" 2>&1
    grep ours "$OUT/compare.log"
    timeout 120 python3 scripts/host_launch.py > "$OUT/host.log" 2>&1; grep -iE "us|fast" "$OUT/host.log" | head -20
    for s in "4096 --batch-size 2 --steps 30" "16384 --batch-size 1 --steps 15"; do
        timeout 150 python3 examples/train_gpt.py --compare sdpa_flash,sdpa_cudnn,pyfa --seqlen $s \
            >> "$OUT/train.log" 2>&1
    done
    grep -iE "step|ms" "$OUT/train.log" | tail -12
    ;;
esac

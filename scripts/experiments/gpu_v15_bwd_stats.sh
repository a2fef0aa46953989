# Branch experiment/bwd-stats: the Gluon dK/dV kernels (one warpgroup, warp-specialized, fused)
# read lse (in base 2) and delta from a padded (b, h, 2, n) buffer that the preprocess writes,
# without bounds masks (hopper_bwd_stats, off in the table). Why: per step each thread loaded
# its 16 query columns' lse and delta with masks and 64-bit addresses, ~100 of the unmasked
# step's 566 SASS instructions. Offline (d=128 causal, one warpgroup): the unmasked step
# 566 -> 446 instructions, the masked 659 -> 548, spill loads 28 -> 14; d=128 without causal no
# spills left (stack 8 -> 0); fused 3536 -> 3176 SASS, stack 224 -> 184; d=64 -7 to -12 %. The
# PTX of every default build unchanged but for its parameter list (52 of 52). Written in the
# fourteenth session, never run on a GPU. One call (~4 min warm): float64 tests (gradients and
# statistics poisoned; any failure: stop), then forward+backward off / on in one process.
#   bash scripts/experiments/gpu_v15_bwd_stats.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 240 python3 -m pytest -q -p no:cacheprovider -x "$@" 2>&1 | tail -4; }
run tests/test_hopper.py -k "padded_stats and bf16" > $OUT/t1.log &
run tests/test_hopper.py -k "padded_stats and fp16" > $OUT/t2.log &
PYFLASHATTN_CONFIG='{"hopper_bwd_stats": 1}' run tests/test_bwd_plan.py tests/test_bwd_into.py > $OUT/t3.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -2 $f; done
# the float64 tests gate the timing; the plan tests (t3) run with the switch on for what they
# show, and their assumptions about the launches may need updating rather than the code
grep -q -E "failed|error" $OUT/t1.log $OUT/t2.log && { echo "tests failed: no timing"; exit 1; }
timeout 240 python3 scripts/kernel_bench.py sweep-bwd --head-dims 64 128 --seqlens 1024 4096 16384 \
    --candidates scripts/candidates/bwd-stats.json 2>&1 | tee $OUT/sweep-bwd-stats-v15.log

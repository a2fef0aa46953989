# Branch experiment/gluon-dq: the backward's dQ by a Gluon kernel (hopper_dq_kernel) instead of
# Triton's, where the dQ kernel runs (causal; d=64; d=128 under 2k keys; deterministic): one
# warpgroup per 64 rows, or warp-specialized (hopper_dq_ws: two consumers of 64 rows sharing the
# K/V tiles a producer warp streams). Offline at d=128, 64-key tiles, 2 stages: 179 registers,
# no stack, 98 KB, 2 full waits; warp-specialized 131 KB, 6 full waits for 40 HGMMAs. One call (~7 min on a fresh machine): the float64 tests first (a kernel never run
# on a GPU), the backward plan with it on, then forward+backward with and without it in one
# process (sweep-bwd), d 64 and 128, causal and not.
#   bash scripts/experiments/gpu_v13_dq.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 240 python3 -m pytest -q -p no:cacheprovider -x "$@" 2>&1 | tail -5; }
run tests/test_hopper.py -k "gluon_dq and bf16" > $OUT/t1.log &
run tests/test_hopper.py -k "gluon_dq and fp16" > $OUT/t2.log &
PYFLASHATTN_CONFIG='{"hopper_dq_block_n": 64}' run tests/test_bwd_plan.py > $OUT/t3.log &
PYFLASHATTN_CONFIG='{"hopper_dq_block_n": 64}' run tests/test_attention.py -k gpu > $OUT/t4.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -3 $f; done
grep -q failed $OUT/t1.log $OUT/t2.log && { echo "float64 tests failed: no timing"; exit 1; }
timeout 240 python3 scripts/kernel_bench.py sweep-bwd --head-dims 64 128 --seqlens 1024 4096 16384 \
    --candidates scripts/candidates/bwd-gluon-dq.json 2>&1 | tee $OUT/sweep-bwd-gluon-dq-v13.log

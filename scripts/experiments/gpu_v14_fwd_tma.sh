# Branch experiment/fwd-tma-store: the warp-specialized forward's out tiles by TMA stores through
# shared memory (hopper_ws_tma_store, off in the table) instead of pointer stores from registers,
# so that a consumer warpgroup starts its next tile while its last tile's store runs. Why: the
# forward trails cuDNN most at 1k (0.86-0.95x, v13), where a tile has the fewest key blocks to
# hide its epilogue behind. Offline (d=128): 197 KB of shared memory (164 before), the same
# registers; Triton placed partition-scoped barriers (bar.sync 0/2, 128) around the staging
# tile. One call (~4 min on a fresh machine): the float64 tests with out poisoned (any failure:
# stop), then the A/B in one process at d 64 and 128, causal or not, 1k-16k.
#   bash scripts/experiments/gpu_v14_fwd_tma.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 240 python3 -m pytest -q -p no:cacheprovider -x "$@" 2>&1 | tail -4; }
run tests/test_hopper.py -k "tma_store and bf16" > $OUT/t1.log &
run tests/test_hopper.py -k "tma_store and fp16" > $OUT/t2.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -2 $f; done
grep -q failed $OUT/t?.log && { echo "tests failed: no timing"; exit 1; }
timeout 200 python3 scripts/kernel_bench.py sweep-fwd --head-dims 64 128 --seqlens 1024 2048 4096 16384 \
    --candidates scripts/candidates/fwd-tma-store.json 2>&1 | tee $OUT/sweep-fwd-tma-store-v14.log

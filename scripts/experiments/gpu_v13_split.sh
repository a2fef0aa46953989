# Branch experiment/split-head-dim: the Triton kernels with a split head dim (192 = 128 + 64,
# 96 = 64 + 32) instead of one block padded to a power of two. Offline (sm_90 builds, d=192 with
# the table's configs): forward 254 -> 226 registers and 197 -> 147 KB of shared memory, dK/dV
# stack 240 -> 8 B, dQ 255 -> 240 registers; a quarter less matmul work. One call (~8 min on a
# fresh machine): the GPU tests at d 96 and 192, then the A/B and config sweeps in one process
# each (split_head_dim off = main's kernels), then the peers at those head dims.
#   bash scripts/experiments/gpu_v13_split.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 240 python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | tail -4; }
run tests/test_attention.py -k "D96 or D192 or D40 or D72" > $OUT/t1.log &
run tests/test_features.py tests/test_block_sparse.py -k "not flex" > $OUT/t2.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -2 $f; done
timeout 120 python3 scripts/kernel_bench.py sweep-fwd --head-dims 96 192 --seqlens 1024 4096 16384 \
    --candidates scripts/candidates/fwd-split-d.json 2>&1 | tee $OUT/sweep-fwd-split-d-v13.log
timeout 150 python3 scripts/kernel_bench.py sweep-bwd --head-dims 96 192 --seqlens 1024 4096 16384 \
    --candidates scripts/candidates/bwd-split-d.json 2>&1 | tee $OUT/sweep-bwd-split-d-v13.log
timeout 100 python3 scripts/kernel_bench.py compare --head-dims 96 192 2>&1 | tee $OUT/h200-compare-split-d-v13.log | grep -c ms

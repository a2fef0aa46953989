# What the seventeenth session left of its dropout work for a GPU call (v17 item 8 ran the rest):
# d=64's Triton dQ tile under dropout. With the wgmma-order map a 32-key tile draws its whole
# 64-key group and keeps half (offline: stack 136 B at 4 warps; 64 keys at 8 warps and 32 keys
# at 8 warps spill nothing). Candidates in scripts/experiments/dropout_v17.py (SWEEP), A/B/C/A
# in one process; a winner goes into the table as a dropout-only dQ tile (as dropout_block_n_kv).
#   bash scripts/experiments/gpu_v18.sh     (~2 minutes; logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_features.py tests/test_hopper.py -k "dropout or philox" \
    2>&1 | tail -2 | tee $OUT/tests.log
grep -q -E "failed|error" $OUT/tests.log && { echo "tests failed: no timing"; exit 1; }
timeout 200 python3 scripts/experiments/dropout_v17.py --sweep 2>&1 | grep -v -i warn | tee $OUT/dropout-dq-tiles-v18.log

# v11, third call: the Gluon forwards' program order (query blocks fastest, new; heads fastest,
# before), A/B in one process (the config switch hopper_fwd_heads_fastest existed in commit fc521c9 only:
# the old order measured slower everywhere and was removed); the GPU tests of the forwards; then the
# peers' comparison
export PYTHONPATH=src
timeout 150 python3 scripts/kernel_bench.py sweep-fwd --seqlens 1024 2048 4096 16384 --candidates scripts/candidates/fwd-order-v11.json 2>&1 | tee $OUT/sweep-fwd-order-v11.log
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_hopper.py \
    -k "varlen or window or (against_float64 and fwd1wg-dkdvgluon) or (against_float64 and fwdws-dkdvws) or more_heads" 2>&1 | tail -15 > $OUT/pytest-v11-fwd.log
tail -3 $OUT/pytest-v11-fwd.log
timeout 220 python3 scripts/kernel_bench.py compare 2>&1 | tee $OUT/h200-compare-v11.log | grep -c ms

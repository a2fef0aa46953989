# v13, the table as merged (Gluon dQ at d 64 / 128; split head dim with d 96 / 192 / 256 rows
# re-tuned): the tests that failed in call 4 (test bugs) and the head dims whose rows changed,
# then the peers' comparison on a quiet GPU at every head dim.
#   bash scripts/experiments/gpu_v13_call5.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 200 python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | tail -6; }
run tests/test_hopper.py -k "dq_launch_binds or fused_dq_as_shipped" > $OUT/t1.log &
run tests/test_attention.py -k "gpu_sizes and (D96 or D192 or D256 or D72)" > $OUT/t2.log &
run tests/test_configs.py > $OUT/t3.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -3 $f; done
timeout 200 python3 -u scripts/kernel_bench.py compare 2>&1 > $OUT/h200-compare-v13.log
timeout 150 python3 -u scripts/kernel_bench.py compare --head-dims 96 192 256 2>&1 > $OUT/h200-compare-v13-d96-d192-d256.log
grep -c ms $OUT/h200-compare-v13*.log

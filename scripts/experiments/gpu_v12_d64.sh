# v12, last call: the one-warpgroup Gluon dK/dV shipped at d=64 (fused-reach-v12.log). The peers'
# comparison at d=64 (bf16) and in fp16 (both head dims) on a quiet GPU, then the GPU tests that
# run the shipped d=64 backward, four pytest processes at once
export PYTHONPATH=src
timeout 100 python3 scripts/kernel_bench.py compare --head-dims 64 2>&1 | tee $OUT/h200-compare-v12-d64.log | grep -c ms
timeout 150 python3 scripts/kernel_bench.py compare --dtype float16 2>&1 | tee $OUT/h200-compare-v12-fp16.log | grep -c ms
run() { timeout 330 python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | tail -6; }
run tests/test_attention.py > $OUT/t1.log &
run tests/test_features.py tests/test_bwd_plan.py > $OUT/t2.log &
run tests/test_hopper.py -k "D64 or d64 or 64-" > $OUT/t3.log &
run tests/test_api.py tests/test_bwd_into.py tests/test_nn.py tests/test_cuda_graphs.py > $OUT/t4.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -3 $f; done

# v15, after merging the padded statistics (hopper_bwd_stats) and varlen in the Gluon backward
# (hopper_bwd_varlen), both on: first whether a step synchronizes with the GPU and its host
# time (host_sync_check.py), then the GPU suite in eight pytest processes on the new table.
#   bash scripts/experiments/gpu_v15_suite.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
timeout 90 python3 scripts/experiments/host_sync_check.py 2>&1 | grep -v -i warn | tee $OUT/host-sync-v15.log
run() { timeout 420 python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | tail -8; }
run tests/test_hopper.py -k "against_float64 and bf16 and not varlen and not window and not softcap and not gluon_dq" > $OUT/t1.log &
run tests/test_hopper.py -k "against_float64 and fp16 and not varlen and not window and not softcap and not gluon_dq" > $OUT/t2.log &
run tests/test_hopper.py -k "not (against_float64 and (bf16 or fp16) and not varlen and not window and not softcap) and not gluon_dq" > $OUT/t3.log &
run tests/test_attention.py tests/test_bwd_plan.py tests/test_api.py tests/test_bwd_into.py tests/test_configs.py > $OUT/t4.log &
run tests/test_features.py > $OUT/t5.log &
run tests/test_cuda_graphs.py tests/test_launch.py tests/test_launch_gluon.py > $OUT/t6.log &
run tests/test_block_sparse.py tests/test_nn.py > $OUT/t7.log &
run tests/test_hopper.py -k gluon_dq > $OUT/t8.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -4 $f; done

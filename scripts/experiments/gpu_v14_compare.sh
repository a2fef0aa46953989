# v14 on the final table: against the peers (bf16, then fp16, each in a process of its own) and
# issue 5's features at 4k and 16k.
#   bash scripts/experiments/gpu_v14_compare.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
timeout 250 python3 scripts/kernel_bench.py compare 2>&1 | tee $OUT/compare-v14.log | grep -c TFLOP
timeout 90 python3 scripts/kernel_bench.py features --seqlens 4096 16384 --modes fwd fwdbwd 2>&1 | tee $OUT/features-v14.log
timeout 230 python3 scripts/kernel_bench.py compare --dtype float16 2>&1 | tee $OUT/compare-v14-fp16.log | grep -c TFLOP

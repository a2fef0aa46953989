# v14: ALiBi on the Gluon forwards (hopper_alibi, off since v7: +35 % at 4k on the Gluon kernel
# but 21 % slower at 16k than the Triton forward) re-measured with v14's forwards: issue 5's
# features bench with the switch off, then on, each in a process of its own.
#   bash scripts/experiments/gpu_v14_alibi.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
for sw in 0 1; do
    echo "== hopper_alibi=$sw" | tee -a $OUT/alibi-v14.log
    PYFLASHATTN_CONFIG="{\"hopper_alibi\": $sw}" timeout 120 python3 scripts/kernel_bench.py features \
        --seqlens 4096 16384 --modes fwd 2>&1 | grep -E "causal |alibi|#" | tee -a $OUT/alibi-v14.log
done

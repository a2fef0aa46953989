# Branch experiment/alibi-gluon-bwd: ALiBi in the Gluon backward kernels (dK/dV one-warpgroup,
# warp-specialized and fused; dQ both), switched by hopper_bwd_alibi (off in the table): the
# bias of softcap's place in the score path (hopper_bwd_kernel._scores), the slope per query
# head (_head_scales). Why: with ALiBi forward+backward costs +54 % over dense causal at 4k
# (v14), the backward on Triton's kernels. Offline d=128: dK/dV one-warpgroup stack 48 -> 64 B
# under causal, warp-specialized 104 -> 192 B; the PTX of every build without ALiBi the same
# but for its parameter list (28 of 28, scripts/ptx_snapshot.py). One call (~3 min warm): the
# float64 tests (any failure: stop), then forward+backward with ALiBi, the switch off and on,
# each in a process of its own.
#   bash scripts/experiments/gpu_v14_alibi_bwd.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 200 python3 -m pytest -q -p no:cacheprovider -x "$@" 2>&1 | tail -4; }
run tests/test_hopper.py -k "alibi_gluon_backward and bf16" > $OUT/t1.log &
run tests/test_hopper.py -k "alibi_gluon_backward and fp16" > $OUT/t2.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -2 $f; done
grep -q -E "failed|error" $OUT/t?.log && { echo "tests failed: no timing"; exit 1; }
for sw in 0 1; do
    echo "== hopper_bwd_alibi=$sw" | tee -a $OUT/alibi-gluon-bwd-v14.log
    PYFLASHATTN_CONFIG="{\"hopper_bwd_alibi\": $sw}" timeout 100 python3 scripts/kernel_bench.py features \
        --seqlens 4096 16384 --modes fwdbwd 2>&1 | grep -E "causal |alibi|#" | tee -a $OUT/alibi-gluon-bwd-v14.log
done

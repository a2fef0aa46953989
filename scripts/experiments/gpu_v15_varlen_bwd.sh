# Branch experiment/varlen-gluon-bwd: varlen in the Gluon backward kernels (dK/dV one-warpgroup,
# warp-specialized and fused; dQ both), switched by hopper_bwd_varlen (off in the table): each
# program finds its sequence from cu_seqlens as the forward's do (_program, _dkdv_program),
# returns early past a shorter sequence's end, and a dQ row block that sees no key runs one
# fully masked block. Why: varlen costs +18 % forward+backward at 4k and +14 % at 16k over dense
# causal (v14), its backward on Triton's kernels (issue 5 asks 10 %). Offline: the PTX of every
# build without varlen is main's but for its parameter list (scripts/ptx_snapshot.py); written
# in the fourteenth session, never run on a GPU. One call (~4 min on a fresh machine): the
# float64 tests (NaN-poisoned gradients; any failure: stop), then forward+backward with varlen,
# the switch off and on, each in a process of its own.
#   bash scripts/experiments/gpu_v15_varlen_bwd.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 240 python3 -m pytest -q -p no:cacheprovider -x "$@" 2>&1 | tail -4; }
run tests/test_hopper.py -k "varlen_gluon_backward and bf16" > $OUT/t1.log &
run tests/test_hopper.py -k "varlen_gluon_backward and fp16" > $OUT/t2.log &
run tests/test_hopper.py -k "launch_binds or varlen_against" > $OUT/t3.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -2 $f; done
grep -q -E "failed|error" $OUT/t?.log && { echo "tests failed: no timing"; exit 1; }
for sw in 0 1; do
    echo "== hopper_bwd_varlen=$sw" | tee -a $OUT/varlen-gluon-bwd-v15.log
    PYFLASHATTN_CONFIG="{\"hopper_bwd_varlen\": $sw}" timeout 100 python3 scripts/kernel_bench.py features \
        --seqlens 4096 16384 --modes fwdbwd 2>&1 | grep -E "causal |varlen|#" | tee -a $OUT/varlen-gluon-bwd-v15.log
done

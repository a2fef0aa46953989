# Branch experiment/softcap-gluon-bwd: softcap in the Gluon backward kernels (dK/dV one-warpgroup,
# warp-specialized and fused; dQ both), switched by hopper_bwd_softcap (off in the table). Why:
# with softcap the forward costs +21 % over dense at 4k but forward+backward +65 %, the backward
# falling back to Triton's kernels (v13 item 3). The kernels' signatures gained softcap_scale
# (an f32 parameter: the PTX of every non-softcap build differs only in its parameter list,
# scripts/ptx_snapshot.py); offline d=128: dK/dV stack 8 -> 32 B (causal 48 -> 144), WS 56 -> 80,
# dQ none. One call (~5 min on a fresh machine): first the GPU tests that launch the changed
# kernels (any failure: stop), then forward+backward with softcap, the switch off and on, each in
# a process of its own (the table's dense kernels beside as the reference).
#   bash scripts/experiments/gpu_v14_softcap_bwd.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 300 python3 -m pytest -q -p no:cacheprovider -x "$@" 2>&1 | tail -4; }
run tests/test_hopper.py -k "softcap_gluon_backward and bf16" > $OUT/t1.log &
run tests/test_hopper.py -k "softcap_gluon_backward and fp16" > $OUT/t2.log &
run tests/test_hopper.py -k "gluon_dq_against and bf16 and stages2" > $OUT/t3.log &
run tests/test_attention.py tests/test_bwd_plan.py -k "gpu or plan" > $OUT/t4.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -2 $f; done
grep -q failed $OUT/t?.log && { echo "tests failed: no timing"; exit 1; }
for sw in 0 1; do
    echo "== hopper_bwd_softcap=$sw" | tee -a $OUT/softcap-gluon-bwd-v14.log
    PYFLASHATTN_CONFIG="{\"hopper_bwd_softcap\": $sw}" timeout 100 python3 scripts/kernel_bench.py features \
        --seqlens 4096 16384 --modes fwdbwd 2>&1 | grep -E "causal |softcap|#" | tee -a $OUT/softcap-gluon-bwd-v14.log
done

# v14, after merging the three winners (softcap in the Gluon backward, the forward's out by TMA
# stores, the forward persistent under a causal band of up to 4096 keys): first the band's
# width, persistent walk on and off in one process (only 1024 was measured), then the GPU suite
# in eight pytest processes on the new table.
#   bash scripts/experiments/gpu_v14_suite.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
timeout 120 python3 - <<'PY' 2>&1 | tee $OUT/window-width-v14.log
import json, os, torch, triton
import pyflashattn as pfa
print("# window (w, 0), d=128 bf16, b=1, h=16: forward ms, persistent band off / on; causal beside")
for n in (4096, 16384):
    q, k, v = (torch.randn(1, n, 16, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    causal = triton.testing.do_bench(lambda: pfa.flash_attn_func(q, k, v, causal=True), warmup=50, rep=300)
    for w in (256, 1024, 2048, 4096):
        ms = []
        for limit in (0, 4096):
            os.environ["PYFLASHATTN_CONFIG"] = json.dumps({"hopper_ws_persistent_window": limit})
            ms.append(triton.testing.do_bench(lambda: pfa.flash_attn_func(q, k, v, window_size=(w, 0)), warmup=50, rep=300))
        print(f"n={n:6d} w={w:5d} off {ms[0]:.3f} ms on {ms[1]:.3f} ms  on/off {ms[0]/ms[1]:.3f}x  causal/on {causal/ms[1]:.2f}x")
PY
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

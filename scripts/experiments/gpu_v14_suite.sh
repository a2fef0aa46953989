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
bash scripts/gpu_suite.sh

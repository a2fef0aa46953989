# Branch experiment/varlen-persistent: the warp-specialized forward's persistent walks (tiles
# without causal, heavy/light pairs under causal, the causal band) for varlen too, switched by
# hopper_ws_persistent_varlen (off in the table). Host-side only: the kernel's _tile already
# numbers tiles over the longest sequence and skips a shorter one's empty blocks. Why: varlen's
# forward costs +18 % over dense causal at 4k (v14), where the dense forward walks pairs
# persistently (+11-17 % at 1k-4k, v12) and varlen runs a program per tile. Written in the
# fourteenth session, never run on a GPU. One call (~3 min warm): the float64 tests (out
# poisoned; any failure: stop), then in one process each: issue 5's varlen row off / on, and
# mixed lengths (128-4096, 32k tokens) off / on.
#   bash scripts/experiments/gpu_v15_varlen_persistent.sh   (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
timeout 240 python3 -m pytest -q -p no:cacheprovider -x tests/test_hopper.py \
    -k "varlen_persistent or persistent_where" 2>&1 | tail -4 | tee $OUT/t1.log
grep -q -E "failed|error" $OUT/t1.log && { echo "tests failed: no timing"; exit 1; }
for sw in 0 1; do
    echo "== hopper_ws_persistent_varlen=$sw" | tee -a $OUT/varlen-persistent-v15.log
    PYFLASHATTN_CONFIG="{\"hopper_ws_persistent_varlen\": $sw}" timeout 100 python3 scripts/kernel_bench.py \
        features --seqlens 1024 4096 --modes fwd fwdbwd 2>&1 | grep -E "causal |varlen|#" \
        | tee -a $OUT/varlen-persistent-v15.log
done
timeout 120 python3 - <<'PY' 2>&1 | tee -a $OUT/varlen-persistent-v15.log
import json, os, torch, triton
import pyflashattn as pfa
torch.manual_seed(0)
lens = []
while sum(lens) < 32768:
    lens.append(int(torch.randint(128, 4097, ()).item()))
cu = torch.tensor([0] + lens, device="cuda").cumsum(0).to(torch.int32)
q, k, v = (torch.randn(sum(lens), 16, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
print(f"# mixed lengths: {len(lens)} sequences, {sum(lens)} tokens, max {max(lens)}; d=128 bf16 h=16, forward ms")
for causal in (False, True):
    ms = []
    for sw in (0, 1):
        os.environ["PYFLASHATTN_CONFIG"] = json.dumps({"hopper_ws_persistent_varlen": sw})
        ms.append(triton.testing.do_bench(lambda: pfa.flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens),
                                                                          causal=causal), warmup=50, rep=300))
    print(f"causal={int(causal)} off {ms[0]:.3f} ms on {ms[1]:.3f} ms on/off {ms[0] / ms[1]:.3f}x")
PY

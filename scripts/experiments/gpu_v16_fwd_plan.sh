# Branch experiment/fwd-plan: the forward through a ForwardPlan (kernels/fwd.py, ops._cached_fwd_plan;
# PYFLASHATTN_FWD_PLAN=1, off by default): the forward's launch bound once per layout, as the
# backward's plan (v9). Why: on the H200's host a forward costs ~160 us of Python (v15 host
# profile), about the GPU time of a 1k forward, and the 1k forward rows are the ones below cuDNN
# (d=64 causal 0.91x, d=128 causal 0.98x, v15 compare). Offline (CPU, launches recorded, the
# interpreter's Triton path): 43 -> 21 us per forward, dense and varlen. Written in the fifteenth
# session, never run on a GPU. One call (~4 min): the plan's GPU tests (out and lse bitwise equal
# to the general path's, out poisoned) and the API/feature tests with the plan on; any failure:
# stop. Then host time per forward and per forward+backward, plan off / on, each in its own
# process, and the 1k rows of the comparison off / on.
#   bash scripts/experiments/gpu_v16_fwd_plan.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 240 python3 -m pytest -q -p no:cacheprovider -x "$@" 2>&1 | tail -3; }
run tests/test_fwd_plan.py tests/test_bwd_plan.py > $OUT/t1.log &
PYFLASHATTN_FWD_PLAN=1 run tests/test_api.py tests/test_features.py > $OUT/t2.log &
PYFLASHATTN_FWD_PLAN=1 run tests/test_cuda_graphs.py tests/test_attention.py > $OUT/t3.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -2 $f; done
grep -q -E "failed|error" $OUT/t?.log && { echo "tests failed: no timing"; exit 1; }
for sw in 0 1; do
    echo "== PYFLASHATTN_FWD_PLAN=$sw" | tee -a $OUT/fwd-plan-v16.log
    PYFLASHATTN_FWD_PLAN=$sw timeout 60 python3 - <<'PY' 2>&1 | grep -v -i warn | tee -a $OUT/fwd-plan-v16.log
import time, torch
import pyflashattn as pfa
for b, n, d in ((1, 512, 128), (16, 1024, 64), (16, 1024, 128)):
    h = 2048 // d
    q, k, v = (torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = torch.randn_like(q)
    qd, kd, vd = (t.detach() for t in (q, k, v))
    steps = {"fwd": lambda: pfa.flash_attn_func(qd, kd, vd, causal=True),
             "fwd+bwd": lambda: torch.autograd.grad(pfa.flash_attn_func(q, k, v, causal=True), (q, k, v), g)}
    for name, step in steps.items():
        for _ in range(20):
            step()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(100):
            step()
        host = (time.perf_counter() - t) / 100 * 1e6
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t) / 100 * 1e6
        print(f"b={b} n={n} d={d} causal {name:7s} host {host:7.1f} us  wall {wall:7.1f} us")
PY
    PYFLASHATTN_FWD_PLAN=$sw timeout 100 python3 scripts/kernel_bench.py compare --seqlens 1024 2>&1 \
        | grep -E "fwd |#" | tee -a $OUT/fwd-plan-v16.log
done
# and where the autograd engine's device thread spends host time (one process, ~30 s)
timeout 90 python3 scripts/experiments/host_engine_v16.py 2>&1 | grep -v -i warn | tee $OUT/host-engine-v16.log

# Why hopper_bwd_stats loses at d=128 causal 1k (sweep-bwd-stats v15): per-kernel GPU time and
# the host's time per forward+backward, off / on, in one process.
import json, os, time, torch
import pyflashattn as pfa
from torch.profiler import profile, ProfilerActivity
b, h, n, d = 16, 16, 1024, 128
q, k, v = (torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
g = torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16)
def step():
    out = pfa.flash_attn_func(q, k, v, causal=True)
    out.backward(g)
for sw in (0, 1, 0, 1):
    os.environ["PYFLASHATTN_CONFIG"] = json.dumps({"hopper_bwd_stats": sw})
    for _ in range(20): step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(50): step()
    host = (time.perf_counter() - t) / 50 * 1e6
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t) / 50 * 1e6
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20): step()
        torch.cuda.synchronize()
    print(f"== hopper_bwd_stats={sw}: host {host:.1f} us/step, wall {wall:.1f} us/step")
    for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:8]:
        print(f"   {e.device_time_total / 20:9.1f} us/step  {e.count // 20:3d}x  {e.key[:90]}")

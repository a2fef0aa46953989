# Does a forward+backward synchronize with the GPU? (v15: at d=128 causal 1k the host's time
# per step equalled the GPU's, prof-stats-1k-v15.log.) torch's sync debug mode warns on every
# synchronizing call; then host time per step (the queue never drains: 4k, GPU ~3 ms per step)
# against wall time, dense and varlen, plan on.
import time, warnings, torch
import pyflashattn as pfa
torch.manual_seed(0)
for n, b in ((1024, 16), (4096, 4)):
    q, k, v = (torch.randn(b, n, 16, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = torch.randn(b, n, 16, 128, device="cuda", dtype=torch.bfloat16)
    cu = torch.arange(0, b + 1, device="cuda", dtype=torch.int32) * n
    qp, kp, vp = (t.detach().reshape(b * n, 16, 128).requires_grad_() for t in (q, k, v))
    steps = {"dense": lambda: torch.autograd.grad(pfa.flash_attn_func(q, k, v, causal=True), (q, k, v), g),
             "varlen": lambda: torch.autograd.grad(pfa.flash_attn_varlen_func(qp, kp, vp, cu, cu, n, n, causal=True),
                                                   (qp, kp, vp), g.reshape(b * n, 16, 128))}
    for name, step in steps.items():
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode(1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step()
        torch.cuda.set_sync_debug_mode(0)
        syncs = [str(w.message)[:100] for w in caught if "synchroniz" in str(w.message)]
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(30):
            step()
        host = (time.perf_counter() - t) / 30 * 1e6
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t) / 30 * 1e6
        print(f"n={n} b={b} {name:6s} host {host:7.1f} us/step  wall {wall:7.1f} us/step  syncs {len(syncs)} {syncs[:2]}")

# Where the host time of a forward+backward goes (v15: ~0.8-1.2 ms per step, h200-host-sync-v15.log).
# cProfile over 200 steps with the backward on the calling thread (set_multithreading_enabled
# False: cProfile sees only its own thread), dense and varlen, d=128 causal bf16; the top
# functions by own time and by cumulative time. Host time per step with and without the
# profiler beside it.
import cProfile, pstats, io, time, torch
import pyflashattn as pfa
torch.manual_seed(0)
b, n, h, d = 4, 1024, 16, 128
q, k, v = (torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
g = torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16)
cu = torch.arange(0, b + 1, device="cuda", dtype=torch.int32) * n
qp, kp, vp = (t.detach().reshape(b * n, h, d).requires_grad_() for t in (q, k, v))
steps = {"dense": lambda: torch.autograd.grad(pfa.flash_attn_func(q, k, v, causal=True), (q, k, v), g),
         "varlen": lambda: torch.autograd.grad(pfa.flash_attn_varlen_func(qp, kp, vp, cu, cu, n, n, causal=True),
                                               (qp, kp, vp), g.reshape(b * n, h, d)),
         "fwd": lambda: pfa.flash_attn_func(q.detach(), k.detach(), v.detach(), causal=True)}
with torch.autograd.set_multithreading_enabled(False):
    for name, step in steps.items():
        for _ in range(10):
            step()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(100):
            step()
        host = (time.perf_counter() - t) / 100 * 1e6
        torch.cuda.synchronize()
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(200):
            step()
        pr.disable()
        torch.cuda.synchronize()
        print(f"===== {name}: host {host:.1f} us/step (one thread)")
        for key in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(pr, stream=out).sort_stats(key).print_stats(28)
            text = out.getvalue()
            print(text[text.index("ncalls"):])

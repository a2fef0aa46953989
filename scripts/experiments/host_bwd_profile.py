"""One-off (eighth session): where the backward's host time goes on the GPU machine's host.
Host microseconds per call (n calls back to back, synchronized at the ends, best of 5 rounds) of:
the forward; forward + ``torch.autograd.grad``; the backward's implementation called directly
(``ops._bwd_impl``: no autograd engine); ``bwd.attn_bwd`` alone; its pieces (the Gluon dK/dV
launch, the dQ launch); five CUDA ``empty_like``; SDPA flash for reference. Then a cProfile of
the direct backward. GPU only.

    PYTHONPATH=src python3 scripts/experiments/host_bwd_profile.py
"""
from __future__ import annotations

import cProfile
import io
import pstats
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import pyflashattn as pfa
from pyflashattn import ops
from pyflashattn.kernels import bwd, hopper

N, ROUNDS = 200, 5


def host_us(fn) -> float:
    for _ in range(5):
        fn()
    best = float("inf")
    for _ in range(ROUNDS):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(N):
            fn()
        best = min(best, time.perf_counter() - t0)
        torch.cuda.synchronize()
    return 1e6 * best / N


def main():
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    for d, causal in ((128, True), (128, False), (64, True)):
        q, k, v = (torch.randn(1, 512, 16, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        g = torch.randn_like(q)
        scale = d ** -0.5
        opts = (scale, -1, 0 if causal else -1)
        out, lse = ops._fwd_impl(q.detach(), k.detach(), v.detach(), *opts)
        p = ops._params(q, k, scale, -1, 0 if causal else -1, 0.0, None, None, None, -1, -1, None)
        cfg = ops._config(q, v, p)
        qd, kd, vd = q.detach(), k.detach(), v.detach()
        dq, dk, dv = torch.empty_like(qd), torch.empty_like(kd), torch.empty_like(vd)
        delta = torch.empty_like(lse)
        qh, kh, vh = (t.detach().transpose(1, 2).requires_grad_() for t in (q, k, v))
        gh = g.transpose(1, 2)

        def sdpa():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal)
            torch.autograd.grad(o, (qh, kh, vh), gh)

        rows = {
            "forward (grad enabled)": lambda: pfa.flash_attn_func(q, k, v, causal=causal),
            "forward + autograd.grad": lambda: torch.autograd.grad(pfa.flash_attn_func(q, k, v, causal=causal),
                                                                   (q, k, v), g),
            "backward impl, direct": lambda: ops._bwd_impl(g, qd, kd, vd, out, lse, None, *opts),
            "bwd.attn_bwd": lambda: bwd.attn_bwd(g, qd, kd, vd, out, lse, None, p, cfg),
            "attn_bwd, dq only": lambda: bwd.attn_bwd(g, qd, kd, vd, out, lse, None, p, cfg, dq=dq),
            "attn_bwd, dk/dv only": lambda: bwd.attn_bwd(g, qd, kd, vd, out, lse, None, p, cfg, dk=dk, dv=dv),
            "hopper.usable (bwd)": lambda: hopper.usable(qd, kd, vd, p, cfg, dout=g),
            "5 x empty_like": lambda: [torch.empty_like(qd) for _ in range(5)],
            "sdpa flash fwd+grad": sdpa,
        }
        if hopper.usable(qd, kd, vd, p, cfg, dout=g):
            rows["hopper.attn_dkdv"] = lambda: hopper.attn_dkdv(qd, kd, vd, g, lse, delta, dk, dv, p, cfg)
        print(f"== b1 s512 h16 d{d} {'causal' if causal else 'full'}", flush=True)
        for name, fn in rows.items():
            print(f"   {name:28s} {host_us(fn):8.1f} us", flush=True)
        if d == 128 and causal:
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(N):
                ops._bwd_impl(g, qd, kd, vd, out, lse, None, *opts)
            pr.disable()
            torch.cuda.synchronize()
            s = io.StringIO()
            pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(22)
            print(s.getvalue(), flush=True)


if __name__ == "__main__":
    main()

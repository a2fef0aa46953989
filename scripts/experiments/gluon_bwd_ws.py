"""One-off (eighth session): the warp-specialized Gluon dK/dV kernel (kernels/hopper_bwd_ws_kernel.py)
against the shipped backward: dK/dV against float64 next to the library's own, then kernel time
(torch.profiler) of the WS kernel (stages 2, 3, 4) against the library's dK/dV kernel in the same
process (the one-warpgroup Gluon kernel at d=128, Triton's at d=64) and the dQ kernel.

    PYTHONPATH=src python3 scripts/experiments/gluon_bwd_ws.py [--check-only]
"""
from __future__ import annotations

import argparse
import sys

import torch


def ws_dkdv(q, k, v, do, lse, delta, causal, stages, block_m=64, keys_major=False, one_wg=False):
    """dK, dV of dense (b, s, h, d) 16-bit tensors by the WS kernel (``one_wg``: the shipped
    one-warpgroup Gluon kernel, 64 keys), launched by hand."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from pyflashattn.kernels import hopper_bwd_kernel as one, hopper_bwd_ws_kernel as ws
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    gdt = gl.bfloat16 if q.dtype == torch.bfloat16 else gl.float16

    def desc(t, rows):
        lay = gl.NVMMASharedLayout.get_default_for([rows, d], gdt)
        return TensorDescriptor(t, [t.shape[0] * t.shape[1], t.shape[2] * d], [t.stride(1), 1], [rows, d], lay)
    dk, dv = torch.full_like(k, float("nan")), torch.full_like(v, float("nan"))
    scale = d ** -0.5
    block_n = 64 if one_wg else 128
    grid = ((sk + block_n - 1) // block_n * b * hk,)
    kernel, opts = (one.dkdv_hopper_kernel, {}) if one_wg else (ws.dkdv_hopper_ws_kernel, dict(maxnreg=ws.MAXNREG))
    kernel[grid](desc(q, block_m), desc(k, 64), desc(v, 64), desc(do, block_m), lse, delta, dk, dv,
                 sq, sk, h, h // hk, scale * 1.4426950408889634, scale, dk.stride(1),
                 CAUSAL=causal, BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=d, NUM_STAGES=stages,
                 KEYS_MAJOR=keys_major, num_warps=4, **opts)
    return dk, dv


def inputs(b, sq, sk, h, hk, d, dtype=torch.bfloat16, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(b, sq, h, d, device="cuda", dtype=dtype, generator=g)
    k, v = (torch.randn(b, sk, hk, d, device="cuda", dtype=dtype, generator=g) for _ in range(2))
    do = torch.randn(b, sq, h, d, device="cuda", dtype=dtype, generator=g)
    return q, k, v, do


def forward_state(q, k, v, do, causal):
    import pyflashattn as pfa
    out, lse, _ = pfa.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
    delta = (out.float() * do.float()).sum(-1).transpose(1, 2).contiguous()   # (b, h, s)
    return out, lse.contiguous(), delta


def check() -> bool:
    import pyflashattn as pfa
    from pyflashattn.reference import attention_ref
    ok = True
    for d, causal, sq, sk, h, hk, b in [(128, False, 1000, 1000, 4, 4, 2), (128, True, 1000, 1000, 4, 2, 2),
                                        (64, True, 333, 777, 4, 1, 2), (64, False, 4096, 4096, 2, 2, 1),
                                        (128, True, 17, 17, 2, 2, 2), (64, True, 1000, 1000, 6, 2, 1),
                                        (128, False, 200, 131, 2, 1, 3), (64, True, 2048, 2048, 4, 4, 2)]:
        q, k, v, do = inputs(b, sq, sk, h, hk, d)
        out, lse, delta = forward_state(q, k, v, do, causal)
        qr, kr, vr = (t.detach().clone().requires_grad_() for t in (q, k, v))
        _, dk_lib, dv_lib = torch.autograd.grad(pfa.flash_attn_func(qr, kr, vr, causal=causal), (qr, kr, vr), do)
        q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
        _, dk64, dv64 = torch.autograd.grad(attention_ref(q64, k64, v64, causal=causal)[0], (q64, k64, v64),
                                            do.double())
        line = f"d={d} causal={int(causal)} b={b} sq={sq} sk={sk} h={h}/{hk}:"
        for name, opts in (("ws s2", dict(stages=2)), ("ws s3 lpt", dict(stages=3, keys_major=True)),
                           ("1wg lpt", dict(stages=2, keys_major=True, one_wg=True))):
            dk, dv = ws_dkdv(q, k, v, do, lse, delta, causal, **opts)
            torch.cuda.synchronize()
            e = {n: ((x.double() - r).norm() / r.norm()).item() for n, x, r in
                 (("dk", dk, dk64), ("dk lib", dk_lib, dk64), ("dv", dv, dv64), ("dv lib", dv_lib, dv64))}
            good = (bool(torch.isfinite(dk).all() and torch.isfinite(dv).all())
                    and e["dk"] <= 1.5 * e["dk lib"] + 1e-4 and e["dv"] <= 1.5 * e["dv lib"] + 1e-4)
            ok &= good
            line += f" [{name} {'ok' if good else 'BAD'} " + " ".join(f"{n} {x:.2e}" for n, x in e.items()) + "]"
        print(line, flush=True)
    return ok


def bench():
    import pyflashattn as pfa
    from torch.profiler import ProfilerActivity, profile
    for d in (128, 64):
        for causal in (False, True):
            for s in (1024, 4096, 16384):
                b, h = 16384 // s, 2048 // d
                q, k, v, do = inputs(b, s, s, h, h, d)
                out, lse, delta = forward_state(q, k, v, do, causal)
                qr, kr, vr = (t.detach().clone().requires_grad_() for t in (q, k, v))
                fns = {"lib": lambda: torch.autograd.grad(pfa.flash_attn_func(qr, kr, vr, causal=causal),
                                                          (qr, kr, vr), do)}
                fns["1wg lpt"] = lambda: ws_dkdv(q, k, v, do, lse, delta, causal, 2, keys_major=True, one_wg=True)
                for st, major in ((3, False), (3, True), (4, True)):
                    fns[f"ws s{st}{' lpt' if major else ''}"] = lambda st=st, major=major: ws_dkdv(
                        q, k, v, do, lse, delta, causal, st, keys_major=major)
                row = {}
                for name, fn in fns.items():
                    for _ in range(3):
                        fn()
                    with profile(activities=[ProfilerActivity.CUDA]) as prof:
                        for _ in range(10):
                            fn()
                        torch.cuda.synchronize()
                    for e in prof.key_averages():
                        if "dkdv" in e.key or ("dq" in e.key and name == "lib"):
                            tag = name if name != "lib" else ("lib dq" if "dq" in e.key else "lib dkdv")
                            row[tag] = e.device_time_total / 10e3
                flops = 8 * b * h * s * s * d * (0.5 if causal else 1.0)   # the 4 matmuls of dK/dV
                print(f"d={d} causal={int(causal)} s={s:5d} ms (dK/dV matmul TFLOP/s): "
                      + "  ".join(f"{n} {ms:.3f} ({flops / ms / 1e9:.0f})" for n, ms in row.items()), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-only", action="store_true")
    a = ap.parse_args()
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    good = check()
    print("CHECK", "PASSED" if good else "FAILED", flush=True)
    if not a.check_only:
        bench()
    sys.exit(0 if good else 1)

"""v12: how far the fused dK/dV/dQ kernel (warp-specialized dK/dV with dQ by TMA reduce-adds,
2 Q/dO stages since v12) should reach: with a causal mask (v10 measured it slower there with
3 stages) and at head dim 64 (where the table keeps the Triton dK/dV). First the float64
accuracy rule for each new case at odd shapes, then forward+backward and backward-alone ms
(median) in one process, batch x seqlen = 16k tokens, 16 heads, bf16: the table's kernels
against the fused kernel at every length (and, at d=64, the non-fused warp-specialized one).

    PYTHONPATH=src python3 scripts/experiments/fused_reach.py
"""
import json
import os

import torch
import triton

import pyflashattn as pfa
from pyflashattn.testing import compare_with_reference

_FUSED = {"hopper_dkdv_block_n": 64, "hopper_fused_dq_min_seqlen_k": 1, "hopper_fused_dq_min_seqlen_k_causal": 1}
VARIANTS = {
    "table": {},
    "fused": _FUSED,
    "fused 3 stages": {**_FUSED, "hopper_fused_dq_stages": 3},
    "gluon dkdv": {"hopper_dkdv_block_n": 64, "hopper_fused_dq_min_seqlen_k": 0, "hopper_dkdv_ws_min_seqlen_k": 0},
}


def use(variant):
    os.environ["PYFLASHATTN_CONFIG"] = json.dumps(VARIANTS[variant])


def check():
    cases = [(2, 1000, 1000, 4, 2, 64, False), (2, 1000, 1000, 4, 2, 64, True), (1, 4111, 4111, 4, 4, 64, False),
             (1, 777, 2049, 4, 1, 64, True), (2, 1000, 1000, 4, 2, 128, True), (1, 777, 2049, 4, 4, 128, True),
             (1, 4111, 4111, 4, 4, 128, True), (3, 17, 300, 2, 2, 128, True)]
    use("fused")
    for b, sq, sk, h, hk, d, causal in cases:
        torch.manual_seed(0)
        q = torch.randn(b, sq, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k, v = (torch.randn(b, sk, hk, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
        name = f"check b{b} sq{sq} sk{sk} h{h}/{hk} d{d} causal={int(causal)} fused"
        try:
            compare_with_reference(lambda q, k, v: pfa.flash_attn_func(q, k, v, causal=causal,
                                                                       return_attn_probs=True)[:2],
                                   q, k, v, causal=causal)
            print(name, "OK", flush=True)
        except AssertionError as e:
            print(name, "FAIL", e, flush=True)


def bench():
    for d in (64, 128):
        for causal in (False, True):
            for s in (1024, 2048, 4096, 16384):
                b, h = 16384 // s, 16
                q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                           for _ in range(3))
                g = torch.randn_like(q)
                for variant in VARIANTS:
                    use(variant)
                    out = pfa.flash_attn_func(q, k, v, causal=causal)

                    def step():
                        pfa.flash_attn_func(q, k, v, causal=causal).backward(g)
                    fb = triton.testing.do_bench(step, warmup=20, rep=100, return_mode="median",
                                                 grad_to_none=[q, k, v])
                    bw = triton.testing.do_bench(lambda: torch.autograd.grad(out, (q, k, v), g, retain_graph=True),
                                                 warmup=20, rep=100, return_mode="median")
                    print(f"d={d:3d} causal={int(causal)} n={s:5d} {variant:15s} fwd+bwd {fb:.3f} ms  bwd {bw:.3f} ms",
                          flush=True)
    os.environ.pop("PYFLASHATTN_CONFIG", None)


if __name__ == "__main__":
    print("#", torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    check()
    bench()

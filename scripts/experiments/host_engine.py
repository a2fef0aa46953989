"""One-off (eighth session): the autograd engine's share of a forward + backward's host time on
the GPU host. Host us per call (as host_bwd_profile.py) of fwd + autograd.grad: ours; ours with
torch.autograd.set_multithreading_enabled(False) (backward on the calling thread); a Python
autograd.Function whose backward returns its grads as they are (the engine's floor for a Python
node); SDPA flash.

    PYTHONPATH=src python3 scripts/experiments/host_engine.py
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import pyflashattn as pfa
from host_bwd_profile import host_us


class Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        return q.clone()

    @staticmethod
    def backward(ctx, g):
        return g, g, g


def main():
    for d, causal in ((128, True), (64, True)):
        q, k, v = (torch.randn(1, 512, 16, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        g = torch.randn_like(q)
        qh, kh, vh = (t.detach().transpose(1, 2).requires_grad_() for t in (q, k, v))

        def ours():
            torch.autograd.grad(pfa.flash_attn_func(q, k, v, causal=causal), (q, k, v), g)

        def ours_one_thread():
            with torch.autograd.set_multithreading_enabled(False):
                ours()

        def sdpa():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal)
            torch.autograd.grad(o, (qh, kh, vh), g.transpose(1, 2))
        rows = {"ours fwd+grad": ours, "ours, backward on the calling thread": ours_one_thread,
                "identity Function fwd+grad": lambda: torch.autograd.grad(Identity.apply(q, k, v), (q, k, v), g),
                "sdpa flash fwd+grad": sdpa}
        print(f"== b1 s512 h16 d{d} causal", flush=True)
        for name, fn in rows.items():
            print(f"   {name:38s} {host_us(fn):8.1f} us", flush=True)


if __name__ == "__main__":
    main()

"""Dropout's cost on the H200 (v18): the forward and forward+backward with dropout_p=0.1 against
the same call without, and against SDPA's flash backend (FlashAttention-2) with dropout, b4 h16
bf16 causal, d 64 and 128, 4k and 16k. Run it once per source tree (PYTHONPATH=...) for A/B
runs across trees in one device call.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from kernel_bench import bench, make  # noqa: E402

import pyflashattn as pfa  # noqa: E402


def main():
    print("# pyflashattn from", os.path.dirname(pfa.__file__), torch.cuda.get_device_name(), flush=True)
    for d in (64, 128):
        for n in (4096, 16384):
            q, k, v = make(4, n, 16, d)
            g = torch.randn_like(q)
            qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
            gt = g.transpose(1, 2).contiguous()

            def sdpa():
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, dropout_p=0.1)
            for mode in ("fwd", "fwdbwd"):
                dense = bench(lambda: pfa.flash_attn_func(q, k, v, causal=True), mode, g, (q, k, v))
                drop = bench(lambda: pfa.flash_attn_func(q, k, v, causal=True, dropout_p=0.1), mode, g, (q, k, v))
                peer = bench(sdpa, mode, gt, (qt, kt, vt))
                print(f"d={d} n={n} {mode:6s} causal {dense:.3f} ms, +dropout {drop:.3f} ms ({drop / dense:.2f}x), "
                      f"sdpa flash+dropout {peer:.3f} ms (ours {peer / drop:.2f}x faster)", flush=True)


if __name__ == "__main__":
    main()

"""Dropout's cost on the H200 (v17): the forward and forward+backward with dropout_p=0.1 against
the same call without, b4 h16 d128 bf16 causal at 4k and 16k, as `kernel_bench.py features`
measures it; with two controls in the same process: the dense causal call on the Triton kernels
(the ones dropout runs on: `PYFLASHATTN_CONFIG` turning the Gluon kernels off), and SDPA's flash
backend (FlashAttention-2) with and without dropout.
Run it once per source tree (PYTHONPATH=...) to compare the RNG schemes across processes.
``--sweep``: instead, forward+backward with dropout at 4k and 16k under the Triton tiles in
``SWEEP`` (offline, ``scripts/aot_check.py --dropout``), A/B/A; ``--sweep-fwd`` the forward
under ``SWEEP_FWD``.
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
from pyflashattn.configs import KernelConfig  # noqa: E402

TRITON_ONLY = '{"hopper_block_m": 0, "hopper_dkdv_block_n": 0}'
GLUON_DROPOUT = "hopper_dropout" in KernelConfig.__dataclass_fields__
GLUON_DQ_DROPOUT = "hopper_dq_dropout" in KernelConfig.__dataclass_fields__
GLUON_DKDV_DROPOUT = "hopper_dkdv_dropout" in KernelConfig.__dataclass_fields__


def main():
    print("# pyflashattn from", os.path.dirname(pfa.__file__), torch.cuda.get_device_name(), flush=True)
    b, h, d = 4, 16, 128
    for s_len in (4096, 16384):
        q, k, v = make(b, s_len, h, d)
        g = torch.randn_like(q)
        qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
        gt = g.transpose(1, 2).contiguous()

        def sdpa(p):
            def run():
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, dropout_p=p)
            return run
        variants = {
            "causal": (lambda: pfa.flash_attn_func(q, k, v, causal=True), (q, k, v), g, None),
            "causal triton": (lambda: pfa.flash_attn_func(q, k, v, causal=True), (q, k, v), g, TRITON_ONLY),
            "causal+dropout": (lambda: pfa.flash_attn_func(q, k, v, causal=True, dropout_p=0.1), (q, k, v), g, None),
            # the warp-specialized Gluon forward with dropout (experiment/gluon-dropout's switch;
            # where the sources have no such switch, the same as the row above)
            "causal+dropout gluon": (lambda: pfa.flash_attn_func(q, k, v, causal=True, dropout_p=0.1), (q, k, v), g,
                                     '{"hopper_dropout": true}' if GLUON_DROPOUT else None),
            # and the Gluon dQ kernel with dropout (experiment/gluon-dq-dropout's switch)
            "causal+dropout gluon dq": (lambda: pfa.flash_attn_func(q, k, v, causal=True, dropout_p=0.1), (q, k, v), g,
                                        '{"hopper_dropout": true, "hopper_dq_dropout": true}' if GLUON_DQ_DROPOUT
                                        else None),
            # and the Gluon dK/dV with dropout (experiment/gluon-dkdv-dropout's switch)
            "causal+dropout gluon bwd": (lambda: pfa.flash_attn_func(q, k, v, causal=True, dropout_p=0.1), (q, k, v),
                                         g, '{"hopper_dropout": true, "hopper_dq_dropout": true, '
                                         '"hopper_dkdv_dropout": true}' if GLUON_DKDV_DROPOUT else None),
            "sdpa_flash": (sdpa(0.0), (qt, kt, vt), gt, None),
            "sdpa_flash+dropout": (sdpa(0.1), (qt, kt, vt), gt, None),
        }
        for mode in ("fwd", "fwdbwd"):
            ms = {}
            for name, (fn, leaves, grad, config) in variants.items():
                if config:
                    os.environ["PYFLASHATTN_CONFIG"] = config
                try:
                    ms[name] = bench(fn, mode, grad, leaves)
                finally:
                    os.environ.pop("PYFLASHATTN_CONFIG", None)
                print(f"n={s_len:5d} {mode:6s} {name:20s} {ms[name]:8.3f} ms", flush=True)
            print(f"n={s_len:5d} {mode:6s} gluon bwd dropout / causal {ms['causal+dropout gluon bwd'] / ms['causal']:.2f}x, "
                  f"/ sdpa flash dropout {ms['causal+dropout gluon bwd'] / ms['sdpa_flash+dropout']:.2f}x", flush=True)
            print(f"n={s_len:5d} {mode:6s} gluon dq dropout / causal {ms['causal+dropout gluon dq'] / ms['causal']:.2f}x, "
                  f"/ sdpa flash dropout {ms['causal+dropout gluon dq'] / ms['sdpa_flash+dropout']:.2f}x", flush=True)
            print(f"n={s_len:5d} {mode:6s} gluon dropout / causal {ms['causal+dropout gluon'] / ms['causal']:.2f}x, "
                  f"/ sdpa flash dropout {ms['causal+dropout gluon'] / ms['sdpa_flash+dropout']:.2f}x", flush=True)
            print(f"n={s_len:5d} {mode:6s} dropout / causal {ms['causal+dropout'] / ms['causal']:.2f}x, "
                  f"/ causal triton {ms['causal+dropout'] / ms['causal triton']:.2f}x; "
                  f"sdpa flash dropout / none {ms['sdpa_flash+dropout'] / ms['sdpa_flash']:.2f}x", flush=True)


# v17: the dK/dV tiles (shipped as dropout_block_m_kv / n_kv); v18: d=64's dQ tile, whose
# 32-key tiles draw their whole 64-key group with the wgmma-order map (offline: stack 136 B;
# 64 keys at 8 warps none). Forward+backward.
SWEEP = {64: [None, '{"block_n_q": 64, "num_warps_q": 8}', '{"num_warps_q": 8}', None]}
# v17: the Triton forward's tiles under dropout, the table's first and last (``--sweep-fwd``,
# docs/logs/h200-dropout-fwd-tiles-v17.log): the table's were fastest, so dropout keeps them
SWEEP_FWD = {64: [None, '{"block_m": 64}', '{"num_warps": 8}', '{"block_n": 32}', None],
             128: [None, '{"block_n": 64, "num_stages": 3}', '{"block_m": 64, "num_warps": 4}',
                   '{"block_n": 64, "num_warps": 4, "num_stages": 3}', None]}


def sweep(candidates: dict, mode: str):
    """b4 h16 causal bf16 with dropout_p=0.1 at 4k and 16k under each config of ``candidates``
    (head dim -> ``PYFLASHATTN_CONFIG`` strings, None the table's), in one process."""
    print("# pyflashattn from", os.path.dirname(pfa.__file__), torch.cuda.get_device_name(), flush=True)
    b, h = 4, 16
    for d, configs in candidates.items():
        for s_len in (4096, 16384):
            q, k, v = make(b, s_len, h, d)
            g = torch.randn_like(q)
            for config in configs:
                if config:
                    os.environ["PYFLASHATTN_CONFIG"] = config
                try:
                    ms = bench(lambda: pfa.flash_attn_func(q, k, v, causal=True, dropout_p=0.1), mode, g, (q, k, v))
                finally:
                    os.environ.pop("PYFLASHATTN_CONFIG", None)
                print(f"d={d:3d} n={s_len:5d} {mode} causal+dropout {ms:8.3f} ms {config or '{}'}", flush=True)


if __name__ == "__main__":
    if "--sweep" in sys.argv:
        sweep(SWEEP, "fwdbwd")
    elif "--sweep-fwd" in sys.argv:
        sweep(SWEEP_FWD, "fwd")
    else:
        main()

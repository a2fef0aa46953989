"""Kernel timing and config sweeps on a GPU: what docs/performance.md quotes.

    python scripts/kernel_bench.py compare            # ours vs SDPA flash / cuDNN, papers' shapes
    python scripts/kernel_bench.py sweep-fwd          # forward configs per (head dim, causal)
    python scripts/kernel_bench.py sweep-bwd          # backward configs
    python scripts/kernel_bench.py features --seqlens 4096 16384   # softcap, ALiBi, varlen, window
    python scripts/kernel_bench.py sparse --seqlens 16384 65536     # block-sparse vs dense vs Flex

Each row is timed with triton.testing.do_bench (median, after warm-up) on fresh random bf16
inputs; peers are timed in the same process. Config candidates go through PYFLASHATTN_CONFIG.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F

import pyflashattn as pfa

TOKENS, HIDDEN = 16384, 2048


def flops(b, h, sq, sk, d, causal, mode):
    f = 4 * b * h * sq * sk * d / (2 if causal else 1)
    return f * {"fwd": 1.0, "bwd": 2.5, "fwdbwd": 3.5}[mode]


def bench(fn, mode, out_grad=None, leaves=()):
    if mode == "fwd":
        with torch.no_grad():
            return triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median")
    def step():
        out = fn()
        out.backward(out_grad)
    return triton.testing.do_bench(step, warmup=50, rep=200, return_mode="median", grad_to_none=list(leaves))


def make(b, s, h, d, dtype=torch.bfloat16, hk=None):
    hk = hk or h
    q = torch.randn(b, s, h, d, device="cuda", dtype=dtype, requires_grad=True)
    k = torch.randn(b, s, hk, d, device="cuda", dtype=dtype, requires_grad=True)
    v = torch.randn(b, s, hk, d, device="cuda", dtype=dtype, requires_grad=True)
    return q, k, v


def providers(q, k, v, causal):
    qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
    def sdpa(backend):
        def run():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
        return run
    return {
        "ours": (lambda: pfa.flash_attn_func(q, k, v, causal=causal), (q, k, v)),
        "sdpa_flash": (sdpa(SDPBackend.FLASH_ATTENTION), (qt, kt, vt)),
        "sdpa_cudnn": (sdpa(SDPBackend.CUDNN_ATTENTION), (qt, kt, vt)),
    }


def compare(args):
    rows = []
    for d, causal, s in itertools.product(args.head_dims, (False, True), args.seqlens):
        b, h = max(1, TOKENS // s), HIDDEN // d
        q, k, v = make(b, s, h, d, dtype=getattr(torch, args.dtype))
        g = torch.randn_like(q)
        for mode in args.modes:
            for name, (fn, leaves) in providers(q, k, v, causal).items():
                try:
                    ms = bench(fn, mode, g if name == "ours" else g.transpose(1, 2).contiguous(), leaves)
                    tf = flops(b, h, s, s, d, causal, mode) / ms / 1e9
                except Exception as e:  # a peer that refuses the shape
                    ms, tf = float("nan"), float("nan")
                    print(f"# {name} failed: {type(e).__name__}: {str(e)[:100]}", file=sys.stderr)
                rows.append(dict(d=d, causal=causal, s=s, mode=mode, provider=name, ms=ms, tflops=tf))
                print(f"d={d:3d} causal={int(causal)} n={s:5d} {mode:6s} {name:11s} {ms:8.3f} ms {tf:6.1f} TFLOP/s", flush=True)
        del q, k, v, g
        torch.cuda.empty_cache()
    return rows


FWD_CANDIDATES = [
    dict(block_m=128, block_n=64, num_warps=4, num_stages=3),
    dict(block_m=128, block_n=64, num_warps=8, num_stages=3),
    dict(block_m=128, block_n=128, num_warps=8, num_stages=2),
    dict(block_m=128, block_n=128, num_warps=8, num_stages=3),
    dict(block_m=64, block_n=64, num_warps=4, num_stages=3),
    dict(block_m=128, block_n=32, num_warps=4, num_stages=4),
    dict(block_m=256, block_n=64, num_warps=8, num_stages=2),
]
def _bwd(m_kv, n_kv, w_kv, s_kv, m_q, n_q, w_q, s_q):
    return dict(block_m_kv=m_kv, block_n_kv=n_kv, num_warps_kv=w_kv, num_stages_kv=s_kv,
                block_m_q=m_q, block_n_q=n_q, num_warps_q=w_q, num_stages_q=s_q)


BWD_CANDIDATES = [
    _bwd(32, 128, 4, 3, 128, 32, 4, 3),
    _bwd(64, 128, 8, 2, 128, 64, 8, 2),
    _bwd(32, 128, 8, 2, 128, 32, 8, 2),
    _bwd(64, 64, 4, 3, 64, 64, 4, 3),
    _bwd(64, 128, 8, 3, 128, 64, 8, 3),
    _bwd(32, 128, 4, 2, 128, 64, 8, 2),
]


def _candidates(args, default: list) -> list:
    if not args.candidates:
        return default
    with open(args.candidates) as f:
        return json.load(f)


def sweep(args, candidates, mode):
    rows = []
    for d, causal, s in itertools.product(args.head_dims, map(bool, args.causal), args.seqlens):
        b, h = max(1, TOKENS // s), HIDDEN // d
        q, k, v = make(b, s, h, d, dtype=getattr(torch, args.dtype))
        g = torch.randn_like(q)
        for cand in candidates:
            os.environ["PYFLASHATTN_CONFIG"] = json.dumps(cand)
            try:
                ms = bench(lambda: pfa.flash_attn_func(q, k, v, causal=causal), mode, g, (q, k, v))
                tf = flops(b, h, s, s, d, causal, mode) / ms / 1e9
            except Exception as e:
                ms, tf = float("nan"), float("nan")
                print(f"# failed {cand}: {type(e).__name__}: {str(e)[:120]}", file=sys.stderr)
            rows.append(dict(d=d, causal=causal, s=s, mode=mode, config=cand, ms=ms, tflops=tf))
            print(f"d={d:3d} causal={int(causal)} n={s:5d} {mode:6s} {tf:6.1f} TFLOP/s {json.dumps(cand)}", flush=True)
        os.environ.pop("PYFLASHATTN_CONFIG", None)
    return rows


def features(args):
    """Each flash-attn option against the plain kernel at the same shape (issue 5's budget)."""
    rows = []
    b, h, d = 4, 16, 128
    for s_len in args.seqlens:
        q, k, v = make(b, s_len, h, d, dtype=getattr(torch, args.dtype))
        g = torch.randn_like(q)
        slopes = torch.rand(h, device="cuda")
        cu = torch.arange(0, (b + 1) * s_len, s_len, device="cuda", dtype=torch.int32)
        qp, kp, vp = (t.detach().reshape(b * s_len, h, d).requires_grad_() for t in (q, k, v))
        variants = {
            "causal": (lambda: pfa.flash_attn_func(q, k, v, causal=True), (q, k, v), None),
            "causal+softcap": (lambda: pfa.flash_attn_func(q, k, v, causal=True, softcap=30.0), (q, k, v), None),
            "causal+alibi": (lambda: pfa.flash_attn_func(q, k, v, causal=True, alibi_slopes=slopes), (q, k, v), None),
            "causal varlen": (lambda: pfa.flash_attn_varlen_func(qp, kp, vp, cu, cu, s_len, s_len, causal=True),
                              (qp, kp, vp), None),
            "causal+dropout": (lambda: pfa.flash_attn_func(q, k, v, causal=True, dropout_p=0.1), (q, k, v), None),
            "window(1024,0)": (lambda: pfa.flash_attn_func(q, k, v, window_size=(1024, 0)), (q, k, v), None),
            # a config experiment without a table edit: smaller key blocks, fewer masked ones per row
            "window n64": (lambda: pfa.flash_attn_func(q, k, v, window_size=(1024, 0)), (q, k, v),
                           '{"block_n": 64, "block_m_q": 64, "block_n_kv": 64}'),
            # the warp-specialized forward persistent under the band (hopper_ws_persistent_window)
            "window persistent": (lambda: pfa.flash_attn_func(q, k, v, window_size=(1024, 0)), (q, k, v),
                                  '{"hopper_ws_persistent_window": 4096}'),
        }
        for mode in args.modes:
            for name, (fn, leaves, config) in variants.items():
                grad = g if name != "causal varlen" else g.reshape(b * s_len, h, d)
                outer = os.environ.get("PYFLASHATTN_CONFIG")  # a caller's override holds for the others
                if isinstance(config, str):
                    os.environ["PYFLASHATTN_CONFIG"] = config
                try:
                    ms = bench(fn, mode, grad, leaves)
                finally:
                    if outer is None:
                        os.environ.pop("PYFLASHATTN_CONFIG", None)
                    else:
                        os.environ["PYFLASHATTN_CONFIG"] = outer
                rows.append(dict(s=s_len, mode=mode, variant=name, ms=ms))
                print(f"n={s_len:5d} {mode:6s} {name:15s} {ms:8.3f} ms", flush=True)
    return rows


def sparse(args):
    """Block-sparse against dense at ~10 % density, and FlexAttention on the same mask (issue 6)."""
    from pyflashattn.block_mask import create_block_mask, local_global_mask, sliding_window_mask
    rows = []
    h, d = 16, 128
    for s_len in args.seqlens:
        q, k, v = make(1, s_len, h, d, dtype=getattr(torch, args.dtype))
        g = torch.randn_like(q)
        window = s_len // 20          # causal band of ~ s/20 -> ~10 % of the causal... of the full matrix
        masks = {"sliding(~10%)": sliding_window_mask(2 * window, s_len, s_len),
                 "local+global(~10%)": local_global_mask(window, 128)}
        for name, mod in masks.items():
            t0 = time.perf_counter()
            bm = create_block_mask(mod, None, None, s_len, s_len, device="cuda")
            build_s = time.perf_counter() - t0
            variants = {"dense": lambda: pfa.flash_attn_func(q, k, v),
                        "sparse": lambda: pfa.block_sparse_attn_func(q, k, v, bm)}
            if s_len == 16384:  # the Triton twins below hard-code this length's window sizes
                jit_mod = _sliding_16k if name.startswith("sliding") else _local_global_16k
                variants["sparse+jit"] = lambda: pfa.block_sparse_attn_func(q, k, v, bm, mask_mod=jit_mod)
                with torch.no_grad():
                    diff = (variants["sparse+jit"]() - variants["sparse"]()).abs().max().item()
                print(f"# {name}: predicate vs tiles, max |difference| {diff:.2e}")
            try:
                if args.no_flex:
                    raise RuntimeError("--no-flex")
                from torch.nn.attention.flex_attention import create_block_mask as flex_mask, flex_attention
                fm = flex_mask(lambda b, hh, qi, ki: mod(b, hh, qi, ki), None, None, s_len, s_len, device="cuda")
                flex = torch.compile(flex_attention)
                qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
                variants["flex"] = (lambda: flex(qt, kt, vt, block_mask=fm), (qt, kt, vt))
            except Exception as e:  # noqa: BLE001
                print(f"# flex unavailable: {type(e).__name__}: {str(e)[:100]}")
            for mode in args.modes:
                for vname, fn in variants.items():
                    leaves = (q, k, v)
                    grad = g
                    if isinstance(fn, tuple):
                        fn, leaves = fn
                        grad = g.transpose(1, 2).contiguous()
                    try:
                        ms = bench(fn, mode, grad, leaves)
                    except Exception as e:  # noqa: BLE001
                        ms = float("nan")
                        print(f"# {vname} failed: {type(e).__name__}: {str(e)[:100]}")
                    rows.append(dict(s=s_len, mask=name, density=bm.density(), mode=mode, variant=vname, ms=ms))
                    print(f"n={s_len:6d} {name:20s} density={bm.density():.3f} {mode:6s} {vname:7s} {ms:9.3f} ms"
                          f"  (mask build {build_s:.2f} s)", flush=True)
    return rows


# @triton.jit twins of sparse()'s masks at seqlen 16384 (window = 16384 // 20 = 819), so that
# partial blocks are evaluated in registers instead of loaded as tiles
@triton.jit
def _sliding_16k(b, h, q_idx, kv_idx):
    return (kv_idx <= q_idx) & (kv_idx >= q_idx - 1638)


@triton.jit
def _local_global_16k(b, h, q_idx, kv_idx):
    near = (q_idx - kv_idx <= 819) & (kv_idx - q_idx <= 819)
    return near | (kv_idx < 128) | (q_idx < 128)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["compare", "sweep-fwd", "sweep-bwd", "features", "sparse"])
    p.add_argument("--seqlens", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--modes", nargs="+", default=["fwd", "fwdbwd"])
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--causal", type=int, nargs="+", default=[0, 1], help="sweeps: 0, 1 or both")
    p.add_argument("--no-flex", action="store_true", help="sparse: skip FlexAttention (its compiles take minutes)")
    p.add_argument("--json")
    p.add_argument("--candidates", help="sweeps: a JSON file with a list of config dicts (default: the lists above)")
    args = p.parse_args()
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}")
    if args.what == "compare":
        rows = compare(args)
    elif args.what == "sparse":
        rows = sparse(args)
    elif args.what == "features":
        rows = features(args)
    elif args.what == "sweep-fwd":
        rows = sweep(args, _candidates(args, FWD_CANDIDATES), "fwd")
    else:
        rows = sweep(args, _candidates(args, BWD_CANDIDATES), "fwdbwd")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

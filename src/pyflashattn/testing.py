"""Helpers for tests and benchmarks: random inputs and the accuracy rule.

The rule is flash-attn's: a result passes when its largest error against a float64 reference
is at most ``factor`` times the largest error of PyTorch's same-dtype standard attention,
plus a small floor (for outputs whose same-dtype error happens to be near zero).
"""
from __future__ import annotations

import torch

from .reference import attention_ref

FLOOR = {torch.float32: 2e-5, torch.float16: 1e-4, torch.bfloat16: 1e-3}


def make_qkv(batch: int, seqlen_q: int, seqlen_k: int, nheads: int, nheads_k: int, head_dim: int,
             head_dim_v: int | None = None, dtype=torch.float32, device="cpu", requires_grad=True,
             layout: str = "contiguous", generator: torch.Generator | None = None):
    """Random q ``(b, sq, h, d)``, k ``(b, sk, hk, d)``, v ``(b, sk, hk, dv)``.

    ``layout="strided"`` returns views with a non-trivial stride pattern (heads-first storage,
    as from a ``(b, h, s, d)`` projection), ``"packed"`` slices of one fused qkv-like buffer.
    """
    dv = head_dim_v or head_dim

    def rand(*shape):
        return torch.randn(*shape, generator=generator, device="cpu", dtype=torch.float32).to(device=device, dtype=dtype)

    if layout == "contiguous":
        q, k, v = rand(batch, seqlen_q, nheads, head_dim), rand(batch, seqlen_k, nheads_k, head_dim), rand(batch, seqlen_k, nheads_k, dv)
    elif layout == "strided":
        q = rand(batch, nheads, seqlen_q, head_dim).transpose(1, 2)
        k = rand(batch, nheads_k, seqlen_k, head_dim).transpose(1, 2)
        v = rand(batch, nheads_k, seqlen_k, dv).transpose(1, 2)
    elif layout == "packed":
        q = rand(batch, seqlen_q, nheads, head_dim + 3)[..., 1:head_dim + 1]  # unit last stride, odd row stride
        kv = rand(batch, seqlen_k, nheads_k, head_dim + dv)
        k, v = kv[..., :head_dim], kv[..., head_dim:]
    else:
        raise ValueError(f"layout must be 'contiguous', 'strided' or 'packed', got {layout!r}")
    return tuple(t.requires_grad_(requires_grad) for t in (q, k, v))


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference, ignoring positions where both are +inf (empty rows' lse)."""
    a, b = a.detach().double(), b.detach().double()
    both_inf = torch.isinf(a) & torch.isinf(b) & (torch.sign(a) == torch.sign(b))
    diff = (a - b).abs().masked_fill(both_inf, 0.0)
    return float(diff.nan_to_num(float("inf")).max()) if diff.numel() else 0.0


def check_close(name: str, ours: torch.Tensor, ref64: torch.Tensor, same_dtype: torch.Tensor,
                factor: float = 2.0, floor: float | None = None) -> None:
    """Raise AssertionError unless ``ours`` is as close to ``ref64`` as the rule asks."""
    floor = FLOOR[ours.dtype] if floor is None and ours.dtype in FLOOR else (floor or 1e-5)
    err, base = max_err(ours, ref64), max_err(same_dtype, ref64)
    assert err <= factor * base + floor, (
        f"{name}: max error {err:.3e} against float64 exceeds {factor} x same-dtype error "
        f"{base:.3e} + {floor:.1e}")


def compare_with_reference(fn, q, k, v, causal=False, window_size=(-1, -1), softmax_scale=None,
                           grads=True, factor=2.0, grad_factor=3.0, ref=attention_ref, **ref_kw):
    """Run ``fn(q, k, v) -> (out, lse)`` and check out, lse and (optionally) dq/dk/dv against
    the float64 reference ``ref``, with its same-dtype result (PyTorch's standard attention)
    as the yardstick. ``ref_kw`` go to ``ref`` (softcap, alibi_slopes, cu_seqlens...)."""
    out, lse = fn(q, k, v)
    q64, k64, v64 = (t.detach().double().requires_grad_(grads) for t in (q, k, v))
    kw = dict(softmax_scale=softmax_scale, causal=causal, window_size=window_size, **ref_kw)
    ref_out, ref_lse = ref(q64, k64, v64, **kw)
    pt_out, pt_lse = ref(q, k, v, dtype=None, **kw)
    assert out.shape == pt_out.shape and out.dtype == q.dtype
    check_close("out", out, ref_out, pt_out, factor)
    check_close("lse", lse, ref_lse, pt_lse.float(), factor, floor=1e-4)
    if not grads:
        return
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, (q, k, v), g)
    ref = torch.autograd.grad(ref_out, (q64, k64, v64), g.double())
    pt = torch.autograd.grad(pt_out, (q, k, v), g)
    for name, a, r, p in zip(("dq", "dk", "dv"), ours, ref, pt):
        assert a.shape == r.shape and a.dtype == q.dtype
        check_close(name, a, r, p, grad_factor)

"""The torch/kernel boundary: one ``torch.library`` custom op per pass, with fake (meta)
implementations and autograd, so ``torch.compile(fullgraph=True)`` traces through them.

``pyflashattn::fwd(q, k, v, scale, window_left, window_right, softcap=0, alibi_slopes=None,
cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=-1, max_seqlen_k=-1) -> (out, lse)``
``pyflashattn::bwd(dout, q, k, v, out, lse, dlse, <the same options>) -> (dq, dk, dv)``

Dense tensors ``(batch, seq, heads, dim)``, or packed ``(total, heads, dim)`` with
``cu_seqlens``; any strides with a unit last stride (other inputs are copied once). Windows
arrive with -1 for unbounded sides. The backend is chosen here: Triton for CUDA tensors, the
tiled PyTorch path (``cpu.py``) otherwise; ``PYFLASHATTN_BACKEND=triton|torch`` forces one
(``triton`` on CPU tensors needs ``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from . import cpu
from .configs import get_config, interpreting
from .params import KernelParams, kernel_window

BACKENDS = ("triton", "torch")


def backend_for(t: Tensor) -> str:
    """The backend that runs tensors on ``t``'s device, honouring ``PYFLASHATTN_BACKEND``."""
    forced = os.environ.get("PYFLASHATTN_BACKEND", "").strip().lower()
    if forced and forced not in BACKENDS:
        raise ValueError(f"PYFLASHATTN_BACKEND must be one of {BACKENDS}, got {forced!r}")
    backend = forced or ("triton" if t.is_cuda else "torch")
    if backend == "triton" and not t.is_cuda and not interpreting():
        raise RuntimeError("PYFLASHATTN_BACKEND=triton on CPU tensors needs TRITON_INTERPRET=1 "
                           "(set before importing pyflashattn), or use the torch backend")
    return backend


def _unit_last_stride(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _params(q, k, softmax_scale, window_left, window_right, softcap, alibi_slopes,
            cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k) -> KernelParams:
    if cu_seqlens_q is None:
        batch, max_seqlen_q, max_seqlen_k = q.shape[0], q.shape[1], k.shape[1]
    else:
        batch = cu_seqlens_q.shape[0] - 1
    left, right = kernel_window(window_left, window_right, max_seqlen_q, max_seqlen_k)
    return KernelParams(batch, max_seqlen_q, max_seqlen_k, softmax_scale, left, right, softcap,
                        None if alibi_slopes is None else alibi_slopes.float().contiguous(),
                        cu_seqlens_q, cu_seqlens_k)


@torch.library.custom_op("pyflashattn::fwd", mutates_args=())
def attn_fwd(q: Tensor, k: Tensor, v: Tensor, softmax_scale: float, window_left: int, window_right: int,
             softcap: float = 0.0, alibi_slopes: Optional[Tensor] = None,
             cu_seqlens_q: Optional[Tensor] = None, cu_seqlens_k: Optional[Tensor] = None,
             max_seqlen_q: int = -1, max_seqlen_k: int = -1) -> tuple[Tensor, Tensor]:
    q, k, v = (_unit_last_stride(t) for t in (q, k, v))
    p = _params(q, k, softmax_scale, window_left, window_right, softcap, alibi_slopes,
                cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    if q.numel() == 0:
        out, lse = _fwd_fake(q, k, v, softmax_scale, window_left, window_right, softcap, alibi_slopes,
                             cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
        return out.zero_(), lse.fill_(float("inf"))
    if backend_for(q) == "torch":
        return cpu.attn_fwd(q, k, v, p)
    from .kernels import fwd
    return fwd.attn_fwd(q, k, v, p, get_config(q.shape[-1], v.shape[-1], q.dtype))


@attn_fwd.register_fake
def _fwd_fake(q, k, v, softmax_scale, window_left, window_right, softcap=0.0, alibi_slopes=None,
              cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=-1, max_seqlen_k=-1):
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    if cu_seqlens_q is None:
        lse = q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32)
    else:
        lse = q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)
    return out, lse


@torch.library.custom_op("pyflashattn::bwd", mutates_args=())
def attn_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
             dlse: Optional[Tensor], softmax_scale: float, window_left: int, window_right: int,
             softcap: float = 0.0, alibi_slopes: Optional[Tensor] = None,
             cu_seqlens_q: Optional[Tensor] = None, cu_seqlens_k: Optional[Tensor] = None,
             max_seqlen_q: int = -1, max_seqlen_k: int = -1) -> tuple[Tensor, Tensor, Tensor]:
    dout, q, k, v, out = (_unit_last_stride(t) for t in (dout, q, k, v, out))
    lse = lse.contiguous()
    dlse = dlse.contiguous() if dlse is not None else None
    p = _params(q, k, softmax_scale, window_left, window_right, softcap, alibi_slopes,
                cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    if q.numel() == 0 or k.numel() == 0:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    if backend_for(q) == "torch":
        return cpu.attn_bwd(dout, q, k, v, out, lse, dlse, p)
    from .kernels import bwd
    return bwd.attn_bwd(dout, q, k, v, out, lse, dlse, p, get_config(q.shape[-1], v.shape[-1], q.dtype))


@attn_bwd.register_fake
def _bwd_fake(dout, q, k, v, out, lse, dlse, softmax_scale, window_left, window_right, *options):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, *options = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.options = options  # scale, window, softcap, slopes, cu_seqlens, max seqlens


def _backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = attn_bwd(dout, q, k, v, out, lse, dlse, *ctx.options)
    return (dq, dk, dv) + (None,) * len(ctx.options)


torch.library.register_autograd("pyflashattn::fwd", _backward, setup_context=_setup_context)

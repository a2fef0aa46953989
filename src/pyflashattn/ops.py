"""The torch/kernel boundary: one ``torch.library`` custom op per pass, with fake (meta)
implementations and autograd, so ``torch.compile(fullgraph=True)`` traces through them.

``pyflashattn::fwd(q, k, v, scale, window_left, window_right, softcap=0, alibi_slopes=None,
cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=-1, max_seqlen_k=-1, dropout_p=0, seed=None)
-> (out, lse)``
``pyflashattn::bwd(dout, q, k, v, out, lse, dlse, <the same options>) -> (dq, dk, dv)``
``pyflashattn::sparse_fwd(q, k, v, block_lists, block_tiles, block_meta, scale, softcap=0,
alibi_slopes=None)`` and ``pyflashattn::sparse_bwd``: the same under a block mask
(``pack_block_mask(BlockMask)``).
``attn_bwd_into(...)``: the dense backward into caller buffers (dq, or dk and dv, written or
added to), a plain function for the low-memory ring.

Dense tensors ``(batch, seq, heads, dim)``, or packed ``(total, heads, dim)`` with
``cu_seqlens``. Any strides with a unit last stride (other inputs are copied once). Windows
arrive with -1 for unbounded sides. The backend is chosen here: Triton for CUDA tensors, the
tiled PyTorch path (``cpu.py``) otherwise; ``PYFLASHATTN_BACKEND=triton|torch`` forces one
(``triton`` on CPU tensors needs ``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import functools
import os
from dataclasses import replace
from typing import Optional

import torch
from torch import Tensor

from . import cpu
from .configs import KernelConfig, env_switch, get_config, interpreting
from .params import KernelParams, kernel_window

BACKENDS = ("triton", "torch")
# The backward (dense, and varlen since v15) through a BackwardPlan (_cached_plan), on by default
# since the ninth session's GPU run (tests/test_bwd_plan.py: gradients bitwise equal to the
# general path's; the suite passed with it on). PYFLASHATTN_BWD_PLAN=0 (read at import) or ops.PLAN_BACKWARD = False turns it off
PLAN_BACKWARD = env_switch("PYFLASHATTN_BWD_PLAN")
# The forward through a ForwardPlan (_cached_fwd_plan): on since the sixteenth session's GPU run
# (out and lse bitwise equal to the general path's; host time per forward -32 to -34 %, b 1-16,
# 512-1k, h200-fwd-plan-diag-v16.log). PYFLASHATTN_FWD_PLAN=0 (read at import) or
# ops.PLAN_FORWARD = False turns it off
PLAN_FORWARD = env_switch("PYFLASHATTN_FWD_PLAN")


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
            cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, block_sparse,
            dropout_p=0.0, seed=None, mask_fn=None, deterministic=False) -> KernelParams:
    if cu_seqlens_q is None:
        batch, max_seqlen_q, max_seqlen_k = q.shape[0], q.shape[1], k.shape[1]
    else:
        batch = cu_seqlens_q.shape[0] - 1
    left, right = kernel_window(window_left, window_right, max_seqlen_q, max_seqlen_k)
    return KernelParams(batch, max_seqlen_q, max_seqlen_k, softmax_scale, left, right, softcap,
                        None if alibi_slopes is None else alibi_slopes.float().contiguous(),
                        cu_seqlens_q, cu_seqlens_k, tuple(block_sparse) if block_sparse else None,
                        dropout_p, seed, mask_fn, deterministic)


def _deterministic(asked: bool) -> bool:
    """Whether the backward must be deterministic: asked for, or torch's deterministic mode on
    (read when the backward runs, as torch's own ops do)."""
    return bool(asked) or torch.are_deterministic_algorithms_enabled()


def _config(q: Tensor, v: Tensor, p: KernelParams) -> KernelConfig:
    """The table's config, adjusted for dropout and block masks (``_adjusted_config``)."""
    cfg = get_config(q.shape[-1], v.shape[-1], q.dtype)
    if not (p.has_dropout or p.is_sparse):
        return cfg
    return _adjusted_config(cfg, p.has_dropout, p.sparse_blocks if p.is_sparse else None)


@functools.lru_cache(maxsize=None)
def _adjusted_config(cfg: KernelConfig, dropout: bool, sparse_blocks: Optional[tuple[int, int]]) -> KernelConfig:
    """With dropout, fewer forward stages where shared memory is short and the table's dK/dV
    and dQ tiles for dropout (``dropout_block_m_kv/n_kv``,
    ``dropout_block_n_q``, ``dropout_num_warps_q``); under a block mask of ``sparse_blocks`` (q,
    kv), tiles no larger than the mask's blocks (all powers of two, so each kernel tile lies
    inside one mask block). Cached: each ``dataclasses.replace`` costs ~5 us, on every call with
    dropout or a block mask."""
    if dropout:
        cfg = replace(cfg, block_m_kv=cfg.dropout_block_m_kv or cfg.block_m_kv,
                      block_n_kv=cfg.dropout_block_n_kv or cfg.block_n_kv,
                      block_n_q=cfg.dropout_block_n_q or cfg.block_n_q,
                      num_warps_q=cfg.dropout_num_warps_q or cfg.num_warps_q)
    if dropout and cfg.block_m * cfg.block_d >= 128 * 128:
        # dropout's masks are rearranged through shared memory (kernels/mask.py): with 3 stages
        # the d=128 forward needed 240 KB of Hopper's 227 (scripts/aot_check.py --dropout
        # --no-adjust); with v17's wgmma-order map 224 KB, which would fit: not yet measured
        # (on Hopper that forward now serves only dropout with varlen, softcap, ALiBi or windows)
        cfg = replace(cfg, num_stages=min(cfg.num_stages, 2))
    if sparse_blocks is None:
        return cfg
    bq, bk = sparse_blocks
    return replace(cfg, num_stages=min(cfg.num_stages, cfg.num_stages_sparse),
                   block_m=min(cfg.block_m, bq), block_n=min(cfg.block_n, cfg.block_n_sparse, bk),
                   block_m_kv=min(cfg.block_m_kv, bq), block_n_kv=min(cfg.block_n_kv, bk),
                   block_m_q=min(cfg.block_m_q, bq), block_n_q=min(cfg.block_n_q, bk))


def _run_fwd(q: Tensor, k: Tensor, v: Tensor, p: KernelParams) -> tuple[Tensor, Tensor]:
    if q.numel() == 0:
        out = q.new_zeros((*q.shape[:-1], v.shape[-1]))
        return out, p.new_lse(q).fill_(float("inf"))
    if backend_for(q) == "torch":
        return cpu.attn_fwd(q, k, v, p)
    from .kernels import fwd
    return fwd.attn_fwd(q, k, v, p, _config(q, v, p))


def _run_bwd(dout, q, k, v, out, lse, dlse, p: KernelParams) -> tuple[Tensor, Tensor, Tensor]:
    if q.numel() == 0 or k.numel() == 0:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    if backend_for(q) == "torch":
        return cpu.attn_bwd(dout, q, k, v, out, lse, dlse, p)
    from .kernels import bwd
    return bwd.attn_bwd(dout, q, k, v, out, lse, dlse, p, _config(q, v, p))


def attn_bwd_into(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                  softmax_scale: float, window_left: int, window_right: int, *, dlse: Optional[Tensor] = None,
                  dq: Optional[Tensor] = None, dk: Optional[Tensor] = None, dv: Optional[Tensor] = None,
                  accumulate: bool = False) -> None:
    """The dense backward into the caller's buffers: only the gradients whose buffer is given
    (``dq``; or ``dk`` with ``dv``; or all three), written, or with ``accumulate`` added to what
    the buffers hold (in fp32, rounded once into the buffer's dtype).

    Buffers: q's / k's / v's shape, a unit last stride (views such as ``dq[:, rows]`` do), any
    float dtype. A plain function, not a custom op: for callers that manage their own memory
    (the low-memory ring of ``distributed.py``), outside autograd and torch.compile."""
    if dq is None and dk is None and dv is None:
        raise ValueError("attn_bwd_into: pass dq, or dk and dv, or all three (nothing to compute)")
    if (dk is None) != (dv is None):
        raise ValueError("attn_bwd_into: dk and dv come together (pass both or neither)")
    for name, buf, like in (("dq", dq, q), ("dk", dk, k), ("dv", dv, v)):
        if buf is None:
            continue
        if buf.shape != like.shape or buf.device != like.device or not buf.is_floating_point():
            raise ValueError(f"attn_bwd_into: {name} must be a float tensor of shape {tuple(like.shape)} on "
                             f"{like.device}, got {buf.dtype} {tuple(buf.shape)} on {buf.device}")
        if buf.stride(-1) != 1 and buf.shape[-1] > 1:
            raise ValueError(f"attn_bwd_into: {name} needs a unit last stride, got strides {buf.stride()}")
    buffers = [t for t in (dq, dk, dv) if t is not None]
    if q.numel() == 0 or k.numel() == 0:  # every gradient is zero
        if not accumulate:
            for t in buffers:
                t.zero_()
        return
    dout, q, k, v, out = (_unit_last_stride(t) for t in (dout, q, k, v, out))
    lse, dlse = lse.contiguous(), None if dlse is None else dlse.contiguous()
    p = _params(q, k, softmax_scale, window_left, window_right, 0.0, None, None, None, -1, -1, None,
                deterministic=_deterministic(False))
    if backend_for(q) == "torch":  # fp32 gradients (the tiled path computes in fp32), added or copied once
        grads = cpu.attn_bwd(*(t.float() for t in (dout, q, k, v, out)), lse, dlse, p)
        for buf, grad in zip((dq, dk, dv), grads):
            if buf is not None:
                buf.copy_(grad.add_(buf) if accumulate else grad)
        return
    from .kernels import bwd
    bwd.attn_bwd(dout, q, k, v, out, lse, dlse, p, _config(q, v, p), dq=dq, dk=dk, dv=dv, accumulate=accumulate)


def _lse_shape(q: Tensor, varlen: bool) -> tuple[int, ...]:
    return (q.shape[1], q.shape[0]) if varlen else (q.shape[0], q.shape[2], q.shape[1])


# -- dense and varlen ----------------------------------------------------------------------

def _fwd_impl(q: Tensor, k: Tensor, v: Tensor, softmax_scale: float, window_left: int, window_right: int,
              softcap: float = 0.0, alibi_slopes: Optional[Tensor] = None,
              cu_seqlens_q: Optional[Tensor] = None, cu_seqlens_k: Optional[Tensor] = None,
              max_seqlen_q: int = -1, max_seqlen_k: int = -1,
              dropout_p: float = 0.0, seed: Optional[Tensor] = None,
              deterministic: bool = False) -> tuple[Tensor, Tensor]:
    # deterministic: for the backward (the options are the same for both passes)
    if PLAN_FORWARD and _plans_may_serve(q, k, alibi_slopes, dropout_p):
        # the launch bound once per layout (kernels.fwd.ForwardPlan)
        plan = _cached_fwd_plan(q, k, v, softmax_scale, window_left, window_right, softcap,
                                cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
        result = plan.run(q, k, v, cu_seqlens_q, cu_seqlens_k) if plan is not None else None
        if result is not None:
            return result
    q, k, v = (_unit_last_stride(t) for t in (q, k, v))
    return _run_fwd(q, k, v, _params(q, k, softmax_scale, window_left, window_right, softcap, alibi_slopes,
                                     cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, None,
                                     dropout_p, seed))


attn_fwd = torch.library.custom_op("pyflashattn::fwd", mutates_args=())(_fwd_impl)


@attn_fwd.register_fake
def _fwd_fake(q, k, v, softmax_scale, window_left, window_right, softcap=0.0, alibi_slopes=None,
              cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=-1, max_seqlen_k=-1, dropout_p=0.0, seed=None,
              deterministic=False):
    return (q.new_empty((*q.shape[:-1], v.shape[-1])),
            q.new_empty(_lse_shape(q, cu_seqlens_q is not None), dtype=torch.float32))


def _bwd_impl(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
             dlse: Optional[Tensor], softmax_scale: float, window_left: int, window_right: int,
              softcap: float = 0.0, alibi_slopes: Optional[Tensor] = None,
              cu_seqlens_q: Optional[Tensor] = None, cu_seqlens_k: Optional[Tensor] = None,
              max_seqlen_q: int = -1, max_seqlen_k: int = -1,
              dropout_p: float = 0.0, seed: Optional[Tensor] = None,
              deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    dout, q, k, v, out = (_unit_last_stride(t) for t in (dout, q, k, v, out))
    deterministic = _deterministic(deterministic)
    dlse = dlse.contiguous() if dlse is not None else None
    lse = lse.contiguous()
    if PLAN_BACKWARD and dlse is None and _plans_may_serve(q, k, alibi_slopes, dropout_p):
        # the launches bound once per layout (kernels.bwd.BackwardPlan): this runs on the
        # autograd engine's device thread, where Python costs twice what it does on the caller's
        plan = _cached_plan(q, k, v, out, lse, softmax_scale, window_left, window_right, softcap, deterministic,
                            cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
        grads = plan.run(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k) if plan is not None else None
        if grads is not None:
            return grads
    p = _params(q, k, softmax_scale, window_left, window_right, softcap, alibi_slopes,
                cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, None, dropout_p, seed,
                deterministic=deterministic)
    return _run_bwd(dout, q, k, v, out, lse, dlse, p)


attn_bwd = torch.library.custom_op("pyflashattn::bwd", mutates_args=())(_bwd_impl)


@attn_bwd.register_fake
def _bwd_fake(dout, q, k, v, out, lse, dlse, *options):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


# -- block-sparse: the BlockMask travels packed as one int32 tensor of its lists, its tiles,
#    and the lists' shapes (pack_block_mask), which keeps the op's schema to plain tensors ------

# @triton.jit mask predicates by number: an op's schema has no place for a function, so the
# number travels in the block mask's metadata (-1: none, use the tiles)
_MASK_FNS: list = []


def register_mask_fn(fn) -> int:
    """The number of ``fn`` in the predicate registry (added on first use)."""
    for i, known in enumerate(_MASK_FNS):
        if known is fn:
            return i
    _MASK_FNS.append(fn)
    return len(_MASK_FNS) - 1


def pack_block_mask(block_mask, mask_fn=None) -> tuple[Tensor, Tensor, list[int]]:
    """A ``BlockMask`` -> (flat int32 lists, int8 tiles, [predicate number, then the shapes as
    ndim, *dims, ...]). Cached on the mask (keyed by the predicate and its tensors' versions):
    the concatenation copies every list (4 MB at 64k) and took ~0.5 ms of host time per call."""
    tensors = block_mask.as_tensors()
    fn_id = -1 if mask_fn is None else register_mask_fn(mask_fn)
    if torch.compiler.is_compiling():  # traced into the graph: no Python-side cache (nor any need)
        return _pack(tensors, fn_id)
    key = (fn_id, *(t._version for t in tensors))
    packed = block_mask._packed.get(key)
    if packed is None:
        packed = _pack(tensors, fn_id)
        block_mask._packed.clear()  # only the newest versions are worth keeping
        block_mask._packed[key] = packed
    return packed


def _pack(tensors: tuple, fn_id: int) -> tuple[Tensor, Tensor, list[int]]:
    lists = [t for i, t in enumerate(tensors) if i != 5]
    meta: list[int] = [fn_id]
    for t in lists:
        meta += [t.dim(), *t.shape]
    return torch.cat([t.reshape(-1).to(torch.int32) for t in lists]), tensors[5], meta


def _mask_fn(meta: list[int]):
    return None if meta[0] < 0 else _MASK_FNS[meta[0]]


def _unpack_block_mask(flat: Tensor, tiles: Tensor, meta: list[int]) -> tuple:
    """The views ``pack_block_mask`` packed, cached on ``flat``: the same view objects on every
    call with one packed mask, so that what the launchers cache on them (``kernels.schedule``) stays."""
    cached = getattr(flat, "_pyflashattn_views", None)
    if cached is not None and cached[0] is tiles and cached[1] == meta and cached[2] == flat._version:
        return cached[3]
    views = _views(flat, tiles, meta)
    flat._pyflashattn_views = (tiles, list(meta), flat._version, views)
    return views


def _views(flat: Tensor, tiles: Tensor, meta: list[int]) -> tuple:
    lists, pos, at = [], 0, 1
    while at < len(meta):
        ndim = meta[at]
        shape = meta[at + 1:at + 1 + ndim]
        numel = 1
        for d in shape:
            numel *= d
        lists.append(flat[pos:pos + numel].view(shape))
        pos, at = pos + numel, at + 1 + ndim
    return (*lists[:5], tiles, *lists[5:])


def _sparse_fwd_impl(q: Tensor, k: Tensor, v: Tensor, block_lists: Tensor, block_tiles: Tensor, block_meta: list[int],
                     softmax_scale: float, softcap: float = 0.0,
                     alibi_slopes: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    q, k, v = (_unit_last_stride(t) for t in (q, k, v))
    sparse = _unpack_block_mask(block_lists, block_tiles, block_meta)
    return _run_fwd(q, k, v, _params(q, k, softmax_scale, -1, -1, softcap, alibi_slopes,
                                     None, None, -1, -1, sparse, mask_fn=_mask_fn(block_meta)))


sparse_fwd = torch.library.custom_op("pyflashattn::sparse_fwd", mutates_args=())(_sparse_fwd_impl)


@sparse_fwd.register_fake
def _sparse_fwd_fake(q, k, v, block_lists, block_tiles, block_meta, softmax_scale, softcap=0.0, alibi_slopes=None):
    return _fwd_fake(q, k, v, softmax_scale, -1, -1)


def _sparse_bwd_impl(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dlse: Optional[Tensor],
                     block_lists: Tensor, block_tiles: Tensor, block_meta: list[int], softmax_scale: float,
                     softcap: float = 0.0, alibi_slopes: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    dout, q, k, v, out = (_unit_last_stride(t) for t in (dout, q, k, v, out))
    dlse = dlse.contiguous() if dlse is not None else None
    sparse = _unpack_block_mask(block_lists, block_tiles, block_meta)
    p = _params(q, k, softmax_scale, -1, -1, softcap, alibi_slopes, None, None, -1, -1, sparse,
                mask_fn=_mask_fn(block_meta))
    return _run_bwd(dout, q, k, v, out, lse.contiguous(), dlse, p)


sparse_bwd = torch.library.custom_op("pyflashattn::sparse_bwd", mutates_args=())(_sparse_bwd_impl)


@sparse_bwd.register_fake
def _sparse_bwd_fake(dout, q, k, v, out, lse, dlse, *options):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _autograd(backward_op):
    def setup_context(ctx, inputs, output):
        q, k, v, *options = inputs
        ctx.save_for_backward(q, k, v, *output)
        ctx.options = options  # scale, window or block lists, softcap, slopes, cu_seqlens, ...

    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = backward_op(dout, q, k, v, out, lse, dlse, *ctx.options)
        return (dq, dk, dv) + (None,) * len(ctx.options)
    return backward, setup_context


for _fwd_name, _bwd_op in (("pyflashattn::fwd", attn_bwd), ("pyflashattn::sparse_fwd", sparse_bwd)):
    _backward, _setup = _autograd(_bwd_op)
    torch.library.register_autograd(_fwd_name, _backward, setup_context=_setup)


class _Attention(torch.autograd.Function):
    """The public functions' autograd in eager mode: the ops' implementations, called from a
    plain autograd.Function.

    ``register_autograd`` above keeps the ops differentiable for direct callers and for
    torch.compile, but in eager mode the custom-op machinery (argument flattening, dispatcher
    round trips, alias checks) cost more Python than the launch itself: ~1.5 ms per forward +
    backward on the H200's host against SDPA's 0.6 ms (scripts/profile_gpt_step.py)."""

    @staticmethod
    def forward(ctx, q, k, v, fwd_op, bwd_op, *options):
        out, lse = fwd_op(q, k, v, *options)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.bwd_op, ctx.options = bwd_op, options
        # an unused output's gradient arrives as None instead of a zero tensor: most callers
        # never touch lse, and a materialized zero dlse costs an allocation, a fill kernel and
        # a read of it in the backward's preprocess, on every step
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        if dout is None:  # only lse was used
            dout = torch.zeros_like(out)
        dq, dk, dv = ctx.bwd_op(dout, q, k, v, out, lse, dlse, *ctx.options)
        return (dq, dk, dv, None, None) + (None,) * len(ctx.options)


def _plans_may_serve(q: Tensor, k: Tensor, alibi_slopes: Optional[Tensor], dropout_p: float) -> bool:
    """Whether a pass's plan may serve this call at all (the plans' per-layout checks come after):
    no ALiBi or dropout (per-call arguments a plan does not fill in), CUDA tensors on the Triton
    backend, no empty input."""
    return (alibi_slopes is None and dropout_p == 0.0 and q.is_cuda and bool(q.numel()) and bool(k.numel())
            and backend_for(q) == "triton")


def _cached_plan(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, softmax_scale: float, window_left: int,
                 window_right: int, softcap: float, deterministic: bool = False,
                 cu_seqlens_q: Optional[Tensor] = None, cu_seqlens_k: Optional[Tensor] = None,
                 max_seqlen_q: int = -1, max_seqlen_k: int = -1):
    """The ``kernels.bwd.BackwardPlan`` for these layouts and options, made on first need and
    kept (``_PLANS``: a plan holds no tensor), or None where none can be made yet (the first
    backward of a layout goes the general way, which compiles and caches the kernels a plan
    binds) or at all. Varlen: keyed also on the batch, the maxima (the grids) and whether one
    cu_seqlens serves both; the cu_seqlens 16-byte aligned, as the kernels were specialized."""
    from .kernels import bwd

    def make(p, config):
        return bwd.plan_bwd(q, k, v, out, lse, p, config)
    return _plan_for((q, k, v, out, lse), ("bwd", softmax_scale, window_left, window_right, softcap, deterministic),
                     cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, deterministic, make)


def _cached_fwd_plan(q: Tensor, k: Tensor, v: Tensor, softmax_scale: float, window_left: int, window_right: int,
                     softcap: float, cu_seqlens_q: Optional[Tensor] = None, cu_seqlens_k: Optional[Tensor] = None,
                     max_seqlen_q: int = -1, max_seqlen_k: int = -1):
    """The ``kernels.fwd.ForwardPlan`` for these layouts and options, as ``_cached_plan``."""
    from .kernels import fwd

    def make(p, config):
        return fwd.plan_fwd(q, k, v, p, config)
    return _plan_for((q, k, v), ("fwd", softmax_scale, window_left, window_right, softcap),
                     cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, False, make)


def _plan_for(given: tuple, options: tuple, cu_seqlens_q, cu_seqlens_k, max_seqlen_q: int, max_seqlen_k: int,
              deterministic: bool, make):
    """A pass's plan from ``_PLANS`` by the layouts of ``given`` (q first, v third), ``options``
    and the config in force, made by ``make(params, config)`` on first need."""
    from .kernels import launch, plan as kernel_plan
    varlen = cu_seqlens_q is not None
    q, k, v = given[:3]
    config = get_config(q.shape[-1], v.shape[-1], q.dtype)
    key = (tuple((t.shape, t.stride()) for t in given), q.dtype, q.device.index, options, id(config),
           (cu_seqlens_q.shape[0], cu_seqlens_q is cu_seqlens_k, max_seqlen_q, max_seqlen_k) if varlen else None)
    plan = _PLANS.get(key)
    # a failed attempt is kept as the launchers' entry count it saw: binding again is worth it
    # only once some kernel has been compiled since (~100 us of Python per attempt)
    if plan is None or (type(plan) is int and plan != launch.ENTRIES):
        # checked only here: a plan's run checks alignment, distinct inputs and the fast path
        # itself (Plan.accepts), and what is refused here is not cached (an unaligned call does
        # not keep the next, aligned one from a plan)
        if not kernel_plan.plannable(*given) or (varlen and not kernel_plan.cu_aligned(cu_seqlens_q, cu_seqlens_k)):
            return None
        _, softmax_scale, window_left, window_right, softcap = options[:5]
        p = _params(q, k, softmax_scale, window_left, window_right, softcap, None, cu_seqlens_q, cu_seqlens_k,
                    max_seqlen_q, max_seqlen_k, None, deterministic=deterministic)
        plan = make(p, config)
        if len(_PLANS) >= 256:
            _PLANS.clear()
        _PLANS[key] = launch.ENTRIES if plan is None else plan
    return None if type(plan) is int else plan


# BackwardPlans and ForwardPlans by (layouts, options, config, device), or for a failed attempt
# the launchers' entry count at the time: see _plan_for
_PLANS: dict = {}


def _use_function(q: Tensor, k: Tensor, v: Tensor) -> bool:
    return (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
            and not torch.compiler.is_compiling())


def attention(q: Tensor, k: Tensor, v: Tensor, *options) -> tuple[Tensor, Tensor]:
    """``pyflashattn::fwd`` with autograd through ``_Attention`` (what the public API calls).
    Under torch.compile the op is called directly: its registered autograd traces in every case
    (dynamo cannot trace an autograd.Function given one tensor twice, e.g. ``q is k``), and the
    wrapper's Python cost is gone from a compiled graph anyway."""
    if _use_function(q, k, v):
        return _Attention.apply(q, k, v, _fwd_impl, _bwd_impl, *options)
    return attn_fwd(q, k, v, *options) if torch.compiler.is_compiling() else _fwd_impl(q, k, v, *options)


def sparse_attention(q: Tensor, k: Tensor, v: Tensor, *options) -> tuple[Tensor, Tensor]:
    """``pyflashattn::sparse_fwd`` with autograd through ``_Attention`` (as ``attention``)."""
    if _use_function(q, k, v):
        return _Attention.apply(q, k, v, _sparse_fwd_impl, _sparse_bwd_impl, *options)
    return sparse_fwd(q, k, v, *options) if torch.compiler.is_compiling() else _sparse_fwd_impl(q, k, v, *options)

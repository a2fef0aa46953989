"""Public API: flash-attn 2.x compatible functions and an SDPA-style entry point.

Thin by design: validate, normalize options (``params``), call the custom op (``ops``).
The packed variants are views of the plain one.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from . import cpu, ops, validate
from .dropout import keep_mask, keep_scale, new_seed
from .params import fold_causal, kernel_window


def _not_yet(option: str) -> NotImplementedError:
    return NotImplementedError(f"pyflashattn does not implement {option} yet; pass the default to disable it")


def flash_attn_func(
    q: Tensor, k: Tensor, v: Tensor,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[Tensor] = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> Union[Tensor, tuple[Tensor, Tensor, Optional[Tensor]]]:
    """Exact attention, flash-attn's ``flash_attn_func``.

    Args:
        q: ``(batch, seqlen_q, nheads, headdim)``, fp16/bf16/fp32.
        k: ``(batch, seqlen_k, nheads_k, headdim)``; ``nheads % nheads_k == 0`` (GQA/MQA).
        v: ``(batch, seqlen_k, nheads_k, headdim_v)``.
        dropout_p: dropout on the attention probabilities (training); the mask comes from an
            in-kernel counter-based RNG seeded from torch's generator (``torch.manual_seed``
            reproduces it) and is regenerated in the backward, never stored.
        softmax_scale: defaults to ``1 / sqrt(headdim)``.
        causal: mask aligned to the bottom-right corner of the score matrix when
            ``seqlen_q != seqlen_k``; a query row that sees no key outputs 0.
        window_size: ``(left, right)`` local attention, ``-1`` unbounded; row ``i`` sees keys
            ``i + seqlen_k - seqlen_q - left <= j <= i + seqlen_k - seqlen_q + right``.
        softcap: if > 0, scores ``s`` become ``softcap * tanh(s / softcap)`` before the softmax.
        alibi_slopes: fp32 ``(nheads,)`` or ``(batch, nheads)``; adds
            ``-slope * |i + seqlen_k - seqlen_q - j|`` to the scaled scores.
        deterministic: a backward that sums in a fixed order, bitwise the same run after run.
            Without it (and with torch's deterministic mode off) the Hopper backward may add
            dQ by atomics where that measured faster (head dim 128, no causal mask, long keys).
        return_attn_probs: also return ``softmax_lse`` ``(batch, nheads, seqlen_q)`` float32
            (natural log) and, with dropout, the dropped and rescaled probabilities
            ``(batch, nheads, seqlen_q, seqlen_k)`` (materialized: for tests at small sizes), else None.

    Returns:
        out ``(batch, seqlen_q, nheads, headdim_v)``, or ``(out, softmax_lse, None)``.
    """
    validate.check_qkv(q, k, v)
    validate.check_alibi(alibi_slopes, q.shape[0], q.shape[2], q.device)
    validate.check_flags(causal=causal, deterministic=deterministic, return_attn_probs=return_attn_probs)
    scale, window_left, window_right = _common_options(q, dropout_p, softmax_scale, causal, window_size, softcap)
    if return_attn_probs and dropout_p > 0.0 and validate.capturing(q):
        raise RuntimeError("return_attn_probs=True with dropout_p > 0 rebuilds the dropout mask from its seed, "
                           "read back to the host, which cannot happen while a CUDA graph is being captured; "
                           "capture without return_attn_probs")
    seed = new_seed(q.device) if dropout_p > 0.0 else None
    out, lse = ops.attention(q, k, v, scale, window_left, window_right, float(softcap), alibi_slopes,
                             None, None, -1, -1, float(dropout_p), seed, bool(deterministic))
    if not return_attn_probs:
        return out
    probs = None
    if dropout_p > 0.0:
        probs = dropped_probs(q, k, lse, scale, window_left, window_right, float(softcap), alibi_slopes,
                              float(dropout_p), seed)
    return out, lse, probs


def dropped_probs(q, k, lse, scale, window_left, window_right, softcap, alibi_slopes, dropout_p, seed):
    """The probabilities the forward multiplied V by: ``P * keep / P(keep)``, ``(b, h, sq, sk)``
    float32, rebuilt from the saved log-sum-exp and the same Philox numbers as the kernels."""
    b, sq, h, _ = q.shape
    sk, group = k.shape[1], h // k.shape[2]
    rows, cols = torch.arange(sq, device=q.device), torch.arange(sk, device=q.device)
    qh = q.detach().transpose(1, 2).float()
    kh = k.detach().transpose(1, 2).float().repeat_interleave(group, 1)
    slopes = None if alibi_slopes is None else alibi_slopes.float().expand(b, h)
    s, _ = cpu.scores(scale * (qh @ kh.transpose(-1, -2)), rows, cols, sq, sk, softcap, slopes)
    left, right = kernel_window(window_left, window_right, sq, sk)
    s = s.masked_fill(~cpu.visible(rows, cols, sq, sk, left, right), float("-inf"))
    probs = torch.exp(s - lse.float()[..., None])
    bh = torch.arange(b, device=q.device)[:, None] * h + torch.arange(h, device=q.device)[None, :]
    keep = keep_mask(int(seed.item()), dropout_p, bh, rows, cols)
    return torch.where(keep, probs * keep_scale(dropout_p), 0.0)


def _common_options(q, dropout_p, softmax_scale, causal, window_size, softcap):
    """Validate the options every variant shares; returns (scale, window_left, window_right)."""
    validate.check_scale(softmax_scale)
    validate.check_dropout(dropout_p)
    validate.check_window(window_size)
    validate.check_softcap(softcap)
    scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    return (scale, *fold_causal(causal, window_size))


def _check_packed(name: str, t: Tensor, ndim: int, axis: int, count: int, layout: str) -> None:
    validate.check_tensor(name, t, ndim, layout)
    if t.shape[axis] != count:
        raise ValueError(f"{name} must have size {count} in dimension {axis} {layout}, got shape {tuple(t.shape)}")


def flash_attn_qkvpacked_func(qkv: Tensor, dropout_p: float = 0.0, softmax_scale: Optional[float] = None,
                              causal: bool = False, window_size: tuple[int, int] = (-1, -1),
                              softcap: float = 0.0, alibi_slopes: Optional[Tensor] = None,
                              deterministic: bool = False, return_attn_probs: bool = False):
    """``qkv`` ``(batch, seqlen, 3, nheads, headdim)``; otherwise as ``flash_attn_func``."""
    _check_packed("qkv", qkv, 5, 2, 3, "(batch, seqlen, 3, nheads, headdim)")
    return flash_attn_func(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], dropout_p, softmax_scale, causal,
                           window_size, softcap, alibi_slopes, deterministic, return_attn_probs)


def flash_attn_kvpacked_func(q: Tensor, kv: Tensor, dropout_p: float = 0.0, softmax_scale: Optional[float] = None,
                             causal: bool = False, window_size: tuple[int, int] = (-1, -1),
                             softcap: float = 0.0, alibi_slopes: Optional[Tensor] = None,
                             deterministic: bool = False, return_attn_probs: bool = False):
    """``kv`` ``(batch, seqlen_k, 2, nheads_k, headdim)``; otherwise as ``flash_attn_func``."""
    _check_packed("kv", kv, 5, 2, 2, "(batch, seqlen_k, 2, nheads_k, headdim)")
    return flash_attn_func(q, kv[:, :, 0], kv[:, :, 1], dropout_p, softmax_scale, causal,
                           window_size, softcap, alibi_slopes, deterministic, return_attn_probs)


def flash_attn_varlen_func(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
    max_seqlen_q: int, max_seqlen_k: int, dropout_p: float = 0.0, softmax_scale: Optional[float] = None,
    causal: bool = False, window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0,
    alibi_slopes: Optional[Tensor] = None, deterministic: bool = False, return_attn_probs: bool = False,
):
    """Variable-length attention on packed sequences, flash-attn's ``flash_attn_varlen_func``.

    q ``(total_q, nheads, headdim)``, k/v ``(total_k, nheads_k, headdim[_v])``; sequence ``i``
    is rows ``cu_seqlens_q[i]:cu_seqlens_q[i+1]`` (int32, length batch + 1; empty sequences are
    allowed). Masks and ALiBi positions are per sequence. Returns out ``(total_q, nheads,
    headdim_v)``, or ``(out, softmax_lse, None)`` with ``softmax_lse`` ``(nheads, total_q)``.
    """
    validate.check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    validate.check_alibi(alibi_slopes, cu_seqlens_q.shape[0] - 1, q.shape[1], q.device)
    validate.check_flags(causal=causal, deterministic=deterministic, return_attn_probs=return_attn_probs)
    scale, window_left, window_right = _common_options(q, dropout_p, softmax_scale, causal, window_size, softcap)
    if dropout_p > 0.0 and return_attn_probs:
        raise _not_yet("return_attn_probs with dropout for variable-length sequences (the dropped "
                       "probabilities are returned by flash_attn_func; pad the batch to inspect them)")
    seed = new_seed(q.device) if dropout_p > 0.0 else None
    out, lse = ops.attention(q, k, v, scale, window_left, window_right, float(softcap), alibi_slopes,
                             cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k), float(dropout_p), seed,
                             bool(deterministic))
    return (out, lse, None) if return_attn_probs else out


def flash_attn_varlen_qkvpacked_func(qkv: Tensor, cu_seqlens: Tensor, max_seqlen: int, dropout_p: float = 0.0,
                                     softmax_scale: Optional[float] = None, causal: bool = False,
                                     window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0,
                                     alibi_slopes: Optional[Tensor] = None, deterministic: bool = False,
                                     return_attn_probs: bool = False):
    """``qkv`` ``(total, 3, nheads, headdim)``; otherwise as ``flash_attn_varlen_func``."""
    _check_packed("qkv", qkv, 4, 1, 3, "(total, 3, nheads, headdim)")
    return flash_attn_varlen_func(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                  dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                                  deterministic, return_attn_probs)


def flash_attn_varlen_kvpacked_func(q: Tensor, kv: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
                                    max_seqlen_q: int, max_seqlen_k: int, dropout_p: float = 0.0,
                                    softmax_scale: Optional[float] = None, causal: bool = False,
                                    window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0,
                                    alibi_slopes: Optional[Tensor] = None, deterministic: bool = False,
                                    return_attn_probs: bool = False):
    """``kv`` ``(total_k, 2, nheads_k, headdim)``; otherwise as ``flash_attn_varlen_func``."""
    _check_packed("kv", kv, 4, 1, 2, "(total_k, 2, nheads_k, headdim)")
    return flash_attn_varlen_func(q, kv[:, 0], kv[:, 1], cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                  dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                                  deterministic, return_attn_probs)


def _is_triton_jit(fn) -> bool:
    try:  # JITFunction, or InterpretedFunction under TRITON_INTERPRET=1
        from triton.runtime.jit import KernelInterface
    except ImportError:  # no Triton here: nothing can be a Triton function
        return False
    return isinstance(fn, KernelInterface)


def block_sparse_attn_func(q: Tensor, k: Tensor, v: Tensor, block_mask, mask_mod=None,
                           softmax_scale: Optional[float] = None, softcap: float = 0.0,
                           alibi_slopes: Optional[Tensor] = None, return_attn_probs: bool = False):
    """Block-sparse attention in the flash-attn layout: only the blocks ``block_mask`` lists are
    computed (``pyflashattn.block_mask.create_block_mask``). Partial blocks apply the element
    mask the block mask was built from; a row with no visible key outputs 0.

    ``mask_mod``: ``None`` or the Python predicate the block mask was created with (its values
    are already stored in the mask's tiles); or a ``@triton.jit`` predicate
    ``(b, h, q_idx, kv_idx) -> bool`` computing the same mask, which the Triton kernels evaluate
    in registers for the partial blocks instead of loading the stored tiles (no tile traffic; the
    PyTorch path keeps using the tiles, so the two must agree).
    """
    from .block_mask import BlockMask
    validate.check_qkv(q, k, v)
    validate.check_alibi(alibi_slopes, q.shape[0], q.shape[2], q.device)
    if not isinstance(block_mask, BlockMask):
        raise TypeError(f"block_mask must be a pyflashattn BlockMask (create_block_mask), got {type(block_mask).__name__}")
    validate.check_block_mask(block_mask, q, k)
    kernel_mask_fn = mask_mod if _is_triton_jit(mask_mod) else None
    if mask_mod is not None and kernel_mask_fn is None and mask_mod is not block_mask.mask_mod:
        raise ValueError("mask_mod differs from the one block_mask was created with; build the block mask "
                         "with create_block_mask(mask_mod, ...), or pass a @triton.jit predicate")
    validate.check_flags(return_attn_probs=return_attn_probs)
    scale, _, _ = _common_options(q, 0.0, softmax_scale, False, (-1, -1), softcap)
    out, lse = ops.sparse_attention(q, k, v, *ops.pack_block_mask(block_mask, kernel_mask_fn),
                                    scale, float(softcap), alibi_slopes)
    return (out, lse, None) if return_attn_probs else out


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor] = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
                                 enable_gqa: bool = False, block_mask=None) -> Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` in its ``(batch, heads, seq, dim)``
    layout, computed by the flash kernels on transposed views (no copy).

    ``attn_mask``: a bool mask (True = attend) broadcastable to ``(batch, heads, seq_q, seq_k)``,
    run as block-sparse attention over ``BlockMask.from_dense(attn_mask)``: blocks with no True
    are skipped, partial ones masked element-wise. Building that block mask costs a pass over the
    mask on every call; for a mask reused across calls or layers, build a ``BlockMask`` once and
    pass ``block_mask=``. Float (additive) masks are not supported.

    Differences from torch: ``is_causal`` with ``seq_q != seq_k`` is aligned bottom-right
    (flash-attn's convention; torch aligns top-left), and a query row whose mask is all False
    outputs 0 (torch: NaN); the first raises rather than silently differ.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        validate.check_tensor(name, t, 4, "(batch, heads, seq, dim)")
    validate.check_flags(is_causal=is_causal, enable_gqa=enable_gqa)
    if attn_mask is not None:
        if is_causal or block_mask is not None:
            raise ValueError("attn_mask cannot be combined with is_causal or block_mask: fold them into one mask")
        if dropout_p:
            raise _not_yet("dropout_p with an attn_mask in scaled_dot_product_attention")
        from .block_mask import BlockMask
        block_mask = BlockMask.from_dense(validate.check_attn_mask(attn_mask, query, key))
    if is_causal and query.shape[-2] != key.shape[-2]:
        raise ValueError("is_causal with seq_q != seq_k is ambiguous (torch aligns top-left, flash-attn "
                         "bottom-right); call flash_attn_func(causal=True) for bottom-right alignment")
    if query.shape[1] != key.shape[1] and not enable_gqa:
        raise ValueError(f"query has {query.shape[1]} heads and key {key.shape[1]}: pass enable_gqa=True for GQA")
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    if block_mask is not None:
        if is_causal or dropout_p:
            raise ValueError("block_mask replaces is_causal and cannot be combined with dropout_p")
        return block_sparse_attn_func(q, k, v, block_mask, softmax_scale=scale).transpose(1, 2)
    return flash_attn_func(q, k, v, dropout_p=dropout_p, softmax_scale=scale, causal=is_causal).transpose(1, 2)

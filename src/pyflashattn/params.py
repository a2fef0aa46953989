"""Attention options normalized before any kernel sees them.

Causal is a window: ``causal=True`` becomes ``window_right = 0``. ``-1`` means unbounded on the
public API; kernels get a finite value large enough never to bind, so there is one mask rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .dropout import keep_scale, keep_threshold

UNBOUNDED = -1


def fold_causal(causal: bool, window_size: tuple[int, int]) -> tuple[int, int]:
    """``(causal, window_size)`` -> ``(window_left, window_right)``, ``-1`` meaning unbounded."""
    left, right = int(window_size[0]), int(window_size[1])
    if causal:
        right = 0
    return left, right


def kernel_window(window_left: int, window_right: int, seqlen_q: int, seqlen_k: int) -> tuple[int, int]:
    """Replace unbounded (negative) sides by finite values that never bind, and clamp large
    values so that index arithmetic stays far from int32 overflow.

    Row ``i`` sees ``j >= i + (seqlen_k - seqlen_q) - left``: ``left = seqlen_k`` covers every
    key; ``j <= i + (seqlen_k - seqlen_q) + right``: ``right = seqlen_q`` does.
    """
    left = seqlen_k if window_left < 0 else min(window_left, seqlen_k)
    right = seqlen_q if window_right < 0 else min(window_right, seqlen_q)
    return left, right


LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class KernelParams:
    """Everything a launcher needs besides the tensors, normalized once per call.

    Dense tensors are ``(batch, seq, heads, dim)``; varlen tensors ``(total, heads, dim)`` with
    ``cu_seqlens_q/k`` (int32, ``batch + 1``) and the maxima as ``max_seqlen_q/k``. The
    launchers see varlen tensors as a batch of one (``as_4d``) whose batch stride is 0, and
    the kernels find each sequence's start and length in ``cu_seqlens``.
    """
    batch: int
    max_seqlen_q: int
    max_seqlen_k: int
    softmax_scale: float
    window_left: int          # finite (``kernel_window``)
    window_right: int
    softcap: float = 0.0
    alibi_slopes: Optional[torch.Tensor] = None   # (nheads,) or (batch, nheads) fp32
    cu_seqlens_q: Optional[torch.Tensor] = None
    cu_seqlens_k: Optional[torch.Tensor] = None
    # block-sparse: the BlockMask's lists (forward order, then the transposed ones), see block_mask.py
    sparse: Optional[tuple] = None
    dropout_p: float = 0.0
    seed: Optional[torch.Tensor] = None       # int64 (1,), see dropout.py
    # block-sparse: a @triton.jit predicate (b, h, q_idx, kv_idx) -> bool for the partial blocks,
    # evaluated in the kernels instead of loading the BlockMask's tiles (None: the tiles)
    mask_fn: Optional[object] = None
    # the backward must sum in a fixed order (flash-attn's ``deterministic``, or torch's
    # deterministic mode): no atomics (kernels.hopper.fused_dq)
    deterministic: bool = False

    @property
    def has_dropout(self) -> bool:
        return self.dropout_p > 0.0

    def dropout_args(self, dummy: torch.Tensor) -> tuple:
        """Kernel arguments: (seed pointer, keep threshold, 1 / P(keep))."""
        if not self.has_dropout:
            return dummy, 0, 1.0
        return self.seed, keep_threshold(self.dropout_p), keep_scale(self.dropout_p)

    @property
    def is_sparse(self) -> bool:
        return self.sparse is not None

    @property
    def sparse_blocks(self) -> tuple[int, int]:
        """(Q_BLOCK, KV_BLOCK) of the block mask (the tiles' shape); (1, 1) when dense."""
        return tuple(self.sparse[5].shape[1:]) if self.sparse else (1, 1)

    def sparse_order(self, dummy: torch.Tensor, heads: int, group: int, num_rows: int, block: int,
                     transposed: bool = False) -> torch.Tensor:
        """Kernel argument: the program order of a block-sparse launch (``kernels.schedule``:
        rows with the most blocks first) over ``num_rows`` rows of ``block`` tokens; ``dummy``
        when dense."""
        if self.sparse is None:
            return dummy
        from .kernels.schedule import longest_first
        num, full = (self.sparse[6], self.sparse[9]) if transposed else (self.sparse[0], self.sparse[3])
        mask_block = self.sparse_blocks[1 if transposed else 0]
        return longest_first(num, full, self.batch, heads, group, num_rows, mask_block // block)

    def sparse_args(self, dummy: torch.Tensor, transposed: bool = False) -> tuple:
        """Kernel arguments: (num, idx, tile ids, full num, full idx, tiles, stride_b, stride_h, row length)."""
        if self.sparse is None:
            return (dummy,) * 6 + (0, 0, 1)
        kv_num, kv_idx, kv_tile, full_num, full_idx, tiles, q_num, q_idx, q_tile, fq_num, fq_idx = self.sparse
        lists = (q_num, q_idx, q_tile, fq_num, fq_idx) if transposed else (kv_num, kv_idx, kv_tile, full_num, full_idx)
        num = lists[0]
        stride_b = 0 if num.shape[0] == 1 else num.stride(0)
        stride_h = 0 if num.shape[1] == 1 else num.stride(1)
        return (*lists, tiles, stride_b, stride_h, lists[1].shape[-1])

    @property
    def is_varlen(self) -> bool:
        return self.cu_seqlens_q is not None

    @property
    def has_softcap(self) -> bool:
        return self.softcap > 0.0

    @property
    def has_alibi(self) -> bool:
        return self.alibi_slopes is not None

    # scalars as the kernels take them (base-2 scores; see kernels/mask.py)
    @property
    def qk_scale(self) -> float:
        return (self.softcap if self.has_softcap else self.softmax_scale) * LOG2E

    @property
    def softcap_scale(self) -> float:
        return self.softmax_scale / self.softcap if self.has_softcap else 1.0

    alibi_log2 = LOG2E

    def as_4d(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The tensors as the kernels index them: packed varlen ones get a batch axis of one."""
        return tuple(t.unsqueeze(0) for t in tensors) if self.is_varlen else tensors

    def strides(self, t4: torch.Tensor) -> tuple[int, int, int]:
        """(batch, seq, head) strides of a 4-d view; the batch stride of packed tensors is 0."""
        batch, seq, head, _ = t4.stride()  # one call: ``stride(i)`` costs more than the whole tuple
        return (0 if self.is_varlen else batch), seq, head

    def new_lse(self, q: torch.Tensor) -> torch.Tensor:
        """lse as flash-attn returns it: ``(batch, nheads, seqlen_q)``, or ``(nheads, total_q)`` for varlen."""
        shape = (q.shape[1], q.shape[0]) if self.is_varlen else (q.shape[0], q.shape[2], q.shape[1])
        return torch.empty(shape, dtype=torch.float32, device=q.device)

    def lse_strides(self, lse: torch.Tensor) -> tuple[int, int]:
        return (0, lse.stride(0)) if self.is_varlen else (lse.stride(0), lse.stride(1))

    def cu_q(self, dummy: torch.Tensor) -> torch.Tensor:
        return self.cu_seqlens_q if self.is_varlen else dummy

    def cu_k(self, dummy: torch.Tensor) -> torch.Tensor:
        return self.cu_seqlens_k if self.is_varlen else dummy

    def slopes_or(self, dummy: torch.Tensor) -> torch.Tensor:
        return self.alibi_slopes if self.has_alibi else dummy

    def slope_strides(self) -> tuple[int, int]:
        s = self.alibi_slopes
        if s is None:
            return 0, 0
        return (0, s.stride(0)) if s.dim() == 1 else (s.stride(0), s.stride(1))

"""Dropout's random numbers, the same on every backend.

The kernels draw one Philox-4x32-10 number per attention-matrix element with the counter
``(key index, query index, batch * nheads + head, 0)`` and a 64-bit key (the seed): the mask is
a pure function of (seed, position), so the backward regenerates it and nothing is stored.
This module is the PyTorch twin of Triton's ``tl.random.philox`` for the CPU path and for tests,
and draws seeds from torch's generator (``torch.manual_seed`` makes dropout reproducible).
"""
from __future__ import annotations

import torch

_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_MASK32 = 0xFFFFFFFF


def new_seed(device) -> torch.Tensor:
    """A fresh 62-bit seed from torch's default CPU generator, as an int64 tensor on ``device``
    (a tensor, so torch.compile does not specialize on its value)."""
    return torch.randint(0, 2 ** 62, (1,), dtype=torch.int64).to(device)


def keep_threshold(dropout_p: float) -> int:
    """An element is kept when its uint32 random number is >= this (so P(keep) = 1 - p)."""
    return min(int(dropout_p * 2 ** 32), 2 ** 32 - 1)


def _mul_hi_lo(a: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of ``a * b`` for uint32 values held in int64 (16-bit limbs,
    so no intermediate leaves int64)."""
    a_hi, a_lo = a >> 16, a & 0xFFFF
    b_hi, b_lo = b >> 16, b & 0xFFFF
    lo_lo = a_lo * b_lo
    mid = a_hi * b_lo + a_lo * b_hi + (lo_lo >> 16)
    hi = a_hi * b_hi + (mid >> 16)
    lo = ((mid & 0xFFFF) << 16) | (lo_lo & 0xFFFF)
    return hi & _MASK32, lo & _MASK32


def philox(seed: int, c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor,
           rounds: int = 10) -> torch.Tensor:
    """First output word of Philox-4x32 (Triton's ``philox_impl``), uint32 values in int64."""
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    c0, c1, c2, c3 = (torch.as_tensor(c).to(torch.int64) & _MASK32 for c in (c0, c1, c2, c3))
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    for _ in range(rounds):
        hi_b, lo_b = _mul_hi_lo(c2, _ROUND_B)
        hi_a, lo_a = _mul_hi_lo(c0, _ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32
    return c0


def keep_mask(seed: int, dropout_p: float, bh: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """bool ``broadcast(bh[..., None, None], rows[:, None], cols[None, :])``: True where kept."""
    r = philox(seed, cols[None, :], rows[:, None], bh[..., None, None], torch.zeros((), dtype=torch.int64, device=rows.device))
    return r >= keep_threshold(dropout_p)

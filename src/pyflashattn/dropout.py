"""Dropout's random numbers, the same on every backend.

One Philox-4x32-10 draw (counter ``(key index // 8, query index, batch * nheads + head, 0)``,
64-bit key = the seed) gives four 32-bit words, cut into eight 16-bit numbers for eight
neighbouring keys: key ``8c + 2w + h`` of a row takes half ``h`` (0: low) of word ``w``. An
element is kept when its number is >= ``keep_threshold(p)``, so dropout probabilities are
multiples of 2^-16 (flash-attn uses 2^-8) and the kept values are scaled by ``keep_scale(p)``, the
inverse of the exact keep probability. The mask is a pure function of (seed, position), so the
backward regenerates it and nothing is stored. (One draw per element made Philox, ~70 integer
operations, cost 3-4x the attention itself on the H200.)
This module is the PyTorch twin of Triton's ``tl.random.philox`` for the CPU path and for tests,
and draws seeds from torch's generator (``torch.manual_seed`` makes dropout reproducible).
"""
from __future__ import annotations

import torch

_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_MASK32 = 0xFFFFFFFF


def new_seed(device) -> torch.Tensor:
    """A fresh 62-bit seed from ``device``'s default generator, as an int64 tensor there (a
    tensor, so torch.compile does not specialize on its value). Drawn on the device, not copied
    from the CPU: a CUDA graph then draws a new seed on every replay (torch advances captured
    generators' offsets), where a copied one would be captured once and repeat its mask."""
    return torch.randint(0, 2 ** 62, (1,), dtype=torch.int64, device=device)


def keep_threshold(dropout_p: float) -> int:
    """An element is kept when its 16-bit random number is >= this: P(keep) = 1 - threshold / 2^16."""
    return min(round(dropout_p * 2 ** 16), 2 ** 16 - 1)


def keep_scale(dropout_p: float) -> float:
    """1 / P(keep) for the threshold actually used, so that E[kept / P(keep)] is exactly 1."""
    return 2 ** 16 / (2 ** 16 - keep_threshold(dropout_p))


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
           rounds: int = 10) -> tuple[torch.Tensor, ...]:
    """The four output words of Philox-4x32 (Triton's ``philox_impl``), uint32 values in int64."""
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    c0, c1, c2, c3 = (torch.as_tensor(c).to(torch.int64) & _MASK32 for c in (c0, c1, c2, c3))
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    for _ in range(rounds):
        hi_b, lo_b = _mul_hi_lo(c2, _ROUND_B)
        hi_a, lo_a = _mul_hi_lo(c0, _ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def uniform16(seed: int, bh: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The 16-bit random number (int64) of each element ``broadcast(bh[..., None, None],
    rows[:, None], cols[None, :])``, as the kernels draw it."""
    words = philox(seed, (cols // 8)[None, :], rows[:, None], bh[..., None, None],
                   torch.zeros((), dtype=torch.int64, device=rows.device))
    slot = cols % 8
    word = torch.where(slot < 4, torch.where(slot < 2, words[0], words[1]),
                       torch.where(slot < 6, words[2], words[3]))
    return (word >> (16 * (slot % 2))) & 0xFFFF


def keep_mask(seed: int, dropout_p: float, bh: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """bool ``broadcast(bh[..., None, None], rows[:, None], cols[None, :])``: True where kept."""
    return uniform16(seed, bh, rows, cols) >= keep_threshold(dropout_p)

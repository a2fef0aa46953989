"""Dropout's random numbers, the same on every backend.

One Philox-4x32-10 draw serves sixteen keys of a row, spread as a thread of a Hopper wgmma
accumulator holds them, so that the Gluon kernels draw each thread's own elements and move none:
for key ``c``, the counter is ``((c // 64) * 4 + (c % 8) // 2, query index, batch * nheads + head,
0)`` (64-bit key = the seed), and of the draw's four 32-bit words cut into sixteen bytes (byte
``y`` of word ``w`` is number ``4w + y``) the key takes number ``2 * ((c % 64) // 8) + c % 2``. A
thread holds, per row, columns ``8j + 2t + e`` (its lane's ``t``, all ``j`` and ``e``): sixteen of
them per 64 keys, one draw. An element is kept when its number is >= ``keep_threshold(p)``, so
``dropout_p`` counts in 1/256ths as flash-attn's (``p_dropout_in_uint8_t``), and the kept values
are scaled by ``keep_scale(p)``, the inverse of the exact keep probability. The mask is a pure
function of (seed, position), so the backward regenerates it and nothing is stored.
(History: one draw per element cost 3-4x the attention itself on the H200; one per 8 keys,
16-bit numbers, v3-v16; one per 16 consecutive keys, v17.)
This module is the PyTorch twin of Triton's ``tl.random.philox`` for the CPU path and for tests,
and draws seeds from torch's generator (``torch.manual_seed`` makes dropout reproducible).
"""
from __future__ import annotations

import torch

_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_MASK32 = 0xFFFFFFFF
_LEVELS = 2 ** 8     # the random numbers' values: bytes


def new_seed(device) -> torch.Tensor:
    """A fresh 62-bit seed from ``device``'s default generator, as an int64 tensor there (a
    tensor, so torch.compile does not specialize on its value). Drawn on the device, not copied
    from the CPU: a CUDA graph then draws a new seed on every replay (torch advances captured
    generators' offsets), where a copied one would be captured once and repeat its mask."""
    return torch.randint(0, 2 ** 62, (1,), dtype=torch.int64, device=device)


def keep_threshold(dropout_p: float) -> int:
    """An element is kept when its 8-bit random number is >= this: P(keep) = 1 - threshold / 2^8.
    A nonzero ``dropout_p`` drops at least 1/256 (flash-attn's 8-bit threshold does too), never
    nothing."""
    if dropout_p <= 0:
        return 0
    return min(max(round(dropout_p * _LEVELS), 1), _LEVELS - 1)


def keep_scale(dropout_p: float) -> float:
    """1 / P(keep) for the threshold actually used, so that E[kept / P(keep)] is exactly 1."""
    return _LEVELS / (_LEVELS - keep_threshold(dropout_p))


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


def uniform8(seed: int, bh: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The 8-bit random number (int64) of each element ``broadcast(bh[..., None, None],
    rows[:, None], cols[None, :])``, as the kernels draw it (the module docstring's map)."""
    counter = (cols // 64) * 4 + (cols % 8) // 2
    words = torch.stack(philox(seed, counter[None, :], rows[:, None], bh[..., None, None],
                               torch.zeros((), dtype=torch.int64, device=rows.device)))
    number = 2 * ((cols % 64) // 8) + cols % 2
    word = torch.gather(words, 0, (number // 4).expand_as(words[:1]))[0]
    return (word >> (8 * (number % 4))) & 0xFF


def keep_mask(seed: int, dropout_p: float, bh: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """bool ``broadcast(bh[..., None, None], rows[:, None], cols[None, :])``: True where kept."""
    return uniform8(seed, bh, rows, cols) >= keep_threshold(dropout_p)

"""Attention options normalized before any kernel sees them.

Causal is a window: ``causal=True`` becomes ``window_right = 0``. ``-1`` means unbounded on the
public API; kernels get a finite value large enough never to bind, so there is one mask rule.
"""
from __future__ import annotations

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

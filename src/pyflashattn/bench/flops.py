"""FLOP counts for attention, the FlashAttention papers' convention.

Forward: two matmuls of ``2 * sq * sk * d`` FLOPs each per (batch, head), so
``4 * b * h * sq * sk * d``; causal halves it (the papers' rounding: the exact count for
``sq == sk`` is ``(sk + 1) / (2 * sk)`` of the full one). Backward does five matmuls to the
forward's two: 2.5x. Forward + backward: 3.5x. Counts are exact integers (kept in halves
of a forward so 2.5x and 3.5x stay integral).
"""
from __future__ import annotations

PASSES = ("fwd", "bwd", "fwdbwd")

# FLOPs of each pass in halves of a forward pass: 1x, 2.5x, 3.5x.
_HALVES = {"fwd": 2, "bwd": 5, "fwdbwd": 7}


def attention_flops(batch: int, nheads: int, seqlen_q: int, seqlen_k: int, head_dim: int,
                    causal: bool, pass_: str = "fwd") -> int:
    """FLOPs of one attention ``pass_`` ("fwd", "bwd" or "fwdbwd")."""
    if pass_ not in _HALVES:
        raise ValueError(f"pass_ must be one of {PASSES}, got {pass_!r}")
    forward = 4 * batch * nheads * seqlen_q * seqlen_k * head_dim
    if causal:
        forward //= 2  # always even: 4 * ... is a multiple of 4
    return forward * _HALVES[pass_] // 2


def tflops(flops: int, time_ms: float | None) -> float | None:
    """TFLOP/s for ``flops`` done in ``time_ms`` milliseconds; None without a time."""
    if not time_ms or time_ms <= 0:
        return None
    return flops / (time_ms * 1e-3) / 1e12

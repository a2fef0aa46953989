"""Triton kernels and their launchers. Importing this package needs Triton."""
from .bwd import attn_bwd
from .fwd import attn_fwd

__all__ = ["attn_fwd", "attn_bwd"]

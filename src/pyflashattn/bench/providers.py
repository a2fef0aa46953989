"""The attention implementations the benchmark compares, one small class each.

A provider takes q, k, v in its native layout (``bshd`` = ``(batch, seq, heads, dim)``,
flash-attn's; ``bhsd`` = ``(batch, heads, seq, dim)``, SDPA's), so the sweep builds inputs
once per shape in that layout and no transpose is timed. ``bind`` does the untimed work
(block masks, backend flags are entered by the sweep through ``context``) and returns the
zero-argument forward that is timed.

A provider that cannot run somewhere says so in one line: ``unavailable`` before anything
runs (no CUDA, no FlexAttention in this torch), or ``skip_reason`` from the exception its
first call raised (no SDPA kernel for this shape/dtype, no backward on this device).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, ContextManager, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import flash_attn_func
from ..reference import standard_attention

Forward = Callable[[], Tensor]


class Provider:
    """Base: runs anywhere, no backend flags, no per-shape preparation."""
    name = ""
    layout = "bshd"
    description = ""

    def unavailable(self, device: str, dtype: torch.dtype) -> Optional[str]:
        """Why this provider cannot run at all here, or None."""
        return None

    def backward_unavailable(self, device: str) -> Optional[str]:
        """Why the backward cannot run here (the forward then runs on inputs without grad)."""
        return None

    def setup_note(self) -> Optional[str]:
        """Called once before a sweep that uses this provider; returns a note for the report."""
        return None

    def context(self) -> ContextManager:
        """Entered around every call of the forward, outside the timed region."""
        return contextlib.nullcontext()

    def bind(self, q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Forward:
        raise NotImplementedError

    def to_bshd(self, t: Tensor) -> Tensor:
        """A tensor of this provider's layout, as ``(batch, seq, heads, dim)``."""
        return t if self.layout == "bshd" else t.transpose(1, 2)

    def from_bshd(self, t: Tensor) -> Tensor:
        """A fresh contiguous copy of a ``(batch, seq, heads, dim)`` tensor, in this provider's layout."""
        t = t.detach() if self.layout == "bshd" else t.detach().transpose(1, 2)
        return t.clone(memory_format=torch.contiguous_format)


class PyFlashAttn(Provider):
    name = "pyflashattn"
    description = "pyflashattn.flash_attn_func (Triton on CUDA, the tiled PyTorch path on CPU)"

    def bind(self, q, k, v, causal):
        return lambda: flash_attn_func(q, k, v, causal=causal)


class Sdpa(Provider):
    """``F.scaled_dot_product_attention`` with one backend forced through ``sdpa_kernel``."""
    layout = "bhsd"

    def __init__(self, name: str, backend: str, cuda_only: bool):
        self.name, self.backend_name, self.cuda_only = name, backend, cuda_only
        self.description = f"torch SDPA, backend {backend} forced"

    def unavailable(self, device, dtype):
        if self.cuda_only and not device.startswith("cuda"):
            return "needs a CUDA device"
        return None

    def context(self):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(getattr(SDPBackend, self.backend_name))

    def bind(self, q, k, v, causal):
        gqa = {"enable_gqa": True} if q.shape[1] != k.shape[1] else {}
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, **gqa)


def _causal_mod(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx  # seq_q == seq_k in every sweep, so top-left == bottom-right


class Flex(Provider):
    """``torch.compile(flex_attention, dynamic=False)``, with a causal ``BlockMask`` where causal.

    Each shape compiles once, so the sweep raises dynamo's recompile limit; with
    ``fail_on_recompile_limit_hit`` set, running past it raises instead of silently falling
    back to the eager (unfused, N x N) path.
    """
    name = "flex"
    layout = "bhsd"
    description = "FlexAttention, torch.compile(dynamic=False), causal BlockMask"
    RECOMPILE_LIMIT = 1024
    _compiled: Optional[Callable] = None

    def unavailable(self, device, dtype):
        try:
            import torch.nn.attention.flex_attention  # noqa: F401
        except ImportError:
            return f"needs torch.nn.attention.flex_attention (torch >= 2.5; this is {torch.__version__})"
        return None

    def backward_unavailable(self, device):
        if not device.startswith("cuda"):
            return "FlexAttention has no backward on CPU"
        return None

    def setup_note(self):
        config = torch._dynamo.config
        old = config.recompile_limit if hasattr(config, "recompile_limit") else config.cache_size_limit
        new = max(old, self.RECOMPILE_LIMIT)
        for field in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                      "accumulated_cache_size_limit"):
            if hasattr(config, field):
                setattr(config, field, max(getattr(config, field), new))
        strict = hasattr(config, "fail_on_recompile_limit_hit")
        if strict:
            config.fail_on_recompile_limit_hit = True
        return (f"flex: torch._dynamo recompile limit raised {old} -> {new} (one compile per shape, "
                f"dynamic=False); {'passing it raises' if strict else 'this torch may fall back to eager past it'}")

    @staticmethod
    def compiled():
        """The one compiled ``flex_attention`` the bench shares (each shape compiles once)."""
        from torch.nn.attention.flex_attention import flex_attention
        if Flex._compiled is None:
            Flex._compiled = torch.compile(flex_attention, dynamic=False)
        return Flex._compiled

    def bind(self, q, k, v, causal):
        from torch.nn.attention.flex_attention import create_block_mask
        block_mask = (create_block_mask(_causal_mod, None, None, q.shape[2], k.shape[2], device=q.device)
                      if causal else None)
        gqa = {"enable_gqa": True} if q.shape[1] != k.shape[1] else {}
        compiled = self.compiled()
        return lambda: compiled(q, k, v, block_mask=block_mask, **gqa)


class Standard(Provider):
    """The papers' baseline: matmul, mask, softmax, matmul, materializing the N x N matrix.
    With GQA the kv heads are repeated inside the timed call, as unfused code does."""
    name = "standard"
    layout = "bhsd"
    description = "pyflashattn.reference.standard_attention (unfused)"

    def bind(self, q, k, v, causal):
        group = q.shape[1] // k.shape[1]
        if group == 1:
            return lambda: standard_attention(q, k, v, causal)
        return lambda: standard_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), causal)


PROVIDERS: dict[str, Callable[[], Provider]] = {
    "pyflashattn": PyFlashAttn,
    "sdpa-flash": lambda: Sdpa("sdpa-flash", "FLASH_ATTENTION", cuda_only=False),  # torch has a CPU flash kernel
    "sdpa-cudnn": lambda: Sdpa("sdpa-cudnn", "CUDNN_ATTENTION", cuda_only=True),
    "sdpa-efficient": lambda: Sdpa("sdpa-efficient", "EFFICIENT_ATTENTION", cuda_only=True),
    "sdpa-math": lambda: Sdpa("sdpa-math", "MATH", cuda_only=False),
    "flex": Flex,
    "standard": Standard,
}
CPU_DEFAULT = ("pyflashattn", "sdpa-math", "standard")


def make_provider(name: str) -> Provider:
    """A provider by name; ``KeyError`` names the known ones."""
    if name not in PROVIDERS:
        raise KeyError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}")
    return PROVIDERS[name]()


_NO_KERNEL = ("No available kernel", "No viable backend")


def skip_reason(exc: BaseException, caught: list[warnings.WarningMessage]) -> Optional[str]:
    """A one-line skip note when ``exc`` means "not supported here", else None (a real error).

    SDPA says why a forced backend cannot run only in warnings, so those are searched too.
    """
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, NotImplementedError):
        return first_line
    if isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in _NO_KERNEL):
        lines = [line.strip() for w in caught for line in str(w.message).splitlines()]
        reasons = [line for line in lines if line and not line.endswith("because:")]
        why = "; ".join(dict.fromkeys(reasons))[:200]
        return "no kernel for this shape/dtype" + (f" ({why})" if why else "")
    return None

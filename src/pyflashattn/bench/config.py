"""What a sweep runs: the shapes, passes and providers, and the defaults for each machine.

Defaults (any flag overrides its part):

- CUDA, speed: the FlashAttention papers' setting. batch x seqlen = 16k tokens, hidden 2048
  (heads = 2048 / head dim), seqlen 512 to 16k, head dim 64 and 128, causal and not, bf16,
  forward, backward and both, every provider.
- CUDA, memory: batch 1, seqlen 1k to 256k, head dim 128, not causal, forward+backward.
- CPU, speed: the tiled PyTorch path against SDPA's math backend and standard attention,
  batch 2, 4 heads, head dim 64, seqlen 128 to 1024, fp32 (under a minute on 2 cores).
- CPU, memory: batch 1, seqlen 256 to 4096.
- sparse (``--mode sparse``): dense against block-sparse pyflashattn and FlexAttention on the
  same ~10 % masks, batch 1, forward and forward+backward. CUDA: seqlen 16k and 64k, head dim
  128, hidden 2048, bf16, 128 x 128 blocks; CPU: seqlen 512 and 1024, head dim 64, 4 heads,
  fp32, 32 x 32 blocks.
- ``--quick``: two or three sequence lengths and fewer timing calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch

from .flops import PASSES
from .providers import CPU_DEFAULT, PROVIDERS
from .timing import SINGLE_SHOT, TimingPlan

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MODES = ("speed", "memory", "sparse")
SPARSE_MASKS = ("sliding", "local_global", "document", "butterfly", "causal")
SPARSE_DEFAULT_MASKS = ("sliding", "local_global", "document")
SPARSE_PROVIDERS = ("pyflashattn", "flex")  # pyflashattn runs both dense and block-sparse
TOKENS = 16 * 1024
HIDDEN = 2048


@dataclass(frozen=True)
class Shape:
    """One attention problem; seq_q == seq_k."""
    batch: int
    seqlen: int
    heads: int
    kv_heads: int
    head_dim: int
    causal: bool

    def score_elements(self) -> int:
        return self.batch * self.heads * self.seqlen * self.seqlen


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep needs; ``batch``/``heads`` None mean tokens / seqlen and hidden / head dim."""
    device: str = "cpu"
    mode: str = "speed"
    dtype: str = "fp32"
    seqlens: tuple[int, ...] = (128, 256, 512, 1024)
    head_dims: tuple[int, ...] = (64,)
    causal: tuple[bool, ...] = (False, True)
    passes: tuple[str, ...] = PASSES
    providers: tuple[str, ...] = CPU_DEFAULT
    batch: Optional[int] = 2
    heads: Optional[int] = 4
    kv_heads: Optional[int] = None
    tokens: int = TOKENS
    hidden: int = HIDDEN
    quick: bool = False
    check: bool = True
    plan: TimingPlan = field(default_factory=TimingPlan)
    masks: tuple[str, ...] = SPARSE_DEFAULT_MASKS   # sparse mode only
    block_size: int = 128                           # sparse mode only: BlockMask block (q and kv)
    cuda_graph: bool = False                        # speed mode on a GPU: time replays of one CUDA graph

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def heads_for(self, head_dim: int) -> int:
        return self.heads if self.heads is not None else max(1, self.hidden // head_dim)

    def shape(self, seqlen: int, head_dim: int, causal: bool) -> Shape:
        heads = self.heads_for(head_dim)
        batch = self.batch if self.batch is not None else max(1, self.tokens // seqlen)
        return Shape(batch, seqlen, heads, self.kv_heads or heads, head_dim, causal)

    def shapes(self) -> list[Shape]:
        """In sweep order: head dim, then causal, then seqlen (so memory mode climbs seqlen last)."""
        return [self.shape(s, d, c) for d in self.head_dims for c in self.causal for s in self.seqlens]


def _doubling(lo: int, hi: int) -> tuple[int, ...]:
    out, s = [], lo
    while s <= hi:
        out.append(s)
        s *= 2
    return tuple(out)


def defaults(device: str, mode: str = "speed", quick: bool = False) -> SweepConfig:
    """The default sweep for a device ("cpu" or "cuda"), mode and ``--quick``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    cuda = device.startswith("cuda")
    if mode == "sparse":
        return _sparse_defaults(device, cuda, quick)
    if cuda:
        base = SweepConfig(device=device, mode=mode, dtype="bf16", seqlens=_doubling(512, 16384), head_dims=(64, 128),
                           providers=tuple(PROVIDERS), batch=None, heads=None)
        if mode == "memory":
            base = replace(base, seqlens=_doubling(1024, 256 * 1024), head_dims=(128,), causal=(False,),
                           passes=("fwdbwd",), batch=1, plan=SINGLE_SHOT)
        if quick:
            base = replace(base, seqlens=(1024, 4096) if mode == "speed" else (4096, 16384, 65536),
                           head_dims=(128,), passes=("fwd", "fwdbwd") if mode == "speed" else base.passes,
                           plan=TimingPlan(warmup_ms=10, rep_ms=30, min_reps=3, max_reps=20)
                           if mode == "speed" else base.plan)
        return base
    base = SweepConfig(device="cpu", mode=mode, plan=TimingPlan(warmup_ms=0, rep_ms=200, min_reps=3, max_reps=8))
    if mode == "memory":
        base = replace(base, seqlens=_doubling(256, 4096), causal=(False,), passes=("fwdbwd",), batch=1,
                       plan=SINGLE_SHOT)
    if quick:
        base = replace(base, seqlens=(128, 256) if mode == "speed" else (256, 512, 1024),
                       passes=("fwd", "fwdbwd") if mode == "speed" else base.passes, batch=1, heads=2,
                       plan=TimingPlan(warmup_ms=0, rep_ms=20, min_reps=2, max_reps=3)
                       if mode == "speed" else base.plan)
    return base


def _sparse_defaults(device: str, cuda: bool, quick: bool) -> SweepConfig:
    if cuda:
        base = SweepConfig(device=device, mode="sparse", dtype="bf16", seqlens=(16384, 65536), head_dims=(128,),
                           causal=(False,), passes=("fwd", "fwdbwd"), providers=SPARSE_PROVIDERS, batch=1,
                           heads=None, block_size=128)
        if quick:
            base = replace(base, seqlens=(4096,), masks=("sliding",),
                           plan=TimingPlan(warmup_ms=10, rep_ms=30, min_reps=3, max_reps=20))
        return base
    base = SweepConfig(device="cpu", mode="sparse", seqlens=(512, 1024), head_dims=(64,), causal=(False,),
                       passes=("fwd", "fwdbwd"), providers=SPARSE_PROVIDERS, batch=1, heads=4, block_size=32,
                       plan=TimingPlan(warmup_ms=0, rep_ms=200, min_reps=3, max_reps=8))
    if quick:
        base = replace(base, seqlens=(256,), head_dims=(32,), heads=2, masks=("sliding",),
                       plan=TimingPlan(warmup_ms=0, rep_ms=20, min_reps=2, max_reps=3))
    return base

"""Block sizes, warps and pipeline stages: the one table every launcher reads.

Keyed by head dim (padded to a power of two, or exact where a sweep set one apart) and dtype
width; values measured on the H200 (see docs/performance.md for the sweeps that chose them). No
autotuning on the first call: the table is the default; ``PYFLASHATTN_CONFIG`` (JSON, same field
names) overrides any field.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, replace

import torch

MAX_HEAD_DIM = 256


@dataclass(frozen=True)
class KernelConfig:
    block_d: int
    block_dv: int
    # forward
    block_m: int = 128
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3
    # backward: preprocess, dK/dV (blocks of keys, loop over queries), dQ (the converse)
    block_m_pre: int = 128
    block_m_kv: int = 32
    block_n_kv: int = 128
    num_warps_kv: int = 4
    num_stages_kv: int = 3
    block_m_q: int = 128
    block_n_q: int = 32
    num_warps_q: int = 4
    num_stages_q: int = 3
    # the Triton kernels: a head dim that is not a power of two as two blocks (192 = 128 + 64)
    # instead of one padded block (256: a quarter of every product on zeros), where that is
    # narrower (``head_dim_parts``). v13, same table rows, one process: forward +17 to +27 %,
    # forward+backward +20 to +27 % at d 96 and 192, 1k-16k (sweep-*-split-d-v13.log)
    split_head_dim: bool = True
    # forward under a block mask: it pipelines two loops (full and partial blocks), and with
    # 128 x 128 tiles at d=128 three stages need 256 KB of Hopper's 227
    # (scripts/aot_check.py --sparse --no-adjust); 64-key tiles fit three stages (147 KB)
    # and ran 8-14 % faster than 128 x 128 at two (docs/performance.md, v5)
    num_stages_sparse: int = 3
    block_n_sparse: int = 64
    # backward with dropout: the Triton dK/dV kernel's tile (0: the one above) where dropout's keep
    # mask made it spill (``scripts/aot_check.py --dropout``: d=128 64 x 128 queries x keys, stack
    # 376 B, 32 x 128 8 B; d=64 32 x 128 at 4 warps 352 B, 32 x 64 none). v17, one process
    # (docs/logs/h200-dropout-tiles-v17.log): forward+backward with dropout -7 % at d=128, -22 %
    # at d=64, at 4k and 16k
    dropout_block_m_kv: int = 0
    dropout_block_n_kv: int = 0
    # ... and the Triton dQ kernel's (0: the one above), where the Gluon dQ does not serve. v18,
    # d=64 causal b4 4k / 16k, forward+backward with dropout (that dQ kernel): 32 keys at 4 warps
    # 14.8 / 212 ms, 64 keys at 8 warps 2.9 / 40 ms (h200-dropout-dq-tiles-v18.log)
    dropout_block_n_q: int = 0
    dropout_num_warps_q: int = 0
    # the Gluon kernels on Hopper (kernels/hopper.py) for the cases they cover; 0: off.
    # Forward, one warpgroup per program (two programs share an SM; v6 sweeps)
    hopper_block_m: int = 0
    hopper_block_n: int = 64
    hopper_warps: int = 4
    hopper_stages: int = 3
    # Forward, warp-specialized (two consumer warpgroups of 64 rows and a producer warp), from
    # this many keys on; 0: never. Shipped for every length at d 64 and 128: 5-39 % faster than
    # the one-warpgroup kernel on the same H200 at 4k and 16k, and ahead at 1k too, where the
    # cross-run numbers are noisy (docs/performance.md, v7); the one-warpgroup kernel stays
    # selectable (hopper_ws_min_seqlen_k = 0) and tested
    hopper_ws_min_seqlen_k: int = 0
    # dropout in that kernel (kernels/hopper_dropout.py: the keep mask drawn in the accumulator's
    # registers, where the Triton forward rearranges it; the backward's below). v17 item 8, d=128
    # causal, one process: forward with dropout 0.994 -> 0.782 ms at 4k, 13.80 -> 11.61 ms at 16k
    # (h200-dropout-gluon-v17.log); v18 items 6-7 (verdicts by SWAR, set on P's 16-bit pairs,
    # Philox by wide multiplies): 0.66 ms / 9.8 ms, 1.34-1.36x the dense forward
    hopper_dropout: bool = False
    # ... also with varlen, softcap, ALiBi, a left window or causal rows that see no key (the
    # mask's map is the same; the backward kernels below likewise, where they take the feature).
    # On since v18, when its GPU test against the fp32 PyTorch path passed (d 64 and 128)
    hopper_dropout_features: bool = False
    hopper_ws_block_n: int = 128
    hopper_ws_stages: int = 2
    # that kernel persistent (one program per SM walking the tiles, the next tile's loads under
    # the current one's epilogue) up to this many keys, without causal, varlen or a window (a
    # static walk leaves SMs idle when tiles differ); 0: never. v11, d 128 / 64: +10 / +14 % at
    # 1k, -2 / +5 % at 2k, +5 / +5 % at 4k, -7 / -2 % at 16k
    hopper_ws_persistent_max_seqlen_k: int = 0
    # and under causal (no more queries than keys), pairs of a heavy and a light query block of
    # one head per work unit, so that units have equal work. v12, persistent pairs vs a program
    # per tile, d 128 / 64: +17 / +26 % at 1k, +11 / +13 % at 2k, +13 / -2 % at 4k, +1 / 0 % at 16k
    hopper_ws_persistent_causal: bool = False
    # its out tiles by TMA stores through shared memory, asynchronous, instead of pointer stores
    # from registers (0: off), so a consumer starts its next tile while the last one's store
    # runs. v14, one process (sweep-fwd-tma-store-v14.log): d=128 +6 to +13 % at 1k-4k (causal
    # or not), -1 to +2 % at 16k; d=64 -1 to +7 %
    hopper_ws_tma_store: int = 1
    # and under a causal sliding window (right side 0) of at most this many keys on the left, at
    # any length (0: never): each tile sees ~window / 128 + 1 key blocks, as few as a dense 1k
    # tile, where the persistent walk gained 10-26 %. v14, d=128 forward at 16k, on / off in
    # one process: window 256 +22 %, 1024 +7 %, 2048 +6 %, 4096 -5 % (window-width-v14.log);
    # window 1024 is 5.8-5.9x faster than causal there (5.4x a program per tile)
    hopper_ws_persistent_window: int = 2048
    # the two persistent walks above for varlen too where the packed sequences fill at least this
    # percentage of batch x the longest (queries and keys; 0: never): units are numbered over the
    # longest sequence, a shorter one's last query blocks empty, so the static walk balances only
    # where lengths are alike. v15, d=128 forward, walk on / off: equal lengths at 4k causal +11 %
    # and +3 % in two runs, 16k +2 % (issue 5's varlen row); mixed lengths 128-4096 (61 % filled)
    # causal -10 %, without causal -1 % (varlen-persistent-v15.log, varlen-fill-v15.log)
    hopper_ws_persistent_varlen_fill: int = 90
    # the forward's varlen, softcap, left-window and empty-row cases (constexpr flags of both
    # kernels): on, 0-30 % faster than the Triton forward at 4k and 16k (v7); ALiBi too since
    # v14 (21 % slower at 16k in v7; with v14's forwards 13 % / 8 % faster than the Triton
    # forward at 4k / 16k, d=128 causal, alibi-v14.log)
    hopper_features: int = 1
    hopper_alibi: int = 1
    # ... and there, where no visible key lies right of the diagonal (causal), the bias as
    # slope * (j - the tile's first row) per column, one FFMA per score, the per-row rest added
    # to lse (0: |i + shift - j| per score, ~5 instructions, v14 item 9); the Gluon dQ kernels
    # too, the row part folded into the lse they read (not the dK/dV kernels: more spills there
    # for ~1 % fewer instructions, offline). On since v16: ALiBi's forward -16 % / -12 % at 4k /
    # 16k, forward+backward -5 % (d=128 causal, h200-alibi-one-sided-v16.log)
    hopper_alibi_one_sided: int = 1
    # dK/dV: 64 keys per program, 64 queries per step; on at d=128 (+6 to +13 % forward+backward
    # over the Triton dK/dV, v7); at d=64 off in v6 (7 % slower in its experiment), on since v12:
    # the backward alone 4-5 % faster without causal, 4-13 % with it, 1k-16k (fused-reach-v12.log)
    hopper_dkdv_block_n: int = 0
    hopper_dkdv_block_m: int = 64
    # the Gluon backward kernels (dK/dV, dQ, fused) with softcap too (0: Triton's kernels then);
    # the tanh is the forward's tanh.approx. v14, d=128 causal forward+backward with softcap:
    # 29 % / 24 % faster than with Triton's backward at 4k / 16k (softcap-gluon-bwd-v14.log)
    hopper_bwd_softcap: int = 1
    # ... and with ALiBi (0: Triton's kernels then), the bias as the forward's. v14, d=128 causal
    # forward+backward with ALiBi: 28 % / 27 % faster than with Triton's backward at 4k / 16k
    # (alibi-gluon-bwd-v14.log)
    hopper_bwd_alibi: int = 1
    # ... and with varlen (0: Triton's kernels then): the forward's per-sequence walk. v15, d=128
    # causal forward+backward with varlen: 12.5 % / 7.7 % faster than with Triton's backward at
    # 4k / 16k, +11 % / +1 % over dense (was +19 % / +12 %; varlen-gluon-bwd-v15.log)
    hopper_bwd_varlen: int = 1
    # the dK/dV kernels' lse and delta from a padded (b, h, 2, n) buffer the preprocess writes
    # (lse in base 2), read without masks (0: lse and delta as the forward and the preprocess
    # leave them, masked per step). v15, forward+backward on / off in one process, two A/B/A/B
    # sweeps (sweep-bwd-stats*-v15.log): +1 to +7 % at d 64/128 1k-16k, 0 % at d=128 16k without
    # causal; d=128 causal 1k -7 % in the sweep, where the step is host-bound (host time per step
    # about the GPU's) while the dK/dV kernel itself ran 7-11 % faster (prof-stats-1k-v15.log)
    hopper_bwd_stats: int = 1
    hopper_dkdv_stages: int = 2
    # the warp-specialized dK/dV (two consumer warpgroups of 64 keys and a producer warp) from
    # this many keys on, without causal / with it; 0: never. At d=128 (8th session, kernel time
    # against the one-warpgroup kernel in one process): +10 % at 16k, +1 % at 4k, -1 % at 1k;
    # causal 0 % at 16k but -19 to -24 % at 1k-4k (128-key programs: half as many, and one wasted
    # step each), so causal keeps the one-warpgroup kernel; at d=64 it lost to Triton's everywhere.
    # Since it retires its wgmmas every step (v11, 5 % faster): forward+backward +3 % at 2k, +2 %
    # at 4k and 8k, 0 % at 1k (v11 threshold sweep), so from 2k; with fused dQ (below) it serves
    # 2k-4k, and every length from 2k where the backward must be deterministic
    hopper_dkdv_ws_min_seqlen_k: int = 0
    hopper_dkdv_ws_min_seqlen_k_causal: int = 0
    hopper_dkdv_ws_stages: int = 3
    # from this many keys, without a causal mask or window, and where nondeterministic sums are
    # allowed, that kernel also computes dQ (hopper.fused_dq): backward 1.04-1.05x at 4k,
    # 1.00-1.07x at 16k, d=128 (v10, two measurements); with causal it lost (0.87-0.96x: the
    # one-warpgroup dK/dV is faster there)
    # Since v12 from 2k: with 2 Q/dO stages instead of the non-fused kernel's 3 it runs the
    # backward 5-9 % faster than with 3 at 1k-16k, and forward+backward 5-8 % faster than the
    # non-fused kernels at 2k-16k, 3 % slower at 1k (docs/logs/fused-dq-double-v12.log)
    hopper_fused_dq_min_seqlen_k: int = 0
    # the Gluon dQ kernel (hopper_dq_kernel) where the backward runs a separate dQ pass (causal,
    # d=64, d=128 under the fused kernel's threshold, deterministic): key blocks of this many keys,
    # 0: off (Triton's dQ kernel); programs of hopper_dq_block_m query rows, K/V rings of so many
    # stages. v13, forward+backward against Triton's dQ in one process (sweep-bwd-gluon-dq-v13.log):
    # d=128 causal +24 / +3 / +2 % at 1k / 4k / 16k (warp-specialized), d=64 +0.4 to +4 %
    hopper_dq_block_n: int = 0
    hopper_dq_block_m: int = 64
    hopper_dq_stages: int = 2
    # ... or its warp-specialized sibling: 128 query rows per program, two consumer warpgroups
    # (at d=64 1-7 % slower than one warpgroup at 1k-4k, so d=128 only)
    hopper_dq_ws: bool = False
    # that kernel with dropout, the mask drawn in its score registers as the forward's
    # (hopper_dropout.dropout_keep). v18, d=128 causal b4 dropout 0.1, one process
    # (h200-dropout-gluon-bwd-v18.log): forward+backward -2 % with it alone (beside the Triton
    # dK/dV), -20 % / -17 % at 4k / 16k with the one below
    hopper_dq_dropout: bool = False
    # the one-warpgroup Gluon dK/dV with dropout: the mask drawn in the forward's orientation and
    # turned through shared memory (hopper_dropout.dropout_keep_transposed), every wgmma retired
    # at a step's end; never the warp-specialized or fused kernel (stack 160-568 B offline).
    # With both: forward+backward with dropout 4.05 -> 3.23 ms at 4k, 56.2 -> 46.6 ms at 16k,
    # 1.45x the dense call (was 1.83x / 1.75x), 1.26x / 1.18x faster than SDPA flash's dropout
    hopper_dkdv_dropout: bool = False
    # and with a causal mask (0: never; v10 measured it slower with 3 stages)
    hopper_fused_dq_min_seqlen_k_causal: int = 0
    hopper_fused_dq_stages: int = 2


# (padded head dim) -> fields, for 16-bit inputs on sm_90. fp32 and small GPUs shrink below.
_TABLE_16BIT: dict[int, dict] = {
    16: dict(block_m=128, block_n=64, num_warps=4, num_stages=3),
    32: dict(block_m=128, block_n=64, num_warps=4, num_stages=3),
    64: dict(block_m=128, block_n=64, num_warps=4, num_stages=3,
             hopper_block_m=64, hopper_block_n=128, hopper_stages=2, hopper_ws_min_seqlen_k=1,
             hopper_ws_persistent_max_seqlen_k=4096, hopper_ws_persistent_causal=True, hopper_dkdv_block_n=64,
             hopper_dq_block_n=64, dropout_block_n_kv=64, dropout_block_n_q=64, dropout_num_warps_q=8,
             hopper_dropout=True, hopper_dropout_features=True, hopper_dq_dropout=True, hopper_dkdv_dropout=True),
    # 96 (split into 64 + 32) takes 128's Triton backward; its forward, four warps over 64-key
    # tiles: +2 to +19 % at 1k-4k over 128's eight over 128 (v13 sweep)
    96: dict(block_m=128, block_n=64, num_warps=4, num_stages=3,
             block_m_kv=64, block_n_kv=128, num_warps_kv=8, num_stages_kv=3,
             block_m_q=128, block_n_q=64, num_warps_q=8, num_stages_q=3),
    128: dict(block_m=128, block_n=128, num_warps=8, num_stages=3,
              hopper_block_m=64, hopper_block_n=64, hopper_stages=3, hopper_ws_min_seqlen_k=1,
              hopper_ws_persistent_max_seqlen_k=4096, hopper_ws_persistent_causal=True,
              hopper_dkdv_block_n=64, hopper_dkdv_ws_min_seqlen_k=2048, hopper_fused_dq_min_seqlen_k=2048,
              hopper_dq_block_n=64, hopper_dq_ws=True, hopper_dropout=True, hopper_dropout_features=True,
              hopper_dq_dropout=True, hopper_dkdv_dropout=True,
              block_m_kv=64, block_n_kv=128, num_warps_kv=8, num_stages_kv=3,
              block_m_q=128, block_n_q=64, num_warps_q=8, num_stages_q=3, dropout_block_m_kv=32),
    # head dims 129-256 pad to 256 but 192, split into 128 + 64 (split_head_dim). With the split
    # (v13 sweeps, one process each): forward 64-key tiles, 3 stages, +15 % over 32 keys / 4
    # stages; dK/dV 128 keys, 2 stages, +29 to +45 % forward+backward over 64 keys / 3 stages;
    # dQ 3 stages, +12 to +14 % over 2 (at d=256 +5 to +7 %; 128-key dK/dV there: 2x slower).
    # dK/dV 32 queries x 64 keys, 3 stages at d=256: +2 to +4 % over 64 x 64 / 2 stages (v11)
    192: dict(block_m=128, block_n=64, num_warps=8, num_stages=3,
              block_m_kv=32, block_n_kv=128, num_warps_kv=8, num_stages_kv=2,
              block_m_q=128, block_n_q=32, num_warps_q=8, num_stages_q=3),
    256: dict(block_m=128, block_n=32, num_warps=8, num_stages=3,
              block_m_kv=32, block_n_kv=64, num_warps_kv=8, num_stages_kv=3,
              block_m_q=128, block_n_q=32, num_warps_q=8, num_stages_q=3),
}
_TABLE_FP32: dict[int, dict] = {
    16: dict(block_m=64, block_n=32, num_stages=2, block_m_kv=32, block_n_kv=64, block_m_q=64, block_n_q=32, num_stages_kv=2, num_stages_q=2),
    32: dict(block_m=64, block_n=32, num_stages=2, block_m_kv=32, block_n_kv=64, block_m_q=64, block_n_q=32, num_stages_kv=2, num_stages_q=2),
    64: dict(block_m=64, block_n=32, num_stages=2, block_m_kv=32, block_n_kv=64, block_m_q=64, block_n_q=32, num_stages_kv=2, num_stages_q=2),
    128: dict(block_m=64, block_n=32, num_warps=8, num_stages=2, block_m_kv=32, block_n_kv=32,
              num_warps_kv=8, num_stages_kv=1, block_m_q=32, block_n_q=32, num_warps_q=8, num_stages_q=1),
    256: dict(block_m=32, block_n=32, num_warps=8, num_stages=1, block_m_kv=16, block_n_kv=32,
              num_warps_kv=8, num_stages_kv=1, block_m_q=32, block_n_q=16, num_warps_q=8, num_stages_q=1),
}
# The interpreter runs every program in numpy: small blocks keep CI fast and still cross
# several blocks (and their masked/unmasked split) at the small sizes the tests use.
_INTERPRETER = dict(block_m=16, block_n=16, block_m_pre=16, block_m_kv=16, block_n_kv=16,
                    block_m_q=16, block_n_q=16, num_stages=1, num_stages_kv=1, num_stages_q=1)


@functools.cache
def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``).

    Read once, at the first call: Triton decides once too, when ``@triton.jit`` runs at the
    import of ``pyflashattn.kernels`` (on the first launch), so a later change of the variable
    would not reach the kernels either; and the launch path is spared an ``os.environ`` read
    (~1 us for an unset variable)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def env_switch(name: str, default: bool = True) -> bool:
    """An on/off environment variable (read by the caller once, at import): off for "0",
    "false", "off" or "no" (any case, spaces around ignored), on for anything else set."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "off", "no")


def padded_head_dim(head_dim: int) -> int:
    """Head dims are padded (masked inside the kernel) to a power of two, at least 16 (tl.dot's minimum)."""
    return max(16, 1 << (head_dim - 1).bit_length())


def head_dim_parts(head_dim: int, padded: int, split: bool) -> tuple[int, int]:
    """The Triton kernels' blocks over a head dim: ``(padded, 0)``, one block masked past
    ``head_dim``; or with ``split`` its largest power of two and the rest padded
    (``(128, 64)`` for 192, ``(64, 32)`` for 96), where those two are narrower than ``padded``
    and the rest is at least 32 wide: a 16-wide second block (72 = 64 + 16, fp32) gave wrong
    outputs on the H200 in v13 (the interpreter's were right), and only 32 and up were measured."""
    if split:
        first = 1 << (head_dim.bit_length() - 1)
        if first < head_dim:
            second = padded_head_dim(head_dim - first)
            if second >= 32 and first + second < padded:
                return first, second
    return padded, 0


def get_config(head_dim: int, head_dim_v: int, dtype: torch.dtype) -> KernelConfig:
    """The config for these head dims and dtype (cached: it runs on every call's host path).
    ``PYFLASHATTN_CONFIG`` is read on every call: benchmarks change it between calls."""
    return _config(head_dim, head_dim_v, dtype, interpreting(), os.environ.get("PYFLASHATTN_CONFIG", ""))


@functools.lru_cache(maxsize=None)
def _config(head_dim: int, head_dim_v: int, dtype: torch.dtype, interpret: bool, override: str) -> KernelConfig:
    block_d, block_dv = padded_head_dim(head_dim), padded_head_dim(head_dim_v)
    cfg = KernelConfig(block_d=block_d, block_dv=block_dv)
    if interpret:
        return replace(cfg, **_INTERPRETER)
    table = _TABLE_FP32 if dtype == torch.float32 else _TABLE_16BIT
    # a row for the exact head dim where one was measured, else the padded one's
    row = table.get(max(head_dim, head_dim_v)) or table[max(block_d, block_dv)]
    cfg = replace(cfg, **row)
    if dtype == torch.float32:
        # fp32 is the accuracy path, not the speed one: one padded block (its only split
        # measured on the H200, 72 = 64 + 16, was wrong: ``head_dim_parts``)
        cfg = replace(cfg, split_head_dim=False)
    if override:
        cfg = replace(cfg, **json.loads(override))
    return cfg

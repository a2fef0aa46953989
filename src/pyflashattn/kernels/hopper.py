"""The Gluon kernels on Hopper (``hopper_fwd_kernel``, ``hopper_fwd_ws_kernel``,
``hopper_bwd_kernel``): when they apply, and their launchers.

``usable`` is pure Python on shapes, strides and options (tested on the CPU); the kernel modules
are imported on first use, and a Triton without their Gluon API (or any import failure) leaves
the plain-Triton kernels in charge.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from typing import Optional

import torch

from ..configs import KernelConfig
from .launch import Launcher, LightDescriptor

_TMA_ALIGN = 16        # bytes: TMA needs 16-byte aligned bases and row strides
_INT32_ROWS = 2 ** 31  # TMA coordinates are int32: batch * seqlen rows must fit


@functools.cache
def _kernel_modules():
    """The Gluon kernel modules ``(forward, dK/dV, warp-specialized forward, warp-specialized
    dK/dV, dQ)``, or None where this Triton cannot build them."""
    try:
        from . import hopper_bwd_kernel, hopper_bwd_ws_kernel, hopper_dq_kernel, hopper_fwd_kernel, hopper_fwd_ws_kernel
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor  # noqa: F401
    except Exception:  # noqa: BLE001 - any Triton without this Gluon API falls back
        return None
    return hopper_fwd_kernel, hopper_bwd_kernel, hopper_fwd_ws_kernel, hopper_bwd_ws_kernel, hopper_dq_kernel


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


@functools.cache
def _is_sm90(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index) == (9, 0)


def merges_rows(t: torch.Tensor) -> bool:
    """True when ``t`` ``(b, s, h, d)`` (or packed ``(total, h, d)``) is a 2-D ``(rows, h * d)``
    matrix TMA can read: unit last stride, heads adjacent, batches evenly spaced rows, 16-byte
    aligned base and row stride."""
    if t.dim() == 3:
        t = t.unsqueeze(0)
    b, s, h, d = t.shape
    sb, ss, sh, sd = t.stride()
    return (sd == 1 and sh == d and (b == 1 or sb == s * ss) and ss >= h * d
            and (ss * t.element_size()) % _TMA_ALIGN == 0 and t.data_ptr() % _TMA_ALIGN == 0)


def usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p, config: KernelConfig,
           device_ok: Optional[bool] = None, dout: Optional[torch.Tensor] = None,
           dropout_ok: Optional[bool] = None) -> bool:
    """Whether a Gluon kernel computes this call: the forward (``dout`` None) or the backward's
    dK/dV (``dout`` given). Both need: no block mask; dropout only where ``dropout_ok`` (default:
    ``hopper_dropout`` and the warp-specialized forward, ``hopper_dkdv_dropout`` for the dK/dV;
    with varlen, softcap, ALiBi, a left window or rows that see no key also
    ``hopper_dropout_features``); 16-bit; ``d == dv`` in
    {64, 128} with a table entry for the pass; TMA-readable layouts; an sm_90 GPU. The dK/dV
    kernel and, without ``hopper_features``, the forward also need dense inputs, no softcap or
    ALiBi, and full or causal attention with ``seqlen_q <= seqlen_k``; with ``hopper_features``
    the forward takes varlen, softcap, a left window (right side 0 or unbounded) and rows that
    see no key, and ALiBi with ``hopper_alibi``; the backward takes softcap with
    ``hopper_bwd_softcap``, ALiBi with ``hopper_bwd_alibi`` and varlen with ``hopper_bwd_varlen``
    (no window there: full or causal, whose rows may see no key in a sequence shorter on the key
    side).
    ``device_ok`` overrides the device check (tests on the CPU)."""
    block = config.hopper_block_m if dout is None else config.hopper_dkdv_block_n
    if not block or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    if p.is_sparse:
        return False
    if dropout_ok is None:   # dropout: the warp-specialized forward with hopper_dropout, the dK/dV
        # kernels with hopper_dkdv_dropout (dQ: dq_usable)
        dropout_ok = (config.hopper_dropout and warp_specialized(p, config)) if dout is None else \
            bool(config.hopper_dkdv_dropout)
    if p.has_dropout and not (dropout_ok and (config.hopper_dropout_features or not _has_features(p))):
        return False
    features = dout is None and config.hopper_features
    if p.is_varlen and not (features or (dout is not None and config.hopper_bwd_varlen)):
        return False
    if p.has_softcap and not (features or (dout is not None and config.hopper_bwd_softcap)):
        return False
    if p.has_alibi and not ((features and config.hopper_alibi) or (dout is not None and config.hopper_bwd_alibi)):
        return False
    d = q.shape[-1]
    sq, sk = p.max_seqlen_q, p.max_seqlen_k
    # rows of the 2-D views; TMA coordinates are int32
    q_rows, k_rows = (q.shape[0], k.shape[0]) if p.is_varlen else (q.shape[0] * q.shape[1], k.shape[0] * k.shape[1])
    if d not in (64, 128) or v.shape[-1] != d or k.numel() == 0 or max(q_rows, k_rows) >= _INT32_ROWS:
        return False
    if not (p.window_right == 0 or p.window_right >= sq):
        return False  # a right window other than causal or none
    if not features and (p.window_left < sk or (p.window_right == 0 and sq > sk)):
        return False  # a left window, or causal rows that see no key
    if dout is not None and dout.dtype != q.dtype:
        return False
    if not all(merges_rows(t) for t in ((q, k, v) if dout is None else (q, k, v, dout))):
        return False
    if device_ok is None:
        device_ok = q.is_cuda and _is_sm90(q.device.index or 0)
    return device_ok and _kernel_modules() is not None


def _has_features(p) -> bool:
    """Varlen, softcap, ALiBi, a left window, or causal rows that see no key (more queries than
    keys): what dropout on the Gluon kernels takes only with ``hopper_dropout_features``."""
    return (p.is_varlen or p.has_softcap or p.has_alibi or p.window_left < p.max_seqlen_k
            or (p.window_right == 0 and p.max_seqlen_q > p.max_seqlen_k))


@functools.cache
def _smem_layout(rows: int, cols: int, dtype: torch.dtype):
    from triton.experimental.gluon import language as gl
    gl_dtype = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float32: gl.float32}[dtype]
    return gl.NVMMASharedLayout.get_default_for([rows, cols], gl_dtype)


def _descriptor(t: torch.Tensor, rows: int, cols: Optional[int] = None) -> LightDescriptor:
    """A TMA descriptor over ``t`` ``(b, s, h, d)`` or ``(total, h, d)`` seen as ``(rows, h * d)``,
    ``rows`` x ``d`` blocks (``rows x cols`` if given: the fused dQ's fp32 buffer is sent in halves
    of d, which TMA splits into 128-byte-wide boxes): the light kind (``launch.LightDescriptor``), unchecked because
    ``usable`` already refused what TMA cannot read (``merges_rows``: 16-byte aligned base and row
    stride, unit last stride) and ops.py never launches on empty inputs; the launcher turns it
    into Gluon's checked ``TensorDescriptor`` whenever Triton itself launches (each new key)."""
    shape = t.shape
    h, d = shape[-2], shape[-1]
    cols = cols or d
    return LightDescriptor(t, [t.numel() // (h * d), h * d], [t.stride()[-3], 1], [rows, cols],
                           _smem_layout(rows, cols, t.dtype))


_LAUNCHERS: dict = {}


def _launcher(kernel) -> Launcher:
    """The cached launcher (``launch.Launcher``) of a Gluon kernel, made on its first launch (the
    kernel modules import lazily); by identity, so a kernel swapped in (tests) gets its own."""
    entry = _LAUNCHERS.get(id(kernel))
    if entry is None or entry[0] is not kernel:
        entry = _LAUNCHERS[id(kernel)] = (kernel, Launcher(kernel))
    return entry[1]


def warp_specialized(p, config: KernelConfig) -> bool:
    """Whether the forward runs the warp-specialized kernel (long key sequences) rather than the
    one-warpgroup one."""
    return bool(config.hopper_ws_min_seqlen_k) and p.max_seqlen_k >= config.hopper_ws_min_seqlen_k


def attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p, config: KernelConfig):
    """q ``(b, sq, h, d)``, k/v ``(b, sk, hk, d)`` -> out ``(b, sq, h, d)``, lse ``(b, h, sq)``; varlen:
    q ``(total_q, h, d)``, k/v ``(total_k, hk, d)`` -> out ``(total_q, h, d)``, lse ``(h, total_q)``
    (``usable`` holds)."""
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = p.new_lse(q)
    launcher, grid, args, constexprs, num_warps, _, options = fwd_launch(q, k, v, out, lse, p, config)
    launcher(grid, args, constexprs, num_warps=num_warps, **options)   # Gluon: no num_stages
    return out, lse


def fwd_launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, p,
               config: KernelConfig) -> tuple:
    """``attn_fwd``'s launch into ``out`` and ``lse``, not yet made: (launcher, grid, args,
    constexprs, num_warps, num_stages, options), for ``attn_fwd`` and the forward's plans
    (``fwd.plan_fwd``)."""
    fwd_mod, _, ws_mod, _, _ = _kernel_modules()
    h, d, hk = q.shape[-2], q.shape[-1], k.shape[-2]
    sq, sk = p.max_seqlen_q, p.max_seqlen_k
    ws = warp_specialized(p, config)
    if ws:
        # 128 query rows per tile, read as one 64-row Q tile per consumer warpgroup
        kernel, bm, q_rows, bn, stages = ws_mod.attn_fwd_ws_kernel, 128, 64, config.hopper_ws_block_n, \
            config.hopper_ws_stages
        options = dict(num_warps=4, maxnreg=ws_mod.MAXNREG)
    else:
        kernel, bm, bn, stages = fwd_mod.attn_fwd_hopper_kernel, config.hopper_block_m, config.hopper_block_n, \
            config.hopper_stages
        q_rows, options = bm, dict(num_warps=config.hopper_warps)
    num_warps = options.pop("num_warps")
    causal = p.window_right < sq
    window = p.window_left < sk
    may_be_empty = p.is_varlen or window or (causal and sq > sk)
    num_m = (sq + bm - 1) // bm
    grid, walk, paired = (num_m * p.batch * h,), (), False
    if ws:
        units = grid[0]
        # persistent (a program per SM walking work units) where every unit has the same work:
        # tiles without causal; under causal (no more queries than keys) pairs of a heavy and a
        # light query block of one head (the kernel's PAIRED); a causal band (right side 0) of at
        # most hopper_ws_persistent_window keys, whose tiles past the first band's worth all see
        # the same key blocks (v14: +6 % at 16k). Other windows: a static walk would leave SMs idle
        # at the end, so a program per tile. Varlen where the sequences are about equally long
        # (_alike_lengths): units are numbered over the longest sequence, a shorter one's last
        # query blocks empty (skipped in a few instructions)
        static_ok = not p.is_varlen or _alike_lengths(q, k, p, config.hopper_ws_persistent_varlen_fill)
        if window:
            band = p.window_right == 0 and p.window_left <= config.hopper_ws_persistent_window and static_ok
            if band:
                grid = (min(units, _sm_count(q.device.index or 0)),)
        elif sk <= config.hopper_ws_persistent_max_seqlen_k and static_ok:
            paired = causal and sq <= sk and config.hopper_ws_persistent_causal
            if paired:
                units = (num_m + 1) // 2 * p.batch * h
            if paired or not causal:
                grid = (min(units, _sm_count(q.device.index or 0)),)
        walk = (units,)
    # the warp-specialized kernel's out descriptor (``O_TMA``), or q's as an unused stand-in
    o_tma = ws and bool(config.hopper_ws_tma_store)
    o_desc = (_descriptor(out if o_tma else q, q_rows),) if ws else ()
    return (_launcher(kernel), grid,
            (_descriptor(q, q_rows), _descriptor(k, bn), _descriptor(v, bn), *o_desc, out, lse, p.cu_q(lse),
             p.cu_k(lse), p.slopes_or(lse), sq, sk, h, h // hk, p.window_left, p.qk_scale, p.softcap_scale,
             p.alibi_log2, out.stride(-3), lse.stride(-2), *p.slope_strides(), *walk,
             *(p.dropout_args(lse) if ws else ())),
            dict(CAUSAL=causal, IS_VARLEN=p.is_varlen, HAS_WINDOW=window, MAY_BE_EMPTY=may_be_empty,
                 HAS_SOFTCAP=p.has_softcap, HAS_ALIBI=_alibi_kind(p.has_alibi, p.window_right == 0, config),
                 BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d, NUM_STAGES=stages,
                 **(dict(PAIRED=paired, O_TMA=o_tma, HAS_DROPOUT=p.has_dropout) if ws else {})),
            num_warps, None, options)


def _alike_lengths(q: torch.Tensor, k: torch.Tensor, p, fill_percent: int) -> bool:
    """Whether packed q ``(total_q, h, d)`` and k fill at least ``fill_percent`` % of batch x the
    longest sequence (``max_seqlen_q/k``), from shapes alone (no device-to-host read, so the
    same under torch.compile and CUDA graphs); 0: never."""
    return bool(fill_percent) and all(100 * total >= fill_percent * p.batch * longest for total, longest in
                                      ((q.shape[0], p.max_seqlen_q), (k.shape[0], p.max_seqlen_k)))


def _alibi_kind(has_alibi: bool, right_on_diagonal: bool, config: KernelConfig):
    """The Gluon kernels' ``HAS_ALIBI``: False; 2 where no visible key lies right of the
    diagonal (``right_on_diagonal``: ``window_right`` 0, causal or a left window under it) and
    ``hopper_alibi_one_sided`` is on, the bias then one FFMA per score in the forwards
    (``hopper_fwd_kernel._softmax_step``) and the dQ kernels (``hopper_bwd_kernel._scores``);
    else True. The dK/dV kernels keep the two-sided form (``p.has_alibi``): the one-sided one
    spilled more there and saved ~1 % of their instructions (v15, offline)."""
    if not has_alibi:
        return False
    return 2 if right_on_diagonal and config.hopper_alibi_one_sided else True


def dkdv_warp_specialized(p, config: KernelConfig) -> bool:
    """Whether the dK/dV pass runs the warp-specialized kernel (long key sequences; the table
    has a threshold with causal and one without) rather than the one-warpgroup one. Never with
    dropout: its mask spilled there (offline stack 160-288 B at d=128, 424-568 B fused, where the
    one-warpgroup kernel has 64)."""
    causal = p.window_right < p.max_seqlen_q
    least = config.hopper_dkdv_ws_min_seqlen_k_causal if causal else config.hopper_dkdv_ws_min_seqlen_k
    return bool(least) and p.max_seqlen_k >= least and not p.has_dropout


def attn_dkdv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dout: torch.Tensor, lse: torch.Tensor,
              delta: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, p, config: KernelConfig) -> None:
    """dK, dV into contiguous ``dk``/``dv`` ``(b, sk, hk, d)`` from lse and delta ``(b, h, sq)``
    (``usable(..., dout=dout)`` holds)."""
    launcher, grid, args, constexprs, num_warps, _, options = dkdv_launch(q, k, v, dout, lse, delta, dk, dv, p, config)
    launcher(grid, args, constexprs, num_warps=num_warps, **options)   # Gluon: no num_stages


def fused_dq(p, config: KernelConfig) -> bool:
    """Whether the warp-specialized dK/dV kernel also computes dQ (``FUSED_DQ``: 5 matmuls per
    block pair instead of 7, dQ added into an fp32 buffer by TMA reduce-adds) for a call that
    ``usable(..., dout=...)`` already admits: the table's threshold on the key length, with a
    causal mask (or any right window) its own, and only where the caller allows nondeterministic
    sums (``p.deterministic`` off: neither asked for nor torch's deterministic mode); never with
    dropout (``dkdv_warp_specialized``)."""
    causal = p.window_right < p.max_seqlen_q
    least = config.hopper_fused_dq_min_seqlen_k_causal if causal else config.hopper_fused_dq_min_seqlen_k
    return bool(least) and p.max_seqlen_k >= least and not p.deterministic and not p.has_dropout


def _dkdv_ws_stages(config: KernelConfig, fused_dq: bool) -> int:
    """The warp-specialized dK/dV kernel's Q/dO stages: the fused-dQ variant runs faster with
    fewer (v12)."""
    return config.hopper_fused_dq_stages if fused_dq else config.hopper_dkdv_ws_stages


def dkdv_launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dout: torch.Tensor, lse: torch.Tensor,
                delta: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, p, config: KernelConfig,
                dq_acc: Optional[torch.Tensor] = None, stats: Optional[torch.Tensor] = None) -> tuple:
    """``attn_dkdv``'s launch, not yet made: (launcher, grid, args, constexprs, num_warps,
    num_stages, options), for ``bwd.attn_bwd`` and its plans (``bwd.plan_bwd``). With ``dq_acc``
    (fp32, q's shape, contiguous, zeroed) the warp-specialized kernel also adds dQ / softmax_scale
    into it (``fused_dq``). With ``stats`` (``bwd._new_stats``: lse in base 2 and delta,
    ``(b, h, 2, n)`` padded, ``hopper_bwd_stats``) the kernels read those instead of lse and delta,
    without masks."""
    _, one_mod, _, ws_mod, _ = _kernel_modules()
    b, sq, sk = p.batch, p.max_seqlen_q, p.max_seqlen_k     # varlen: the longest sequences
    h, d, hk = q.shape[-2], q.shape[-1], k.shape[-2]
    bm = config.hopper_dkdv_block_m
    if dq_acc is not None or dkdv_warp_specialized(p, config):
        # 128 keys per program, read as one 64-key K/V tile per consumer warpgroup
        kernel, bn, kv_rows = ws_mod.dkdv_hopper_ws_kernel, 128, 64
        stages = _dkdv_ws_stages(config, dq_acc is not None)
        options = dict(maxnreg=ws_mod.MAXNREG)
        # the dQ target's descriptor, or an unused stand-in
        ws_args = (dk if dq_acc is None else _descriptor(dq_acc, bm, d // 2),)
        ws_flags = dict(FUSED_DQ=dq_acc is not None)
    else:
        kernel, bn, stages, options = one_mod.dkdv_hopper_kernel, config.hopper_dkdv_block_n, \
            config.hopper_dkdv_stages, {}
        kv_rows, ws_args, ws_flags = bn, (), {}
    grid = ((sk + bn - 1) // bn * b * hk,)
    return (_launcher(kernel), grid,
            (_descriptor(q, bm), _descriptor(k, kv_rows), _descriptor(v, kv_rows), _descriptor(dout, bm),
             *((lse, delta) if stats is None else (stats, stats)), dk, dv, *ws_args, p.cu_q(lse), p.cu_k(lse),
             p.slopes_or(lse), sq, sk, h, h // hk, p.qk_scale, p.softcap_scale, p.alibi_log2, p.softmax_scale,
             dk.stride(-3), lse.stride(-2), *p.slope_strides(), 0 if stats is None else stats.shape[-1],
             *p.dropout_args(lse)),
            dict(CAUSAL=p.window_right < sq, **ws_flags, IS_VARLEN=p.is_varlen, HAS_SOFTCAP=p.has_softcap,
                 HAS_ALIBI=p.has_alibi, PADDED_STATS=stats is not None, HAS_DROPOUT=p.has_dropout, BLOCK_M=bm,
                 BLOCK_N=bn, HEAD_DIM=d, NUM_STAGES=stages), 4, None, options)


def dq_usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dout: torch.Tensor, dq: torch.Tensor, p,
              config: KernelConfig, accumulate: bool = False, device_ok: Optional[bool] = None) -> bool:
    """Whether the Gluon dQ kernel (``hopper_dq_kernel``, on where ``hopper_dq_block_n`` is set)
    computes this backward's dQ: what the Gluon dK/dV kernel takes (``usable`` with ``dout``),
    and dQ written, not added, into a contiguous buffer of q's dtype; with dropout, where
    ``hopper_dq_dropout`` says so (the mask drawn in the scores' registers, as the forward's)."""
    if not config.hopper_dq_block_n or accumulate or not (dq.is_contiguous() and dq.dtype == q.dtype):
        return False
    return usable(q, k, v, p, replace(config, hopper_dkdv_block_n=config.hopper_dq_block_n),
                  device_ok=device_ok, dout=dout, dropout_ok=bool(config.hopper_dq_dropout))


def dq_launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dout: torch.Tensor, lse: torch.Tensor,
              delta: torch.Tensor, dq: torch.Tensor, p, config: KernelConfig) -> tuple:
    """The Gluon dQ kernel's launch, not yet made, as ``dkdv_launch``'s: one program of
    ``hopper_dq_block_m`` query rows per (query block, batch x head)."""
    dq_mod = _kernel_modules()[4]
    b, sq, sk = p.batch, p.max_seqlen_q, p.max_seqlen_k     # varlen: the longest sequences
    h, d, hk = q.shape[-2], q.shape[-1], k.shape[-2]
    bn = config.hopper_dq_block_n
    if config.hopper_dq_ws:  # 128 rows per program: a 64-row Q/dO tile per consumer warpgroup
        kernel, bm, q_rows, options = dq_mod.dq_hopper_ws_kernel, 128, 64, dict(maxnreg=dq_mod.MAXNREG)
    else:
        kernel, bm, options = dq_mod.dq_hopper_kernel, config.hopper_dq_block_m, {}
        q_rows = bm
    grid = ((sq + bm - 1) // bm * b * h,)
    return (_launcher(kernel), grid,
            (_descriptor(q, q_rows), _descriptor(k, bn), _descriptor(v, bn), _descriptor(dout, q_rows),
             lse, delta, dq, p.cu_q(lse), p.cu_k(lse), p.slopes_or(lse), sq, sk, h, h // hk, p.qk_scale,
             p.softcap_scale, p.alibi_log2, p.softmax_scale, dq.stride(-3), lse.stride(-2), *p.slope_strides(),
             *p.dropout_args(lse)),
            dict(CAUSAL=p.window_right < sq, IS_VARLEN=p.is_varlen, HAS_SOFTCAP=p.has_softcap,
                 HAS_ALIBI=_alibi_kind(p.has_alibi, p.window_right == 0, config), HAS_DROPOUT=p.has_dropout,
                 BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d, NUM_STAGES=config.hopper_dq_stages),
            4, None, options)


def compile_sm90(config: KernelConfig, head_dim: int, dtype: torch.dtype, causal: bool, kind: str = "fwd",
                 dump: bool = False, varlen: bool = False, window: bool = False, softcap: bool = False,
                 alibi: bool = False, fused_dq: bool = False, paired: bool = False, stats: bool = False,
                 dropout: bool = False) -> dict:
    """Build the forward (``kind="fwd"``; ``"fwd_ws"`` the warp-specialized one; optionally their
    feature variants), dK/dV (``"dkdv"``; ``"dkdv_ws"`` the warp-specialized one, optionally
    with ``fused_dq``) or dQ (``"dq"``; the table's ``hopper_dq_ws`` picks which) kernel for sm_90
    here, no GPU needed (Triton's bundled ptxas; ``paired``: the warp-specialized forward's causal
    pairs; ``dropout``: the kernel's ``HAS_DROPOUT``, forward, dK/dV or dQ): its shared memory,
    registers and spills (``kernels.aot.resource_usage``) and its wgmmas and full waits for them
    (``kernels.aot.wgmma_waits``); with ``dump``, its TTGIR, PTX and cubin too."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    from .aot import resource_usage, wgmma_waits
    fwd_mod, bwd_mod, ws_mod, bwd_ws_mod, dq_mod = _kernel_modules()
    t = torch.empty(2, 256, 4, head_dim, dtype=dtype)
    ptr = "*bf16" if dtype == torch.bfloat16 else "*fp16"
    options = {}
    if kind == "fwd_ws":
        kernel, bm, q_rows, bn, warps = ws_mod.attn_fwd_ws_kernel, 128, 64, config.hopper_ws_block_n, 4
        stages, options = config.hopper_ws_stages, dict(maxnreg=ws_mod.MAXNREG)
    elif kind == "fwd":
        kernel, bm, bn, warps = fwd_mod.attn_fwd_hopper_kernel, config.hopper_block_m, config.hopper_block_n, \
            config.hopper_warps
        q_rows, stages = bm, config.hopper_stages
    if kind in ("fwd", "fwd_ws"):
        descs = dict(q_desc=_descriptor(t, q_rows), k_desc=_descriptor(t, bn), v_desc=_descriptor(t, bn),
                     o_desc=_descriptor(t, q_rows))
        floats = {"qk_scale", "softcap_scale", "alibi_log2", "drop_scale"}
        ptrs = {"O": ptr, "LSE": "*fp32", "CU_Q": "*i32", "CU_K": "*i32", "SLOPES": "*fp32", "SEED": "*i64"}
        flags = dict(IS_VARLEN=varlen, HAS_WINDOW=window, MAY_BE_EMPTY=varlen or window, HAS_SOFTCAP=softcap,
                     HAS_ALIBI=_alibi_kind(alibi, causal, config),
                     **(dict(PAIRED=paired, O_TMA=bool(config.hopper_ws_tma_store), HAS_DROPOUT=dropout)
                        if kind == "fwd_ws" else {}))
    else:
        bm, warps = config.hopper_dkdv_block_m, 4
        flags = dict(HAS_DROPOUT=dropout) if kind == "dq" else dict(PADDED_STATS=stats, HAS_DROPOUT=dropout)
        if kind == "dkdv_ws":
            kernel, bn, kv_rows = bwd_ws_mod.dkdv_hopper_ws_kernel, 128, 64
            stages = _dkdv_ws_stages(config, fused_dq)
            options = dict(maxnreg=bwd_ws_mod.MAXNREG)
            flags["FUSED_DQ"] = fused_dq
        elif kind == "dq":
            kernel, bm, bn, stages = dq_mod.dq_hopper_kernel, config.hopper_dq_block_m, config.hopper_dq_block_n, \
                config.hopper_dq_stages
            kv_rows = bn
            if config.hopper_dq_ws:
                kernel, bm, options = dq_mod.dq_hopper_ws_kernel, 128, dict(maxnreg=dq_mod.MAXNREG)
        else:
            kernel, bn, stages = bwd_mod.dkdv_hopper_kernel, config.hopper_dkdv_block_n, config.hopper_dkdv_stages
            kv_rows = bn
        q_rows = 64 if kind == "dq" and config.hopper_dq_ws else bm   # the warp-specialized dQ: 64 per consumer
        descs = dict(q_desc=_descriptor(t, q_rows), k_desc=_descriptor(t, kv_rows), v_desc=_descriptor(t, kv_rows),
                     do_desc=_descriptor(t, q_rows))
        if fused_dq:
            descs["dq_desc"] = _descriptor(t.float(), bm, head_dim // 2)
        floats = {"qk_scale", "softcap_scale", "alibi_log2", "softmax_scale", "drop_scale"}
        flags.update(IS_VARLEN=varlen, HAS_SOFTCAP=softcap,   # (the dK/dV kernels: two-sided)
                     HAS_ALIBI=_alibi_kind(alibi, causal, config) if kind == "dq" else alibi)
        ptrs = {"DK": ptr, "DV": ptr, "DQ": ptr, "LSE": "*fp32", "DELTA": "*fp32", "dq_desc": ptr, "SLOPES": "*fp32",
                "CU_Q": "*i32", "CU_K": "*i32", "SEED": "*i64"}
    consts = dict(CAUSAL=causal, BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=head_dim, NUM_STAGES=stages, num_warps=warps,
                  **flags)
    names = list(kernel.arg_names)
    sig = {n: (mangle_type(descs[n].real()) if n in descs else "constexpr" if n in consts else ptrs[n] if n in ptrs
               else "fp32" if n in floats else "i32") for n in names}
    src = GluonASTSource(kernel, sig, constexprs={(names.index(n),): v for n, v in consts.items()})
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, **options))
    res = dict(shared=ck.metadata.shared, **resource_usage(ck.asm["cubin"]), **wgmma_waits(ck.asm["cubin"]))
    if dump:
        res.update(ttgir=ck.asm["ttgir"], ptx=ck.asm["ptx"], cubin=ck.asm["cubin"])
    return res

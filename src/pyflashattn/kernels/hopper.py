"""The Gluon kernels on Hopper (``hopper_fwd_kernel``, ``hopper_bwd_kernel``): when they apply,
and their launchers.

``usable`` is pure Python on shapes, strides and options (tested on the CPU); the kernel modules
are imported on first use, and a Triton without their Gluon API (or any import failure) leaves
the plain-Triton kernels in charge.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ..configs import KernelConfig

_TMA_ALIGN = 16        # bytes: TMA needs 16-byte aligned bases and row strides
_INT32_ROWS = 2 ** 31  # TMA coordinates are int32: batch * seqlen rows must fit


@functools.cache
def _kernel_modules():
    """The Gluon kernel modules ``(forward, dK/dV)``, or None where this Triton cannot build them."""
    try:
        from . import hopper_bwd_kernel, hopper_fwd_kernel
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor  # noqa: F401
    except Exception:  # noqa: BLE001 - any Triton without this Gluon API falls back
        return None
    return hopper_fwd_kernel, hopper_bwd_kernel


@functools.cache
def _is_sm90(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index) == (9, 0)


def merges_rows(t: torch.Tensor) -> bool:
    """True when ``t`` ``(b, s, h, d)`` is a 2-D ``(b * s, h * d)`` matrix TMA can read: unit last
    stride, heads adjacent, batches evenly spaced rows, 16-byte aligned base and row stride."""
    b, s, h, d = t.shape
    sb, ss, sh, sd = t.stride()
    return (sd == 1 and sh == d and (b == 1 or sb == s * ss) and ss >= h * d
            and (ss * t.element_size()) % _TMA_ALIGN == 0 and t.data_ptr() % _TMA_ALIGN == 0)


def usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p, config: KernelConfig,
           device_ok: Optional[bool] = None, dout: Optional[torch.Tensor] = None) -> bool:
    """Whether a Gluon kernel computes this call: the forward (``dout`` None) or the backward's
    dK/dV (``dout`` given). Both need: dense (no varlen, block mask, dropout, softcap, ALiBi),
    full attention or causal with ``seqlen_q <= seqlen_k`` (no other window), 16-bit,
    ``d == dv`` in {64, 128} with a table entry for the pass, TMA-readable layouts, an sm_90 GPU.
    ``device_ok`` overrides the device check (tests on the CPU)."""
    block = config.hopper_block_m if dout is None else config.hopper_dkdv_block_n
    if not block or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    if p.is_varlen or p.is_sparse or p.has_dropout or p.has_softcap or p.has_alibi:
        return False
    b, sq, _, d = q.shape
    sk = k.shape[1]
    if d not in (64, 128) or v.shape[-1] != d or sk == 0 or b * max(sq, sk) >= _INT32_ROWS:
        return False
    causal = p.window_right == 0 and sq <= sk
    if p.window_left < sk or not (causal or p.window_right >= sq):
        return False  # a window other than full or causal, or causal with rows that see no key
    if dout is not None and dout.dtype != q.dtype:
        return False
    if not all(merges_rows(t) for t in ((q, k, v) if dout is None else (q, k, v, dout))):
        return False
    if device_ok is None:
        device_ok = q.is_cuda and _is_sm90(q.device.index or 0)
    return device_ok and _kernel_modules() is not None


@functools.cache
def _smem_layout(rows: int, head_dim: int, dtype: torch.dtype):
    from triton.experimental.gluon import language as gl
    return gl.NVMMASharedLayout.get_default_for([rows, head_dim], gl.bfloat16 if dtype == torch.bfloat16 else gl.float16)


def _descriptor(t: torch.Tensor, rows: int):
    """A TMA descriptor over ``t`` seen as ``(b * s, h * d)``, ``rows`` x ``d`` blocks."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    b, s, h, d = t.shape
    return TensorDescriptor(t, [b * s, h * d], [t.stride(1), 1], [rows, d], _smem_layout(rows, d, t.dtype))


def attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p, config: KernelConfig):
    """q ``(b, sq, h, d)``, k/v ``(b, sk, hk, d)`` (``usable`` holds) -> out ``(b, sq, h, d)``, lse ``(b, h, sq)``."""
    kernel = _kernel_modules()[0].attn_fwd_hopper_kernel
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    bm, bn = config.hopper_block_m, config.hopper_block_n
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = p.new_lse(q)
    grid = ((sq + bm - 1) // bm * b * h,)
    kernel[grid](_descriptor(q, bm), _descriptor(k, bn), _descriptor(v, bn), out, lse, sq, sk, h, h // hk,
                 p.qk_scale, out.stride(1), CAUSAL=p.window_right < sq, BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d,
                 NUM_STAGES=config.hopper_stages, num_warps=config.hopper_warps)
    return out, lse


def attn_dkdv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dout: torch.Tensor, lse: torch.Tensor,
              delta: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, p, config: KernelConfig) -> None:
    """dK, dV into contiguous ``dk``/``dv`` ``(b, sk, hk, d)`` from lse and delta ``(b, h, sq)``
    (``usable(..., dout=dout)`` holds)."""
    kernel = _kernel_modules()[1].dkdv_hopper_kernel
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    bm, bn = config.hopper_dkdv_block_m, config.hopper_dkdv_block_n
    grid = ((sk + bn - 1) // bn * b * hk,)
    kernel[grid](_descriptor(q, bm), _descriptor(k, bn), _descriptor(v, bn), _descriptor(dout, bm),
                 lse, delta, dk, dv, sq, sk, h, h // hk, p.qk_scale, p.softmax_scale, dk.stride(1),
                 CAUSAL=p.window_right < sq, BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=d,
                 NUM_STAGES=config.hopper_dkdv_stages, num_warps=4)


def compile_sm90(config: KernelConfig, head_dim: int, dtype: torch.dtype, causal: bool, kind: str = "fwd",
                 dump: bool = False) -> dict:
    """Build the forward (``kind="fwd"``) or dK/dV (``"dkdv"``) kernel for sm_90 here, no GPU
    needed (Triton's bundled ptxas): its shared memory, registers and spills
    (``kernels.aot.resource_usage``); with ``dump``, its TTGIR and PTX too."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    from .aot import resource_usage
    fwd_mod, bwd_mod = _kernel_modules()
    t = torch.empty(2, 256, 4, head_dim, dtype=dtype)
    ptr = "*bf16" if dtype == torch.bfloat16 else "*fp16"
    if kind == "fwd":
        kernel, bm, bn, warps = fwd_mod.attn_fwd_hopper_kernel, config.hopper_block_m, config.hopper_block_n, \
            config.hopper_warps
        descs = dict(q_desc=_descriptor(t, bm), k_desc=_descriptor(t, bn), v_desc=_descriptor(t, bn))
        stages, ptrs, floats = config.hopper_stages, {"O": ptr, "LSE": "*fp32"}, {"qk_scale"}
    else:
        kernel, bm, bn, warps = bwd_mod.dkdv_hopper_kernel, config.hopper_dkdv_block_m, config.hopper_dkdv_block_n, 4
        descs = dict(q_desc=_descriptor(t, bm), k_desc=_descriptor(t, bn), v_desc=_descriptor(t, bn),
                     do_desc=_descriptor(t, bm))
        stages, floats = config.hopper_dkdv_stages, {"qk_scale", "softmax_scale"}
        ptrs = {"DK": ptr, "DV": ptr, "LSE": "*fp32", "DELTA": "*fp32"}
    consts = dict(CAUSAL=causal, BLOCK_M=bm, BLOCK_N=bn, HEAD_DIM=head_dim, NUM_STAGES=stages, num_warps=warps)
    names = list(kernel.arg_names)
    sig = {n: (mangle_type(descs[n]) if n in descs else "constexpr" if n in consts else ptrs[n] if n in ptrs
               else "fp32" if n in floats else "i32") for n in names}
    src = GluonASTSource(kernel, sig, constexprs={(names.index(n),): v for n, v in consts.items()})
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    res = dict(shared=ck.metadata.shared, **resource_usage(ck.asm["cubin"]))
    if dump:
        res.update(ttgir=ck.asm["ttgir"], ptx=ck.asm["ptx"])
    return res

"""Small helpers shared by the forward and backward kernels.

Conventions (as in flash-linear-attention): ``p_`` pointers, ``b_`` register blocks,
``o_`` offset vectors, ``m_`` masks; shapes in comments.
"""
import torch
import triton
import triton.language as tl

from ..configs import interpreting
from ..params import LOG2E as _LOG2E

# Triton kernels may read module globals only when they are constexpr; host code uses ``.value``.
LOG2E = tl.constexpr(_LOG2E)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def mma(a, b, acc, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``acc + a @ b`` with fp32 accumulation.

    ``PRECISION`` comes from ``dot_precision``. ``UPCAST`` is set under the interpreter, whose dot
    on bf16 operands is wrong: the operands go to fp32 there.
    """
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc, input_precision=PRECISION)


def cdiv(a: int, b: int) -> int:
    """Host-side ceil(a / b) for grids: ``triton.cdiv`` is a constexpr function in Triton 3.6
    and costs ~8 us per host call, four times per forward + backward."""
    return -(-a // b)


def feature_constexprs(p, dtype: torch.dtype) -> dict:
    """The compile-time flags that the forward and both backward kernels take alike, from ``p``
    (a ``params.KernelParams``) and the inputs' dtype."""
    sparse_q, sparse_kv = p.sparse_blocks
    return dict(IS_VARLEN=p.is_varlen, HAS_SOFTCAP=softcap_mode(p, dtype), HAS_ALIBI=p.has_alibi,
                IS_SPARSE=p.is_sparse, SPARSE_Q=sparse_q, SPARSE_KV=sparse_kv, HAS_DROPOUT=p.has_dropout,
                PRECISION=dot_precision(dtype), UPCAST=interpreting(), MASK_FN=p.mask_fn)


# ``HAS_SOFTCAP``'s values: no softcap, tanh from exp2 and a division (exact limits, fp32-accurate),
# or by one ``tanh.approx.f32`` (one MUFU operation instead of two, ~2^-11 relative error: what
# flash-attn's softcap uses; below 16-bit inputs' own rounding of the scores)
SOFTCAP_OFF, SOFTCAP_EXACT, SOFTCAP_FAST = 0, 1, 2


def softcap_mode(p, dtype: torch.dtype) -> int:
    """``HAS_SOFTCAP`` for the Triton kernels: the fast tanh for 16-bit inputs on a GPU; fp32
    keeps the exact one, and so does the interpreter, which has no inline PTX."""
    if not p.has_softcap:
        return SOFTCAP_OFF
    return SOFTCAP_EXACT if dtype == torch.float32 or interpreting() else SOFTCAP_FAST


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` for the kernels' dots. fp32 inputs use 3xTF32 (tensor cores, error at
    fp32 level: the three-term split recovers the mantissa bits plain TF32 drops), never plain
    TF32; "ieee" would be exact but compiles to unrolled FMA code that takes minutes to build.
    For 16-bit operands the value is ignored."""
    return "tf32x3" if dtype == torch.float32 else "tf32"

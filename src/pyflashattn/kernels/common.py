"""Small helpers shared by the forward and backward kernels.

Conventions (as in flash-linear-attention): ``p_`` pointers, ``b_`` register blocks,
``o_`` offset vectors, ``m_`` masks; shapes in comments.
"""
import triton
import triton.language as tl

from ..configs import interpreting  # noqa: F401  (re-exported for the launchers)

# Triton kernels may read module globals only when they are constexpr; host code uses ``.value``.
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def mma(a, b, acc, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``acc + a @ b`` with fp32 accumulation.

    ``PRECISION`` is "ieee" for fp32 inputs (fp32 accuracy, not tf32) and "tf32" otherwise (it
    does not matter for 16-bit operands). ``UPCAST`` is set under the interpreter, whose dot
    on bf16 operands is wrong: the operands go to fp32 there.
    """
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc, input_precision=PRECISION)

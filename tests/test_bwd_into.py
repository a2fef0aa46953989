"""``ops.attn_bwd_into``: the backward into caller buffers (what the low-memory ring uses), on
every backend (Triton in the interpreter where there is no GPU): dq alone, dk/dv alone, all three,
written over NaN-filled buffers or added onto random ones, into strided views; against float64.
"""
import pytest
import torch

from pyflashattn import ops
from pyflashattn.reference import attention_ref
from pyflashattn.testing import make_qkv, max_err

from conftest import DEVICE

# (batch, seqlen_q, seqlen_k, nheads, nheads_k, head_dim), window (causal is (-1, 0)), grad through lse
CASES = {
    "B2-SQ19-SK19-H2-HK2-D16-causal": ((2, 19, 19, 2, 2, 16), (-1, 0), False),
    "B1-SQ13-SK29-H4-HK1-D16-full-dlse": ((1, 13, 29, 4, 1, 16), (-1, -1), True),
    "B1-SQ24-SK17-H4-HK2-D8-window3-2": ((1, 24, 17, 4, 2, 8), (3, 2), False),
}
WHICH = ("dq", "dkdv", "all")


def _problem(shape, window, lse_grad):
    """Inputs, the forward's out/lse, and the float64 reference gradients."""
    b, sq, sk, h, hk, d = shape
    q, k, v = make_qkv(b, sq, sk, h, hk, d, dtype=torch.float32, device=DEVICE, requires_grad=False)
    scale = d ** -0.5
    out, lse = ops.attn_fwd(q, k, v, scale, *window)
    dout = torch.randn_like(out)
    dlse = torch.randn_like(lse) if lse_grad else None
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    ref_kw = dict(softmax_scale=scale, causal=window == (-1, 0), window_size=(-1, -1) if window == (-1, 0) else window)
    o64, l64 = attention_ref(q64, k64, v64, **ref_kw)
    outs, grads = [o64], [dout.double()]
    if lse_grad:
        outs, grads = outs + [l64], grads + [dlse.double()]
    ref = torch.autograd.grad(outs, (q64, k64, v64), grads)
    plain = ops.attn_bwd(dout, q, k, v, out, lse, dlse, scale, *window)  # the op's own backward, fp32
    return (dout, q, k, v, out, lse, dlse, scale, window), dict(zip(("dq", "dk", "dv"), ref)), dict(zip(("dq", "dk", "dv"), plain))


def _buffers(like: torch.Tensor, fill: str) -> torch.Tensor:
    """A view of ``like``'s shape inside a larger buffer (strided along the sequence when the
    batch is > 1), NaN-filled (write) or random (accumulate)."""
    big = torch.empty(like.shape[0], like.shape[1] + 5, *like.shape[2:], dtype=like.dtype, device=like.device)
    big.fill_(float("nan")) if fill == "nan" else big.normal_()
    return big[:, 3:3 + like.shape[1]]


@pytest.mark.parametrize("case", list(CASES))
def test_bwd_into(backend, case):
    """Each kind of call (dq, dk/dv, all; written, accumulated) on one problem: one forward and
    one plain backward per case keep the interpreter's time down."""
    args, ref, plain = _problem(*CASES[case])
    dout, q, k, v, out, lse, dlse, scale, window = args
    like = dict(dq=q, dk=k, dv=v)
    for which in WHICH:
        for accumulate in (False, True):
            wanted = {"dq": ("dq",), "dkdv": ("dk", "dv"), "all": ("dq", "dk", "dv")}[which]
            bufs = {name: _buffers(like[name], "randn" if accumulate else "nan") for name in wanted}
            before = {name: t.clone() for name, t in bufs.items()}
            ops.attn_bwd_into(dout, q, k, v, out, lse, scale, *window, dlse=dlse, accumulate=accumulate, **bufs)
            for name in wanted:
                base = before[name].double() if accumulate else 0.0
                want, same_dtype = ref[name] + base, plain[name].double() + base
                err, yardstick = max_err(bufs[name], want), max_err(same_dtype, want)
                assert err <= 2 * yardstick + 1e-5, (
                    f"{which}, accumulate={accumulate}, {name}: error {err:.2e} vs the plain backward's {yardstick:.2e}")


def test_bwd_into_bf16_rounds_once(backend):
    """Accumulating onto a bf16 buffer adds in fp32 and rounds once: the result is the bf16
    rounding of (old + fp32 gradient), not a sum of two roundings."""
    args, _, _ = _problem((1, 16, 16, 2, 2, 16), (-1, 0), False)
    dout, q, k, v, out, lse, dlse, scale, window = args
    grad32 = torch.empty_like(q)
    ops.attn_bwd_into(dout, q, k, v, out, lse, scale, *window, dq=grad32)
    old = torch.randn_like(q).bfloat16()
    buf = old.clone()
    ops.attn_bwd_into(dout, q, k, v, out, lse, scale, *window, dq=buf, accumulate=True)
    want = old.float() + grad32
    if backend == "triton" and not q.is_cuda:  # the Triton interpreter rounds fp32 -> bf16 toward zero
        want = (want.view(torch.int32) & -65536).view(torch.float32)
    assert torch.equal(buf, want.bfloat16())


def test_bwd_into_empty_keys(backend):
    q = torch.randn(1, 5, 2, 8, device=DEVICE)
    k = v = torch.randn(1, 0, 2, 8, device=DEVICE)
    out, lse = ops.attn_fwd(q, k, v, 0.3, -1, -1)
    dq = torch.full_like(q, float("nan"))
    ops.attn_bwd_into(torch.randn_like(out), q, k, v, out, lse, 0.3, -1, -1, dq=dq)
    assert torch.equal(dq, torch.zeros_like(q))
    ops.attn_bwd_into(torch.randn_like(out), q, k, v, out, lse, 0.3, -1, -1, dq=dq.fill_(1.0), accumulate=True)
    assert torch.equal(dq, torch.ones_like(q))


def test_bwd_into_errors():
    q = torch.zeros(1, 4, 2, 8)
    out, lse = q.clone(), torch.zeros(1, 2, 4)
    call = lambda **kw: ops.attn_bwd_into(q, q, q, q, out, lse, 1.0, -1, -1, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="nothing to compute"):
        call()
    with pytest.raises(ValueError, match="dk and dv come together"):
        call(dk=torch.zeros_like(q))
    with pytest.raises(ValueError, match=r"dq must be a float tensor of shape \(1, 4, 2, 8\)"):
        call(dq=torch.zeros(1, 3, 2, 8))
    with pytest.raises(ValueError, match="unit last stride"):
        call(dq=torch.zeros(1, 4, 2, 16)[..., ::2])

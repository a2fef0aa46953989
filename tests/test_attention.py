"""Forward and backward against the float64 reference, on every backend available.

On a machine without a GPU the Triton kernels run in the interpreter at small sizes; on a
GPU the same tests add realistic sizes (marked ``gpu``).
"""
import pytest
import torch

import pyflashattn as pfa
from pyflashattn.reference import attention_ref
from pyflashattn.testing import compare_with_reference, make_qkv

from conftest import DEVICE, HAS_CUDA

# (batch, seqlen_q, seqlen_k, nheads, nheads_k, head_dim, head_dim_v)
SHAPES = [
    (1, 1, 1, 1, 1, 1, 1),
    (2, 17, 17, 2, 2, 16, 16),
    (1, 40, 24, 4, 2, 40, 40),        # seqlen_q > seqlen_k: causal leaves top rows empty
    (2, 24, 61, 3, 1, 24, 40),        # MQA, head dim of v differs
    (1, 33, 33, 2, 1, 72, 72),
    (1, 19, 35, 2, 2, 96, 96),        # the Triton kernels split it: 64 + 32 (configs.head_dim_parts)
]
GPU_SHAPES = [
    (2, 1000, 1000, 4, 4, 64, 64),
    (1, 2048, 2048, 8, 2, 128, 128),
    (1, 1023, 4097, 4, 4, 96, 96),
    (1, 777, 777, 2, 1, 192, 128),
    (1, 1000, 1000, 2, 2, 192, 192),
    (1, 500, 700, 2, 1, 72, 72),
    (1, 512, 700, 2, 2, 256, 256),
    (1, 8192, 8192, 4, 1, 128, 128),
    (1, 3000, 3000, 2, 2, 7, 7),
]


def shape_id(s):
    return "B{}-SQ{}-SK{}-H{}-HK{}-D{}-DV{}".format(*s)


def run_flash(causal, window=(-1, -1)):
    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, causal=causal, window_size=window, return_attn_probs=True)
        return out, lse
    return fn


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_fwd_bwd_fp32(backend, shape, causal):
    b, sq, sk, h, hk, d, dv = shape
    q, k, v = make_qkv(b, sq, sk, h, hk, d, dv, dtype=torch.float32, device=DEVICE)
    compare_with_reference(run_flash(causal), q, k, v, causal=causal)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_fwd_bwd_half(backend, dtype, causal):
    q, k, v = make_qkv(2, 45, 37, 4, 2, 32, 32, dtype=dtype, device=DEVICE)
    compare_with_reference(run_flash(causal), q, k, v, causal=causal)


@pytest.mark.parametrize("layout", ["strided", "packed"])
def test_non_contiguous(backend, layout):
    q, k, v = make_qkv(2, 29, 35, 2, 1, 24, 24, device=DEVICE, layout=layout)
    assert not q.is_contiguous()
    compare_with_reference(run_flash(True), q, k, v, causal=True)


@pytest.mark.parametrize("window", [(8, 0), (5, 3), (0, 0), (-1, 6)], ids=str)
def test_sliding_window(backend, window):
    q, k, v = make_qkv(1, 41, 53, 2, 2, 16, 16, device=DEVICE)
    compare_with_reference(run_flash(False, window), q, k, v, window_size=window)


def test_custom_scale(backend):
    q, k, v = make_qkv(1, 20, 20, 2, 2, 32, 32, device=DEVICE)
    fn = lambda q, k, v: pfa.flash_attn_func(q, k, v, softmax_scale=0.37, return_attn_probs=True)[:2]  # noqa: E731
    compare_with_reference(fn, q, k, v, softmax_scale=0.37)


def test_empty_rows_are_zero(backend):
    """Causal with seqlen_q > seqlen_k: the first rows see no key; they output 0, lse +inf,
    zero gradient, and no NaN anywhere."""
    q, k, v = make_qkv(1, 30, 10, 2, 2, 16, 16, device=DEVICE)
    out, lse, _ = pfa.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert torch.all(out[:, :20] == 0)
    assert torch.all(torch.isinf(lse[:, :, :20])) and torch.all(torch.isfinite(lse[:, :, 20:]))
    out.sum().backward()
    assert torch.all(q.grad[:, :20] == 0) and torch.isfinite(q.grad).all()
    assert torch.isfinite(k.grad).all() and torch.isfinite(v.grad).all()


def test_empty_key_sequence(backend):
    q, k, v = make_qkv(1, 5, 0, 2, 2, 16, 16, device=DEVICE)
    out = pfa.flash_attn_func(q, k, v)
    assert out.shape == (1, 5, 2, 16) and torch.all(out == 0)


def test_lse_gradient(backend):
    """The log-sum-exp output is differentiable (ring attention merges partial results by it)."""
    q, k, v = make_qkv(1, 19, 23, 2, 1, 16, 16, device=DEVICE)
    out, lse, _ = pfa.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    loss = (out * out).sum() + (lse * torch.linspace(0.5, 1.5, lse.shape[-1], device=lse.device)).sum()
    grads = torch.autograd.grad(loss, (q, k, v))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ro, rl = attention_ref(q64, k64, v64, causal=True)
    rloss = (ro * ro).sum() + (rl * torch.linspace(0.5, 1.5, rl.shape[-1], device=rl.device, dtype=torch.float64)).sum()
    for g, r in zip(grads, torch.autograd.grad(rloss, (q64, k64, v64))):
        torch.testing.assert_close(g.double(), r, atol=1e-4, rtol=1e-4)


def test_lse_only_gradient(backend):
    """A loss of lse alone: the output's gradient arrives as None (no materialized zeros) and
    must count as zero."""
    q, k, v = make_qkv(1, 17, 29, 2, 2, 16, 16, device=DEVICE)
    _, lse, _ = pfa.flash_attn_func(q, k, v, return_attn_probs=True)
    weights = torch.linspace(0.5, 1.5, lse.shape[-1], device=lse.device)
    grads = torch.autograd.grad((lse * weights).sum(), (q, k, v))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    _, rl = attention_ref(q64, k64, v64)
    ref = torch.autograd.grad((rl * weights.double()).sum(), (q64, k64, v64), allow_unused=True)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g.double(), torch.zeros_like(g.double()) if r is None else r, atol=1e-4, rtol=1e-4)
    assert grads[0].abs().max() > 0  # lse depends on q and k, so this cannot pass by returning zeros
    assert grads[2].abs().max() == 0  # and not on v


# every GPU shape in bf16; fp16 and fp32 on a subset (each new (head dim, dtype) compiles
# four kernels, and compilation dominates this suite's time)
GPU_CASES = [(s, torch.bfloat16) for s in GPU_SHAPES] + [
    (s, dt) for s in GPU_SHAPES[:4] for dt in (torch.float16, torch.float32)]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape,dtype", GPU_CASES, ids=[f"{shape_id(s)}-{str(d)[6:]}" for s, d in GPU_CASES])
def test_gpu_sizes(shape, dtype, causal):
    b, sq, sk, h, hk, d, dv = shape
    q, k, v = make_qkv(b, sq, sk, h, hk, d, dv, dtype=dtype, device="cuda")
    compare_with_reference(run_flash(causal), q, k, v, causal=causal)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_deterministic():
    q, k, v = make_qkv(2, 3000, 3000, 8, 2, 128, 128, dtype=torch.bfloat16, device="cuda")
    g = torch.randn(2, 3000, 8, 128, device="cuda", dtype=torch.bfloat16)
    first = torch.autograd.grad(pfa.flash_attn_func(q, k, v, causal=True), (q, k, v), g)
    for _ in range(3):
        again = torch.autograd.grad(pfa.flash_attn_func(q, k, v, causal=True), (q, k, v), g)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_offsets_past_int32():
    """2^31 + elements per tensor: batch offsets (many short sequences) and row offsets (one
    long sequence under a narrow window, so the work stays small) must not wrap."""
    torch.cuda.empty_cache()
    # batch offset: b * stride_b passes 2^31 for the last batches
    b, s, h, d = 4100, 128, 32, 128                         # 2.15e9 elements per tensor
    q = torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn_like(q), torch.randn_like(q)
    out = pfa.flash_attn_func(q, k, v, causal=True)
    last = slice(b - 2, b)
    ref, _ = attention_ref(q[last], k[last], v[last], causal=True)
    assert (out[last].double() - ref).abs().max() < 2e-2
    del q, k, v, out
    torch.cuda.empty_cache()
    # row offset: one sequence of 2^24 tokens x 128 = 2^31 elements per head-group
    s, h, d = (1 << 24) + 64, 1, 128
    q = torch.randn(1, s, h, d, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn_like(q), torch.randn_like(q)
    out = pfa.flash_attn_func(q, k, v, window_size=(32, 0))
    tail = slice(s - 200, s)
    ref, _ = attention_ref(q[:, s - 232:], k[:, s - 232:], v[:, s - 232:], window_size=(32, 0))
    assert (out[:, tail].double() - ref[:, -200:]).abs().max() < 2e-2

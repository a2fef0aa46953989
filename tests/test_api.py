"""The public API around the kernels: packed variants, the SDPA entry point, bad input,
torch.compile and the custom ops' registration."""
import math

import pytest
import torch
import torch.nn.functional as F

import pyflashattn as pfa
from pyflashattn.reference import attention_ref
from pyflashattn.testing import make_qkv

from conftest import DEVICE, HAS_CUDA


def qkv(*shape_args, **kw):
    return make_qkv(*shape_args, device=DEVICE, requires_grad=False, **kw)


def test_qkvpacked_and_kvpacked_match_plain(backend):
    qkv_t = torch.randn(2, 21, 3, 4, 32, device=DEVICE)
    q, k, v = qkv_t.unbind(2)
    plain = pfa.flash_attn_func(q, k, v, causal=True)
    torch.testing.assert_close(pfa.flash_attn_qkvpacked_func(qkv_t, causal=True), plain)
    kv = torch.stack([k, v], dim=2)
    torch.testing.assert_close(pfa.flash_attn_kvpacked_func(q, kv, causal=True), plain)


def test_sdpa_matches_torch(backend):
    q, k, v = (t.transpose(1, 2) for t in qkv(2, 33, 33, 4, 4, 16))
    for causal in (False, True):
        ours = pfa.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=0.3)
        theirs = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=0.3)
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=2e-5)


def test_sdpa_gqa(backend):
    q, k, v = (t.transpose(1, 2) for t in qkv(1, 20, 20, 4, 2, 16))
    ours = pfa.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    ref, _ = attention_ref(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    torch.testing.assert_close(ours.double(), ref.transpose(1, 2), atol=2e-5, rtol=2e-5)
    with pytest.raises(ValueError, match="enable_gqa"):
        pfa.scaled_dot_product_attention(q, k, v)
    with pytest.raises(TypeError, match="is_causal must be a bool"):
        pfa.scaled_dot_product_attention(q, k, v, enable_gqa=True, is_causal=1)


def test_default_scale_is_inverse_sqrt_headdim():
    q, k, v = qkv(1, 9, 9, 1, 1, 25)
    a = pfa.flash_attn_func(q, k, v)
    b = pfa.flash_attn_func(q, k, v, softmax_scale=1 / math.sqrt(25))
    torch.testing.assert_close(a, b)


BAD_INPUTS = [
    # (description, kwargs builder, exception, message fragment)
    ("rank", lambda q, k, v: dict(q=q[0]), ValueError, "q must have 4 dimensions"),
    ("dtype", lambda q, k, v: dict(q=q.double(), k=k.double(), v=v.double()), TypeError, "float16, bfloat16 or float32"),
    ("int dtype", lambda q, k, v: dict(q=q.int()), TypeError, "q must be float16"),
    ("mixed dtypes", lambda q, k, v: dict(k=k.half()), TypeError, "share one dtype"),
    ("head dims", lambda q, k, v: dict(k=k[..., :8]), ValueError, "same head dim"),
    ("gqa", lambda q, k, v: dict(k=k[:, :, :3], v=v[:, :, :3]), ValueError, "multiple of nheads"),
    ("batch", lambda q, k, v: dict(k=k[:1]), ValueError, "batch sizes differ"),
    ("seqlen k/v", lambda q, k, v: dict(v=v[:, :5]), ValueError, "same seqlen_k"),
    ("head dim 0", lambda q, k, v: dict(q=q[..., :0], k=k[..., :0], v=v[..., :0]), ValueError, "head dim must be in"),
    ("head dim too big", lambda q, k, v: dict(q=torch.randn(2, 7, 4, 300, device=q.device),
                                              k=torch.randn(2, 7, 4, 300, device=q.device)), ValueError, "head dim must be in"),
    ("not a tensor", lambda q, k, v: dict(q=q.tolist()), TypeError, "q must be a torch.Tensor"),
    ("scale nan", lambda q, k, v: dict(softmax_scale=float("nan")), ValueError, "softmax_scale must be finite"),
    ("scale inf", lambda q, k, v: dict(softmax_scale=float("inf")), ValueError, "softmax_scale must be finite"),
    ("dropout 1", lambda q, k, v: dict(dropout_p=1.0), ValueError, "dropout_p must be a float in"),
    ("dropout -", lambda q, k, v: dict(dropout_p=-0.1), ValueError, "dropout_p must be a float in"),
    ("window", lambda q, k, v: dict(window_size=(-2, 0)), ValueError, "window_size"),
    ("softcap", lambda q, k, v: dict(softcap=-1.0), ValueError, "softcap"),
    ("causal str", lambda q, k, v: dict(causal="yes"), TypeError, "causal must be a bool"),
    ("return_attn_probs tensor", lambda q, k, v: dict(return_attn_probs=torch.tensor(True)), TypeError,
     "return_attn_probs must be a bool"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input(case):
    _, build, exc, fragment = case
    q, k, v = qkv(2, 7, 7, 4, 4, 16)
    args = dict(q=q, k=k, v=v)
    args.update(build(q, k, v))
    with pytest.raises(exc, match=fragment):
        pfa.flash_attn_func(**args)


def test_devices_must_match():
    q, k, v = qkv(1, 4, 4, 1, 1, 16)
    meta = torch.empty(k.shape, device="meta")
    with pytest.raises(ValueError, match="one device"):
        pfa.flash_attn_func(q, meta, v)


def test_unimplemented_options_raise():
    q, k, v = (t[0] for t in qkv(1, 4, 4, 4, 4, 16))
    cu = torch.tensor([0, 4], dtype=torch.int32, device=DEVICE)
    with pytest.raises(NotImplementedError, match="return_attn_probs with dropout"):
        pfa.flash_attn_varlen_func(q, k, v, cu, cu, 4, 4, dropout_p=0.1, return_attn_probs=True)


def test_packed_shape_errors():
    with pytest.raises(ValueError, match="qkv must have size 3"):
        pfa.flash_attn_qkvpacked_func(torch.randn(1, 4, 2, 2, 16))
    with pytest.raises(ValueError, match="kv must have 5 dimensions"):
        pfa.flash_attn_kvpacked_func(torch.randn(1, 4, 2, 16), torch.randn(1, 4, 2, 16))


def test_sdpa_rejects_what_it_cannot_do_exactly():
    q = torch.randn(1, 2, 8, 16)
    mask = torch.ones(8, 8, dtype=torch.bool)
    with pytest.raises(TypeError, match="float .additive. masks are not supported"):
        pfa.scaled_dot_product_attention(q, q, q, attn_mask=torch.zeros(8, 8))
    with pytest.raises(ValueError, match="does not broadcast.*seq_k is 5"):
        pfa.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(8, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="cannot be combined with is_causal"):
        pfa.scaled_dot_product_attention(q, q, q, attn_mask=mask, is_causal=True)
    with pytest.raises(NotImplementedError, match="dropout_p with an attn_mask"):
        pfa.scaled_dot_product_attention(q, q, q, attn_mask=mask, dropout_p=0.1)
    with pytest.raises(ValueError, match="bottom-right"):
        pfa.scaled_dot_product_attention(q, q[:, :, :4], q[:, :, :4], is_causal=True)


@pytest.mark.parametrize("mask_shape", [(37, 53), (2, 1, 37, 53), (1, 4, 37, 53), (4, 1, 53)],
                         ids=["2d", "per-batch", "per-head", "3d"])
def test_sdpa_bool_attn_mask(backend, mask_shape):
    """A bool attn_mask (broadcast as torch broadcasts it) runs as block-sparse attention and
    matches float64 SDPA; a fully masked row outputs 0 where torch gives NaN."""
    b, h, hk, sq, sk, d = 2, 4, 2, 37, 53, 24
    q, k, v = (t.transpose(1, 2) for t in make_qkv(b, sq, sk, h, hk, d, device=DEVICE))
    mask = torch.rand(mask_shape, device=DEVICE) > 0.4
    empty_row = mask.shape[-2] > 1
    if empty_row:
        mask[..., 3, :] = False  # query row 3 sees nothing
    out = pfa.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q64, k64.repeat_interleave(2, 1), v64.repeat_interleave(2, 1),
                                         attn_mask=mask).nan_to_num(0.0)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)
    if empty_row:
        assert torch.all(out[:, :, 3] == 0)
    g = torch.randn_like(out)
    for a, r in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q64, k64, v64), g.double())):
        torch.testing.assert_close(a.double(), r.nan_to_num(0.0), atol=5e-5, rtol=5e-5)


def test_backend_env_is_checked(monkeypatch):
    q, k, v = qkv(1, 4, 4, 1, 1, 16)
    monkeypatch.setenv("PYFLASHATTN_BACKEND", "cuda-magic")
    with pytest.raises(ValueError, match="PYFLASHATTN_BACKEND"):
        pfa.flash_attn_func(q, k, v)


def test_custom_ops_registration():
    q, k, v = make_qkv(1, 12, 12, 2, 1, 16, device=DEVICE)
    torch.library.opcheck(torch.ops.pyflashattn.fwd.default, (q, k, v, 0.25, -1, 0))
    out, lse = torch.ops.pyflashattn.fwd(q, k, v, 0.25, -1, 0)
    # the backward op has no autograd of its own (no double backward): plain tensors
    q, k, v, out, lse = (t.detach() for t in (q, k, v, out, lse))
    torch.library.opcheck(torch.ops.pyflashattn.bwd.default, (torch.randn_like(out), q, k, v, out, lse, None, 0.25, -1, 0))
    torch.library.opcheck(torch.ops.pyflashattn.bwd.default,
                          (torch.randn_like(out), q, k, v, out, lse, torch.randn_like(lse), 0.25, -1, 0))


def test_torch_compile_fullgraph(backend):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = torch.nn.Linear(32, 96)
            self.proj = torch.nn.Linear(32, 32)

        def forward(self, x):
            b, s, _ = x.shape
            q, k, v = self.qkv(x).view(b, s, 3, 2, 16).unbind(2)
            return self.proj(pfa.flash_attn_func(q, k, v, causal=True).reshape(b, s, 32))

    torch._dynamo.reset()
    model = Block().to(DEVICE)
    x = torch.randn(2, 19, 32, device=DEVICE)
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager" if DEVICE == "cpu" else "inductor")
    out = compiled(x)
    torch.testing.assert_close(out, eager)
    out.sum().backward()
    assert model.qkv.weight.grad is not None and torch.isfinite(model.qkv.weight.grad).all()
    # a new sequence length must not need a new graph break; dynamic shapes keep one graph
    compiled(torch.randn(2, 23, 32, device=DEVICE))


def test_torch_compile_self_attention_same_tensor(backend):
    """q, k and v the same tensor (and grads through it) under fullgraph compile."""
    torch._dynamo.reset()
    x = torch.randn(1, 17, 2, 16, device=DEVICE, requires_grad=True)
    f = torch.compile(lambda x: pfa.flash_attn_func(x, x, x, causal=True), fullgraph=True,
                      backend="aot_eager" if DEVICE == "cpu" else "inductor")
    out = f(x)
    torch.testing.assert_close(out, pfa.flash_attn_func(x, x, x, causal=True))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_capture_refuses_return_attn_probs_with_dropout(monkeypatch):
    """While a CUDA graph is captured (faked here), rebuilding the dropout mask would read the seed
    back to the host: a clear error instead of the driver's; without return_attn_probs it runs."""
    from pyflashattn import validate
    monkeypatch.setattr(validate, "capturing", lambda t: True)
    q, k, v = (torch.randn(1, 33, 2, 16) for _ in range(3))
    with pytest.raises(RuntimeError, match="return_attn_probs"):
        pfa.flash_attn_func(q, k, v, dropout_p=0.2, return_attn_probs=True)
    out, lse, probs = pfa.flash_attn_func(q, k, v, return_attn_probs=True)   # no dropout: nothing to read
    assert probs is None and torch.isfinite(out).all()
    assert torch.isfinite(pfa.flash_attn_func(q, k, v, dropout_p=0.2)).all()


def test_varlen_values_are_not_read_while_capturing(monkeypatch):
    """cu_seqlens values are checked (one device-to-host copy) except while a CUDA graph is
    captured, when they cannot be read; the shapes and dtypes are checked always."""
    from pyflashattn import validate
    q, k, v = (torch.randn(10, 2, 16) for _ in range(3))
    bad = torch.tensor([0, 7, 5, 10], dtype=torch.int32)   # decreasing
    with pytest.raises(ValueError, match="non-decreasing"):
        validate.check_varlen(q, k, v, bad, bad, 7, 7)
    monkeypatch.setattr(validate, "capturing", lambda t: True)
    validate.check_varlen(q, k, v, bad.clone(), bad.clone(), 7, 7)
    with pytest.raises(TypeError, match="int32"):
        validate.check_varlen(q, k, v, bad.long(), bad.long(), 7, 7)


@pytest.mark.skipif(HAS_CUDA, reason="the interpreted Triton path on CPU tensors")
@pytest.mark.parametrize("how", ["default", "argument", "torch_mode", "compiled"])
def test_deterministic_reaches_the_backward(how, monkeypatch):
    """flash-attn's ``deterministic`` (an option of the ops, so torch.compile keeps it) and
    torch's deterministic mode both reach the backward's params, where they keep the fused
    dQ's atomics out (``kernels.hopper.fused_dq``)."""
    from pyflashattn.kernels import bwd
    monkeypatch.setenv("PYFLASHATTN_BACKEND", "triton")
    seen = []
    real = bwd.attn_bwd
    monkeypatch.setattr(bwd, "attn_bwd", lambda *a, **kw: seen.append(a[7].deterministic) or real(*a, **kw))
    q, k, v = (torch.randn(1, 20, 2, 16, requires_grad=True) for _ in range(3))
    fn = pfa.flash_attn_func
    if how == "compiled":
        fn = torch.compile(fn, fullgraph=True, backend="aot_eager")
    if how == "torch_mode":
        monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    fn(q, k, v, deterministic=how in ("argument", "compiled")).sum().backward()
    assert seen == [how != "default"]

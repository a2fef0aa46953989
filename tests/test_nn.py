"""pyflashattn.nn: MultiheadAttention and RotaryEmbedding against a float64 re-derivation."""
import math

import pytest
import torch

from pyflashattn.nn import MultiheadAttention, RotaryEmbedding, apply_rotary
from pyflashattn.reference import attention_ref

from conftest import DEVICE


def rotary_ref(x, positions, base):
    """Rotary in float64 via complex numbers: pairs (i, i + d/2) rotated by pos * base^(-2i/d)."""
    half = x.shape[-1] // 2
    theta = positions.double()[:, None] * base ** (-torch.arange(half, dtype=torch.float64, device=x.device) * 2 / (2 * half))
    z = torch.complex(x[..., :half], x[..., half:]) * torch.polar(torch.ones_like(theta), theta)[None, :, None, :]
    return torch.cat([z.real, z.imag], dim=-1)


def module_ref(m: MultiheadAttention, x: torch.Tensor, params: dict):
    """The module's computation written out in float64 from its (double) parameters."""
    b, s, _ = x.shape
    h, hk, d = m.num_heads, m.num_kv_heads, m.head_dim
    qkv = x @ params["qkv.weight"].T + (params["qkv.bias"] if "qkv.bias" in params else 0)
    q, k, v = qkv.view(b, s, h + 2 * hk, d).split([h, hk, hk], dim=2)
    if m.rotary is not None:
        pos = torch.arange(s, device=x.device)
        q, k = rotary_ref(q, pos, m.rotary.base), rotary_ref(k, pos, m.rotary.base)
    out, _ = attention_ref(q, k, v, m.softmax_scale, m.causal, m.window_size)
    out = out.reshape(b, s, h * d) @ params["out_proj.weight"].T
    return out + (params["out_proj.bias"] if "out_proj.bias" in params else 0)


CASES = {
    "mha-causal": dict(num_heads=4, causal=True),
    "gqa-rotary-causal": dict(num_heads=4, num_kv_heads=2, causal=True, rotary=True),
    "mqa-nobias": dict(num_heads=4, num_kv_heads=1, bias=False),
    "rotary-window-headdim": dict(num_heads=2, head_dim=24, rotary=True, window_size=(5, 0), softmax_scale=0.2),
}


@pytest.mark.parametrize("case", CASES)
def test_matches_float64_reference(case):
    m = MultiheadAttention(48, **CASES[case]).to(DEVICE)
    x = torch.randn(2, 45, 48, device=DEVICE, requires_grad=True)
    out = m(x)
    assert out.shape == x.shape
    params = {n: p.detach().double().requires_grad_() for n, p in m.named_parameters()}
    x64 = x.detach().double().requires_grad_()
    ref = module_ref(m, x64, params)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, [x, *m.parameters()], g)
    refs = torch.autograd.grad(ref, [x64, *params.values()], g.double())
    for name, a, r in zip(["x", *params], ours, refs):
        torch.testing.assert_close(a.double(), r, atol=1e-4, rtol=1e-3, msg=lambda s: f"grad {name}: {s}")


def test_projection_shapes_and_bias():
    m = MultiheadAttention(64, 8, num_kv_heads=2, bias=False)
    assert m.qkv.weight.shape == ((8 + 2 * 2) * 8, 64) and m.qkv.bias is None and m.out_proj.bias is None
    q, k, v = m.project_qkv(torch.randn(3, 10, 64))
    assert q.shape == (3, 10, 8, 8) and k.shape == v.shape == (3, 10, 2, 8)


def test_rotary_is_relative():
    """Scores of rotated q/k depend on the position difference only; norms are kept."""
    rope = RotaryEmbedding(16, base=500.0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i, j):
        cq, sq = rope(torch.tensor([i]))
        ck, sk = rope(torch.tensor([j]))
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum()

    torch.testing.assert_close(score(7, 3), score(104, 100), atol=1e-4, rtol=1e-4)
    cos, sin = rope(torch.arange(40))
    assert cos.shape == (40, 16)
    torch.testing.assert_close(apply_rotary(q.expand(1, 40, 1, 16), cos, sin).norm(dim=-1),
                               q.norm().expand(1, 40, 1), atol=1e-5, rtol=1e-5)


def test_positions_argument():
    """Explicit positions (batch, seq) equal to the default give the same result; shifted ones
    for all of q and k do too (rotary is relative), with bidirectional attention."""
    m = MultiheadAttention(32, 4, rotary=True)
    x = torch.randn(2, 9, 32)
    base = m(x)
    torch.testing.assert_close(m(x, torch.arange(9).expand(2, 9)), base)
    torch.testing.assert_close(m(x, torch.arange(9) + 50), base, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(embed_dim=30, num_heads=4), "divisible"),
    (dict(embed_dim=32, num_heads=4, num_kv_heads=3), "multiple"),
    (dict(embed_dim=32, num_heads=4, head_dim=5, rotary=True), "even"),
    (dict(embed_dim=32, num_heads=4, window_size=(3,)), "window_size"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiheadAttention(**kwargs)


def test_flag_must_be_bool():
    with pytest.raises(TypeError, match="causal must be a bool"):
        MultiheadAttention(32, 4, causal="yes")


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\(batch, seq, 32\)"):
        MultiheadAttention(32, 4)(torch.randn(2, 9, 16))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    block = torch.nn.Sequential(torch.nn.LayerNorm(64),
                                MultiheadAttention(64, 4, num_kv_heads=2, causal=True, rotary=True)).to(DEVICE)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager" if DEVICE == "cpu" else "inductor")
    x = torch.randn(2, 33, 64, device=DEVICE, requires_grad=True)
    out = compiled(x)
    torch.testing.assert_close(out, block(x), atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert x.grad is not None and all(torch.isfinite(p.grad).all() for p in block.parameters())
    compiled(torch.randn(2, 47, 64, device=DEVICE))  # another length: no graph break, no error
    assert math.isfinite(float(compiled(torch.randn(1, 5, 64, device=DEVICE)).detach().sum()))

"""flash-attn 2's options beyond the core: softcap, ALiBi, variable length (+ padding helpers).
Each against the float64 reference on every backend, composed with causal/window/GQA."""
import pytest
import torch

import pyflashattn as pfa
from pyflashattn.padding import index_first_axis, pad_input, unpad_input
from pyflashattn.reference import varlen_attention_ref
from pyflashattn.testing import compare_with_reference, make_qkv

from conftest import DEVICE


def run(**kw):
    def fn(q, k, v):
        return pfa.flash_attn_func(q, k, v, return_attn_probs=True, **kw)[:2]
    return fn


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_softcap(backend, causal):
    q, k, v = make_qkv(2, 23, 31, 2, 1, 24, 24, device=DEVICE)
    q.data *= 3  # large scores, so the cap bends them
    compare_with_reference(run(causal=causal, softcap=2.5), q, k, v, causal=causal, softcap=2.5)


@pytest.mark.parametrize("per_batch", [False, True], ids=["slopes_h", "slopes_bh"])
def test_alibi(backend, per_batch):
    q, k, v = make_qkv(2, 19, 27, 4, 2, 16, 16, device=DEVICE)
    slopes = torch.rand(2, 4, device=DEVICE) if per_batch else torch.rand(4, device=DEVICE)
    compare_with_reference(run(causal=True, alibi_slopes=slopes), q, k, v, causal=True, alibi_slopes=slopes)


def test_softcap_alibi_window(backend):
    q, k, v = make_qkv(1, 29, 29, 2, 2, 16, 16, device=DEVICE)
    slopes = torch.rand(2, device=DEVICE)
    compare_with_reference(run(window_size=(6, 2), softcap=3.0, alibi_slopes=slopes), q, k, v,
                           window_size=(6, 2), softcap=3.0, alibi_slopes=slopes)


def packed(lengths_q, lengths_k, h, hk, d, dtype=torch.float32):
    cu_q = torch.tensor([0] + lengths_q, device=DEVICE).cumsum(0).to(torch.int32)
    cu_k = torch.tensor([0] + lengths_k, device=DEVICE).cumsum(0).to(torch.int32)
    q, k, v = make_qkv(1, sum(lengths_q), sum(lengths_k), h, hk, d, d, dtype=dtype, device=DEVICE, requires_grad=False)
    return (q[0].requires_grad_(), k[0].requires_grad_(), v[0].requires_grad_(), cu_q, cu_k)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_varlen(backend, causal):
    lq, lk = [5, 0, 17, 33, 1], [9, 4, 17, 20, 0]  # empty sequences on either side
    q, k, v, cu_q, cu_k = packed(lq, lk, 4, 2, 24)
    slopes = torch.rand(len(lq), 4, device=DEVICE)

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lq), max(lk), causal=causal,
                                                 alibi_slopes=slopes, return_attn_probs=True)
        assert lse.shape == (4, sum(lq))
        return out, lse
    compare_with_reference(fn, q, k, v, causal=causal, ref=varlen_attention_ref,
                           cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, alibi_slopes=slopes)


def test_varlen_packed_variants_match():
    lens = [7, 12, 3]
    q, k, v, cu, _ = packed(lens, lens, 2, 2, 16)
    plain = pfa.flash_attn_varlen_func(q, k, v, cu, cu, 12, 12, causal=True)
    qkv = torch.stack([q, k, v], dim=1)
    torch.testing.assert_close(pfa.flash_attn_varlen_qkvpacked_func(qkv, cu, 12, causal=True), plain)
    kv = torch.stack([k, v], dim=1)
    torch.testing.assert_close(pfa.flash_attn_varlen_kvpacked_func(q, kv, cu, cu, 12, 12, causal=True), plain)


def test_unpad_pad_roundtrip_and_matches_padded_attention(backend):
    batch, seqlen, h, d = 3, 13, 2, 16
    mask = torch.zeros(batch, seqlen, dtype=torch.int32, device=DEVICE)
    for b, n in enumerate([13, 5, 9]):
        mask[b, :n] = 1  # right padding
    x = torch.randn(batch, seqlen, 3, h, d, device=DEVICE)
    x_unpad, indices, cu, max_len, used = unpad_input(x, mask)
    assert cu.tolist() == [0, 13, 18, 27] and max_len == 13 and used.tolist() == [13, 5, 9]
    back = pad_input(x_unpad, indices, batch, seqlen)
    torch.testing.assert_close(back * mask[..., None, None, None], x * mask[..., None, None, None])
    torch.testing.assert_close(index_first_axis(x.reshape(batch * seqlen, -1), indices), x_unpad.reshape(27, -1))
    out = pad_input(pfa.flash_attn_varlen_qkvpacked_func(x_unpad, cu, max_len, causal=True), indices, batch, seqlen)
    for b, n in enumerate([13, 5, 9]):  # each row equals attention over its own tokens
        ref = pfa.flash_attn_func(*x[b:b + 1, :n].unbind(2), causal=True)
        torch.testing.assert_close(out[b:b + 1, :n], ref, atol=1e-5, rtol=1e-5)
        assert torch.all(out[b, n:] == 0)


BAD_VARLEN = [
    ("dtype", lambda cu: cu.long(), TypeError, "int32"),
    ("start", lambda cu: cu + 1, ValueError, "start at 0"),
    ("decreasing", lambda cu: torch.tensor([0, 9, 5, 12], dtype=torch.int32), ValueError, "non-decreasing"),
    ("total", lambda cu: torch.tensor([0, 5, 9, 11], dtype=torch.int32), ValueError, "must equal the packed length"),
]


@pytest.mark.parametrize("case", BAD_VARLEN, ids=[c[0] for c in BAD_VARLEN])
def test_bad_cu_seqlens(case):
    _, mutate, exc, fragment = case
    q, k, v, cu, _ = packed([5, 4, 3], [5, 4, 3], 2, 2, 16)
    with pytest.raises(exc, match=fragment):
        pfa.flash_attn_varlen_func(q, k, v, mutate(cu.cpu()).to(DEVICE), cu, 5, 5)


def test_cu_seqlens_checked_once_unless_modified(monkeypatch):
    """A pair that passed is not synced again (the layers of a model share it), but an in-place
    change makes it checked again."""
    q, k, v, cu, _ = packed([5, 4, 3], [5, 4, 3], 2, 2, 16)
    cu_k = cu.clone()
    pfa.flash_attn_varlen_func(q, k, v, cu, cu_k, 5, 5)
    syncs = []
    real_stack = torch.stack
    monkeypatch.setattr(torch, "stack", lambda *a, **kw: syncs.append(1) or real_stack(*a, **kw))
    pfa.flash_attn_varlen_func(q, k, v, cu, cu_k, 5, 5)
    assert not syncs
    cu_k[1] = 7  # now [0, 7, 9, 12]: sequence lengths 7, 2, 3 exceed max_seqlen_k = 5
    with pytest.raises(ValueError, match="max_seqlen"):
        pfa.flash_attn_varlen_func(q, k, v, cu, cu_k, 5, 5)
    assert syncs


def test_bad_alibi_and_max_seqlen():
    q, k, v, cu, _ = packed([5, 4], [5, 4], 2, 2, 16)
    with pytest.raises(ValueError, match="max_seqlen"):
        pfa.flash_attn_varlen_func(q, k, v, cu, cu, 3, 5)
    q4, k4, v4 = make_qkv(2, 5, 5, 2, 2, 16, device=DEVICE)
    with pytest.raises(ValueError, match="alibi_slopes must have shape"):
        pfa.flash_attn_func(q4, k4, v4, alibi_slopes=torch.ones(3, device=DEVICE))
    with pytest.raises(TypeError, match="alibi_slopes must be a float32"):
        pfa.flash_attn_func(q4, k4, v4, alibi_slopes=torch.ones(2, dtype=torch.float64, device=DEVICE))


def dense_dropout_ref(q, k, v, keep, p, causal):
    """float64 attention with a given keep mask ``[b, h, sq, sk]`` (scaled by 1 / P(keep))."""
    import math
    from pyflashattn.reference import dense_mask
    group = q.shape[2] // k.shape[2]
    s = (q.transpose(1, 2) @ k.transpose(1, 2).repeat_interleave(group, 1).transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(~dense_mask(q.shape[1], k.shape[1], -1, 0, device=q.device), -math.inf)
    from pyflashattn.dropout import keep_scale
    probs = torch.softmax(s, -1) * keep * keep_scale(p)
    return (probs @ v.transpose(1, 2).repeat_interleave(group, 1)).transpose(1, 2)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_dropout_matches_reference_with_its_mask(backend, causal):
    q, k, v = make_qkv(2, 29, 41, 4, 2, 16, device=DEVICE)
    out, lse, probs = pfa.flash_attn_func(q, k, v, dropout_p=0.25, causal=causal, return_attn_probs=True)
    keep = probs > 0
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = dense_dropout_ref(q64, k64, v64, keep, 0.25, causal)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)
    g = torch.randn_like(out)
    for a, r in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q64, k64, v64), g.double())):
        torch.testing.assert_close(a.double(), r, atol=5e-5, rtol=5e-5)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_varlen_dropout(backend, causal):
    """Sequence i of a packed batch drops as batch entry i would (counter batch * nheads + head,
    positions within the sequence): output and gradients match float64 attention per sequence
    under the mask rebuilt from the same seed."""
    from pyflashattn.dropout import keep_mask, new_seed
    lq, lk, h, p = [5, 0, 17, 20], [9, 4, 17, 33], 4, 0.3  # every causal row sees a key
    q, k, v, cu_q, cu_k = packed(lq, lk, h, 2, 16)
    torch.manual_seed(11)
    out = pfa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lq), max(lk), dropout_p=p, causal=causal)
    torch.manual_seed(11)
    seed = int(new_seed(DEVICE).item())
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    refs = []
    for i in range(len(lq)):
        rq, rk = slice(cu_q[i].item(), cu_q[i + 1].item()), slice(cu_k[i].item(), cu_k[i + 1].item())
        keep = keep_mask(seed, p, torch.arange(h, device=DEVICE) + i * h, torch.arange(lq[i], device=DEVICE),
                         torch.arange(lk[i], device=DEVICE))[None]
        ref = dense_dropout_ref(q64[None, rq], k64[None, rk], v64[None, rk], keep, p, causal)[0]
        refs.append(ref)
    ref = torch.cat(refs)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)
    for a, r in zip(grads, torch.autograd.grad(ref, (q64, k64, v64), g.double())):
        torch.testing.assert_close(a.double(), r, atol=5e-5, rtol=5e-5)


def test_dropout_statistics_and_reproducibility(backend):
    q, k, v = make_qkv(1, 64, 64, 2, 2, 16, device=DEVICE, requires_grad=False)
    torch.manual_seed(7)
    out, _, probs = pfa.flash_attn_func(q, k, v, dropout_p=0.4, return_attn_probs=True)
    kept = (probs > 0).float().mean().item()
    n = probs.numel()
    assert abs(kept - 0.6) < 4 * (0.6 * 0.4 / n) ** 0.5, kept         # Bernoulli(0.6), 4 sigma
    torch.manual_seed(7)
    assert torch.equal(pfa.flash_attn_func(q, k, v, dropout_p=0.4), out)   # same seed, same output
    assert not torch.equal(pfa.flash_attn_func(q, k, v, dropout_p=0.4), out)
    # E[out] is the output without dropout: one draw deviates by ~0.8 x |out| here, the mean of
    # 64 by ~0.1; without the 1 / (1 - p) rescale the mean would be off by 0.4
    if backend == "triton" and DEVICE == "cpu":
        return  # 64 interpreted runs take a minute; the masks equal the CPU path's (next test)
    mean = sum(pfa.flash_attn_func(q, k, v, dropout_p=0.4) for _ in range(64)) / 64
    exact = pfa.flash_attn_func(q, k, v)
    assert (mean - exact).abs().mean() < 0.2 * exact.abs().mean()


def test_dropout_same_mask_on_every_backend(monkeypatch):
    """The CPU path and the Triton kernels draw the same Philox numbers."""
    pytest.importorskip("triton")
    q, k, v = make_qkv(1, 33, 33, 2, 2, 16, device=DEVICE, requires_grad=False)
    outs = []
    for name in ("torch", "triton"):
        monkeypatch.setenv("PYFLASHATTN_BACKEND", name)
        torch.manual_seed(3)
        outs.append(pfa.flash_attn_func(q, k, v, dropout_p=0.5, causal=True))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)


def test_dropout_threshold_counts_in_256ths():
    """8-bit draws: p rounds to 1/256ths, a nonzero p drops at least 1/256 (never nothing), and
    the kept values' scale is the exact inverse of the keep probability actually used."""
    from pyflashattn.dropout import keep_scale, keep_threshold
    assert [keep_threshold(p) for p in (0.0, 0.0001, 0.1, 0.5, 0.9999)] == [0, 1, 26, 128, 255]
    assert keep_scale(0.1) == 256 / 230 and keep_scale(0.0) == 1.0


@pytest.mark.parametrize("block_n", [16, 32, 64, 128])
def test_dropout_philox_matches_triton(block_n):
    """pyflashattn.dropout is bit-identical to the kernels: Philox's four words, and the keep
    mask cut from them (8-bit numbers, sixteen keys of a row per draw, in the order a wgmma
    thread holds them) at a threshold that splits them, for tiles narrower than a draw's 64-key
    group, one group, and two."""
    pytest.importorskip("triton")
    from pyflashattn.dropout import keep_mask, keep_threshold, philox

    seed, bh, p, col0 = 123456789012345, 7, 0.3, 8064
    words = torch.zeros(4, 16, block_n, dtype=torch.int64, device=DEVICE)
    keep = torch.zeros(16, block_n, dtype=torch.int32, device=DEVICE)
    _philox_probe[(1,)](words, keep, seed, bh, keep_threshold(p), col0, BM=16, BN=block_n)
    ref = philox(seed, torch.arange(1000, 1000 + block_n, device=DEVICE)[None, :],
                 torch.arange(5, 21, device=DEVICE)[:, None], torch.tensor(bh, device=DEVICE), torch.tensor(0, device=DEVICE))
    for w in range(4):
        assert torch.equal(words[w] & 0xFFFFFFFF, ref[w])
    ref_keep = keep_mask(seed, p, torch.tensor(bh, device=DEVICE), torch.arange(5, 21, device=DEVICE),
                         torch.arange(col0, col0 + block_n, device=DEVICE))
    assert torch.equal(keep.bool(), ref_keep)
    assert 0.5 < ref_keep.float().mean() < 0.9


try:
    import triton
    import triton.language as tl

    from pyflashattn.kernels.mask import dropout_keep

    @triton.jit
    def _philox_probe(WORDS, KEEP, seed, bh, threshold, col0, BM: tl.constexpr, BN: tl.constexpr):
        rows = tl.arange(0, BM)[:, None] + 5
        cols = tl.arange(0, BN)[None, :] + 1000
        zero = rows * 0 + cols * 0
        r0, r1, r2, r3 = tl.random.philox(seed, cols + zero, rows + zero, zero + bh, zero)
        o = tl.arange(0, BM)[:, None] * BN + tl.arange(0, BN)[None, :]
        tl.store(WORDS + o, r0.to(tl.int64))
        tl.store(WORDS + BM * BN + o, r1.to(tl.int64))
        tl.store(WORDS + 2 * BM * BN + o, r2.to(tl.int64))
        tl.store(WORDS + 3 * BM * BN + o, r3.to(tl.int64))
        tl.store(KEEP + o, dropout_keep(seed, bh, tl.arange(0, BM) + 5, col0, threshold, BN).to(tl.int32))
except ImportError:  # pragma: no cover
    pass


def test_varlen_under_torch_compile(backend):
    """cu_seqlens values are data: the compiled graph must not break on their validation."""
    lens = [7, 12, 3]
    q, k, v, cu, _ = packed(lens, lens, 2, 2, 16)
    torch._dynamo.reset()

    def f(q, k, v, cu):
        return pfa.flash_attn_varlen_func(q, k, v, cu, cu, 12, 12, causal=True)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager" if DEVICE == "cpu" else "inductor")
    torch.testing.assert_close(compiled(q, k, v, cu), f(q, k, v, cu))

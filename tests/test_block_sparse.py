"""Block-sparse attention against the dense masked float64 reference (FlashAttention section 3.3)."""
import math

import pytest
import torch

import pyflashattn as pfa
from pyflashattn.block_mask import (BlockMask, butterfly_mask, causal_mask, create_block_mask, document_mask,
                                    local_global_mask, sliding_window_mask)
from pyflashattn.reference import dense_mask
from pyflashattn.testing import check_close, make_qkv

from conftest import DEVICE


def masked_ref(q, k, v, keep, dtype=torch.float64):
    """Standard attention under a dense ``[B or 1, H or 1, sq, sk]`` mask, in ``dtype``."""
    group = q.shape[2] // k.shape[2]
    qh = q.transpose(1, 2).to(dtype)
    kh = k.transpose(1, 2).to(dtype).repeat_interleave(group, 1)
    vh = v.transpose(1, 2).to(dtype).repeat_interleave(group, 1)
    s = (qh @ kh.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~keep, -math.inf)
    return (torch.softmax(s, -1).nan_to_num(0.0) @ vh).transpose(1, 2)


def check_against_masked_ref(name, out, q, k, v, keep):
    """out and the gradients of q, k, v against the float64 masked reference, by the project's
    rule (error within a multiple of PyTorch's same-dtype attention under the same mask)."""
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = masked_ref(q64, k64, v64, keep)
    same = masked_ref(q, k, v, keep, dtype=q.dtype)
    check_close(f"{name} out", out, ref, same)
    g = torch.randn_like(out)
    for gname, a, r, p in zip(("dq", "dk", "dv"), torch.autograd.grad(out, (q, k, v), g),
                              torch.autograd.grad(ref, (q64, k64, v64), g.double()),
                              torch.autograd.grad(same, (q, k, v), g)):
        check_close(f"{name} {gname}", a, r, p, 3.0)


def mask_cases(sq, sk):
    ids = torch.tensor([0] * (sk // 3) + [1] * (sk // 3) + [2] * (sk - 2 * (sk // 3)), device=DEVICE)
    cases = [("causal", causal_mask(sq, sk)), ("sliding", sliding_window_mask(11, sq, sk)),
             ("local_global", local_global_mask(7, 3)), ("butterfly", butterfly_mask(block=16))]
    if sq == sk:
        cases.append(("document", document_mask(ids)))
    return cases


@pytest.mark.parametrize("sq,sk,block", [(70, 70, 16), (45, 83, 16), (70, 83, 32)])
def test_block_sparse_matches_dense_masked_reference(backend, sq, sk, block):
    """``block`` 32 is twice the interpreter's tiles: each listed block is two kernel steps."""
    for name, mod in mask_cases(sq, sk):
        mask = create_block_mask(mod, None, 2, sq, sk, block_size=block, device=DEVICE)
        keep = mask.to_dense()
        q, k, v = make_qkv(2, sq, sk, 2, 1, 16, device=DEVICE)
        out, lse, _ = pfa.block_sparse_attn_func(q, k, v, mask, return_attn_probs=True)
        check_against_masked_ref(name, out, q, k, v, keep)


def test_per_head_masks_and_empty_rows(backend):
    """Heads with different masks; a row with no visible key outputs 0 with zero gradient."""
    sq = sk = 40
    def mod(b, h, q, k):
        return torch.where(h == 0, k <= q, (k <= q) & (q >= 20))  # head 1: rows < 20 see nothing
    mask = create_block_mask(mod, None, 2, sq, sk, block_size=16, device=DEVICE)
    q, k, v = make_qkv(1, sq, sk, 2, 2, 16, device=DEVICE)
    out = pfa.block_sparse_attn_func(q, k, v, mask)
    assert torch.all(out[:, :20, 1] == 0) and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.all(q.grad[:, :20, 1] == 0) and torch.isfinite(k.grad).all()
    ref = masked_ref(q.detach(), k.detach(), v.detach(), mask.to_dense())
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_block_mask_structure():
    mask = create_block_mask(causal_mask(300, 300), None, None, 300, 300, block_size=64)
    assert torch.equal(mask.to_dense()[0, 0], dense_mask(300, 300, -1, 0))
    # the diagonal blocks are partial, and so is the whole last query block: it runs past
    # seqlen_q, and the unmasked loops never load out of bounds
    assert mask.kv_num_blocks.tolist() == [[[1, 1, 1, 1, 5]]]
    assert mask.full_kv_num_blocks.tolist() == [[[0, 1, 2, 3, 0]]]
    assert mask.tiles.shape[0] == 3                    # diagonal, clipped rows, clipped diagonal
    assert 0.55 < mask.density() < 0.65 and "#+" in repr(mask)
    q_num, q_idx, _, fq_num, _ = mask.transposed()
    assert q_num.tolist() == [[[2, 2, 2, 2, 1]]] and fq_num.tolist() == [[[3, 2, 1, 0, 0]]]
    dense = torch.rand(1, 2, 50, 37) > 0.6
    assert torch.equal(BlockMask.from_dense(dense, block_size=16).to_dense(), dense)


def test_sdpa_block_mask_keyword(backend):
    mask = create_block_mask(causal_mask(33, 33), None, None, 33, 33, block_size=16, device=DEVICE)
    q, k, v = (t.transpose(1, 2) for t in make_qkv(1, 33, 33, 2, 2, 16, device=DEVICE, requires_grad=False))
    torch.testing.assert_close(pfa.scaled_dot_product_attention(q, k, v, block_mask=mask),
                               pfa.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5, rtol=1e-5)


def test_block_mask_errors():
    mask = create_block_mask(causal_mask(32, 32), None, None, 32, 32, block_size=16)
    q, k, v = make_qkv(1, 48, 48, 2, 2, 16, requires_grad=False)
    with pytest.raises(ValueError, match="built for seqlen_q x seqlen_k = 32 x 32"):
        pfa.block_sparse_attn_func(q, k, v, mask)
    with pytest.raises(TypeError, match="BlockMask"):
        pfa.block_sparse_attn_func(q, k, v, torch.ones(48, 48, dtype=torch.bool))
    with pytest.raises(ValueError, match="block_size"):
        create_block_mask(causal_mask(32, 32), None, None, 32, 32, block_size=24)


try:
    import triton
    import triton.language as tl

    _WINDOW = tl.constexpr(40)

    @triton.jit
    def _sliding_jit(b, h, q_idx, kv_idx):
        """A causal window of 40 keys; head 1 also drops
        every key at an odd distance (a pattern no builder makes: the predicate must run)."""
        near = (kv_idx <= q_idx) & (q_idx - kv_idx < _WINDOW)
        return near & ((h == 0) | ((q_idx - kv_idx) % 2 == 0))
except ImportError:  # pragma: no cover
    _sliding_jit = None


def test_triton_predicate_mask_mod(backend):
    """A @triton.jit mask_mod replaces the tiles in the Triton kernels (partial blocks are
    evaluated in registers); the PyTorch path uses the tiles built from the Python twin."""
    if _sliding_jit is None:
        pytest.skip("needs triton")
    sq = sk = 70

    def twin(b, h, q, k):
        return (k <= q) & (q - k < 40) & ((h == 0) | ((q - k) % 2 == 0))
    mask = create_block_mask(twin, None, 2, sq, sk, block_size=16, device=DEVICE)
    assert mask.full_kv_num_blocks.sum() > 0  # full blocks too: the predicate sees only partial ones
    q, k, v = make_qkv(2, sq, sk, 2, 2, 16, device=DEVICE)
    out = pfa.block_sparse_attn_func(q, k, v, mask, mask_mod=_sliding_jit)
    check_against_masked_ref("jit", out, q, k, v, mask.to_dense())
    with pytest.raises(ValueError, match="triton.jit"):
        pfa.block_sparse_attn_func(q, k, v, mask, mask_mod=lambda b, h, q, k: q >= k)
    if backend == "triton":  # the kernels really evaluate it: a different predicate, a different result
        loose = pfa.block_sparse_attn_func(q, k, v, mask, mask_mod=_causal_jit)
        assert (loose - out).abs().max() > 1e-2


try:
    @triton.jit
    def _causal_jit(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx
except NameError:  # pragma: no cover - no triton
    pass


def test_longest_first_schedule():
    """Sparse launches run the rows with more than twice the median block count first, then the
    rest, each in natural order (GQA groups summed); cached per mask and launch shape."""
    from pyflashattn.kernels.schedule import longest_first
    num = torch.tensor([[[1, 0, 2], [0, 1, 0]]], dtype=torch.int32)     # (B=1, H=2, 3 mask rows)
    full = torch.tensor([[[0, 7, 0], [3, 0, 0]]], dtype=torch.int32)
    order = longest_first(num, full, 2, 2, 1, 6, 2)                      # batch 2 broadcasts; 2 kernel rows per mask row
    # work per (b, h, kernel row): b0 h0 [1 1 7 7 2 2], b0 h1 [3 3 1 1 0 0], b1 the same; median 1.5
    assert order.tolist() == [2, 3, 6, 7, 14, 15, 18, 19] + [0, 1, 4, 5, 8, 9, 10, 11, 12, 13, 16, 17, 20, 21, 22, 23]
    assert longest_first(num, full, 2, 2, 1, 6, 2) is order               # cached
    grouped = longest_first(num, full, 1, 2, 2, 5, 2)                     # one GQA program per 2 heads, 5 rows
    assert grouped.tolist() == [0, 1, 2, 3, 4]                            # work 4 4 8 8 2: 8 is not > 2 x median 4
    uniform = longest_first(torch.ones(1, 1, 4, dtype=torch.int32), torch.zeros(1, 1, 4, dtype=torch.int32),
                            1, 3, 1, 4, 1)
    assert uniform.tolist() == list(range(12))                            # nothing stands out: natural order
    full.add_(0)                                                           # in-place change: recomputed
    assert longest_first(num, full, 2, 2, 1, 6, 2) is not order


def test_block_sparse_under_torch_compile(backend):
    mask = create_block_mask(causal_mask(48, 48), None, None, 48, 48, block_size=16, device=DEVICE)
    q, k, v = make_qkv(1, 48, 48, 2, 2, 16, device=DEVICE, requires_grad=False)
    f = torch.compile(lambda q, k, v: pfa.block_sparse_attn_func(q, k, v, mask), fullgraph=True)
    torch.testing.assert_close(f(q, k, v), pfa.flash_attn_func(q, k, v, causal=True), atol=1e-5, rtol=1e-5)


def test_packed_block_mask_is_cached():
    """Packing a mask for the custom op copies every list: done once per mask (and again after
    an in-place change), with the same views on every call (what kernels.schedule caches on)."""
    from pyflashattn import ops
    mask = create_block_mask(causal_mask(48, 48), None, None, 48, 48, block_size=16)
    packed = ops.pack_block_mask(mask)
    assert ops.pack_block_mask(mask) is packed
    views = ops._unpack_block_mask(*packed)
    assert ops._unpack_block_mask(*packed) is views
    assert torch.equal(views[0], mask.kv_num_blocks) and torch.equal(views[6], mask.transposed()[0])
    mask.kv_num_blocks.add_(0)
    assert ops.pack_block_mask(mask) is not packed


@pytest.mark.skipif(DEVICE != "cuda", reason="the shipped GPU configs (128-blocks, 64-key forward tiles, 3 stages)")
@pytest.mark.parametrize("head_dim,group", [(128, 1), (64, 4)])
def test_gpu_sizes_with_shipped_configs(head_dim, group):
    """Mask blocks of 128 with the table's tiles, as the benchmarks run them: several kernel steps
    per listed block, the pipelined walk over the lists, and the program order with heavy rows
    (the global tokens' row and column) first; against the float64 dense masked reference."""
    sq = sk = 1152  # 9 blocks of 128
    heads = 4
    ids = torch.arange(sk, device=DEVICE) * 3 // sk  # three documents
    cases = [("local_global", local_global_mask(200, 128)), ("sliding", sliding_window_mask(300, sq, sk)),
             ("document", document_mask(ids))]
    for name, mod in cases:
        mask = create_block_mask(mod, None, None, sq, sk, device=DEVICE)
        keep = mask.to_dense()
        q, k, v = make_qkv(2, sq, sk, heads, heads // group, head_dim, dtype=torch.bfloat16, device=DEVICE)
        out = pfa.block_sparse_attn_func(q, k, v, mask)
        check_against_masked_ref(name, out, q, k, v, keep)

"""Block ranges against a dense mask, exhaustively on small shapes.

Both twins are checked: the Python one (``cpu.kv_block_range``/``q_block_range``) directly,
the Triton one (``kernels.block_info``) through a tiny kernel that writes its ranges out.
"""
import itertools

import pytest
import torch

from pyflashattn import cpu
from pyflashattn.params import kernel_window
from pyflashattn.reference import dense_mask

from conftest import DEVICE, HAS_TRITON

LENGTHS = [1, 5, 16, 23]
WINDOWS = [(-1, -1), (-1, 0), (3, 0), (0, 0), (2, 5), (-1, 4), (7, -1)]
BLOCKS = [(4, 4), (8, 4), (4, 8)]
CASES = list(itertools.product(LENGTHS, LENGTHS, WINDOWS, BLOCKS))


def check_ranges(ranges, keep, block, blocks_other, lengths_other):
    """``ranges[x]`` are (lo, full_lo, full_hi, hi) along the columns of ``keep`` for the rows of block x."""
    n_rows, n_cols = keep.shape
    block_rows = blocks_other
    for x, (lo, full_lo, full_hi, hi) in enumerate(ranges):
        rows = keep[x * block_rows:min((x + 1) * block_rows, n_rows)]
        cols = rows.any(0).nonzero().flatten().tolist()
        assert lo % block == 0
        if full_lo < full_hi:  # with unmasked blocks: aligned, inside [lo, hi)
            assert full_lo % block == 0 and full_hi % block == 0 and lo <= full_lo and full_hi <= hi
        else:  # none: both ranges collapse to the end, so [lo, full_lo) covers everything
            assert full_lo == full_hi == max(hi, lo)
        visited = set(range(lo, full_lo, block)) | set(range(full_lo, full_hi, block)) | set(range(full_hi, hi, block))
        for c in cols:  # every visible element lies in a visited block
            assert c // block * block in visited, (x, c, (lo, full_lo, full_hi, hi))
        for start in visited:  # no visited block is wholly invisible
            assert rows[:, start:start + block].any(), (x, start)
        for start in range(full_lo, full_hi, block):  # unmasked blocks are wholly visible
            assert start + block <= n_cols and rows[:, start:start + block].all(), (x, start)


def python_ranges(sq, sk, wl, wr, bm, bn):
    left, right = kernel_window(wl, wr, sq, sk)
    kv = [cpu.kv_block_range(m, sq, sk, left, right, bm, bn) for m in range(0, sq, bm)]
    qr = [cpu.q_block_range(n, sq, sk, left, right, bm, bn) for n in range(0, sk, bn)]
    return kv, qr


@pytest.mark.parametrize("sq,sk,window,blocks", CASES)
def test_python_ranges_match_dense_mask(sq, sk, window, blocks):
    bm, bn = blocks
    keep = dense_mask(sq, sk, *window)
    kv, qr = python_ranges(sq, sk, *window, bm, bn)
    check_ranges(kv, keep, bn, bm, sk)
    check_ranges(qr, keep.T, bm, bn, sq)
    # and the element rule used inside blocks is the dense mask
    left, right = kernel_window(*window, sq, sk)
    torch.testing.assert_close(cpu.visible(torch.arange(sq), torch.arange(sk), sq, sk, left, right), keep)


if HAS_TRITON:
    import triton
    import triton.language as tl

    from pyflashattn.kernels.block_info import kv_block_range, q_block_range

    @triton.jit
    def store4(P, a, b, c, d):
        tl.store(P, a)
        tl.store(P + 1, b)
        tl.store(P + 2, c)
        tl.store(P + 3, d)

    @triton.jit
    def ranges_kernel(KV, QR, seqlen_q, seqlen_k, wl, wr, BM: tl.constexpr, BN: tl.constexpr):
        pid = tl.program_id(0)
        if pid * BM < seqlen_q:
            lo, full_lo, full_hi, hi = kv_block_range(pid * BM, seqlen_q, seqlen_k, wl, wr, BM, BN)
            store4(KV + pid * 4, lo, full_lo, full_hi, hi)
        if pid * BN < seqlen_k:
            lo, full_lo, full_hi, hi = q_block_range(pid * BN, seqlen_q, seqlen_k, wl, wr, BM, BN)
            store4(QR + pid * 4, lo, full_lo, full_hi, hi)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_triton_ranges_match_python():
    for sq, sk, window, (bm, bn) in CASES[::3]:
        left, right = kernel_window(*window, sq, sk)
        kv = torch.full((triton.cdiv(sq, bm), 4), -99, dtype=torch.int32, device=DEVICE)
        qr = torch.full((triton.cdiv(sk, bn), 4), -99, dtype=torch.int32, device=DEVICE)
        ranges_kernel[(max(kv.shape[0], qr.shape[0]),)](kv, qr, sq, sk, left, right, BM=bm, BN=bn)
        want_kv, want_qr = python_ranges(sq, sk, *window, bm, bn)
        assert kv.tolist() == [list(r) for r in want_kv], (sq, sk, window, bm, bn)
        assert qr.tolist() == [list(r) for r in want_qr], (sq, sk, window, bm, bn)

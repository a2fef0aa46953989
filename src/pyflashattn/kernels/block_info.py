"""Which key blocks a query block visits (forward, dQ) and which query blocks a key block
visits (dK/dV), split into masked and unmasked ranges.

Visibility rule, bottom-right aligned as in flash-attn (``diag = seqlen_k - seqlen_q``):
query row ``i`` sees key ``j`` iff ``i + diag - window_left <= j <= i + diag + window_right``
and ``0 <= j < seqlen_k``. Causal is ``window_right = 0``; an unbounded side is passed as a
value large enough to never bind (see ``params.kernel_window``), so there is one rule only.

Each function returns ``(lo, full_lo, full_hi, hi)``: the blocks in ``[lo, full_lo)`` and
``[full_hi, hi)`` need the element mask, the blocks in ``[full_lo, full_hi)`` do not.
``lo``, ``full_lo`` and ``full_hi`` are multiples of the block size; loops step from them.
The element mask applied inside the masked blocks is ``kernels.mask.visible``.

The same arithmetic exists twice: here for Triton and in ``pyflashattn.cpu`` for the PyTorch
path (Triton functions cannot be called from Python). ``tests/test_block_info.py`` checks both
against a dense mask, exhaustively on small shapes.
"""
import triton
import triton.language as tl


@triton.jit
def kv_block_range(m_start, seqlen_q, seqlen_k, window_left, window_right,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key range for the query rows ``[m_start, m_start + BLOCK_M)``."""
    diag = seqlen_k - seqlen_q
    m_last = tl.minimum(m_start + BLOCK_M, seqlen_q) - 1  # last real row of the block
    lo = tl.maximum(m_start + diag - window_left, 0) // BLOCK_N * BLOCK_N
    hi = tl.minimum(m_last + diag + window_right + 1, seqlen_k)
    # a key block is unmasked when every real row sees every one of its keys
    full_lo = tl.cdiv(tl.maximum(m_last + diag - window_left, lo), BLOCK_N) * BLOCK_N
    full_hi = tl.maximum(tl.minimum(m_start + diag + window_right + 1, seqlen_k), 0) // BLOCK_N * BLOCK_N
    no_full = full_hi <= full_lo
    full_lo = tl.where(no_full, tl.maximum(hi, lo), full_lo)
    full_hi = tl.where(no_full, tl.maximum(hi, lo), full_hi)
    return lo, full_lo, full_hi, hi


@triton.jit
def q_block_range(n_start, seqlen_q, seqlen_k, window_left, window_right,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Query range for the keys ``[n_start, n_start + BLOCK_N)`` (the transpose of the above)."""
    diag = seqlen_k - seqlen_q
    n_last = tl.minimum(n_start + BLOCK_N, seqlen_k) - 1
    lo = tl.maximum(n_start - diag - window_right, 0) // BLOCK_M * BLOCK_M
    hi = tl.minimum(n_last - diag + window_left + 1, seqlen_q)
    full_lo = tl.cdiv(tl.maximum(n_last - diag - window_right, lo), BLOCK_M) * BLOCK_M
    full_hi = tl.maximum(tl.minimum(n_start - diag + window_left + 1, seqlen_q), 0) // BLOCK_M * BLOCK_M
    no_full = full_hi <= full_lo
    full_lo = tl.where(no_full, tl.maximum(hi, lo), full_lo)
    full_hi = tl.where(no_full, tl.maximum(hi, lo), full_hi)
    return lo, full_lo, full_hi, hi


@triton.jit
def stage_range(stage: tl.constexpr, lo, full_lo, full_hi, hi):
    """The range a kernel's ``stage`` walks: 0 the unmasked middle (first, so that the masked
    edge blocks rescale an already large sum), 1 and 2 the masked blocks before and after it."""
    if stage == 0:
        return full_lo, full_hi
    elif stage == 1:
        return lo, full_lo
    else:
        return full_hi, hi


@triton.jit
def listed_block(pos, end, p_list, p_tile_ids, p_tiles, LIST_BLOCK: tl.constexpr, TILE_ELEMS: tl.constexpr,
                 TILE_STEP: tl.constexpr, LOAD_TILE: tl.constexpr):
    """Block-sparse loops walk their listed blocks as one range ``[0, end)``: position ``pos``
    is offset ``pos % LIST_BLOCK`` into the block whose index is entry ``pos // LIST_BLOCK`` of
    ``p_list``. One loop over all of them (not one loop per block) lets Triton's pipeliner
    prefetch across blocks. The loops call this one step ahead and carry the result: a load
    address that depends on an index loaded in the same iteration is pipelined one stage deep
    only (TTGIR from ``scripts/aot_check.py --sparse --dump``: 2 buffers and a full wait each
    step), a carried one as deep as ``num_stages`` asks (3 buffers, 2 loads in flight).

    Returns the sequence position (0 past ``end``) and the element-mask pointer for
    ``element_mask``: with ``LOAD_TILE``, the block's tile (``p_tile_ids`` gives its id; tiles
    are ``TILE_ELEMS`` elements, and the pointer is shifted back by the block start times
    ``TILE_STEP``, the tile's stride along the loop axis, so that sequence coordinates index
    it), else ``p_tiles``.
    """
    j = pos // LIST_BLOCK
    valid = pos < end
    start = tl.load(p_list + j, mask=valid, other=0) * LIST_BLOCK
    p_tile = p_tiles
    if LOAD_TILE:
        p_tile = p_tiles + tl.load(p_tile_ids + j, mask=valid, other=0).to(tl.int64) * TILE_ELEMS - start * TILE_STEP
    return start + (pos - j * LIST_BLOCK), p_tile


@triton.jit
def listed_step(pos, end, start_next, p_tile_next, p_list, p_tile_ids, p_tiles, LIST_BLOCK: tl.constexpr,
                TILE_ELEMS: tl.constexpr, TILE_STEP: tl.constexpr, LOAD_TILE: tl.constexpr, STEP: tl.constexpr):
    """One step of a ``listed_block`` walk: the position and tile looked up last step become this
    step's, and the ones ``STEP`` positions on are looked up (carried to the next step, for
    the pipeliner's sake). Returns ``(start, p_tile, start_next, p_tile_next)``."""
    start_after, p_tile_after = listed_block(pos + STEP, end, p_list, p_tile_ids, p_tiles, LIST_BLOCK, TILE_ELEMS,
                                             TILE_STEP, LOAD_TILE)
    return start_next, p_tile_next, start_after, p_tile_after

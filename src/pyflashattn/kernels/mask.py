"""Element masks and score modifiers, shared by the forward and both backward kernels.

Scores are handled in base 2: ``s2 = log2(e) * S`` where ``S`` is the natural-log logit the
softmax sees. Modifiers (flash-attn's conventions):
- softcap ``c``: ``S = c * tanh(scale * qk / c)``, derivative ``scale * (1 - tanh^2)``;
- ALiBi slope ``m``: ``S += -m * |i + seqlen_k - seqlen_q - j|`` (a constant: no gradient).
"""
import triton
import triton.language as tl


@triton.jit
def visible(o_m, o_n, seqlen_q, seqlen_k, window_left, window_right):
    """Element mask ``[BLOCK_M, BLOCK_N]``: True where query row sees key column
    (the rule in ``block_info``'s docstring)."""
    diag = seqlen_k - seqlen_q
    rel = o_n[None, :] - (o_m[:, None] + diag)
    return (rel >= -window_left) & (rel <= window_right) & (o_n[None, :] < seqlen_k)


@triton.jit
def element_mask(o_m, o_n, seqlen_q, seqlen_k, window_left, window_right, p_tile, b, h,
                 HAS_TILES: tl.constexpr, TILE_W: tl.constexpr, MASK_FN: tl.constexpr):
    """The mask of a masked block: the window rule, or for block-sparse attention the block's
    element mask: ``MASK_FN(b, h, q_idx, kv_idx)`` (a ``@triton.jit`` predicate, evaluated in
    registers) when given, else the block's precomputed tile (``p_tile`` is offset so that
    element (row, col) sits at ``p_tile + row * TILE_W + col`` in sequence coordinates)."""
    if HAS_TILES:
        if MASK_FN is not None:
            return MASK_FN(b, h, o_m[:, None], o_n[None, :]) & (o_n < seqlen_k)[None, :]
        else:
            return tl.load(p_tile + o_m[:, None] * TILE_W + o_n[None, :]) != 0
    else:
        return visible(o_m, o_n, seqlen_q, seqlen_k, window_left, window_right)


@triton.jit
def head_scalars(SLOPES, SEED, b, h, stride_sb, stride_sh, alibi_log2,
                 HAS_ALIBI: tl.constexpr, HAS_DROPOUT: tl.constexpr):
    """Per-(batch, head) values of the score modifiers: the ALiBi slope (base 2) and the dropout seed."""
    alibi_slope2 = 0.0
    if HAS_ALIBI:
        alibi_slope2 = tl.load(SLOPES + b * stride_sb + h * stride_sh) * alibi_log2
    seed = 0
    if HAS_DROPOUT:
        seed = tl.load(SEED)
    return alibi_slope2, seed


@triton.jit
def dropout_keep(seed, bh, o_rows, col0, threshold, BLOCK_N: tl.constexpr):
    """bool ``[len(o_rows), BLOCK_N]``: True where dropout keeps element (row, ``col0 + j``);
    ``col0`` and ``BLOCK_N`` are multiples of 16. One Philox-4x32-10 draw per row and 16 keys,
    counter (key // 16, row, batch * nheads + head, 0), its four words cut into sixteen bytes
    (flash-attn's 8-bit numbers): key ``16c + 4w + j`` takes byte ``j`` of word ``w``
    (``pyflashattn.dropout``, the same numbers on every backend). Half the draws of 16-bit
    numbers: Philox (~70 integer operations a draw) is most of dropout's cost."""
    o_c = col0 // 16 + tl.arange(0, BLOCK_N // 16)
    zero = o_rows[:, None] * 0 + o_c[None, :] * 0
    r0, r1, r2, r3 = tl.random.philox(seed, o_c[None, :] + zero, o_rows[:, None] + zero, zero + bh, zero)
    # byte j of every word at column 4c + w (_keep4), then the four byte planes interleaved the
    # same way: column 4 (4c + w) + j = 16c + 4w + j
    return _interleave4(_keep4(r0, r1, r2, r3, threshold, 0), _keep4(r0, r1, r2, r3, threshold, 8),
                        _keep4(r0, r1, r2, r3, threshold, 16), _keep4(r0, r1, r2, r3, threshold, 24)) != 0


@triton.jit
def _keep4(w0, w1, w2, w3, threshold, SHIFT: tl.constexpr):
    """int8 ``[rows, 4 * C]``: 1 where byte ``SHIFT / 8`` of word ``w`` of draw ``c`` is >=
    ``threshold``, at column ``4c + w``. Compared before the interleaves so that only bytes move
    when they rearrange the tile (an int32 tile's layout change took 64 KB more shared memory than
    the forward has)."""
    return _interleave4(_keep_byte(w0, threshold, SHIFT), _keep_byte(w1, threshold, SHIFT),
                        _keep_byte(w2, threshold, SHIFT), _keep_byte(w3, threshold, SHIFT))


@triton.jit
def _interleave4(a0, a1, a2, a3):
    """``[rows, 4 * C]`` from four ``[rows, C]``: column ``4c + i`` is ``a_i``'s column ``c``.
    ``interleave`` puts its second operand right after its first, so (0, 2) and (1, 3)
    interleaved, then interleaved again, run 0, 1, 2, 3."""
    return tl.interleave(tl.interleave(a0, a2), tl.interleave(a1, a3))


@triton.jit
def _keep_byte(word, threshold, SHIFT: tl.constexpr):
    return (((word >> SHIFT) & 0xFF).to(tl.int32) >= threshold).to(tl.int8)


@triton.jit
def _tanh(x, FAST: tl.constexpr):
    if FAST:  # one MUFU.TANH (common.SOFTCAP_FAST)
        return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
    else:  # 1 - 2 / (e^{2x} + 1): exact limits at +-inf (no NaN), portable to the interpreter
        return 1.0 - 2.0 / (tl.math.exp2(x * 2.8853900817779268) + 1.0)


@triton.jit
def scores_log2(b_qk, o_m, o_n, seqlen_q, seqlen_k, qk_scale, softcap_scale, alibi_slope2,
                HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr):
    """Raw ``q.k`` tile ``[BLOCK_M, BLOCK_N]`` -> base-2 scores, and ``dS/d(scale*qk)``.

    ``qk_scale`` is ``scale * log2(e)`` without softcap and ``c * log2(e)`` with it;
    ``softcap_scale`` is ``scale / c``; ``alibi_slope2`` is ``m * log2(e)``. The second result
    is ``1 - tanh^2`` with softcap and 1.0 without (the backward multiplies dS by it).
    ``HAS_SOFTCAP``: ``common.SOFTCAP_*`` (0 off, 1 the exact tanh, 2 ``tanh.approx``).
    """
    if HAS_SOFTCAP:
        b_th = _tanh(b_qk * softcap_scale, HAS_SOFTCAP == 2)   # common.SOFTCAP_FAST
        b_s = b_th * qk_scale
        b_dmod = 1.0 - b_th * b_th
    else:
        b_s = b_qk * qk_scale
        b_dmod = 1.0
    if HAS_ALIBI:
        rel = o_n[None, :] - (o_m[:, None] + seqlen_k - seqlen_q)
        b_s -= alibi_slope2 * tl.abs(rel).to(tl.float32)
    return b_s, b_dmod

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
    """bool ``[len(o_rows), BLOCK_N]``: True where dropout keeps element (row, ``col0 + c``);
    ``col0`` a multiple of ``BLOCK_N``, a power of two >= 16. The map of ``pyflashattn.dropout``:
    one Philox-4x32-10 draw per row and 64-key group ``g`` and ``t`` in 0..3, counter (4g + t,
    row, batch * nheads + head, 0), its sixteen bytes for keys ``64g + 8j + 2t + e`` (number
    ``2j + e``), the elements a Hopper wgmma thread holds. Here they are rearranged into key
    order (the Gluon forward draws them where they are). A tile narrower than a group draws
    its whole group and keeps its part."""
    GROUPS: tl.constexpr = max(BLOCK_N // 64, 1)
    o_g = tl.arange(0, GROUPS)
    o_t = tl.arange(0, 4)
    c0 = (col0 // 64 + o_g[None, :, None]) * 4 + o_t[None, None, :] + o_rows[:, None, None] * 0
    c1 = o_rows[:, None, None] + c0 * 0
    zero = c0 * 0
    w0, w1, w2, w3 = tl.random.philox(seed, c0, c1, zero + bh, zero)
    # numbers 2j and 2j + 1 (bytes 2 (j % 2) and +1 of word j // 2) interleaved: [rows, G, 8 (t, e)]
    x0 = _byte_pair(w0, threshold, 0)
    x1 = _byte_pair(w0, threshold, 16)
    x2 = _byte_pair(w1, threshold, 0)
    x3 = _byte_pair(w1, threshold, 16)
    x4 = _byte_pair(w2, threshold, 0)
    x5 = _byte_pair(w2, threshold, 16)
    x6 = _byte_pair(w3, threshold, 0)
    x7 = _byte_pair(w3, threshold, 16)
    # j as three new trailing dims (bit 0 innermost), moved above (t, e): [rows, G, 8 (j), 8 (t, e)]
    y = tl.join(tl.join(tl.join(x0, x1), tl.join(x2, x3)), tl.join(tl.join(x4, x5), tl.join(x6, x7)))
    y = tl.reshape(tl.permute(y, (0, 1, 5, 4, 3, 2)), (o_rows.shape[0], GROUPS * 64))
    if BLOCK_N < 64:  # this tile's part of its group
        y = tl.reshape(y, (o_rows.shape[0], 64 // BLOCK_N, BLOCK_N))
        part = (tl.arange(0, 64 // BLOCK_N) == (col0 % 64) // BLOCK_N)[None, :, None]
        y = tl.sum(tl.where(part, y, 0), axis=1)
    return y != 0


@triton.jit
def _byte_pair(word, threshold, SHIFT: tl.constexpr):
    """int8 ``[..., 8]`` from ``[..., 4]`` words: column ``2t + e`` is 1 where byte ``SHIFT / 8 +
    e`` of word ``t`` is >= ``threshold``."""
    return tl.interleave(_keep_byte(word, threshold, SHIFT), _keep_byte(word, threshold, SHIFT + 8))


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

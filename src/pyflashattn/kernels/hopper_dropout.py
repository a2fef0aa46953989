"""Dropout's keep mask in the Gluon kernels, drawn where the wgmma accumulator holds the scores.

The map is ``pyflashattn.dropout``'s: one Philox-4x32-10 draw per row, 64-key group ``g`` and
``t`` in 0..3 (counter ``(4g + t, row, batch * nheads + head, 0)``), its sixteen bytes for keys
``64g + 8j + 2t + e`` (number ``2j + e``). A thread of a wgmma accumulator ``[rows, BLOCK_N]``
holds, per row, columns ``8j' + 2t + e`` with ``t`` its lane's (lane % 4) and every ``j'`` and
``e`` in registers: exactly the sixteen keys of one draw per 64 columns. So here each thread
draws its own elements' numbers and no element moves between threads: the scores' index
tensors are reshaped to ``[rows, G, 8 (j), 4 (t), 2 (e)]`` and reduced over ``j`` and ``e``
(registers only) to get one counter per draw in the thread that needs it; the draws' bytes are
joined back along register dimensions and reshaped to the accumulator's shape, whose layout must
then equal the accumulator's (``convert_layout(..., assert_trivial=True)``: a conversion through
shared memory, what makes dropout cost 2x in the Triton forward (v17 item 5), fails the build).

Each draw's bytes are compared with the threshold four at a time (``_bytes_at_least``), and
the forward sets its drops on P once P is 16-bit, one PRMT + AND per two elements
(``dropout_keep_pairs``, ``apply_keep``); the backward kernels, whose dP is fp32, take booleans
(``dropout_keep``). v18 items 6-7: the forward with dropout 12-20 % faster.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

_KEY_A: gl.constexpr = gl.constexpr(0x9E3779B9)
_KEY_B: gl.constexpr = gl.constexpr(0xBB67AE85)
# Philox-4x32's two round multipliers (0xD2511F53, 0xCD9E8D57), each in a PTX multiply that
# gives the product's low and high words at once (``_mul_wide``)
_MUL_WIDE_A: gl.constexpr = gl.constexpr(
    "{ .reg .b64 t; mul.wide.u32 t, $2, 0xD2511F53; mov.b64 {$0, $1}, t; }")
_MUL_WIDE_B: gl.constexpr = gl.constexpr(
    "{ .reg .b64 t; mul.wide.u32 t, $2, 0xCD9E8D57; mov.b64 {$0, $1}, t; }")


@gluon.jit
def _philox(seed, c0, c1, c2, c3):
    """Philox-4x32-10 of counters ``c0..c3`` (uint32 tensors) under the 64-bit ``seed``: the four
    words, as ``triton.language.random.philox`` (the Triton kernels' and ``dropout.philox``)."""
    seed = seed.to(gl.uint64)
    k0 = (seed & 0xFFFFFFFF).to(gl.uint32)
    k1 = ((seed >> 32) & 0xFFFFFFFF).to(gl.uint32)
    for _ in gl.static_range(10):
        lo_b, hi_b = _mul_wide(c2, _MUL_WIDE_B)
        lo_a, hi_a = _mul_wide(c0, _MUL_WIDE_A)
        c0 = hi_b ^ c1 ^ k0
        c2 = hi_a ^ c3 ^ k1
        c1 = lo_b
        c3 = lo_a
        k0 = k0 + _KEY_A
        k1 = k1 + _KEY_B
    return c0, c1, c2, c3


@gluon.jit
def _mul_wide(a, ASM: gl.constexpr):
    """``(lo, hi)`` words of the 64-bit product of uint32 ``a`` and a constant, ``ASM``
    (``_MUL_WIDE_A`` / ``_B``): one ``mul.wide.u32`` (IMAD.WIDE.U32), where ``a * B`` and
    ``umulhi(a, B)`` compile to two instructions (IMAD, IMAD.HI)."""
    return gl.inline_asm_elementwise(ASM, "=r,=r,r", [a], dtype=(gl.uint32, gl.uint32), is_pure=True, pack=1)


@gluon.jit
def _bytes_at_least(word, thr_low, thr_small):
    """Bit 7 of each byte of the result: whether that byte of ``word`` is >= the threshold, all
    four at once (SWAR), where ``thr_low`` is the threshold's low 7 bits in every byte and
    ``thr_small`` 0x80808080 if the threshold is below 128, else 0. ``(word | 0x80) - low``
    cannot borrow across bytes; its bit 7 says the byte's low 7 bits reach the threshold's.
    Then a byte is >= the threshold where its bit 7 and that say so, or (threshold < 128)
    where either does. Four operations per four bytes, where extracting and comparing each byte
    cost ~4.5 instructions per byte (v18 SASS: PRMT, ISETP, SEL)."""
    low = (word | 0x80808080) - thr_low
    return (word & low) | ((word | low) & thr_small)


@gluon.jit
def _byte_pair(ge, SHIFT: gl.constexpr):
    """``[..., 2]``: bytes ``SHIFT / 8`` and ``SHIFT / 8 + 1``'s verdicts in ``ge``
    (``_bytes_at_least``'s bit 7 of each byte)."""
    return gl.join((ge & (0x80 << SHIFT)) != 0, (ge & (0x80 << (SHIFT + 8))) != 0)


@gluon.jit
def _pair_word(ge, SHIFT: gl.constexpr):
    """``[..., 2]``: the word whose bytes 0 and 1 hold the verdicts of bytes ``SHIFT / 8`` and
    ``SHIFT / 8 + 1`` of ``ge``, once for each of the two elements they decide."""
    w = ge >> SHIFT
    return gl.join(w, w)


@gluon.jit
def _verdicts(seed, bh, offs_m, offs_n, col0, threshold):
    """The draws of ``dropout_keep``'s tile: four words ``[rows, G, 4 (t)]``, each byte's bit 7
    whether dropout keeps that byte's element (``_bytes_at_least``)."""
    ROWS: gl.constexpr = offs_m.shape[0]
    BLOCK_N: gl.constexpr = offs_n.shape[0]
    GROUPS: gl.constexpr = BLOCK_N // 64
    gl.static_assert(BLOCK_N % 64 == 0)
    rows = gl.expand_dims(offs_m, 1) + gl.expand_dims(offs_n, 0) * 0
    cols = gl.expand_dims(offs_n, 0) + gl.expand_dims(offs_m, 1) * 0
    # a draw's counter (and row) in the thread that holds its sixteen keys: reduced over j and e
    group = gl.reshape(col0 // 16 + (cols // 64) * 4 + (cols % 8) // 2, [ROWS, GROUPS, 8, 4, 2])
    group = gl.max(gl.max(group, axis=4), axis=2)
    row = gl.max(gl.max(gl.reshape(rows, [ROWS, GROUPS, 8, 4, 2]), axis=4), axis=2)
    zero = row * 0
    w0, w1, w2, w3 = _philox(seed, group.to(gl.uint32, bitcast=True), row.to(gl.uint32, bitcast=True),
                             (zero + bh).to(gl.uint32, bitcast=True), zero.to(gl.uint32, bitcast=True))
    thr = threshold.to(gl.uint32)
    thr_low = (thr & 0x7F) * 0x01010101
    thr_small = gl.where(thr < 128, 0x80808080, 0).to(gl.uint32)
    return (_bytes_at_least(w0, thr_low, thr_small), _bytes_at_least(w1, thr_low, thr_small),
            _bytes_at_least(w2, thr_low, thr_small), _bytes_at_least(w3, thr_low, thr_small))


@gluon.jit
def _to_accumulator(y, ROWS: gl.constexpr, BLOCK_N: gl.constexpr, layout: gl.constexpr):
    """``y`` ``[rows, G, 4 (t), 2 (e), 2, 2, 2]`` (numbers 2j and 2j + 1 of each draw, j's three
    bits trailing, bit 0 innermost) as the accumulator's ``[rows, BLOCK_N]``: j moved above
    (t, e); a renaming of registers, or the build fails."""
    y = gl.reshape(gl.permute(y, (0, 1, 6, 5, 4, 2, 3)), [ROWS, BLOCK_N])
    return gl.convert_layout(y, layout, assert_trivial=True)


@gluon.jit
def _verdict(g, SHIFT: gl.constexpr, PAIRS: gl.constexpr):
    """``[..., 2]`` for bytes ``SHIFT / 8`` and ``SHIFT / 8 + 1`` of ``g``: booleans
    (``_byte_pair``), or with ``PAIRS`` their word for ``apply_keep`` (``_pair_word``)."""
    if PAIRS:
        return _pair_word(g, SHIFT)
    else:
        return _byte_pair(g, SHIFT)


@gluon.jit
def _keep_tile(seed, bh, offs_m, offs_n, col0, threshold, layout: gl.constexpr, PAIRS: gl.constexpr):
    """``dropout_keep`` (``PAIRS`` off) or ``dropout_keep_pairs``: the draws' verdicts, numbers
    2j and 2j + 1 of each draw side by side, as the accumulator's tile."""
    g0, g1, g2, g3 = _verdicts(seed, bh, offs_m, offs_n, col0, threshold)
    y = gl.join(gl.join(gl.join(_verdict(g0, 0, PAIRS), _verdict(g0, 16, PAIRS)),
                        gl.join(_verdict(g1, 0, PAIRS), _verdict(g1, 16, PAIRS))),
                gl.join(gl.join(_verdict(g2, 0, PAIRS), _verdict(g2, 16, PAIRS)),
                        gl.join(_verdict(g3, 0, PAIRS), _verdict(g3, 16, PAIRS))))
    return _to_accumulator(y, offs_m.shape[0], offs_n.shape[0], layout)


@gluon.jit
def dropout_keep(seed, bh, offs_m, offs_n, col0, threshold, layout: gl.constexpr):
    """bool ``[len(offs_m), len(offs_n)]`` in ``layout`` (a wgmma accumulator's: ``offs_m`` in its
    ``SliceLayout(1)``, ``offs_n`` in its ``SliceLayout(0)``): True where dropout keeps query row
    ``offs_m[i]``'s key ``col0 + offs_n[j]``. ``col0`` a multiple of 64, ``len(offs_n)`` too;
    ``threshold`` as ``dropout.keep_threshold``; ``seed`` the int64 seed, ``bh`` batch * nheads
    + head."""
    return _keep_tile(seed, bh, offs_m, offs_n, col0, threshold, layout, False)


@gluon.jit
def dropout_keep_pairs(seed, bh, offs_m, offs_n, col0, threshold, layout: gl.constexpr):
    """``dropout_keep``'s verdicts as uint32 ``[len(offs_m), len(offs_n)]`` in ``layout``, for
    ``apply_keep``: the element at an even column and its odd neighbour (one 32-bit register
    once P is 16-bit) both hold the word whose byte 0's bit 7 says whether the even one is
    kept, byte 1's the odd one."""
    return _keep_tile(seed, bh, offs_m, offs_n, col0, threshold, layout, True)


@gluon.jit
def apply_keep(p, pairs):
    """16-bit ``p`` with dropout's zeros, ``pairs`` from ``dropout_keep_pairs`` in its layout: per
    two elements (one register) a PRMT that spreads bytes 0 and 1's bit 7 over the two halves
    (selector 0x9988: sign-replicated bytes) and an AND. Where a select in fp32 compiles to
    ~4 instructions per element (ptxas moves it past the conversion to 16 bits and unpacks the
    pairs: PRMT, SEL, PRMT), this is one."""
    return gl.inline_asm_elementwise(
        "{ .reg .b32 m; prmt.b32 m, $2, 0, 0x9988; and.b32 $0, $1, m; }",
        "=r,r,r,r", [p, pairs], dtype=p.dtype, is_pure=True, pack=2)


@gluon.jit
def dropout_keep_transposed(seed, bh, q0, n0, threshold, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                            layout: gl.constexpr):
    """bool ``[BLOCK_N, BLOCK_M]`` in ``layout`` (the dK/dV kernels' S^T accumulator: keys down,
    queries across): True where dropout keeps key ``n0 + i`` for query ``q0 + j``. There a
    thread holds two keys of sixteen queries, so each of its draws would serve two of its
    elements; instead the mask is drawn in the forward's orientation (``dropout_keep``: each
    thread its own sixteen keys of a query) and turned through shared memory, as bytes
    (``BLOCK_M`` x ``BLOCK_N`` a step). ``n0`` a multiple of 64, ``BLOCK_N`` too; one warpgroup."""
    fwd_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, BLOCK_N, 16])
    offs_q = q0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, fwd_layout))
    offs_k = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, fwd_layout))
    keep = dropout_keep(seed, bh, offs_q, offs_k, n0, threshold, fwd_layout).to(gl.int8)
    return gl.convert_layout(gl.permute(keep, (1, 0)), layout) != 0

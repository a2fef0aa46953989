"""Context parallelism: exact attention over a sequence split across the ranks of a process group
(ring attention), on ``torch.distributed`` (NCCL between GPUs, gloo on CPU).

Each rank holds a shard of q, k and v along the sequence dimension. The k/v shards travel
around the ring (rank r sends to r + 1, receives from r - 1); at step ``s`` rank ``r`` holds
the k/v shard of rank ``(r - s) mod W`` and attends its own queries to it with the
single-device op (``pyflashattn::fwd``). The partial results are merged exactly through their
log-sum-exp, in fp32. The next k/v shard is in flight (``batch_isend_irecv``) while the current
one is computed.

The backward uses FlashAttention-2's identity: given the *final* out and lse, every block's
partial gradients (``pyflashattn::bwd`` with the global lse) are exact and simply add up. So
k/v go around the ring once more, each rank adds its queries' contribution to dk/dv of the
block it holds, and the dk/dv accumulators (fp32) travel with the blocks until they are home.

``low_memory=True`` (a group of two) trades that for memory: transfers in chunks, the peer's
k/v received into the dk/dv output buffers, gradients accumulated into the outputs by the op
(``ops.attn_bwd_into``), so a rank holds about what one device holds for the whole sequence
(see "The low-memory schedule" below).

Which (query, key) pairs a block computes is decided from global token positions only
(``plan_blocks``): a key block wholly in the future of the queries is skipped, a wholly visible
one runs unmasked (window ``(-1, -1)``), and only blocks the mask boundary crosses get a window,
after trimming them to the rows and columns that see anything. Causal and sliding windows are
the same rule (causal is ``window_right = 0``).

Layouts (``W`` ranks, global length ``S``):

- ``"contiguous"``: rank r holds positions ``[r S/W, (r+1) S/W)``. Under causal masking rank 0
  has almost nothing to do and rank W-1 the most.
- ``"zigzag"``: the sequence is cut into ``2W`` equal chunks; rank r holds chunk r followed by
  chunk ``2W-1-r``. Under causal masking every rank does the same work at every ring step.

``shard_sequence`` / ``gather_sequence`` / ``shard_positions`` move between the full sequence
and the shards (positions are what rotary embeddings need).
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from . import ops, validate
from .params import fold_causal

LAYOUTS = ("zigzag", "contiguous")
_INF = 1 << 62  # "unbounded" in position arithmetic (Python ints: no overflow)


# ----------------------------------------------------------------------------------------------
# Layouts: which global positions a rank holds


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _parts(world_size: int, layout: str) -> int:
    """Into how many equal chunks the layout cuts the global sequence."""
    return 2 * world_size if layout == "zigzag" else world_size


def _check_divisible(seqlen: int, world_size: int, layout: str, what: str) -> None:
    parts = _parts(world_size, layout)
    if seqlen % parts:
        need = "2 * world_size" if layout == "zigzag" else "world_size"
        raise ValueError(
            f"{what} {seqlen} is not divisible by {need} = {parts}, as the {layout!r} layout needs "
            f"with {world_size} ranks; pad the sequence to a multiple of {parts}"
            + (" (or use layout='contiguous', which needs a multiple of world_size)" if layout == "zigzag" else ""))


def layout_segments(seqlen_local: int, rank: int, world_size: int, layout: str = "zigzag") -> list[tuple[int, int]]:
    """The global positions held by ``rank``, as ``(global_start, length)`` runs in local order."""
    _check_layout(layout)
    if layout == "contiguous":
        return [(rank * seqlen_local, seqlen_local)]
    if seqlen_local % 2:
        raise ValueError(f"the zigzag layout needs an even local sequence length, got {seqlen_local}")
    c = seqlen_local // 2
    return [(rank * c, c), ((2 * world_size - 1 - rank) * c, c)]


def shard_positions(seqlen: int, rank: int, world_size: int, layout: str = "zigzag",
                    device=None) -> Tensor:
    """Global positions (int64, in local order) of the tokens rank ``rank`` holds when a sequence
    of length ``seqlen`` is sharded: what rotary embeddings and position ids need."""
    _check_layout(layout)
    _check_divisible(seqlen, world_size, layout, "sequence length")
    segs = layout_segments(seqlen // world_size, rank, world_size, layout)
    return torch.cat([torch.arange(s, s + n, device=device) for s, n in segs])


def _rank_and_size(group, rank, world_size) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size = {world_size}), got {rank}")
        return rank, world_size
    _check_initialized("shard_sequence")
    return dist.get_rank(group), dist.get_world_size(group)


def shard_sequence(x: Tensor, group=None, layout: str = "zigzag", dim: int = 1,
                   rank: Optional[int] = None, world_size: Optional[int] = None) -> Tensor:
    """This rank's shard of the full sequence ``x`` (dimension ``dim``, 1 in the flash-attn
    layout). ``rank``/``world_size`` default to the group's; pass both to shard without a process
    group. Differentiable (a slice, or a concatenation of two slices for zigzag)."""
    _check_layout(layout)
    rank, world_size = _rank_and_size(group, rank, world_size)
    seqlen = x.shape[dim]
    _check_divisible(seqlen, world_size, layout, f"sequence length (x.shape[{dim}])")
    chunks = x.chunk(_parts(world_size, layout), dim=dim)
    if layout == "contiguous":
        return chunks[rank]
    return torch.cat([chunks[rank], chunks[2 * world_size - 1 - rank]], dim=dim)


def unshard_sequence(shards: Sequence[Tensor], layout: str = "zigzag", dim: int = 1) -> Tensor:
    """Inverse of ``shard_sequence``: the full sequence from every rank's shard, in rank order."""
    _check_layout(layout)
    world_size = len(shards)
    if layout == "contiguous":
        return torch.cat(list(shards), dim=dim)
    halves = [s.chunk(2, dim=dim) for s in shards]
    chunks = [halves[r][0] for r in range(world_size)] + [halves[r][1] for r in reversed(range(world_size))]
    return torch.cat(chunks, dim=dim)


def gather_sequence(x: Tensor, group=None, layout: str = "zigzag", dim: int = 1) -> Tensor:
    """The full sequence on every rank, from each rank's shard ``x`` (an all-gather; shards must
    have one shape). Not differentiable: meant for checking and for outputs."""
    _check_initialized("gather_sequence")
    x = x.detach().contiguous()
    shards = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(shards, x, group=group)
    return unshard_sequence(shards, layout, dim)


# ----------------------------------------------------------------------------------------------
# Block plan: which part of (local queries) x (held keys) each call computes, with which window


@dataclass(frozen=True)
class Block:
    """One call of the single-device op: local query rows ``[q_lo, q_hi)`` against local key
    rows ``[k_lo, k_hi)``, with the op's (bottom-right aligned) window; ``-1`` is unbounded."""
    q_lo: int
    q_hi: int
    k_lo: int
    k_hi: int
    window_left: int
    window_right: int

    @property
    def full(self) -> bool:
        return self.window_left < 0 and self.window_right < 0


def _pair_block(q_start: int, len_q: int, k_start: int, len_k: int, rel_lo: int, rel_hi: int):
    """The block for one run of queries against one run of keys, or None when no query sees a
    key. Query ``i`` (local to the run) sees key ``j`` when ``j - i`` lies in ``[lo, hi]``."""
    d = k_start - q_start
    lo, hi = rel_lo - d, rel_hi - d
    i0, i1 = max(0, -hi), min(len_q, len_k - lo)    # rows that see at least one key
    j0, j1 = max(0, lo), min(len_k, len_q + hi)     # columns seen by at least one row
    if i0 >= i1 or j0 >= j1:
        return None
    sq, sk = i1 - i0, j1 - j0
    # In the trimmed block, row i' sees j' when j' - i' is in [lo - j0 + i0, hi - j0 + i0]; the op's
    # window is relative to the bottom-right diagonal j' - i' = sk - sq. Trimming to the rows and
    # columns that see anything makes both sides >= 0, which the op's window needs.
    left = (sk - sq) - (lo - j0 + i0)
    right = (hi - j0 + i0) - (sk - sq)
    assert left >= 0 and right >= 0, (left, right)
    left = -1 if left >= sk - 1 else left     # the band covers the whole block on that side
    right = -1 if right >= sq - 1 else right
    return Block(i0, i1, j0, j1, left, right)


def _coalesce(blocks: list[Block]) -> list[Block]:
    """Merge unmasked blocks that share a side and touch, so whole shards run as one call."""
    blocks = list(blocks)
    merged = True
    while merged:
        merged = False
        for a in range(len(blocks)):
            for b in range(len(blocks)):
                x, y = blocks[a], blocks[b]
                if a == b or not (x.full and y.full):
                    continue
                if (x.k_lo, x.k_hi) == (y.k_lo, y.k_hi) and x.q_hi == y.q_lo:
                    new = Block(x.q_lo, y.q_hi, x.k_lo, x.k_hi, -1, -1)
                elif (x.q_lo, x.q_hi) == (y.q_lo, y.q_hi) and x.k_hi == y.k_lo:
                    new = Block(x.q_lo, x.q_hi, x.k_lo, y.k_hi, -1, -1)
                else:
                    continue
                blocks = [blk for i, blk in enumerate(blocks) if i not in (a, b)] + [new]
                merged = True
                break
            if merged:
                break
    return sorted(blocks, key=lambda blk: (blk.q_lo, blk.k_lo))


def plan_blocks(q_segments: Sequence[tuple[int, int]], k_segments: Sequence[tuple[int, int]],
                window_left: int, window_right: int) -> list[Block]:
    """The calls that attend queries at ``q_segments`` to keys at ``k_segments`` (each a list of
    ``(global_start, length)`` runs in local order, as ``layout_segments`` gives) under the global
    window: query at position p sees key at position t when ``p - window_left <= t <= p +
    window_right`` (``-1``: unbounded; causal is ``window_right = 0``). Every visible pair is in
    exactly one block; blocks of keys nobody sees are left out."""
    if (window_left < 0 and window_right == 0 and list(q_segments) == list(k_segments)
            and all(a[0] + a[1] <= b[0] for a, b in zip(q_segments, q_segments[1:]))):
        # Causal on a rank's own shard, whose runs are in increasing order (both layouts): the
        # local lower triangle is exactly the global mask, so one causal call does it all.
        n = sum(length for _, length in q_segments)
        return [Block(0, n, 0, n, -1, 0)]
    rel_lo = -_INF if window_left < 0 else -window_left
    rel_hi = _INF if window_right < 0 else window_right
    blocks, q_off = [], 0
    for q_start, len_q in q_segments:
        k_off = 0
        for k_start, len_k in k_segments:
            blk = _pair_block(q_start, len_q, k_start, len_k, rel_lo, rel_hi)
            if blk is not None:
                blocks.append(Block(blk.q_lo + q_off, blk.q_hi + q_off, blk.k_lo + k_off, blk.k_hi + k_off,
                                    blk.window_left, blk.window_right))
            k_off += len_k
        q_off += len_q
    return _coalesce(blocks)


# ----------------------------------------------------------------------------------------------
# Communication


class RingComm:
    """Sends tensors to the next rank of ``group`` and receives as many from the previous one,
    in one ``batch_isend_irecv`` (NCCL runs it on its own stream, concurrently with compute)."""

    def __init__(self, group=None):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        pg = group if group is not None else dist.group.WORLD
        self.next = dist.get_global_rank(pg, (self.rank + 1) % self.world_size)  # P2POp wants global ranks
        self.prev = dist.get_global_rank(pg, (self.rank - 1) % self.world_size)

    def exchange(self, tensors: Sequence[Tensor], tag: int = 0) -> tuple[list[Tensor], list]:
        """Start sending ``tensors``; return the receive buffers and the requests to ``wait``.
        Tags (used by gloo, ignored by NCCL, which matches by order) tell k/v from dk/dv."""
        recv = [torch.empty_like(t) for t in tensors]
        return recv, self.post(tensors, recv, tag)

    def post(self, send: Sequence[Tensor] = (), recv: Sequence[Tensor] = (), tag: int = 0) -> list:
        """Start sending ``send`` (to the next rank) and receiving into ``recv`` (contiguous
        buffers, from the previous rank); either may be empty. Returns the requests to ``wait``.
        The i-th tensor of each side has tag ``tag + i``. With NCCL the transfers are ordered
        after the work already queued on the current stream, so a buffer that queued kernels
        still read may be posted as a receive."""
        p2p = [dist.P2POp(dist.isend, t, self.next, self.group, tag=tag + i) for i, t in enumerate(send)]
        p2p += [dist.P2POp(dist.irecv, t, self.prev, self.group, tag=tag + i) for i, t in enumerate(recv)]
        return dist.batch_isend_irecv(p2p) if p2p else []

    @staticmethod
    def wait(requests) -> None:
        for req in requests:
            req.wait()


class LoopbackComm(RingComm):
    """Diagnostics only: the ring's compute schedule with no data moved (every "received" block
    is the rank's own). Results are wrong by design; timing it against ``RingComm`` shows how
    much of the communication the overlap hides (see examples/ring_attention.py)."""

    def exchange(self, tensors, tag=0):
        return list(tensors), []

    def post(self, send=(), recv=(), tag=0):
        return []


# ----------------------------------------------------------------------------------------------
# The ring


def _merge(out_acc: Tensor, lse_acc: Tensor, out: Tensor, lse: Tensor) -> None:
    """In place: fold a partial result (out ``(b, s, h, d)``, lse ``(b, h, s)``) into the fp32
    accumulators. A row that saw no key has lse = +inf from the op; it counts as empty (-inf).
    (``plan_blocks`` trims blocks to rows that see a key, so this is a guard, not a path.)"""
    lse = lse.masked_fill(lse == math.inf, -math.inf)
    m = torch.maximum(lse_acc, lse)
    m = m.masked_fill(m == -math.inf, 0.0)
    w_acc, w_new = torch.exp(lse_acc - m), torch.exp(lse - m)
    total = w_acc + w_new
    lse_acc.copy_(m + torch.log(total))
    scale = total.masked_fill(total == 0, 1.0)
    w_acc = (w_acc / scale).transpose(1, 2).unsqueeze(-1)
    w_new = (w_new / scale).transpose(1, 2).unsqueeze(-1)
    out_acc.mul_(w_acc).addcmul_(out, w_new)  # no fp32 copy of out


def _accumulators(q: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The forward's fp32 output and lse accumulators, empty (lse = -inf)."""
    batch, seqlen, nheads, _ = q.shape
    out_acc = torch.zeros((batch, seqlen, nheads, v.shape[-1]), dtype=torch.float32, device=q.device)
    lse_acc = torch.full((batch, nheads, seqlen), -math.inf, dtype=torch.float32, device=q.device)
    return out_acc, lse_acc


def _attend(blocks: Sequence[Block], q: Tensor, k: Tensor, v: Tensor, scale: float,
            out_acc: Tensor, lse_acc: Tensor) -> None:
    """Run ``blocks`` (rows of q, of k/v) and merge each result into the accumulators."""
    for blk in blocks:
        out, lse = ops.attn_fwd(q[:, blk.q_lo:blk.q_hi], k[:, blk.k_lo:blk.k_hi], v[:, blk.k_lo:blk.k_hi],
                                scale, blk.window_left, blk.window_right)
        _merge(out_acc[:, blk.q_lo:blk.q_hi], lse_acc[:, :, blk.q_lo:blk.q_hi], out, lse)


def _finish(q: Tensor, out_acc: Tensor, lse_acc: Tensor) -> tuple[Tensor, Tensor]:
    """out in q's dtype; lse with rows that saw no key at +inf, as the op gives them."""
    return out_acc.to(q.dtype), lse_acc.masked_fill(lse_acc == -math.inf, math.inf)


def _ring_fwd(q: Tensor, k: Tensor, v: Tensor, scale: float, window: tuple[int, int], layout: str,
              comm: RingComm) -> tuple[Tensor, Tensor]:
    rank, world = comm.rank, comm.world_size
    seqlen = q.shape[1]
    q_segs = layout_segments(seqlen, rank, world, layout)
    out_acc, lse_acc = _accumulators(q, v)
    for step in range(world):
        if step < world - 1:
            (k_next, v_next), reqs = comm.exchange((k, v))
        src = (rank - step) % world
        _attend(plan_blocks(q_segs, layout_segments(seqlen, src, world, layout), *window), q, k, v, scale,
                out_acc, lse_acc)
        if step < world - 1:
            comm.wait(reqs)
            k, v = k_next, v_next
    return _finish(q, out_acc, lse_acc)


def _ring_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dlse: Optional[Tensor],
              scale: float, window: tuple[int, int], layout: str, comm: RingComm) -> tuple[Tensor, Tensor, Tensor]:
    rank, world = comm.rank, comm.world_size
    seqlen = q.shape[1]
    q_segs = layout_segments(seqlen, rank, world, layout)
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dkv_recv, dkv_reqs, sent = None, [], None
    for step in range(world):
        if step < world - 1:
            (k_next, v_next), kv_reqs = comm.exchange((k, v))
        src = (rank - step) % world
        parts = []  # this rank's share of dk/dv for the block it holds
        for blk in plan_blocks(q_segs, layout_segments(seqlen, src, world, layout), *window):
            rows, cols = slice(blk.q_lo, blk.q_hi), slice(blk.k_lo, blk.k_hi)
            dq_b, dk_b, dv_b = ops.attn_bwd(
                dout[:, rows], q[:, rows], k[:, cols], v[:, cols], out[:, rows], lse[:, :, rows],
                None if dlse is None else dlse[:, :, rows], scale, blk.window_left, blk.window_right)
            dq[:, rows] += dq_b
            parts.append((cols, dk_b, dv_b))
            del dq_b, dk_b, dv_b
        if dkv_recv is None:
            dk = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
            dv = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
        else:  # what the ranks before us added to this block's dk/dv: add ours in place
            comm.wait(dkv_reqs)
            dk, dv = dkv_recv
        for cols, dk_b, dv_b in parts:
            dk[:, cols] += dk_b
            dv[:, cols] += dv_b
        del parts
        if world > 1:  # on to the next rank; after the last step, that is the block's home
            sent = (dk, dv)  # alive until its send is waited on
            dkv_recv, dkv_reqs = comm.exchange(sent, tag=2)
            del dk, dv
        if step < world - 1:
            comm.wait(kv_reqs)
            k, v = k_next, v_next
    if world > 1:
        comm.wait(dkv_reqs)
        del sent
        dk, dv = dkv_recv
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


# ----------------------------------------------------------------------------------------------
# The low-memory schedule (``low_memory=True``, a group of two)
#
# Beyond its inputs and outputs (q, k, v, out, dout, dq, dk, dv: what one device holds for the
# whole sequence) each rank keeps only chunk-sized buffers. Forward: the peer's k/v arrive in
# chunks along its shard, two at most in flight, each attended and merged as it lands. Backward:
# the peer's k/v are received *into this rank's dk/dv output buffers*; once dq is done, the
# partial dk/dv that this rank's queries give to the peer's keys are computed chunk by chunk
# and sent home, and the peer's partial for chunk j lands in dk/dv rows j, which held the
# peer's k/v chunk j until that chunk's partial was computed. Last, the own block adds its
# share to dk/dv in place. Both ranks derive every transfer from (rank, layout, window), so a
# chunk that one side has nothing for is neither sent nor received (the region is zeroed).

# Two chunks of partial dk/dv held at once cost 2 * 8 KB / _CHUNKS per token (b=1, 16 kv heads,
# d=128, bf16): 1 KB with 16 chunks, on top of one device's 32 KB per token
_CHUNKS, _MIN_CHUNK_ROWS = 16, 4096


def _chunk_rows(seqlen: int, chunks: Optional[int]) -> list[tuple[int, int]]:
    """Local rows ``[lo, hi)`` of the chunks: ``chunks`` pieces (default: up to 16, of at least
    4096 rows), rounded to multiples of 128 rows above that size (whole kernel tiles)."""
    if chunks is None:
        chunks = max(1, min(_CHUNKS, seqlen // _MIN_CHUNK_ROWS))
    size = max(1, -(-seqlen // chunks))
    if size > 128:
        size = -(-size // 128) * 128
    return [(lo, min(lo + size, seqlen)) for lo in range(0, seqlen, size)]


def _rows_segments(segments: Sequence[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The global positions of local rows ``[lo, hi)`` of a shard laid out as ``segments``, as
    runs (a chunk that crosses the zigzag's two runs gives two)."""
    runs, offset = [], 0
    for start, length in segments:
        a, b = max(lo, offset), min(hi, offset + length)
        if a < b:
            runs.append((start + a - offset, b - a))
        offset += length
    return runs


def _plan_pieces(q_segments: Sequence[tuple[int, int]], pieces: Sequence[tuple[int, int]],
                 k_segments: Sequence[tuple[int, int]], window: tuple[int, int]) -> list[Block]:
    """``plan_blocks`` with the queries cut into the local row ranges ``pieces``: no call has
    more rows than a piece (so no forward output is larger than a piece)."""
    blocks = []
    for lo, hi in pieces:
        blocks += [replace(blk, q_lo=blk.q_lo + lo, q_hi=blk.q_hi + lo)
                   for blk in plan_blocks(_rows_segments(q_segments, lo, hi), k_segments, *window)]
    return blocks


class _PairPlan:
    """Every block and transfer of the low-memory schedule for one rank of two, from global
    positions only (the peer computes the mirror image of the same plan)."""

    def __init__(self, seqlen: int, rank: int, layout: str, window: tuple[int, int], chunks: Optional[int]):
        mine, peer = layout_segments(seqlen, rank, 2, layout), layout_segments(seqlen, 1 - rank, 2, layout)
        self.own = plan_blocks(mine, mine, *window)
        self.remote = plan_blocks(mine, peer, *window)            # my queries, the peer's keys
        self.chunks = _chunk_rows(seqlen, chunks)
        peer_chunks = [_rows_segments(peer, lo, hi) for lo, hi in self.chunks]
        # per chunk j of the peer's keys (key rows relative to the chunk): my queries' blocks,
        # whole (backward: one dK/dV pass per chunk) or cut into chunk-sized row pieces
        # (forward: each output chunk-sized, and alike on both ranks)
        self.on_peer = [plan_blocks(mine, keys, *window) for keys in peer_chunks]
        self.on_peer_pieces = [_plan_pieces(mine, self.chunks, keys, window) for keys in peer_chunks]
        # whether the peer's queries see anything of my chunk j
        self.peer_on_mine = [bool(plan_blocks(peer, _rows_segments(mine, lo, hi), *window)) for lo, hi in self.chunks]
        self.max_rows = max((hi - lo for lo, hi in self.chunks), default=0)


class _ChunkBuffers:
    """``count`` pairs of chunk-sized buffers like ``k`` and ``v``, allocated at once (before any
    message: running out of memory later could leave the peer waiting in a receive)."""

    def __init__(self, k: Tensor, v: Tensor, rows: int, count: int):
        self.shapes = [(t.shape[0], t.shape[2], t.shape[3]) for t in (k, v)]
        self.flat = [tuple(t.new_empty(b * rows * h * d) for t, (b, h, d) in zip((k, v), self.shapes))
                     for _ in range(count)]

    def get(self, i: int, rows: int) -> tuple[Tensor, Tensor]:
        """Pair ``i % count``, viewed as ``rows`` contiguous rows."""
        return tuple(f[:b * rows * h * d].view(b, rows, h, d)
                     for f, (b, h, d) in zip(self.flat[i % len(self.flat)], self.shapes))


def _pair_fwd(q: Tensor, k: Tensor, v: Tensor, scale: float, window: tuple[int, int], layout: str,
              comm: RingComm, chunks: Optional[int]) -> tuple[Tensor, Tensor]:
    plan = _PairPlan(q.shape[1], comm.rank, layout, window, chunks)
    out_acc, lse_acc = _accumulators(q, v)
    needed = sum(bool(blocks) for blocks in plan.on_peer)
    landing = _ChunkBuffers(k, v, plan.max_rows, min(needed, 2)) if needed else None

    def post(j: int):
        lo, hi = plan.chunks[j]
        # rows of k/v: a view with batch 1, else a chunk-sized copy
        send = [k[:, lo:hi].contiguous(), v[:, lo:hi].contiguous()] if plan.peer_on_mine[j] else []
        recv = list(landing.get(j, hi - lo)) if plan.on_peer[j] else []
        return comm.post(send, recv, tag=2 + 2 * j), send, recv   # the sends stay alive until waited

    pending = post(0) if plan.chunks else None
    _attend(plan.own, q, k, v, scale, out_acc, lse_acc)
    for j in range(len(plan.chunks)):
        following = post(j + 1) if j + 1 < len(plan.chunks) else None   # in flight during chunk j
        reqs, _, recv = pending
        comm.wait(reqs)
        if recv:
            _attend(plan.on_peer_pieces[j], q, *recv, scale, out_acc, lse_acc)
        pending = following
    return _finish(q, out_acc, lse_acc)


def _gaps(covered: Sequence[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of ``[lo, hi)`` outside every interval of ``covered``."""
    gaps, at = [], lo
    for a, b in sorted(covered):
        if a >= hi:
            break
        if a > at:
            gaps.append((at, a))
        at = max(at, b)
    if at < hi:
        gaps.append((at, hi))
    return gaps


def _bwd_blocks(blocks: Sequence[Block], dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                lse: Tensor, dlse: Optional[Tensor], scale: float, dq: Optional[Tensor] = None,
                dk: Optional[Tensor] = None, dv: Optional[Tensor] = None, accumulate: bool = False) -> None:
    """dq alone, or dk and dv, of ``blocks`` into the buffers (rows of q, or of k/v). With
    ``accumulate`` every block adds to the buffers; without, they are overwritten: the first
    block that reaches a row writes it, later ones add, rows that no block reaches are zeroed."""
    buffers = [t for t in (dq, dk, dv) if t is not None]
    written: list[tuple[int, int]] = []
    for blk in blocks:
        rows, cols = slice(blk.q_lo, blk.q_hi), slice(blk.k_lo, blk.k_hi)
        lo, hi = (blk.q_lo, blk.q_hi) if dq is not None else (blk.k_lo, blk.k_hi)
        add = accumulate
        if not accumulate:
            gaps = _gaps(written, lo, hi)
            if gaps != [(lo, hi)]:  # partly written already: zero the rest, then add
                for a, b in gaps:
                    for t in buffers:
                        t[:, a:b].zero_()
                add = True
            written.append((lo, hi))
        ops.attn_bwd_into(dout[:, rows], q[:, rows], k[:, cols], v[:, cols], out[:, rows], lse[:, :, rows],
                          scale, blk.window_left, blk.window_right,
                          dlse=None if dlse is None else dlse[:, :, rows], dq=None if dq is None else dq[:, rows],
                          dk=None if dk is None else dk[:, cols], dv=None if dv is None else dv[:, cols],
                          accumulate=add)
    if not accumulate:
        for a, b in _gaps(written, 0, buffers[0].shape[1]):
            for t in buffers:
                t[:, a:b].zero_()


def _pair_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dlse: Optional[Tensor],
              scale: float, window: tuple[int, int], layout: str, comm: RingComm,
              chunks: Optional[int]) -> tuple[Tensor, Tensor, Tensor]:
    plan = _PairPlan(q.shape[1], comm.rank, layout, window, chunks)
    rest = (out, lse, dlse, scale)
    # everything that can run out of memory, before the first message
    dq = torch.empty_like(q)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    computed = sum(bool(blocks) for blocks in plan.on_peer)
    partials = _ChunkBuffers(k, v, plan.max_rows, min(computed, 2)) if computed else None
    # dk[:, rows] is a strided view when batch > 1: the peer's partials land in buffers first
    staging = _ChunkBuffers(k, v, plan.max_rows, 2) if k.shape[0] > 1 and any(plan.peer_on_mine) else None

    reqs = comm.post([k, v] if any(plan.peer_on_mine) else [], [dk, dv] if plan.remote else [], tag=0)
    _bwd_blocks(plan.own, dout, q, k, v, *rest, dq=dq)    # while the peer's k/v arrive in dk/dv
    comm.wait(reqs)
    _bwd_blocks(plan.remote, dout, q, dk, dv, *rest, dq=dq, accumulate=True)

    def land(entry) -> None:
        reqs, _, staged = entry
        comm.wait(reqs)
        for dst, src in staged:
            dst.copy_(src)

    pending = []  # (requests, sends kept alive, (destination, staging buffer) pairs)
    for j, (lo, hi) in enumerate(plan.chunks):
        if len(pending) == 2:  # chunk j - 2's buffers are about to be reused
            land(pending.pop(0))
        send, recv, staged = [], [], []
        if plan.on_peer[j]:  # my queries' share of dk/dv for the peer's chunk j
            send = list(partials.get(j, hi - lo))
            _bwd_blocks(plan.on_peer[j], dout, q, dk[:, lo:hi], dv[:, lo:hi], *rest, dk=send[0], dv=send[1])
        home = (dk[:, lo:hi], dv[:, lo:hi])  # the peer's k/v chunk j, no longer read from here on
        if not plan.peer_on_mine[j]:
            for t in home:
                t.zero_()
        elif staging is None:
            recv = list(home)
        else:
            recv = list(staging.get(j, hi - lo))
            staged = list(zip(home, recv))
        pending.append((comm.post(send, recv, tag=2 + 2 * j), send, staged))
    for entry in pending:
        land(entry)
    _bwd_blocks(plan.own, dout, q, k, v, *rest, dk=dk, dv=dv, accumulate=True)
    return dq, dk, dv


class RingFlashAttnFunc(torch.autograd.Function):
    """``apply(q, k, v, scale, window_left, window_right, layout, comm, low_memory=False,
    chunks=None) -> (out, lse)``; ``low_memory`` takes a group of two (see ``_pair_fwd``)."""

    @staticmethod
    def forward(ctx, q, k, v, scale, window_left, window_right, layout, comm, low_memory=False, chunks=None):
        k, v = k.contiguous(), v.contiguous()  # they are sent as they are
        window = (window_left, window_right)
        if low_memory:
            out, lse = _pair_fwd(q, k, v, scale, window, layout, comm, chunks)
        else:
            out, lse = _ring_fwd(q, k, v, scale, window, layout, comm)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (scale, window, layout, comm)
        ctx.low_memory, ctx.chunks = low_memory, chunks
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(out)
        if ctx.low_memory:
            dq, dk, dv = _pair_bwd(dout, q, k, v, out, lse, dlse, *ctx.args, ctx.chunks)
        else:
            dq, dk, dv = _ring_bwd(dout, q, k, v, out, lse, dlse, *ctx.args)
        return dq, dk, dv, None, None, None, None, None, None, None


# ----------------------------------------------------------------------------------------------
# Checks (every rank reaches the same verdict, so an error never leaves a rank hanging)


def _check_initialized(what: str) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{what} needs a torch.distributed process group: call "
                           "torch.distributed.init_process_group(...) first (e.g. under torchrun), "
                           "with backend 'nccl' for GPU tensors or 'gloo' for CPU tensors")


_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_FIELDS = ("q shape", "k shape", "v shape", "dtype", "layout", "window (causal folded in)",
           "softmax_scale", "requires_grad", "low_memory", "chunks")
_WIDTHS = (4, 4, 4, 1, 1, 2, 1, 1, 1, 1)


def _descriptor(q, k, v, layout, window, scale, grad, low_memory, chunks) -> list[int]:
    shapes = []
    for t in (q, k, v):
        shapes += list(t.shape) if isinstance(t, Tensor) and t.dim() == 4 else [-1] * 4
    dtype = _DTYPES.index(q.dtype) if isinstance(q, Tensor) and q.dtype in _DTYPES else -1
    scale_bits = struct.unpack("<q", struct.pack("<d", scale))[0]
    chunks = chunks if isinstance(chunks, int) else -1
    return shapes + [dtype, LAYOUTS.index(layout), *window, scale_bits, int(grad), int(bool(low_memory)), chunks]


def _check_local(q, k, v, layout: str, world_size: int, low_memory: bool = False, chunks=None) -> None:
    if low_memory and world_size != 2:
        raise ValueError(f"low_memory=True needs a group of exactly 2 ranks, got a group of {world_size}; "
                         "use low_memory=False (the ring) for other group sizes")
    if chunks is not None and (isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1):
        raise ValueError(f"chunks must be a positive int or None (the default: up to 16 chunks of at least "
                         f"{_MIN_CHUNK_ROWS} tokens), got {chunks!r}")
    validate.check_qkv(q, k, v)
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"ring attention shards one sequence: q and k must have the same local seqlen, "
                         f"got q {q.shape[1]} and k {k.shape[1]}")
    if layout == "zigzag" and q.shape[1] % 2:
        raise ValueError(f"the zigzag layout needs an even local sequence length (the global length divisible "
                         f"by 2 * world_size = {2 * world_size}), got a local length of {q.shape[1]}; pad the "
                         "sequence, or use layout='contiguous'")


def _check_group(q, k, v, group, layout: str, window: tuple[int, int], scale: float,
                 low_memory: bool = False, chunks=None) -> None:
    """Validate locally, then compare a small descriptor across ranks (one all-gather)."""
    world_size = dist.get_world_size(group)
    local_error = None
    try:
        _check_layout(layout)
        _check_local(q, k, v, layout, world_size, low_memory, chunks)
    except (TypeError, ValueError) as e:
        local_error = e
    grad = torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in (q, k, v))
    desc = [int(local_error is not None)] + _descriptor(q, k, v, layout if layout in LAYOUTS else LAYOUTS[0],
                                                         window, scale, grad, low_memory, chunks)
    device = q.device if isinstance(q, Tensor) else torch.device("cpu")
    mine = torch.tensor(desc, dtype=torch.int64, device=device)
    every = [torch.empty_like(mine) for _ in range(world_size)]
    dist.all_gather(every, mine, group=group)
    rows = [t.tolist() for t in every]
    failed = [r for r, row in enumerate(rows) if row[0]]
    if local_error is not None:
        raise local_error
    if failed:
        raise ValueError(f"ring_flash_attn_func: rank(s) {failed} of the group rejected their input (see the "
                         "error on those ranks); nothing was computed")
    start = 1
    for name, width in zip(_FIELDS, _WIDTHS):
        values = [tuple(row[start:start + width]) for row in rows]
        if len(set(values)) > 1:
            shown = {r: _show(name, val) for r, val in enumerate(values)}
            raise ValueError(f"ring_flash_attn_func: the {name} differs across the ranks of the group "
                             f"({shown}); every rank must pass shards of one shape and dtype and the same options")
        start += width


def _show(name: str, value: tuple):
    if name == "dtype":
        return str(_DTYPES[value[0]]) if value[0] >= 0 else "unsupported"
    if name == "layout":
        return LAYOUTS[value[0]]
    if name == "softmax_scale":
        return struct.unpack("<d", struct.pack("<q", value[0]))[0]
    if name in ("requires_grad", "low_memory"):
        return bool(value[0])
    if name == "chunks":
        return None if value[0] < 0 else value[0]
    return value


# ----------------------------------------------------------------------------------------------
# Public entry point


def ring_flash_attn_func(q: Tensor, k: Tensor, v: Tensor, group=None, causal: bool = False,
                         softmax_scale: Optional[float] = None, window_size: tuple[int, int] = (-1, -1),
                         layout: str = "zigzag", return_attn_probs: bool = False, check_shards: bool = True,
                         low_memory: bool = False, chunks: Optional[int] = None):
    """Exact attention over a sequence sharded across the ranks of ``group`` (default: world).

    Args:
        q, k, v: this rank's shards in the flash-attn layout: q ``(batch, seqlen_local, nheads,
            headdim)``, k/v ``(batch, seqlen_local, nheads_k, headdim[_v])``, as ``shard_sequence``
            cuts them with the same ``layout``. GQA/MQA: only the smaller k/v travel.
        causal, softmax_scale, window_size: as ``flash_attn_func``, over global positions (the
            global q and k have one length, so causal is the plain lower triangle).
        layout: ``"zigzag"`` (balanced under causal masking; the global length must divide by
            ``2 * world_size``) or ``"contiguous"`` (divisible by ``world_size``).
        return_attn_probs: also return ``lse`` ``(batch, nheads, seqlen_local)`` (float32, natural
            log) and ``None``, as flash-attn does; gradients flow through it too.
        check_shards: compare shapes, dtypes and options across ranks first (one small all-gather,
            which waits for the device). Pass False once the shapes are known to agree.
        low_memory: a group of exactly 2 ranks only. A schedule that holds little beyond its
            inputs and outputs (what one device holds for the whole sequence): the peer's k/v
            arrive in chunks, and the backward receives them into this rank's dk/dv buffers,
            then sends the peer's share of dk/dv home chunk by chunk. So two GPUs train about
            twice one GPU's longest sequence, where the ring's fp32 buffers in flight hold more
            than twice one GPU's memory per token. dq and dk/dv are each rounded twice to the
            inputs' dtype (as the ring's are in effect).
        chunks: with ``low_memory``, into how many pieces each shard's transfers are cut
            (default: up to 16 of at least 4096 tokens). Two chunks of k/v or of partial dk/dv
            are held at a time.

    Returns:
        this rank's shard of the output ``(batch, seqlen_local, nheads, headdim_v)``, or
        ``(out, lse, None)``. Autograd works: the backward sends k/v around the ring again and
        the dk/dv contributions home.
    """
    _check_initialized("ring_flash_attn_func")
    validate.check_scale(softmax_scale)
    validate.check_window(window_size)
    window = fold_causal(causal, window_size)
    head_dim = q.shape[-1] if isinstance(q, Tensor) and q.dim() else 1
    scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    if check_shards:
        _check_group(q, k, v, group, layout, window, scale, low_memory, chunks)
    else:
        _check_layout(layout)
        _check_local(q, k, v, layout, dist.get_world_size(group), low_memory, chunks)
    out, lse = RingFlashAttnFunc.apply(q, k, v, scale, window[0], window[1], layout, RingComm(group),
                                       bool(low_memory), chunks)
    return (out, lse, None) if return_attn_probs else out

"""Block-sparse attention masks (FlashAttention's section 3.3, FlexAttention's layout).

A ``BlockMask`` says, for each (batch, head, query block), which key blocks to visit:
- *full* blocks (every element visible: no mask is applied) in ``full_kv_num_blocks`` /
  ``full_kv_indices``;
- *partial* blocks in ``kv_num_blocks`` / ``kv_indices``, each with an element mask. The
  element masks are evaluated once, here, from ``mask_mod`` and stored as deduplicated tiles
  (``tiles[partial_tile_ids[...]]``, int8 ``[Q_BLOCK, KV_BLOCK]``): the kernels load the tile of a
  partial block instead of calling a predicate, so any Python ``mask_mod`` works on every backend.
Blocks in neither list are skipped: time and traffic fall with the density. Batch and head
dimensions of size 1 broadcast. The transposed lists the backward's dK/dV pass needs are built
once, on first use, and cached.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
DEFAULT_BLOCK = 128


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class BlockMask:
    """Compressed block-sparse mask. Shapes: ``(B, H, num_q_blocks)`` counts and
    ``(B, H, num_q_blocks, num_kv_blocks)`` indices (int32; B and H may be 1)."""
    seqlen_q: int
    seqlen_k: int
    q_block_size: int
    kv_block_size: int
    kv_num_blocks: torch.Tensor
    kv_indices: torch.Tensor
    partial_tile_ids: torch.Tensor           # same shape as kv_indices: tile of each partial block
    full_kv_num_blocks: torch.Tensor
    full_kv_indices: torch.Tensor
    tiles: torch.Tensor                       # int8 (num_tiles, Q_BLOCK, KV_BLOCK)
    mask_mod: Optional[MaskMod] = None
    _transposed: Optional[tuple] = field(default=None, repr=False)
    _packed: dict = field(default_factory=dict, repr=False)   # ops.pack_block_mask's cache

    # -- shape helpers -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int]:
        b, h = self.kv_num_blocks.shape[:2]
        return b, h, self.seqlen_q, self.seqlen_k

    @property
    def num_blocks(self) -> tuple[int, int]:
        return _cdiv(self.seqlen_q, self.q_block_size), _cdiv(self.seqlen_k, self.kv_block_size)

    def to(self, device) -> "BlockMask":
        moved = {k: getattr(self, k).to(device) for k in
                 ("kv_num_blocks", "kv_indices", "partial_tile_ids", "full_kv_num_blocks", "full_kv_indices", "tiles")}
        return BlockMask(self.seqlen_q, self.seqlen_k, self.q_block_size, self.kv_block_size,
                         mask_mod=self.mask_mod, **moved)

    # -- the backward's view ---------------------------------------------------------------
    def transposed(self):
        """For each (b, h, key block): ``(q_num, q_indices, q_tile_ids, full_q_num, full_q_indices)``."""
        if self._transposed is None:
            kinds_t = self._block_kinds().transpose(-1, -2)             # [B, H, nk, nq]
            q_num, q_idx = _compress(kinds_t == 1)
            full_num, full_idx = _compress(kinds_t == 2)
            q_tiles = torch.gather(self._tile_of().transpose(-1, -2), -1, q_idx.long())
            self._transposed = (q_num, q_idx, q_tiles.to(torch.int32).contiguous(), full_num, full_idx)
        return self._transposed

    def _forward_lists(self) -> tuple:
        return (self.kv_num_blocks, self.kv_indices, self.partial_tile_ids,
                self.full_kv_num_blocks, self.full_kv_indices, self.tiles)

    def _block_kinds(self) -> torch.Tensor:
        """``[B, H, nq, nk]``: 0 skipped, 1 partial, 2 full."""
        return block_layout(self._forward_lists())[0]

    def _tile_of(self) -> torch.Tensor:
        """``[B, H, nq, nk]``: the tile of each partial block, -1 elsewhere."""
        return block_layout(self._forward_lists())[1]

    def as_tensors(self) -> tuple:
        """The 11 tensors the kernels take: the forward lists, the tiles, the transposed lists."""
        return self._forward_lists() + self.transposed()

    # -- inspection ------------------------------------------------------------------------
    def to_dense(self) -> torch.Tensor:
        """The element mask ``[B, H, seqlen_q, seqlen_k]`` bool this block mask stands for."""
        b, h, nq, _ = self.kv_indices.shape
        qb, kb = self.q_block_size, self.kv_block_size
        nk = self.num_blocks[1]
        out = torch.zeros(b, h, nq * qb, nk * kb, dtype=torch.bool, device=self.tiles.device)
        kinds = self._block_kinds()
        tile_of = self._tile_of()
        for bi, hi, qi, ki in (kinds > 0).nonzero().tolist():
            if kinds[bi, hi, qi, ki] == 2:
                block = True
            else:
                block = self.tiles[tile_of[bi, hi, qi, ki]].bool()
            out[bi, hi, qi * qb:(qi + 1) * qb, ki * kb:(ki + 1) * kb] = block
        return out[:, :, :self.seqlen_q, :self.seqlen_k]

    def sparsity(self) -> float:
        """Fraction of (query block, key block) pairs skipped, in percent."""
        nq, nk = self.num_blocks
        visited = (self.kv_num_blocks + self.full_kv_num_blocks).sum().item()
        return 100.0 * (1.0 - visited / max(1, self.kv_num_blocks.numel() * nk))

    def density(self) -> float:
        return 1.0 - self.sparsity() / 100.0

    def picture(self, b: int = 0, h: int = 0, max_blocks: int = 48) -> str:
        """A text picture of one (batch, head): '#' full, '+' partial, '.' skipped."""
        kinds = self._block_kinds()[b, h]
        chars = {0: ".", 1: "+", 2: "#"}
        rows = ["".join(chars[int(v)] for v in row[:max_blocks]) for row in kinds[:max_blocks]]
        return "\n".join(rows)

    def plot(self, path: str, b: int = 0, h: int = 0) -> None:
        """Save a picture of one (batch, head)'s blocks as PNG (needs matplotlib)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.imshow(self._block_kinds()[b, h].cpu(), cmap="Blues", vmin=0, vmax=2, interpolation="nearest")
        ax.set_title(f"BlockMask {self.seqlen_q}x{self.seqlen_k}, density {self.density():.1%}")
        ax.set_xlabel("key block")
        ax.set_ylabel("query block")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)

    def __repr__(self) -> str:
        b, h, sq, sk = self.shape
        return (f"BlockMask(shape=({b}, {h}, {sq}, {sk}), block=({self.q_block_size}, {self.kv_block_size}), "
                f"density={self.density():.2%}, partial tiles={self.tiles.shape[0]})\n{self.picture()}")

    @classmethod
    def from_dense(cls, mask: torch.Tensor, block_size: int | tuple[int, int] = DEFAULT_BLOCK) -> "BlockMask":
        """From a dense bool ``[B, H, seqlen_q, seqlen_k]`` (or ``[seqlen_q, seqlen_k]``) mask."""
        if mask.dim() == 2:
            mask = mask[None, None]
        dense = mask.bool()
        return create_block_mask(lambda b, h, q, k: dense[b, h, q, k], dense.shape[0], dense.shape[1],
                                 dense.shape[2], dense.shape[3], block_size=block_size, device=mask.device)


def _scatter(num: torch.Tensor, idx: torch.Tensor, values: torch.Tensor, fill: int, nk: int) -> torch.Tensor:
    """Expand compressed lists to ``[B, H, nq, nk]``, writing ``values`` at the listed blocks."""
    b, h, nq, _ = idx.shape
    out = torch.full((b, h, nq, nk), fill, dtype=torch.long, device=idx.device)
    cols = torch.arange(idx.shape[-1], device=idx.device)
    bi, hi, qi, ji = (cols[None, None, None, :] < num[..., None]).nonzero(as_tuple=True)
    out[bi, hi, qi, idx[bi, hi, qi, ji].long()] = values[bi, hi, qi, ji].long()
    return out


def block_layout(lists: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward lists ``(num, idx, tile ids, full num, full idx, tiles, ...)`` -> dense
    ``(kinds, tile_of)``, each ``[B, H, nq, nk]``: kinds 0 skipped / 1 partial / 2 full, and the
    tile of each partial block (-1 elsewhere)."""
    num, idx, tile_ids, full_num, full_idx = lists[:5]
    nk = idx.shape[-1]
    partial = _scatter(num, idx, torch.ones_like(idx), 0, nk)
    full = _scatter(full_num, full_idx, torch.ones_like(full_idx), 0, nk)
    kinds = partial + 2 * full
    return kinds, _scatter(num, idx, tile_ids, -1, nk)


def _compress(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bool ``[..., n]`` -> (count ``[...]``, indices of the True entries first ``[..., n]``), int32."""
    num = flags.sum(-1, dtype=torch.int32)
    order = torch.argsort((~flags).to(torch.int8), dim=-1, stable=True)
    return num.contiguous(), order.to(torch.int32).contiguous()


def _dedupe(tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bool ``[n, qb, kb]`` -> (unique tiles as int8, index of each input among them). Rows are
    compared as packed bits (64 elements per int64 word), which keeps the sort small."""
    n, qb, kb = tiles.shape
    weights = (1 << torch.arange(8, device=tiles.device)).to(torch.int16)
    packed = (tiles.reshape(n, -1, 8).to(torch.int16) * weights).sum(-1).to(torch.uint8)
    words = packed.view(n, -1, 8).contiguous().view(torch.int64).view(n, -1)
    _, first, inverse = _unique_rows(words)
    return tiles[first].to(torch.int8).contiguous(), inverse


def _unique_rows(x: torch.Tensor):
    uniq, inverse = torch.unique(x, dim=0, return_inverse=True)
    first = torch.full((uniq.shape[0],), x.shape[0], dtype=torch.long, device=x.device)
    first.scatter_reduce_(0, inverse, torch.arange(x.shape[0], device=x.device), reduce="amin")
    return uniq, first, inverse


def create_block_mask(mask_mod: MaskMod, B: Optional[int], H: Optional[int], Q_LEN: int, KV_LEN: int,
                      block_size: int | tuple[int, int] = DEFAULT_BLOCK, device="cpu") -> BlockMask:
    """Evaluate ``mask_mod(b, h, q_idx, kv_idx) -> bool`` (vectorized over broadcast index tensors)
    one query block at a time, so a 64k x 64k mask never exists in memory. ``B``/``H`` None
    mean "the same for all" (stored as size 1)."""
    qb, kb = (block_size, block_size) if isinstance(block_size, int) else block_size
    if qb <= 0 or kb <= 0 or qb & (qb - 1) or kb & (kb - 1) or qb < 16 or kb < 16:
        raise ValueError(f"block_size must be powers of two >= 16, got {(qb, kb)}")
    B, H = B or 1, H or 1
    nq, nk = _cdiv(Q_LEN, qb), _cdiv(KV_LEN, kb)
    kinds = torch.zeros(B, H, nq, nk, dtype=torch.int8, device=device)
    tile_chunks, where_chunks = [], []        # partial blocks' element masks and their (b, h, qi, ki)
    cols = torch.arange(nk * kb, device=device)
    block_ids = torch.arange(nk, device=device)
    for b in range(B):
        for h in range(H):
            bt, ht = torch.tensor(b, device=device), torch.tensor(h, device=device)
            for qi in range(nq):
                rows = torch.arange(qi * qb, (qi + 1) * qb, device=device)
                keep = torch.zeros(qb, nk * kb, dtype=torch.bool, device=device)
                keep[:, :KV_LEN] = mask_mod(bt, ht, rows.clamp(max=Q_LEN - 1)[:, None], cols[None, :KV_LEN]).expand(qb, KV_LEN)
                keep &= (rows < Q_LEN)[:, None]
                blocks = keep.view(qb, nk, kb).transpose(0, 1)              # [nk, qb, kb]
                any_ = blocks.flatten(1).any(1)
                # full: every element visible and the block wholly inside both sequences (the
                # kernels' unmasked loops load without bounds checks)
                full = blocks.flatten(1).all(1) & (block_ids * kb + kb <= KV_LEN) & (qi * qb + qb <= Q_LEN)
                partial = any_ & ~full
                kinds[b, h, qi] = (2 * full + partial).to(torch.int8)
                if partial.any():
                    tile_chunks.append(blocks[partial])
                    ki = partial.nonzero().flatten()
                    where_chunks.append(torch.stack([torch.full_like(ki, b), torch.full_like(ki, h),
                                                     torch.full_like(ki, qi), ki], dim=1))
    partial_num, partial_idx = _compress(kinds == 1)
    full_num, full_idx = _compress(kinds == 2)
    tile_ids = torch.zeros(B, H, nq, nk, dtype=torch.int32, device=device)
    if tile_chunks:
        tiles, inverse = _dedupe(torch.cat(tile_chunks))
        where = torch.cat(where_chunks)
        tile_at = torch.zeros(B, H, nq, nk, dtype=torch.int32, device=device)
        tile_at[where[:, 0], where[:, 1], where[:, 2], where[:, 3]] = inverse.to(torch.int32)
        tile_ids = torch.gather(tile_at, -1, partial_idx.long()).to(torch.int32)
    else:
        tiles = torch.zeros(1, qb, kb, dtype=torch.int8, device=device)
    return BlockMask(Q_LEN, KV_LEN, qb, kb, partial_num, partial_idx, tile_ids.contiguous(),
                     full_num, full_idx, tiles.contiguous(), mask_mod)


# -- builders for the common patterns: each returns a mask_mod ---------------------------------

def causal_mask(seqlen_q: int, seqlen_k: int) -> MaskMod:
    """Bottom-right aligned causal, as ``flash_attn_func(causal=True)``."""
    return lambda b, h, q, k: k <= q + (seqlen_k - seqlen_q)


def sliding_window_mask(window: int, seqlen_q: int, seqlen_k: int) -> MaskMod:
    """Causal with at most ``window`` keys to the left (``window_size=(window, 0)``)."""
    diag = seqlen_k - seqlen_q
    return lambda b, h, q, k: (k <= q + diag) & (k >= q + diag - window)


def local_global_mask(window: int, num_global: int) -> MaskMod:
    """Longformer/BigBird style: a symmetric local band plus the first ``num_global`` tokens,
    which see and are seen by everyone."""
    return lambda b, h, q, k: ((q - k).abs() <= window) | (k < num_global) | (q < num_global)


def document_mask(document_ids: torch.Tensor, causal: bool = True) -> MaskMod:
    """Packed sequences: a token sees only tokens of its own document (``document_ids[i]``)."""
    def mod(b, h, q, k):
        same = document_ids[q] == document_ids[k]
        return same & (k <= q) if causal else same
    return mod


def butterfly_mask(num_blocks_log2: int | None = None, block: int = DEFAULT_BLOCK) -> MaskMod:
    """The butterfly pattern of the FlashAttention paper's block-sparse experiments: query block
    ``i`` sees key block ``j`` when ``i == j`` or ``i xor j`` is a power of two (one stage of each
    butterfly factor), optionally limited to the first ``num_blocks_log2`` stages."""
    def mod(b, h, q, k):
        x = torch.bitwise_xor(q // block, k // block)
        power_of_two = (x & (x - 1)) == 0                       # includes x == 0 (the diagonal)
        if num_blocks_log2 is not None:
            power_of_two &= x < (1 << num_blocks_log2)
        return power_of_two
    return mod

"""Program order for block-sparse launches: the rows with the most blocks first.

Dense launches order their programs by position (``fwd``: the heaviest causal query blocks of
each head first). Under a block mask the work per row is whatever the mask says: a global-token
row of a local + global mask visits every key block while its neighbours visit a dozen, and
when that row's program starts last it runs alone at the end of the launch (a 16k local + global
forward took 1.6x the time its density predicts). Here the rows are sorted by their block
counts once per (mask, launch shape), longest first (LPT scheduling, to within a factor of 2:
rows of about the same length keep their natural order, which shares keys in L2); the kernels
read their row from the permutation instead of from the program id.
"""
from __future__ import annotations

import torch

# the permutations live on the mask's count tensor ({launch shape and versions: order}), so
# they die with the mask; tensors hash by identity but compare elementwise, so no weak dict
_ATTR = "_pyflashattn_orders"


def longest_first(num: torch.Tensor, full_num: torch.Tensor, batch: int, heads: int, group: int,
                  num_rows: int, rows_per_block: int) -> torch.Tensor:
    """int32 ``[batch * heads // group * num_rows]``: program ``i`` runs row ``order[i]`` (an index
    into ``(batch, heads // group, num_rows)``, row fastest).

    ``num`` / ``full_num``: a mask's ``(B or 1, H or 1, mask rows)`` block counts (partial and full);
    ``group``: heads summed into one program (the dK/dV kernel's GQA group); ``rows_per_block``:
    kernel rows per mask row (kernel tiles never straddle mask blocks). Rows are ranked by
    ``floor(log2(blocks + 1))``; ties keep their natural order, so neighbouring rows of one
    head, which share keys in L2, stay together.
    """
    key = (num._version, full_num._version, batch, heads, group, num_rows, rows_per_block)
    per_mask = getattr(num, _ATTR, None)
    if per_mask is None:
        per_mask = {}
        setattr(num, _ATTR, per_mask)
    order = per_mask.get(key)
    if order is None:
        work = (num + full_num).expand(batch, heads, -1)
        work = work.reshape(batch, heads // group, group, -1).sum(2)
        work = work.repeat_interleave(rows_per_block, dim=-1)[..., :num_rows]
        # sorted by the power of two below the count, not the count: an exact sort split a
        # sliding window's rows by +-1 block (13 vs 14) and interleaved rows of different heads,
        # 17 % slower than the natural order at 16k (docs/performance.md, v5)
        bucket = torch.floor(torch.log2(work.flatten().float() + 1.0))
        order = torch.sort(bucket, descending=True, stable=True).indices.to(torch.int32)
        per_mask[key] = order
    return order

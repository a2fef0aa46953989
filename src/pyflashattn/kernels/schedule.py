"""Program order for block-sparse launches: the rows with the most blocks first.

Dense launches order their programs by position (``fwd``: the heaviest causal query blocks of
each head first). Under a block mask the work per row is whatever the mask says: a global-token
row of a local + global mask visits every key block while its neighbours visit a dozen, and
when that row's program starts last it runs alone at the end of the launch (a 16k local + global
forward took 1.6x the time its density predicts). Here the rows are sorted by their block
counts once per (mask, launch shape): rows with more than twice the median count first (a
two-class form of longest-processing-time-first), each class in natural order, which keeps
neighbouring rows of a head (sharing keys in L2) together; the kernels read their row from the
permutation instead of from the program id.
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
    kernel rows per mask row (kernel tiles never straddle mask blocks). Rows with more than twice
    the median block count come first; within each class, rows keep their natural order.
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
        # two classes only: rows with more than twice the median count first, then the rest,
        # each in natural order. Any finer sort (by count, or by its power of two) was 6-8 %
        # slower than the natural order on a sliding window at 16k, where it only moves a few
        # short rows (docs/logs/h200-sparse-order-v5.log); the long rows are what needs moving
        work = work.flatten()
        heavy = work > 2 * work.float().median()
        order = torch.sort(heavy.to(torch.int8), descending=True, stable=True).indices.to(torch.int32)
        per_mask[key] = order
    return order

"""Every input check of the public API. Each message names the argument and what was expected."""
from __future__ import annotations

import math
import weakref

import torch

from .configs import MAX_HEAD_DIM

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_tensor(name: str, t, ndim: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {layout}, got shape {tuple(t.shape)}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32, got {t.dtype}")


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q ``(batch, seqlen_q, nheads, d)``, k ``(batch, seqlen_k, nheads_k, d)``, v ``(batch, seqlen_k, nheads_k, dv)``."""
    check_tensor("q", q, 4, "(batch, seqlen_q, nheads, headdim)")
    check_tensor("k", k, 4, "(batch, seqlen_k, nheads_k, headdim)")
    check_tensor("v", v, 4, "(batch, seqlen_k, nheads_k, headdim_v)")
    batch = q.shape[0]
    if k.shape[0] != batch or v.shape[0] != batch:
        raise ValueError(f"batch sizes differ: q {batch}, k {k.shape[0]}, v {v.shape[0]}")
    _check_heads(q, k, v, seq_dim=1)


def capturing(t: torch.Tensor) -> bool:
    """Whether a CUDA graph is being captured on the current stream of CUDA tensor ``t``: device
    values cannot be read back to the host then."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k) -> None:
    """Packed q ``(total_q, nheads, d)``, k/v ``(total_k, nheads_k, d)`` and their cu_seqlens."""
    check_tensor("q", q, 3, "(total_q, nheads, headdim)")
    check_tensor("k", k, 3, "(total_k, nheads_k, headdim)")
    check_tensor("v", v, 3, "(total_k, nheads_k, headdim_v)")
    _check_heads(q, k, v, seq_dim=0)
    for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if not isinstance(cu, torch.Tensor) or cu.dtype != torch.int32 or cu.dim() != 1:
            raise TypeError(f"{name} must be a 1-d int32 tensor of length batch + 1, got "
                            f"{getattr(cu, 'dtype', type(cu).__name__)} {tuple(getattr(cu, 'shape', ()))}")
        if cu.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {cu.device}")
    if cu_seqlens_q.shape != cu_seqlens_k.shape:
        raise ValueError(f"cu_seqlens_q and cu_seqlens_k must have the same length (batch + 1), got "
                         f"{cu_seqlens_q.shape[0]} and {cu_seqlens_k.shape[0]}")
    if torch.compiler.is_compiling() or capturing(q):
        # the values are data: checking them would break a compiled graph, and a CUDA graph's
        # capture cannot read them back (the calls that warm a graph up check them)
        return
    facts = (_version(cu_seqlens_q), _version(cu_seqlens_k), q.shape[0], k.shape[0], max_seqlen_q, max_seqlen_k)
    seen = _CHECKED.get((id(cu_seqlens_q), id(cu_seqlens_k)))
    if seen is not None and seen[0]() is cu_seqlens_q and seen[1]() is cu_seqlens_k and seen[2] == facts:
        return  # these very tensors, unmodified, passed already (e.g. in the previous layer)
    # one device-to-host copy for both (it synchronizes: the price of a clear error)
    both = torch.stack([cu_seqlens_q, cu_seqlens_k]).tolist()
    for name, values, total, max_len in (("cu_seqlens_q", both[0], q.shape[0], max_seqlen_q),
                                         ("cu_seqlens_k", both[1], k.shape[0], max_seqlen_k)):
        if len(values) < 2 or values[0] != 0:
            raise ValueError(f"{name} must start at 0 and have length batch + 1 >= 2, got {values[:4]}...")
        if any(b < a for a, b in zip(values, values[1:])):
            raise ValueError(f"{name} must be non-decreasing")
        if values[-1] != total:
            raise ValueError(f"{name}[-1] ({values[-1]}) must equal the packed length ({total})")
        longest = max(b - a for a, b in zip(values, values[1:]))
        if not isinstance(max_len, int) or max_len < longest:
            raise ValueError(f"max_seqlen for {name} must be an int >= the longest sequence ({longest}), "
                             f"got {max_len!r}")
    if len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.pop(next(iter(_CHECKED)))
    _CHECKED[(id(cu_seqlens_q), id(cu_seqlens_k))] = (weakref.ref(cu_seqlens_q), weakref.ref(cu_seqlens_k), facts)


# cu_seqlens pairs whose values passed check_varlen, so that the layers of a model sharing one
# pair pay the device-to-host sync once per batch, not once per call. Keyed by object identity;
# the weak references prove the same objects are still alive (an id can be reused after a free)
# and the version counters that they were not modified in place since.
_CHECKED: dict[tuple[int, int], tuple] = {}
_CHECKED_MAX = 64


def _version(t: torch.Tensor):
    try:
        return t._version
    except RuntimeError:  # inference-mode tensors keep no version counter: never cached
        return object()


def check_alibi(alibi_slopes, batch: int, nheads: int, device) -> None:
    if alibi_slopes is None:
        return
    if not isinstance(alibi_slopes, torch.Tensor) or alibi_slopes.dtype != torch.float32:
        raise TypeError(f"alibi_slopes must be a float32 tensor of shape (nheads,) or (batch, nheads), "
                        f"got {getattr(alibi_slopes, 'dtype', type(alibi_slopes).__name__)}")
    if tuple(alibi_slopes.shape) not in ((nheads,), (batch, nheads)):
        raise ValueError(f"alibi_slopes must have shape ({nheads},) or ({batch}, {nheads}), got {tuple(alibi_slopes.shape)}")
    if alibi_slopes.device != device:
        raise ValueError(f"alibi_slopes must be on q's device {device}, got {alibi_slopes.device}")


def _check_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_dim: int) -> None:
    """Dtypes, devices, lengths, head counts and head dims, for either layout."""
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got q {q.device}, k {k.device}, v {v.device}")
    nheads, head_dim = q.shape[-2], q.shape[-1]
    if k.shape[seq_dim] != v.shape[seq_dim]:
        raise ValueError(f"k and v must have the same seqlen_k, got k {k.shape[seq_dim]} and v {v.shape[seq_dim]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same nheads_k, got k {k.shape[-2]} and v {v.shape[-2]}")
    if k.shape[-1] != head_dim:
        raise ValueError(f"q and k must have the same head dim, got q {head_dim} and k {k.shape[-1]}")
    for name, d in (("q/k", head_dim), ("v", v.shape[-1])):
        if not 1 <= d <= MAX_HEAD_DIM:
            raise ValueError(f"{name} head dim must be in [1, {MAX_HEAD_DIM}], got {d}")
    nheads_k = k.shape[-2]
    if nheads_k == 0 or nheads % nheads_k != 0:
        raise ValueError(f"nheads of q ({nheads}) must be a multiple of nheads of k/v ({nheads_k}) (GQA/MQA)")


def check_scale(softmax_scale) -> None:
    if softmax_scale is None:
        return
    if isinstance(softmax_scale, torch.Tensor) or not isinstance(softmax_scale, (int, float)):
        raise TypeError(f"softmax_scale must be a Python float or None, got {type(softmax_scale).__name__}")
    if not math.isfinite(softmax_scale):
        raise ValueError(f"softmax_scale must be finite, got {softmax_scale}")


def check_flags(**flags) -> None:
    """Boolean options must be bools (numpy's included): a truthy string or tensor is a
    mistake, as it is for torch's SDPA ``is_causal``."""
    for name, value in flags.items():
        if not isinstance(value, bool) and type(value).__name__ != "bool_":
            raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def check_dropout(dropout_p) -> None:
    if not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a float in [0, 1), got {dropout_p!r}")


def check_window(window_size) -> None:
    if (not isinstance(window_size, (tuple, list)) or len(window_size) != 2
            or not all(isinstance(w, int) and w >= -1 for w in window_size)):
        raise ValueError(f"window_size must be a pair of ints >= -1 (-1: unbounded), got {window_size!r}")


def check_softcap(softcap) -> None:
    if not isinstance(softcap, (int, float)) or not math.isfinite(softcap) or softcap < 0:
        raise ValueError(f"softcap must be a finite float >= 0 (0: off), got {softcap!r}")


def check_attn_mask(attn_mask, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """SDPA's ``attn_mask``: bool, broadcastable to ``(batch, heads, seq_q, seq_k)``; returned as a
    4-d bool tensor whose batch and head dims are 1 or full and whose last two are full."""
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask must be a bool tensor, got {type(attn_mask).__name__}")
    if attn_mask.dtype != torch.bool:
        raise TypeError(f"attn_mask must be bool (True = attend); float (additive) masks are not supported, "
                        f"got {attn_mask.dtype}")
    if attn_mask.device != query.device:
        raise ValueError(f"attn_mask must be on query's device {query.device}, got {attn_mask.device}")
    b, h, sq, sk = query.shape[0], query.shape[1], query.shape[2], key.shape[2]
    if not 2 <= attn_mask.dim() <= 4:
        raise ValueError(f"attn_mask must have 2 to 4 dimensions broadcastable to ({b}, {h}, {sq}, {sk}), "
                         f"got shape {tuple(attn_mask.shape)}")
    mask = attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))
    for size, full, what in zip(mask.shape, (b, h, sq, sk), ("batch", "heads", "seq_q", "seq_k")):
        if size not in (1, full):
            raise ValueError(f"attn_mask shape {tuple(attn_mask.shape)} does not broadcast to ({b}, {h}, {sq}, {sk}): "
                             f"{what} is {size}")
    return mask.expand(mask.shape[0], mask.shape[1], sq, sk)


def check_block_mask(block_mask, q: torch.Tensor, k: torch.Tensor) -> None:
    """A BlockMask made for these shapes: lengths equal, batch/heads equal or broadcast (1)."""
    b, h, sq, sk = block_mask.shape
    if (sq, sk) != (q.shape[1], k.shape[1]):
        raise ValueError(f"block_mask was built for seqlen_q x seqlen_k = {sq} x {sk}, "
                         f"but q/k have {q.shape[1]} x {k.shape[1]}")
    if b not in (1, q.shape[0]) or h not in (1, q.shape[2]):
        raise ValueError(f"block_mask batch/heads ({b}, {h}) must be 1 or match q's ({q.shape[0]}, {q.shape[2]})")
    if block_mask.tiles.device != q.device:
        raise ValueError(f"block_mask is on {block_mask.tiles.device}, q on {q.device}: use block_mask.to(device)")

"""pyflashattn as a Hugging Face transformers attention implementation.

    from pyflashattn.integrations.transformers import register
    name = register()                  # "pyfa"
    model = AutoModelForCausalLM.from_config(config, attn_implementation=name)   # or from_pretrained

``register`` adds an attention function to transformers' ``AttentionInterface`` and, where the
installed version has it, a mask builder to ``AttentionMaskInterface``, both under ``name``.
The name must not contain "flash": transformers 5 sends such names to its own flash-attn /
kernels-hub loader. transformers is imported only inside these functions.

What each call computes (the attention function receives query ``(b, h, s_q, d)`` and key/value
``(b, h_kv, s_k, d)``; the output is ``(b, s_q, h, d)``, as transformers' ``sdpa``):

* no mask (no padding: training, prefill, decoding): ``flash_attn_func`` with ``causal`` as the
  module says, GQA without repeating heads. The mask builder returns ``None`` where
  transformers' SDPA would run with ``is_causal`` instead of a mask, and the same alignment is
  kept (an empty static cache is cropped, as ``sdpa`` does). Under ``torch.compile`` a given
  all-ones mask cannot be inspected, so it takes the padding path below (exact, a little slower).
* padding in a causal self-attention with ``s_q == s_k`` (training or prefill on a padded batch,
  left or right or holes): the builder passes the 2D padding mask ``(b, s)`` through; each row
  is reordered so that its real tokens come first (a stable sort: their order is kept), one
  causal ``flash_attn_func`` call runs on the reordered batch and the rows are put back. A real
  query at position ``i`` then sees exactly the real keys at positions ``<= i``, as in eager: the
  result is exact, O(N) in memory, and without data-dependent shapes (it compiles with
  ``fullgraph=True``). Outputs at padded query positions are 0 (eager leaves an arbitrary average
  there; no real position depends on them).
* anything else (padding while decoding with a cache, static caches, sliding-window, chunked or
  packed-sequence masks, non-causal padding, a 4D mask given by the user): the builder returns
  transformers' own boolean 4D mask and the attention runs in ``torch`` SDPA with that mask,
  exact but materializing the mask. A varlen kernel would replace this path.

Not supported (raise ``NotImplementedError``): attention dropout > 0 (set the config's
``attn_pdrop`` / ``attention_dropout`` to 0), ``softcap``, attention sinks (``s_aux``).
``output_attentions`` gets ``None`` weights.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..interface import flash_attn_func

DEFAULT_NAME = "pyfa"

__all__ = ["DEFAULT_NAME", "register", "attention_forward", "build_mask"]


def register(name: str = DEFAULT_NAME) -> str:
    """Register pyflashattn with transformers under ``name`` and return the name.

    Afterwards ``from_config(..., attn_implementation=name)`` / ``from_pretrained(...)`` or
    ``model.set_attn_implementation(name)`` select it. Safe to call more than once.
    """
    if "flash" in name.lower():
        raise ValueError(f"name {name!r} contains 'flash': transformers 5 routes such names to its own "
                         "flash-attn loader; pick another name, e.g. 'pyfa'")
    try:
        from transformers import AttentionInterface
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("pyflashattn.integrations.transformers needs transformers with AttentionInterface "
                          "(>= 4.48): pip install -U transformers") from e
    AttentionInterface.register(name, attention_forward)
    global _masking_utils
    try:
        from transformers import masking_utils
    except ImportError:  # older releases: the model passes its default mask, handled by the SDPA path
        return name
    # kept here so that build_mask imports nothing while torch.compile traces it (dynamo cannot
    # follow an import through transformers' lazy module: "Bad import result", a graph break)
    _masking_utils = masking_utils
    masking_utils.AttentionMaskInterface.register(name, build_mask)
    return name


_masking_utils = None  # transformers.masking_utils, set by register()


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def build_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0,
                   mask_function=None, attention_mask: Optional[Tensor] = None, **kwargs):
    """Mask builder for ``AttentionMaskInterface``, called once per model forward by
    ``create_causal_mask`` and friends with the 2D padding mask ``attention_mask`` ``(b, s_k)``.

    Returns ``None`` (no padding), the 2D bool padding mask (causal self-attention with
    ``s_q == s_k`` and no other pattern: the reorder path), or transformers' ``sdpa_mask``
    result (a 4D bool mask, or ``None`` where SDPA would use ``is_causal``).
    """
    masking_utils = _masking_utils
    causal_fn = getattr(masking_utils, "causal_mask_function", None)
    plain_causal = (
        mask_function is causal_fn
        and kwargs.get("allow_is_causal_skip", True)  # False: the caller needs a 4D mask to combine
        and not kwargs.get("local_size")
        and attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[-1] == kv_length
        and isinstance(q_offset, int) and q_offset == 0 and kv_offset == 0 and q_length == kv_length
    )
    if plain_causal:
        padding = attention_mask.to(torch.bool)
        if not _tracing() and bool(padding.all()):
            return None
        return padding
    if mask_function is None:
        mask_function = causal_fn
    return masking_utils.sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length,
                                   q_offset=q_offset, kv_offset=kv_offset, mask_function=mask_function,
                                   attention_mask=attention_mask, **kwargs)


def attention_forward(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor,
                      attention_mask: Optional[Tensor], scaling: Optional[float] = None, dropout: float = 0.0,
                      is_causal: Optional[bool] = None, softcap: Optional[float] = None,
                      s_aux: Optional[Tensor] = None, **kwargs) -> tuple[Tensor, None]:
    """Attention function for ``AttentionInterface``.

    Args:
        module: the model's attention layer (read: ``is_causal``).
        query: ``(batch, heads, seq_q, head_dim)``.
        key, value: ``(batch, kv_heads, seq_k, head_dim)``; ``heads % kv_heads == 0``.
        attention_mask: ``None``, a 2D bool padding mask ``(batch, seq_k)`` (from ``build_mask``
            above), or a 4D bool / additive float mask ``(batch, 1, seq_q, seq_k)``.
        scaling: softmax scale, default ``1 / sqrt(head_dim)``.

    Returns:
        ``(out, None)``, out ``(batch, seq_q, heads, head_dim)``.
    """
    if dropout and dropout > 0.0:
        name = type(module).__name__
        raise NotImplementedError(f"pyflashattn has no attention dropout yet ({name} asked for p={dropout}); set the "
                                  "config's attention dropout (attn_pdrop / attention_dropout) to 0.0")
    if softcap:
        raise NotImplementedError("pyflashattn's transformers integration does not support softcap yet")
    if s_aux is not None:
        raise NotImplementedError("pyflashattn's transformers integration does not support attention sinks (s_aux)")
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    q_len, kv_len = query.shape[2], key.shape[2]
    if attention_mask is None:
        # the cases where transformers' sdpa calls SDPA with is_causal (top-left aligned): one query
        # sees every key; a prefill into an empty static cache sees only the first q_len keys
        causal = bool(causal) and q_len > 1
        if causal and kv_len > q_len:
            key, value = key[:, :, :q_len], value[:, :, :q_len]
        out = flash_attn_func(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                              softmax_scale=scaling, causal=causal)
        return out, None
    if attention_mask.dim() == 2 and causal and q_len == kv_len:
        return _padded_causal(query, key, value, attention_mask.to(torch.bool), scaling), None
    return _masked_sdpa(query, key, value, attention_mask, scaling, bool(causal)), None


def _gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x`` ``(b, s, h, d)``, ``index`` ``(b, s)``: ``out[b, i] = x[b, index[b, i]]``."""
    return torch.gather(x, 1, index[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3]))


def _padded_causal(query: Tensor, key: Tensor, value: Tensor, keep: Tensor, scaling: Optional[float]) -> Tensor:
    """Exact causal attention over the real tokens of each row (``keep`` ``(b, s)`` bool).

    Real tokens are moved to the front of their row, in order (stable sort), so the causal mask
    over the reordered row lets the real query at ``i`` see the real keys at ``<= i`` and no
    padding; one ``flash_attn_func`` call does the batch, then rows are moved back.
    """
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # [b, s]: real tokens first
    restore = torch.argsort(order, dim=1)
    q, k, v = (_gather_rows(t.transpose(1, 2), order) for t in (query, key, value))
    out = flash_attn_func(q, k, v, softmax_scale=scaling, causal=True)
    out = _gather_rows(out, restore)
    return out.masked_fill(~keep[:, :, None, None], 0.0)


def _masked_sdpa(query: Tensor, key: Tensor, value: Tensor, mask: Tensor, scaling: Optional[float],
                 causal: bool) -> Tensor:
    """The general masked case in torch SDPA: exact, materializes the mask. A 2D padding mask
    (from releases without a mask interface, or ``s_q != s_k``) gets the bottom-right causal mask
    added (keys are past + current tokens)."""
    if mask.dim() == 2:
        q_len, kv_len = query.shape[2], key.shape[2]
        mask = mask.to(torch.bool)[:, None, None, :]
        if causal:
            rows = torch.arange(q_len, device=query.device)[:, None] + (kv_len - q_len)
            mask = mask & (torch.arange(kv_len, device=query.device)[None, :] <= rows)
    elif mask.dtype != torch.bool:
        mask = mask.to(query.dtype)
    group = query.shape[1] // key.shape[1]
    if group > 1:
        key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2)

"""pyflashattn: exact, IO-aware attention (FlashAttention / FlashAttention-2) in Triton and PyTorch."""
from .block_mask import BlockMask, create_block_mask
from .interface import (
    block_sparse_attn_func,
    flash_attn_func,
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
    scaled_dot_product_attention,
)

__version__ = "0.1.0"
__all__ = [
    "BlockMask",
    "block_sparse_attn_func",
    "create_block_mask",
    "flash_attn_func",
    "flash_attn_kvpacked_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "scaled_dot_product_attention",
]

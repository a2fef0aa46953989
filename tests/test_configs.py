"""The config table's lookup and the launch-time adjustments (no kernels run)."""
import json

import torch

from pyflashattn.configs import _config, padded_head_dim
from pyflashattn.ops import _adjusted_config


def table(head_dim, head_dim_v=None, dtype=torch.bfloat16, override=""):
    return _config(head_dim, head_dim_v or head_dim, dtype, False, override)


def test_padded_head_dims():
    assert [padded_head_dim(d) for d in (1, 16, 17, 72, 96, 128, 129, 192, 256)] == \
        [16, 16, 32, 128, 128, 128, 256, 256, 256]


def test_exact_row_wins_over_the_padded_one():
    # 192 has a measured row of its own; 160 pads to 256 and takes 256's; both tile 256 wide
    exact, padded = table(192), table(160)
    assert exact.block_d == padded.block_d == 256
    assert padded == table(256)
    assert exact.num_stages != padded.num_stages
    # fp32 has no 192 row: the padded one
    assert table(192, dtype=torch.float32) == table(256, dtype=torch.float32)


def test_override_reaches_every_field():
    cfg = table(128, override=json.dumps({"block_n": 32, "num_stages_sparse": 2, "block_n_sparse": 128}))
    assert (cfg.block_n, cfg.num_stages_sparse, cfg.block_n_sparse) == (32, 2, 128)


def test_sparse_adjustment():
    cfg = table(128)
    sparse = _adjusted_config(cfg, False, (64, 128))
    assert sparse.num_stages == min(cfg.num_stages, cfg.num_stages_sparse)
    # kernel tiles never straddle mask blocks
    assert sparse.block_m <= 64 and sparse.block_m_kv <= 64 and sparse.block_m_q <= 64
    # the forward's key tiles under a block mask: the sparse limit (64 keys, 3 stages at d=128)
    assert (cfg.block_n, cfg.num_stages) == (128, 3)
    wide = _adjusted_config(cfg, False, (128, 128))
    assert (wide.block_n, wide.num_stages) == (64, 3)
    old = _adjusted_config(table(128, override='{"block_n_sparse": 128, "num_stages_sparse": 2}'), False, (128, 128))
    assert (old.block_n, old.num_stages) == (128, 2)


def test_dropout_adjustment_only_where_shared_memory_is_short():
    assert _adjusted_config(table(128), True, None).num_stages == 2
    assert _adjusted_config(table(64), True, None) == table(64)

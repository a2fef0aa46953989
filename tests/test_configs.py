"""The config table's lookup, the launch-time adjustments, and the shipped configs built for sm_90
(no kernel runs)."""
import importlib.util
import json

import pytest
import torch

from pyflashattn.configs import _config, head_dim_parts, padded_head_dim
from pyflashattn.ops import _adjusted_config

from conftest import compiled_json


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
    assert (exact.block_n, exact.block_n_kv) != (padded.block_n, padded.block_n_kv)
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
    assert _adjusted_config(table(64), True, None).num_stages == table(64).num_stages


def test_dropout_takes_the_tables_dkdv_tile():
    """The dK/dV tile the table names for dropout (where the keep mask spilled), only with dropout."""
    for d, (bm, bn) in {64: (32, 64), 128: (32, 128)}.items():
        cfg = _adjusted_config(table(d), True, None)
        assert (cfg.block_m_kv, cfg.block_n_kv) == (bm, bn)
        assert _adjusted_config(table(d), False, None) == table(d)
    assert _adjusted_config(table(256), True, None).block_n_kv == table(256).block_n_kv


AOT_TRITON = """
import json, torch
from pyflashattn.configs import _config
from pyflashattn.kernels.aot import triton_kernels_sm90
print(json.dumps({d: triton_kernels_sm90(_config(d, d, torch.bfloat16, False, ""), d) for d in (64, 96, 128, 192, 256)}))
"""


@pytest.mark.skipif(importlib.util.find_spec("triton.backends.nvidia") is None, reason="no NVIDIA backend")
def test_shipped_triton_configs_compile_for_sm90():
    """The table's plain-Triton kernels (forward, dK/dV, dQ; 16-bit, every head-dim row), built
    for sm_90 here with no GPU: no local spills, shared memory within the 227 KB a block may
    have, and wgmmas that ptxas has not serialized (``kernels.aot.wgmma_waits``: one full wait
    after each HGMMA would say so; these wait 6-9 times for 48-216). The dK/dV kernel's stack is
    its 120-192 B at head dims up to 128 (it measured fastest so) and up to 240 B at 192/256
    (32-query tiles; 64-query ones spilled 520-544 B and measured 2-4 % slower at 256,
    docs/performance.md v4, v11). In a process of its
    own: under ``TRITON_INTERPRET=1`` Triton cannot compile."""
    results = compiled_json(AOT_TRITON, timeout=900)
    assert sorted(map(int, results)) == [64, 96, 128, 192, 256]
    for d, kernels in results.items():
        assert sorted(kernels) == ["dkdv", "dq", "fwd"], kernels
        for name, res in kernels.items():
            # d=96's forward (four warps over 128 x 96) keeps 96 B of stack and measured 2-19 %
            # faster than eight warps without it (v13)
            stack_limit = {"fwd": 96 if d == "96" else 64, "dq": 64, "dkdv": 256 if int(d) <= 128 else 320}[name]
            assert res["local"] == 0 and res["stack"] <= stack_limit, (d, name, res)
            assert res["shared"] <= 227 * 1024 and res["reg"] <= 255, (d, name, res)
            assert res["hgmma"] > 0 and res["hgmma_full_waits"] <= res["hgmma"] // 4, (d, name, res)


def test_head_dim_parts():
    # a power of two and the rest, where the rest is 32 wide or more and the two are narrower
    assert head_dim_parts(192, 256, True) == (128, 64)
    assert head_dim_parts(96, 128, True) == (64, 32)
    assert head_dim_parts(160, 256, True) == (128, 32)
    assert head_dim_parts(72, 128, True) == (128, 0)       # 64 + 16: not split
    assert head_dim_parts(224, 256, True) == (256, 0)      # 128 + 128 is not narrower
    assert head_dim_parts(128, 128, True) == (128, 0)
    assert head_dim_parts(192, 256, False) == (256, 0)
    # fp32 keeps one block; 16-bit splits
    assert not table(192, dtype=torch.float32).split_head_dim and table(192).split_head_dim

"""The Triton forward's tiles under dropout on the H200 (v17): b4 h16 causal bf16, dropout_p=0.1,
4k and 16k, d 64 and 128, the table's tile first and last (A ... A) and the alternatives between,
in one process. Result (docs/logs/h200-dropout-fwd-tiles-v17.log): the table's tiles are fastest,
so dropout keeps them (only the dK/dV tile changes under dropout: ``dropout_block_m_kv/n_kv``).
    PYTHONPATH=src python scripts/experiments/dropout_fwd_tiles_v17.py
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from kernel_bench import bench, make  # noqa: E402

import pyflashattn as pfa  # noqa: E402

CANDIDATES = {64: [None, '{"block_m": 64}', '{"num_warps": 8}', '{"block_n": 32}', None],
              128: [None, '{"block_n": 64, "num_stages": 3}', '{"block_m": 64, "num_warps": 4}',
                    '{"block_n": 64, "num_warps": 4, "num_stages": 3}', None]}


def main():
    for d, configs in CANDIDATES.items():
        for s_len in (4096, 16384):
            q, k, v = make(4, s_len, 16, d)
            for config in configs:
                if config:
                    os.environ["PYFLASHATTN_CONFIG"] = config
                try:
                    ms = bench(lambda: pfa.flash_attn_func(q, k, v, causal=True, dropout_p=0.1), "fwd")
                finally:
                    os.environ.pop("PYFLASHATTN_CONFIG", None)
                print(f"d={d} n={s_len} fwd dropout {ms:.3f} ms {config or '{}'}", flush=True)


if __name__ == "__main__":
    main()

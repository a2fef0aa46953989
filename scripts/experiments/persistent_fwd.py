"""One-off (eleventh session): the warp-specialized forward walking tiles (one program per SM up
to ``hopper_ws_persistent_max_seqlen_k`` keys; under causal with ``hopper_ws_persistent_causal``,
units of two query blocks of one head) against one program per tile, same kernel. First a
correctness check of each against float64 (causal or not, GQA, odd lengths and odd query-block
counts, more queries than keys, many units per program), then forward TFLOP/s, A/B in one
process, d 64 and 128, causal or not, at 1k-16k (batch x seqlen = 16k tokens).

    PYTHONPATH=src python3 scripts/experiments/persistent_fwd.py
"""
import itertools
import os

import torch
import triton

import pyflashattn as pfa
from pyflashattn.reference import attention_ref

CONFIGS = {"tiles": '{"hopper_ws_persistent_max_seqlen_k": 0}',
           "persistent": '{"hopper_ws_persistent_max_seqlen_k": 1000000, "hopper_ws_persistent_causal": true}'}


def check():
    torch.manual_seed(0)
    for b, sq, sk, h, hk, d, causal in [(2, 1000, 1000, 4, 2, 128, False), (3, 4097, 4097, 8, 8, 64, False),
                                         (1, 300, 2000, 4, 4, 128, False), (2, 777, 777, 4, 4, 128, True),
                                         (40, 256, 256, 16, 16, 128, False), (30, 777, 777, 8, 2, 128, True),
                                         (20, 640, 1000, 8, 8, 64, True), (3, 1000, 640, 4, 4, 128, True),
                                         (16, 1024, 1024, 16, 16, 128, True)]:
        q = torch.randn(b, sq, h, d, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(b, sk, hk, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        ref, _ = attention_ref(q, k, v, causal=causal)
        for name, cfg in CONFIGS.items():
            os.environ["PYFLASHATTN_CONFIG"] = cfg
            out = pfa.flash_attn_func(q, k, v, causal=causal)
            err = ((out.double() - ref).norm() / ref.norm()).item()
            print(f"check b{b} sq{sq} sk{sk} h{h}/{hk} d{d} causal={int(causal)} {name:10s} rel err {err:.2e}",
                  "OK" if err < 1e-2 else "FAIL", flush=True)
    os.environ.pop("PYFLASHATTN_CONFIG", None)


def bench():
    for d, causal, s in itertools.product((128, 64), (False, True), (1024, 2048, 4096, 16384)):
        b, h = max(1, 16384 // s), 2048 // d
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        res = {}
        for name, cfg in CONFIGS.items():
            os.environ["PYFLASHATTN_CONFIG"] = cfg
            with torch.no_grad():
                ms = triton.testing.do_bench(lambda: pfa.flash_attn_func(q, k, v, causal=causal), warmup=50,
                                             rep=200, return_mode="median")
            res[name] = 4 * b * h * s * s * d / ms / 1e9 / (2 if causal else 1)
        print(f"d={d} causal={int(causal)} n={s:5d} fwd TFLOP/s "
              + " ".join(f"{n} {t:.1f}" for n, t in res.items())
              + f"  persistent/tiles {res['persistent'] / res['tiles']:.3f}", flush=True)
    os.environ.pop("PYFLASHATTN_CONFIG", None)


if __name__ == "__main__":
    print("#", torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    check()
    bench()

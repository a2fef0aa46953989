"""One-off A/B: backward with dQ by a separate kernel vs dQ by atomics in the dK/dV kernel."""
import itertools, json, os
import torch, triton
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
import pyflashattn as pfa
from pyflashattn.kernels import bwd

VARIANTS = {  # name -> (atomic, config override)
    "split": (False, ""),
    "atomic": (True, ""),
    "atomic-32x128s3": (True, json.dumps(dict(block_m_kv=32, block_n_kv=128, num_warps_kv=8, num_stages_kv=3))),
    "atomic-64x128s2": (True, json.dumps(dict(block_m_kv=64, block_n_kv=128, num_warps_kv=8, num_stages_kv=2))),
}
print("#", torch.cuda.get_device_name(), torch.__version__, triton.__version__)
for d, causal, s in itertools.product((64, 128), (False, True), (1024, 4096, 16384)):
    b, h = 16384 // s, 2048 // d
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = torch.randn_like(q)
    fl = 4 * b * h * s * s * d * 3.5 / (2 if causal else 1)
    res = {}
    ref = None
    for name, (atomic, cfg) in VARIANTS.items():
        bwd.ATOMIC_DQ = atomic
        os.environ["PYFLASHATTN_CONFIG"] = cfg
        def step():
            out = pfa.flash_attn_func(q, k, v, causal=causal)
            return torch.autograd.grad(out, (q, k, v), g)
        grads = step()
        if ref is None:
            ref = grads
        else:
            err = max(((a.float() - r.float()).norm() / r.float().norm()).item() for a, r in zip(grads, ref))
            assert err < 2e-2, (name, err)
        res[name] = triton.testing.do_bench(step, warmup=30, rep=150)
    os.environ["PYFLASHATTN_CONFIG"] = ""
    qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
    gt = g.transpose(1, 2).contiguous()
    for be, bname in ((SDPBackend.CUDNN_ATTENTION, "cudnn"), (SDPBackend.FLASH_ATTENTION, "flash")):
        def peer():
            with sdpa_kernel(be):
                out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
            return torch.autograd.grad(out, (qt, kt, vt), gt)
        res[bname] = triton.testing.do_bench(peer, warmup=30, rep=150)
    line = " ".join(f"{n}={ms:.3f}ms/{fl / ms / 1e9:.0f}" for n, ms in res.items())
    best = min((ms, n) for n, ms in res.items() if n not in ("cudnn", "flash"))
    print(f"d={d} causal={int(causal)} s={s} fwdbwd {line} | best {best[1]} {res['cudnn'] / best[0]:.2f}x cudnn", flush=True)

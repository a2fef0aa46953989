"""Ahead-of-time checks without a GPU: what ptxas made of a compiled kernel.

Used by ``scripts/aot_check.py`` and the tests that hold shipped configs to the SM's limits
(``hopper.compile_sm90`` builds the Gluon kernels; ``triton_kernels_sm90`` the plain-Triton ones).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile


def resource_usage(cubin: bytes) -> dict:
    """Registers, stack frame and local (spill) bytes of a cubin, from Triton's bundled
    ``cuobjdump --dump-resource-usage``: ``{"reg": .., "stack": .., "local": ..}``."""
    tool = _tool("cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    fields = dict(re.findall(r"(REG|STACK|LOCAL):(\d+)", text))
    return {k.lower(): int(v) for k, v in fields.items()}


def _tool(name: str) -> str:
    import triton.backends.nvidia as nv
    return os.path.join(os.path.dirname(nv.__file__), "bin", name)


def wgmma_waits(cubin: bytes) -> dict:
    """How many Hopper matmul instructions (``HGMMA``) the SASS has, and how many waits for all
    of them to finish (``WARPGROUP.DEPBAR.LE gsb0, 0x0``): ``{"hgmma": .., "hgmma_full_waits": ..}``.

    Why: where ptxas cannot keep the accumulators of asynchronous wgmmas in registers it
    serializes them (its C7512 / C7514 "Potential Performance Loss" notes, which Triton does not
    show), one full wait after every HGMMA, and the kernel still computes the right thing, only
    slower. A kernel whose full waits come near its HGMMA count has been serialized."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([_tool("nvdisasm"), "-c", f.name], capture_output=True, text=True).stdout
    return {"hgmma": len(re.findall(r"\bHGMMA\.", sass)),
            "hgmma_full_waits": len(re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, 0x0", sass))}


_PTR = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32"}
# the launchers' side arguments (sequence bounds, slopes, block-sparse lists, dropout) and floats
_SIDE = dict(CU_Q="*i32", CU_K="*i32", SLOPES="*fp32", TILES="*i8", SEED="*i64", drop_threshold="i64", ORDER="*i32",
             **{n: "*i32" for n in ("KV_NUM", "KV_IDX", "KV_TILE", "FULL_NUM", "FULL_IDX", "BLK_NUM", "BLK_IDX",
                                    "BLK_TILE")})
_FLOATS = {"qk_scale", "softcap_scale", "alibi_log2", "softmax_scale", "drop_scale"}


def compile_triton_sm90(kernel, ptr_args: dict, constexprs: dict, num_warps: int, num_stages: int,
                        dump_dir: str | None = None) -> dict:
    """Build a plain-Triton kernel for sm_90 here (no GPU): shared memory, ``resource_usage`` and
    ``wgmma_waits``. Pointers and ``stride_*`` arguments are marked 16-byte divisible, as a real
    launch specializes them; other ints are plain (lengths are not specialized)."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    names = list(inspect.signature(kernel.fn).parameters)
    sig = {n: "constexpr" if n in constexprs else ptr_args.get(n) or _SIDE.get(n)
           or ("fp32" if n in _FLOATS else "i32") for n in names}
    aligned = [n for n in names if n in ptr_args or n.startswith("stride_")]
    src = ASTSource(fn=kernel, signature=sig, constexprs={(names.index(k),): v for k, v in constexprs.items()},
                    attrs={(names.index(n),): [["tt.divisibility", 16]] for n in aligned})
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, num_stages=num_stages))
    if dump_dir:
        os.makedirs(dump_dir, exist_ok=True)
        for ext in ("ttgir", "ptx"):
            with open(os.path.join(dump_dir, f"{kernel.fn.__name__}.{ext}"), "w") as f:
                f.write(ck.asm[ext])
    return dict(shared=ck.metadata.shared, **resource_usage(ck.asm["cubin"]), **wgmma_waits(ck.asm["cubin"]))


def triton_kernels_sm90(cfg, head_dim: int, dtype: str = "bf16", group_size: int = 1, dump_dir: str | None = None,
                        kernels: tuple = ("fwd", "dkdv", "dq"), **features: bool) -> dict:
    """The plain-Triton kernels (forward, dK/dV, dQ; or those named in ``kernels``) of config
    ``cfg`` built for sm_90: ``{"fwd": .., "dkdv": .., "dq": ..}``, each ``compile_triton_sm90``'s
    dict. ``features``: ``varlen``, ``softcap``, ``alibi``, ``sparse`` (128 x 128 mask blocks),
    ``dropout``."""
    import torch

    from ..configs import head_dim_parts
    from . import bwd, fwd
    from .common import SOFTCAP_EXACT, SOFTCAP_FAST, dot_precision
    f = {k: bool(features.get(k)) for k in ("varlen", "softcap", "alibi", "sparse", "dropout")}
    unknown = set(features) - set(f)
    if unknown:
        raise ValueError(f"triton_kernels_sm90: unknown features {sorted(unknown)}; expected some of {sorted(f)}")
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    block_d, block_d2 = head_dim_parts(head_dim, cfg.block_d, cfg.split_head_dim)
    common = dict(HEAD_DIM=head_dim, HEAD_DIM_V=head_dim, BLOCK_D=block_d, BLOCK_DV=block_d,
                  BLOCK_D2=block_d2, BLOCK_DV2=block_d2,
                  PRECISION=dot_precision(torch_dtype), UPCAST=False, IS_VARLEN=f["varlen"],
                  HAS_SOFTCAP=(SOFTCAP_EXACT if torch_dtype == torch.float32 else SOFTCAP_FAST) * f["softcap"],
                  HAS_ALIBI=f["alibi"], IS_SPARSE=f["sparse"],
                  SPARSE_Q=128 if f["sparse"] else 1, SPARSE_KV=128 if f["sparse"] else 1,
                  HAS_DROPOUT=f["dropout"], MASK_FN=None)
    # Triton compiles an int argument equal to 1 as a constexpr: without GQA the dK/dV kernel's
    # loop over the group's heads is gone, which changes its registers (1.8 KB of stack with a
    # runtime group size, 0.15 KB without, at d=128)
    if group_size == 1:
        common["group_size"] = 1
    ptr = _PTR[dtype]
    fwd_ptrs = dict(Q=ptr, K=ptr, V=ptr, O=ptr, LSE="*fp32")
    bwd_ptrs = dict(Q=ptr, K=ptr, V=ptr, DO=ptr, LSE="*fp32", DELTA="*fp32", DK=ptr, DV=ptr, DQ=ptr)
    builds = {
        "fwd": lambda: compile_triton_sm90(fwd._attn_fwd_kernel, fwd_ptrs,
                                           dict(common, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n),
                                           cfg.num_warps, cfg.num_stages, dump_dir),
        "dkdv": lambda: compile_triton_sm90(bwd._bwd_dkdv_kernel, bwd_ptrs,
                                            dict(common, BLOCK_M=cfg.block_m_kv, BLOCK_N=cfg.block_n_kv,
                                                 ACCUMULATE=False), cfg.num_warps_kv, cfg.num_stages_kv, dump_dir),
        "dq": lambda: compile_triton_sm90(bwd._bwd_dq_kernel, bwd_ptrs,
                                          dict(common, BLOCK_M=cfg.block_m_q, BLOCK_N=cfg.block_n_q, ACCUMULATE=False),
                                          cfg.num_warps_q, cfg.num_stages_q, dump_dir),
    }
    return {name: builds[name]() for name in kernels}

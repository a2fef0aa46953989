"""Ahead-of-time checks without a GPU: what ptxas made of a compiled kernel.

Used by ``scripts/aot_check.py`` and the tests that hold shipped configs to the SM's limits.
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

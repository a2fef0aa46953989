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
    import triton.backends.nvidia as nv
    tool = os.path.join(os.path.dirname(nv.__file__), "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    fields = dict(re.findall(r"(REG|STACK|LOCAL):(\d+)", text))
    return {k.lower(): int(v) for k, v in fields.items()}

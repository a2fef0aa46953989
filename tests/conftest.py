"""Test setup: the Triton interpreter where there is no GPU, NaN-poisoned allocations, seeds.

``TRITON_INTERPRET`` must be set before Triton compiles anything, so it is set here, at import.
"""
import importlib.util
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
if not HAS_CUDA and HAS_TRITON:
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = "cuda" if HAS_CUDA else "cpu"
BACKENDS = ["torch"] + (["triton"] if HAS_TRITON else [])


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """Run a test on each backend available here (Triton interpreted when there is no GPU)."""
    monkeypatch.setenv("PYFLASHATTN_BACKEND", request.param)
    return request.param


@pytest.fixture(autouse=True)
def poison_empty(monkeypatch):
    """Every ``torch.empty``/``empty_like`` in the library comes back NaN-filled, so any output
    element a kernel fails to write shows up as NaN in the comparison."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def fill(t):
        # requires_grad: not ours (torch's own internals, e.g. inductor's pattern setup, which
        # runs only on a cold compile cache and breaks on an in-place fill of a leaf)
        if t.is_floating_point() and t.numel() and not t.requires_grad:
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **kw: fill(real_empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: fill(real_empty_like(*a, **kw)))


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def compiled_json(code: str, timeout: int = 900):
    """Run ``code`` in a fresh Python without ``TRITON_INTERPRET`` (under the interpreter Triton
    cannot compile for a GPU) and return the JSON its last line of output prints: the ahead-of-time
    sm_90 build tests' way of compiling on a machine with no GPU."""
    import json
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])

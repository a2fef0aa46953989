#!/usr/bin/env bash
# The test suite: CPU path + Triton kernels in the interpreter here, real kernels on a GPU.
# Extra arguments go to pytest (e.g. -k causal, -n 8 where pytest-xdist exists).
source "$(dirname "$0")/env.sh"
# CI=true switches on PyTorch's own CI assertions inside inductor (torch/_inductor/lowering.py
# turns a fallback-vs-decomposition warning into an error), which fails FlexAttention's CPU
# compile in the bench tests; those checks are for PyTorch's CI, not for code using torch.
exec env -u CI "$PY" -m pytest -q "$@" tests

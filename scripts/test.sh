#!/usr/bin/env bash
# The test suite: CPU path + Triton kernels in the interpreter here, real kernels on a GPU.
# Extra arguments go to pytest (e.g. -k causal, -n 8 where pytest-xdist exists).
source "$(dirname "$0")/env.sh"
exec "$PY" -m pytest -q "$@" tests

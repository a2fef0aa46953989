# Sourced by scripts/test.sh and scripts/run.sh: find or make a Python with torch and triton.
# - A Python that already has torch (a GPU machine's image) is used as it is, with src/ on the path.
# - Otherwise a venv in .venv gets the CPU build of torch 2.13.0, triton 3.6.0 (whose interpreter
#   runs the kernels on the CPU; it needs numpy < 2.4), pytest, transformers and matplotlib (for the
#   integration tests and plots), and this package, editable.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -z "${PYFLASHATTN_PYTHON:-}" ] && python3 -c "import torch, triton" >/dev/null 2>&1; then
    PY=python3
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
else
    PY="$ROOT/.venv/bin/python"
    if [ ! -x "$PY" ] || ! "$PY" -c "import torch, triton, pytest, pyflashattn" >/dev/null 2>&1; then
        echo "setting up .venv (torch 2.13.0 CPU, triton 3.6.0) ..." >&2
        python3 -m venv .venv
        "$PY" -m pip install -q --disable-pip-version-check torch==2.13.0
        "$PY" -m pip install -q --disable-pip-version-check triton==3.6.0 "numpy<2.4" pytest tqdm transformers matplotlib
        "$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
    fi
fi

"""``pyflashattn bench``: speed and memory of pyflashattn against its peers.

Modules, one concern each: ``flops`` (the FLOP convention), ``timing`` (median time, peak
memory, OOM), ``providers`` (the implementations compared), ``config`` (what to run and the
defaults per device), ``sweep`` (running the cells), ``report`` (table, JSON, environment),
``plots`` (PNG figures), ``progress`` (the progress bar). The CLI is ``pyflashattn.cli``.
"""
from .config import SweepConfig, defaults
from .flops import attention_flops
from .sweep import run_sweep

__all__ = ["SweepConfig", "attention_flops", "defaults", "run_sweep"]

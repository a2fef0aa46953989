"""What a sweep shows: the terminal table, the JSON document and the environment it ran in."""
from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import os
import platform
import subprocess
from typing import Optional

import torch

from .config import SweepConfig
from .sweep import Cell, SweepResult
from .timing import memory_method

REFERENCE = "pyflashattn"
FLOPS_RULE = "4*b*h*sq*sk*d per forward, halved for causal; backward 2.5x, forward+backward 3.5x"
ERROR_RULE = ("||x - ref|| / ||ref|| against pyflashattn.reference.attention_ref in float64 "
              "(x = output for fwd, the worst of dq/dk/dv for bwd, the worst of both for fwdbwd)")
PASS_NAMES = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward+backward"}
COLUMNS = ("seqlen", "b x h", "provider", "ms", "TFLOP/s", "peak MiB", "rel err", "pfa speedup")


def _num(x: Optional[float], fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def _heads(c: Cell) -> str:
    return f"{c.batch}x{c.heads}" + (f"/{c.kv_heads}kv" if c.kv_heads != c.heads else "")


def _speedup(c: Cell) -> str:
    if c.provider == REFERENCE or c.status != "ok":
        return "-"
    ratio = c.speedup.get(REFERENCE)
    return "-" if ratio is None else f"{1 / ratio:.2f}x"


def _row(c: Cell, first_of_row: bool) -> list[str]:
    lead = [str(c.seqlen), _heads(c)] if first_of_row else ["", ""]
    name = c.provider + (" *" if c.best else "")
    if c.status != "ok":
        return lead + [name, {"oom": "OOM"}.get(c.status, c.status), "", "", "", ""]
    err = "-" if c.rel_err is None else f"{c.rel_err:.1e}" + ("~" if c.err_shape is not None else "")
    mem = None if c.peak_mem_bytes is None else c.peak_mem_bytes / 2**20
    return lead + [name, _ms(c.time_ms), _num(c.tflops, ".3g"), _num(mem, ".1f"), err, _speedup(c)]


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    left = {1, 2}
    return ["  ".join(cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def shown_providers(cells: list[Cell]) -> list[str]:
    """Providers with at least one cell that ran (or ran out of memory), in sweep order."""
    return list(dict.fromkeys(c.provider for c in cells if c.status != "skip"))


def format_table(result: SweepResult, config: SweepConfig, env: Optional[dict] = None) -> str:
    """The terminal report: a header, one section per (pass, head dim, causal), the notes."""
    env = env or environment(config.device)
    shown = set(shown_providers(result.cells))
    where = env.get("gpu") or f"cpu ({env['threads']} threads)"
    lines = [f"pyflashattn bench · {config.mode} · {where} · {config.dtype} · torch {env['torch']}",
             *busy_warning(env),
             f"ms: {'one call (memory mode)' if config.mode == 'memory' else 'median of timed calls'}"
             f"{', each a replay of one CUDA graph (no host time)' if config.cuda_graph else ''}"
             " · TFLOP/s: 4*b*h*s*s*d per forward (causal /2, bwd 2.5x, fwd+bwd 3.5x)",
             f"peak MiB: {memory_method(config.device)}",
             "rel err: ||x - ref64|| / ||ref64||, x = output (fwd) or worst of dq/dk/dv (bwd);"
             " ~ = on a smaller sampled shape",
             f"pfa speedup: this row's time / {REFERENCE}'s (above 1: {REFERENCE} is faster) · "
             f"* = {'least memory' if config.mode == 'memory' else 'fastest'} in its row"]
    sections: dict[tuple, list[Cell]] = {}
    for c in result.cells:
        if c.provider in shown:
            sections.setdefault((c.pass_, c.head_dim, c.causal), []).append(c)
    for (pass_, head_dim, causal), cells in sections.items():
        lines += ["", f"{PASS_NAMES[pass_]} · head dim {head_dim} · {'causal' if causal else 'not causal'}"]
        rows, last = [list(COLUMNS)], None
        for c in cells:
            rows.append(_row(c, c.seqlen != last))
            last = c.seqlen
        lines += _grid(rows)
    if config.mode == "memory":
        lines += ["", "where each provider runs out of memory:"] + [f"  {s}" for s in memory_summary(result.cells)]
    if result.notes:
        lines += ["", "notes:"] + [f"  {n}" for n in result.notes]
    return "\n".join(lines)


BUSY_LIMIT = 0.1


def busy_warning(env: dict) -> list[str]:
    """A line when other processes used a noticeable share of the CPUs during the run: CPU
    times (and on a GPU, launch overheads) then swing widely."""
    others = env.get("cpu_busy_by_others")
    if others is None or others < BUSY_LIMIT:
        return []
    return [f"warning: other processes used {others:.0%} of this machine's {env.get('cpu_count')} CPUs "
            "during the run; CPU-side times are unreliable"]


def memory_summary(cells: list[Cell]) -> list[str]:
    """Per (pass, head dim, causal, provider): the first seqlen that ran out of memory."""
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        if c.status in ("ok", "oom"):
            groups.setdefault((c.pass_, c.head_dim, c.causal, c.provider), []).append(c)
    out = []
    for (pass_, head_dim, causal, provider), group in groups.items():
        ran = [c.seqlen for c in group if c.status == "ok"]
        oom = [c.seqlen for c in group if c.status == "oom"]
        where = (f"out of memory at seqlen {min(oom)}" if oom else "never ran out") + \
                (f", largest that ran {max(ran)}" if ran else ", nothing ran")
        out.append(f"{provider:<15} {pass_} d={head_dim} {'causal' if causal else 'full'}: {where}")
    return out


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _command(*args: str) -> Optional[str]:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10,
                              cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    """Versions and hardware: what a reader needs to compare two runs."""
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        "pyflashattn": _version("pyflashattn"),
        "pyflashattn_commit": _command("git", "rev-parse", "--short", "HEAD"),
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "device": device,
        "gpu": None,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(gpu=props.name, gpu_capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(),
                   driver=_command("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"))
    return env


def to_json(result: SweepResult, config: SweepConfig, env: dict) -> dict:
    """Every number of the sweep, the settings that produced it and the environment."""
    cells = []
    for c in result.cells:
        d = dataclasses.asdict(c)
        d["pass"] = d.pop("pass_")
        cells.append(d)
    return {
        "schema": 1,
        "environment": env,
        "config": dataclasses.asdict(config),
        "methods": {"flops": FLOPS_RULE, "rel_err": ERROR_RULE, "memory": memory_method(config.device),
                    "speedup": "speedup[peer] = peer's time / this cell's time, same row"},
        "notes": result.notes,
        "cells": cells,
    }

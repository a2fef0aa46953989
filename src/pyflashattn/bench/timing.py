"""Median time and peak memory of one benchmark cell.

Every measurement takes ``fn`` (the timed work) and an optional ``setup`` run before each
call outside the timed region (clearing grads, the forward that a backward needs).

- CUDA: CUDA events around each call, after warm-up, with the L2 cache flushed before each
  call (as ``triton.testing.do_bench`` does); the median of the calls. Peak memory is
  ``torch.cuda.max_memory_allocated`` above what was allocated when ``fn`` started (inputs,
  and for a backward the saved forward state).
- CPU: ``time.perf_counter`` around each call, a few calls, the median. Peak memory is the
  process's peak resident set above its size when ``fn`` started (Linux: ``VmHWM`` after
  resetting it through ``/proc/self/clear_refs``), with freed heap first handed back to the
  OS (glibc ``malloc_trim``) so that reused memory shows too. Approximate: the resident set
  also moves with things other than ``fn``'s tensors. Elsewhere it is ``None`` (shown "-").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import re
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

Fn = Callable[[], object]

CUDA_MEMORY_METHOD = "torch.cuda.max_memory_allocated above what was allocated when the call started"
CPU_MEMORY_METHOD = "growth of the process's peak RSS during the call (Linux VmHWM after malloc_trim; approximate)"


@dataclass(frozen=True)
class TimingPlan:
    """How long to warm up and measure: calls are added until ``rep_ms`` is filled, within
    ``[min_reps, max_reps]``; warm-up calls until ``warmup_ms`` (at least one call)."""
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    min_reps: int = 5
    max_reps: int = 100


SINGLE_SHOT = TimingPlan(warmup_ms=0.0, rep_ms=0.0, min_reps=1, max_reps=1)


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def _cuda_times(fn: Fn, setup: Optional[Fn], n: int, flush_l2: bool = True) -> list[float]:
    flush = torch.empty(int(256e6 // 4), dtype=torch.int32, device="cuda") if flush_l2 else None
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for start, end in zip(starts, ends):
        if setup is not None:
            setup()
        if flush is not None:
            flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def _cpu_times(fn: Fn, setup: Optional[Fn], n: int, flush_l2: bool = True) -> list[float]:
    times = []
    for _ in range(n):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def median_ms(fn: Fn, setup: Optional[Fn] = None, device: str = "cpu", plan: TimingPlan = TimingPlan()) -> float:
    """Median milliseconds of ``fn()`` after warm-up; ``setup()`` runs untimed before each call.

    A single-shot plan times one call and allocates nothing for the L2 flush (memory mode
    runs near the limit)."""
    times_of = _cuda_times if _is_cuda(device) else _cpu_times
    if plan.max_reps <= 1:
        return times_of(fn, setup, 1, flush_l2=False)[0]
    estimate = times_of(fn, setup, 1)[0]  # the first warm-up call
    extra_warmup = min(plan.max_reps, int(plan.warmup_ms / max(estimate, 1e-3))) - 1
    if extra_warmup > 0:
        estimate = statistics.median(times_of(fn, setup, extra_warmup))
    reps = max(plan.min_reps, min(plan.max_reps, int(plan.rep_ms / max(estimate, 1e-3))))
    return statistics.median(times_of(fn, setup, reps))


def cuda_graphed(fn: Fn, setup: Optional[Fn] = None) -> Fn:
    """``setup(); fn()`` captured once as a CUDA graph; returns its replay. Warmed up on a side
    stream first (torch's recipe: lazy initialisations and compiles must not happen during the
    capture). A replay writes the buffers the capture allocated, so a backward's gradients are
    overwritten, not accumulated, and nothing the replay does costs host time beyond the launch
    of the graph."""
    def step():
        if setup is not None:
            setup()
        fn()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"no {field} in /proc/self/status")
    return int(match.group(1)) * 1024


@functools.lru_cache(maxsize=None)
def _libc_malloc_trim() -> Optional[Callable[[int], int]]:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _malloc_trim() -> None:
    """Return the C heap's free pages to the OS (glibc only; elsewhere nothing happens)."""
    trim = _libc_malloc_trim()
    if trim is not None:
        trim(0)


def _cpu_peak_bytes(fn: Fn) -> Optional[int]:
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        base = _proc_status_bytes("VmRSS")
    except OSError:
        return None
    fn()
    return max(0, _proc_status_bytes("VmHWM") - base)


def peak_memory_bytes(fn: Fn, setup: Optional[Fn] = None, device: str = "cpu") -> Optional[int]:
    """Peak bytes that one ``fn()`` allocates above what was live when it started, or None
    where this machine cannot tell."""
    if setup is not None:
        setup()
    if not _is_cuda(device):
        return _cpu_peak_bytes(fn)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def cpu_snapshot() -> Optional[tuple[float, float, float]]:
    """(busy CPU-seconds of the whole machine, all CPU-seconds, this process's CPU-seconds), or
    None off Linux. Two snapshots tell how much of the machine other work used in between."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user .. steal
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    own = os.times()
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / hz, sum(ticks) / hz, own.user + own.system


def busy_by_others(before: Optional[tuple], after: Optional[tuple]) -> Optional[float]:
    """Fraction of all CPU time between two ``cpu_snapshot``s that other processes used."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    busy, total, own = (a - b for a, b in zip(after, before))
    return max(0.0, min(1.0, (busy - own) / total))


def memory_method(device: str) -> str:
    """One line saying what the memory column measures on ``device``."""
    return CUDA_MEMORY_METHOD if _is_cuda(device) else CPU_MEMORY_METHOD


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` means the device ran out of memory (CUDA or the CPU allocator)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def free_memory(device: str, collect: bool = False) -> None:
    """Give the allocator's cached blocks back between cells; ``collect`` also runs the
    garbage collector (slow: after an exception, whose traceback may hold tensors)."""
    if collect:
        gc.collect()
    if _is_cuda(device) and torch.cuda.is_available():
        torch.cuda.empty_cache()

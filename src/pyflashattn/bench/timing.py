"""Median time and peak memory of one benchmark cell.

Every measurement takes ``fn`` (the timed work) and an optional ``setup`` run before each
call outside the timed region (clearing grads, the forward that a backward needs).

- CUDA: CUDA events around each call, after warm-up, with the L2 cache flushed before each
  call (as ``triton.testing.do_bench`` does); the median of the calls. Peak memory is
  ``torch.cuda.max_memory_allocated`` above what was allocated when ``fn`` started (inputs,
  and for a backward the saved forward state).
- CPU: ``time.perf_counter`` around each call, a few calls, the median. Peak memory is the
  process's peak resident set above its size when ``fn`` started (Linux: ``VmHWM`` after
  resetting it through ``/proc/self/clear_refs``). It is a lower bound: memory the allocator
  kept from earlier cells and reuses does not show. Elsewhere it is ``None`` (shown "-").
"""
from __future__ import annotations

import gc
import re
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

Fn = Callable[[], object]

CUDA_MEMORY_METHOD = "torch.cuda.max_memory_allocated above the allocation at the start of the call"
CPU_MEMORY_METHOD = "process peak RSS above its size at the start of the call (Linux VmHWM; a lower bound)"


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


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"no {field} in /proc/self/status")
    return int(match.group(1)) * 1024


def _cpu_peak_bytes(fn: Fn) -> Optional[int]:
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


def memory_method(device: str) -> str:
    """One line saying what the memory column measures on ``device``."""
    return CUDA_MEMORY_METHOD if _is_cuda(device) else CPU_MEMORY_METHOD


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` means the device ran out of memory (CUDA or the CPU allocator)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def free_memory(device: str) -> None:
    """Give back what the last cell left behind (between cells, and after an OOM)."""
    gc.collect()
    if _is_cuda(device) and torch.cuda.is_available():
        torch.cuda.empty_cache()

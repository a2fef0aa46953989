"""Run a sweep: every (shape, provider, pass) cell timed, its memory measured, its output
checked against the float64 reference, and the best of each row marked.

A cell ends in one of four states: ``ok``; ``oom`` (the device ran out of memory; the sweep
frees memory and goes on, and in memory mode the provider is not tried at longer sequences);
``skip`` (the provider cannot run it here: a one-line note says why); ``error`` (anything
else: shown, and the CLI exits non-zero).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

import torch
from torch import Tensor

from ..reference import attention_ref
from .config import Shape, SweepConfig
from .flops import attention_flops, tflops
from .providers import Provider, make_provider, skip_reason
from .timing import SINGLE_SHOT, cuda_graphed, free_memory, is_oom, median_ms, peak_memory_bytes

# Correctness is checked on the real shape up to this many score elements (b * h * sq * sk);
# above it on a sampled one: batch 1, one kv head and its query group, shorter sequences.
CHECK_MAX_SCORES = 1 << 24
SEED = 0


@dataclass
class Cell:
    """One measurement; every number the report and the JSON show."""
    provider: str
    pass_: str
    seqlen: int
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    causal: bool
    dtype: str
    status: str = "ok"
    time_ms: Optional[float] = None
    flops: int = 0
    tflops: Optional[float] = None
    peak_mem_bytes: Optional[int] = None
    rel_err: Optional[float] = None
    err_shape: Optional[dict] = None     # set when the error was measured on a sampled shape
    note: str = ""
    best: bool = False
    speedup: dict[str, float] = field(default_factory=dict)  # peer -> peer time / this time

    def row_key(self) -> tuple:
        return (self.pass_, self.head_dim, self.causal, self.seqlen)


class Progress(Protocol):
    """What the sweep reports to: ``start(total)`` once, ``step(label)`` before each cell."""
    def start(self, total: int) -> None: ...
    def step(self, label: str) -> None: ...
    def close(self) -> None: ...


class _Silent:
    def start(self, total: int) -> None:
        pass

    def step(self, label: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class SweepResult:
    cells: list[Cell]
    notes: list[str]

    @property
    def errors(self) -> list[Cell]:
        return [c for c in self.cells if c.status == "error"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:240]


def _make_inputs(shape: Shape, provider: Provider, config: SweepConfig, requires_grad: bool):
    """q, k, v and the output gradient, in the provider's layout, from a fixed seed."""
    gen = torch.Generator(device=config.device).manual_seed(SEED)
    dims = {"bshd": lambda h, d: (shape.batch, shape.seqlen, h, d),
            "bhsd": lambda h, d: (shape.batch, h, shape.seqlen, d)}[provider.layout]

    def rand(h: int) -> Tensor:
        return torch.randn(dims(h, shape.head_dim), generator=gen, device=config.device, dtype=config.torch_dtype)

    q, k, v = rand(shape.heads), rand(shape.kv_heads), rand(shape.kv_heads)
    grad = rand(shape.heads)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)], grad


def _pass_fns(forward, inputs: list[Tensor], grad: Tensor, pass_: str):
    """(fn, setup) for one pass: setup runs untimed before each timed fn call."""
    def clear_grads():
        for t in inputs:
            t.grad = None

    if pass_ == "fwd":
        return forward, None
    if pass_ == "fwdbwd":
        return (lambda: forward().backward(grad)), clear_grads
    state: dict[str, Tensor] = {}

    def setup():  # the forward a backward needs, outside the timed region
        clear_grads()
        state["out"] = forward()

    return (lambda: state.pop("out").backward(grad)), setup


def _fail(cell: Cell, exc: BaseException, caught: list) -> None:
    """Turn an exception into the cell's state: oom, skip (with the reason) or error."""
    cell.time_ms = cell.tflops = cell.peak_mem_bytes = None
    reason = skip_reason(exc, caught)
    if is_oom(exc):
        cell.status, cell.note = "oom", _first_line(exc)
    elif reason is not None:
        cell.status, cell.note = "skip", reason
    else:
        cell.status, cell.note = "error", _first_line(exc)


def run_guarded(cell, fn: Callable, setup: Optional[Callable], inputs, device: str, measure: Callable) -> None:
    """Warm up (the first call compiles, and shows whether this can run here), then
    ``measure()``; any failure becomes the cell's state (``_fail``). Used by every bench mode."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if setup is not None:
                setup()
            fn()
        measure()
    except Exception as exc:  # noqa: BLE001 - every failure becomes a cell state
        _fail(cell, exc, caught)
    finally:
        for t in inputs:
            t.grad = None
    if cell.status != "ok":
        free_memory(device, collect=True)


def _measure(cell: Cell, provider: Provider, forward, inputs, grad, config: SweepConfig) -> None:
    fn, setup = _pass_fns(forward, inputs, grad, cell.pass_)
    if config.cuda_graph and cell.pass_ == "bwd":
        cell.status, cell.note = "skip", "--cuda-graph times fwd and fwdbwd (a graph of the backward alone " \
                                         "would need the forward's graph kept beside it)"
        return

    def measure():
        if config.cuda_graph:   # memory from the eager call: a replay allocates nothing
            cell.peak_mem_bytes = peak_memory_bytes(fn, setup, config.device)
            cell.time_ms = median_ms(cuda_graphed(fn, setup), None, config.device, config.plan)
        elif config.mode == "memory":
            cell.peak_mem_bytes = peak_memory_bytes(fn, setup, config.device)
            cell.time_ms = median_ms(fn, setup, config.device, SINGLE_SHOT)
        else:
            cell.time_ms = median_ms(fn, setup, config.device, config.plan)
            cell.peak_mem_bytes = peak_memory_bytes(fn, setup, config.device)
        cell.tflops = tflops(cell.flops, cell.time_ms)
    run_guarded(cell, fn, setup, inputs, config.device, measure)


def sampled_shape(shape: Shape) -> Shape:
    """The shape the correctness check runs on: the shape itself when small enough."""
    if shape.score_elements() <= CHECK_MAX_SCORES:
        return shape
    group = shape.heads // shape.kv_heads
    seqlen = shape.seqlen
    while group * seqlen * seqlen > CHECK_MAX_SCORES and seqlen > 128:
        seqlen = max(128, seqlen // 2)
    return dataclasses.replace(shape, batch=1, heads=group, kv_heads=1, seqlen=seqlen)


class _Reference:
    """float64 output and gradients for one (sampled) shape, shared by every provider."""

    def __init__(self, shape: Shape, config: SweepConfig):
        gen = torch.Generator(device=config.device).manual_seed(SEED + 1)

        def rand(h: int) -> Tensor:
            return torch.randn(shape.batch, shape.seqlen, h, shape.head_dim, generator=gen,
                               device=config.device, dtype=config.torch_dtype)

        self.shape = shape
        self.q, self.k, self.v, self.grad = rand(shape.heads), rand(shape.kv_heads), rand(shape.kv_heads), rand(shape.heads)
        q64, k64, v64 = (t.double().requires_grad_() for t in (self.q, self.k, self.v))
        out, _ = attention_ref(q64, k64, v64, causal=shape.causal)
        self.out = out.detach()
        self.grads = [g.detach() for g in torch.autograd.grad(out, (q64, k64, v64), self.grad.double())]


def _rel_err(x: Tensor, ref: Tensor) -> float:
    """Norm-wise relative error ||x - ref|| / ||ref||."""
    return float((x.double() - ref).norm() / ref.norm().clamp_min(1e-300))


def check_provider(provider: Provider, ref: _Reference, with_grads: bool) -> tuple[Optional[float], Optional[float]]:
    """Relative error of the output and (max over dq, dk, dv) of the gradients against float64."""
    inputs = [provider.from_bshd(t).requires_grad_(with_grads) for t in (ref.q, ref.k, ref.v)]
    with provider.context():
        out = provider.bind(*inputs, ref.shape.causal)()
        out_err = _rel_err(provider.to_bshd(out.detach()), ref.out)
        if not with_grads:
            return out_err, None
        out.backward(provider.from_bshd(ref.grad))
    grad_err = max(_rel_err(provider.to_bshd(t.grad), g) for t, g in zip(inputs, ref.grads))
    return out_err, grad_err


def _new_cell(provider: Provider, shape: Shape, config: SweepConfig, pass_: str) -> Cell:
    return Cell(provider.name, pass_, shape.seqlen, shape.batch, shape.heads, shape.kv_heads, shape.head_dim,
                shape.causal, config.dtype, flops=attention_flops(shape.batch, shape.heads, shape.seqlen,
                                                                  shape.seqlen, shape.head_dim, shape.causal, pass_))


def _run_provider(provider: Provider, shape: Shape, config: SweepConfig, cells: list[Cell],
                  oom_at: dict, get_ref: Callable[[], _Reference], progress: Progress) -> None:
    no_bwd = provider.backward_unavailable(config.device)
    needs_grad = no_bwd is None and any(p != "fwd" for p in config.passes)
    done = [_new_cell(provider, shape, config, pass_) for pass_ in config.passes]
    cells.extend(done)
    inputs, grad, forward = [], None, None
    try:  # inputs and untimed preparation (a block mask) can run out of memory too
        inputs, grad = _make_inputs(shape, provider, config, needs_grad)
        forward = provider.bind(*inputs, shape.causal)
    except Exception as exc:  # noqa: BLE001
        for cell in done:
            _fail(cell, exc, [])
    with provider.context():
        for cell in done:
            progress.step(f"{cell.pass_} d={shape.head_dim} {'causal' if shape.causal else 'full'} "
                          f"s={shape.seqlen} {provider.name}")
            earlier_oom = oom_at.get((provider.name, cell.pass_))
            if forward is None:
                pass  # preparation failed: the state is set
            elif cell.pass_ != "fwd" and no_bwd is not None:
                cell.status, cell.note = "skip", no_bwd
            elif earlier_oom is not None:
                cell.status, cell.note = "oom", f"not run: out of memory already at seqlen {earlier_oom}"
            else:
                _measure(cell, provider, forward, inputs, grad, config)
            if cell.status == "oom" and config.mode == "memory" and earlier_oom is None:
                oom_at[(provider.name, cell.pass_)] = shape.seqlen
    del inputs, grad, forward
    if config.check and any(c.status == "ok" for c in done):
        _check_cells(provider, done, get_ref, needs_grad, config)
    free_memory(config.device, collect=any(c.status != "ok" for c in done))


def _check_cells(provider: Provider, done: list[Cell], get_ref, needs_grad: bool, config: SweepConfig) -> None:
    try:
        ref = get_ref()
        out_err, grad_err = check_provider(provider, ref, with_grads=needs_grad)
    except Exception as exc:  # noqa: BLE001 - a failed check is reported, not fatal
        for c in done:
            c.note = (c.note + "; " if c.note else "") + f"check failed: {_first_line(exc)}"
        free_memory(config.device, collect=True)
        return
    sampled = None if ref.shape == _shape_of(done[0]) else dataclasses.asdict(ref.shape)
    for c in done:
        if c.status != "ok":
            continue
        errs = {"fwd": [out_err], "bwd": [grad_err], "fwdbwd": [out_err, grad_err]}[c.pass_]
        errs = [e for e in errs if e is not None]
        c.rel_err, c.err_shape = (max(errs) if errs else None), sampled


def _shape_of(cell: Cell) -> Shape:
    return Shape(cell.batch, cell.seqlen, cell.heads, cell.kv_heads, cell.head_dim, cell.causal)


def mark_best(cells: list[Cell], mode: str) -> None:
    """Per row (pass, head dim, causal, seqlen): the fastest ok cell (memory mode: the least
    memory, ties by time) is ``best``, and each cell gets peer time / its time per peer."""
    rows: dict[tuple, list[Cell]] = {}
    for c in cells:
        if c.status == "ok" and c.time_ms:
            rows.setdefault(c.row_key(), []).append(c)
    for row in rows.values():
        if mode == "memory" and all(c.peak_mem_bytes is not None for c in row):
            min(row, key=lambda c: (c.peak_mem_bytes, c.time_ms)).best = True
        else:
            min(row, key=lambda c: c.time_ms).best = True
        for c in row:
            c.speedup = {p.provider: p.time_ms / c.time_ms for p in row if p is not c}


def run_sweep(config: SweepConfig, progress: Optional[Progress] = None) -> SweepResult:
    """Run every cell of ``config``, reporting to ``progress`` (silent by default)."""
    progress = progress or _Silent()
    notes: list[str] = []
    providers: list[Provider] = []
    for name in config.providers:
        provider = make_provider(name)
        reason = provider.unavailable(config.device, config.torch_dtype)
        if reason is not None:
            notes.append(f"{name}: skipped ({reason})")
            continue
        note = provider.setup_note()
        notes.extend([note] if note else [])
        providers.append(provider)
    cells: list[Cell] = []
    oom_at: dict = {}
    shapes = config.shapes()
    progress.start(len(shapes) * len(providers) * len(config.passes))
    for shape in shapes:
        refs: dict[str, _Reference] = {}

        def get_ref(shape=shape, refs=refs) -> _Reference:
            if "ref" not in refs:
                refs["ref"] = _Reference(sampled_shape(shape), config)
            return refs["ref"]

        for provider in providers:
            _run_provider(provider, shape, config, cells, oom_at, get_ref, progress)
        refs.clear()
    progress.close()
    mark_best(cells, config.mode)
    return SweepResult(cells, notes + _cell_notes(cells))


def _cell_notes(cells: list[Cell]) -> list[str]:
    """One line per distinct (provider, state, reason) of skipped and failed cells, with how
    many cells it covers (OOM shows in the table and the memory summary instead)."""
    counts: dict[tuple[str, str, str], int] = {}
    for c in cells:
        if c.status in ("skip", "error") or "check failed" in c.note:
            key = (c.provider, c.status if c.status != "ok" else "check", c.note)
            counts[key] = counts.get(key, 0) + 1
    return [f"{p}: {status} in {n} cell{'s' if n > 1 else ''} ({note})" for (p, status, note), n in counts.items()]

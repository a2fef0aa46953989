"""Sparse mode (``pyflashattn bench --mode sparse``): block-sparse attention against dense
attention and against FlexAttention on the same mask.

For each head dim, seqlen and mask, three things are timed for each pass (forward,
forward+backward): pyflashattn dense (``flash_attn_func``, not causal: the baseline that computes
every block), pyflashattn block-sparse (``block_sparse_attn_func`` with a ``BlockMask`` from
``pyflashattn.block_mask.create_block_mask``) and FlexAttention (``torch.compile(flex_attention)``
with a block mask that torch's ``create_block_mask`` builds from the same ``mask_mod``). Masks with a
size knob are set to about 10 % density:

- ``sliding``: causal, window seqlen / 10;
- ``local_global``: symmetric local band of seqlen / 20 plus 128 global tokens (fewer below 8k);
- ``document``: 10 documents of equal length, causal inside each;
- ``butterfly``: the FlashAttention paper's butterfly over blocks (no knob: 1 + log2(blocks) per row);
- ``causal``: plain causal (about 50 %).

The dense cell does not depend on the mask, so it is timed once per (seqlen, pass) and shared by
the rows. The correctness column is the block-sparse output's (and for forward+backward, the
worst of dq/dk/dv's) relative error against a float64 dense attention masked with
``block_mask.to_dense()``, on one head; above ``CHECK_MAX_SCORES`` score elements it is skipped ("-").
Timing, skip/OOM/error states and notes are the speed mode's (``sweep``, ``timing``).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from .. import block_sparse_attn_func, flash_attn_func
from ..block_mask import (butterfly_mask, causal_mask, create_block_mask, document_mask, local_global_mask,
                          sliding_window_mask)
from .config import Shape, SweepConfig
from .providers import Flex
from .sweep import (CHECK_MAX_SCORES, SEED, Progress, SweepResult, _cell_notes, _fail, _first_line, _pass_fns,
                    _Silent, run_guarded)
from .timing import free_memory, median_ms

VARIANTS = ("dense", "sparse", "flex")
DESCRIPTIONS = {
    "dense": "pyflashattn.flash_attn_func(causal=False): every block (the baseline)",
    "sparse": "pyflashattn.block_sparse_attn_func with a pyflashattn BlockMask",
    "flex": "torch.compile(flex_attention, dynamic=False) with torch's BlockMask of the same mask_mod",
}
MASK_RULES = {
    "sliding": "causal sliding window, window = seqlen/10",
    "local_global": "local band |q-k| <= seqlen/20 plus min(128, seqlen/64) global tokens",
    "document": "10 documents of equal length, causal inside",
    "butterfly": "butterfly over blocks (FlashAttention paper), all stages",
    "causal": "causal",
}
ERROR_RULE = ("||x - ref|| / ||ref|| of the block-sparse result against float64 dense attention masked with "
              "block_mask.to_dense(), on one head (x = output for fwd, worst of output and dq/dk/dv for fwdbwd); "
              f"not checked above {CHECK_MAX_SCORES} score elements")


@dataclass
class SparseCell:
    """One measurement of sparse mode. ``mask`` is None for the dense baseline."""
    provider: str            # dense, sparse or flex
    mask: Optional[str]
    pass_: str
    seqlen: int
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    block_size: int
    density: Optional[float] = None       # of the pyflashattn BlockMask (visited blocks / all)
    status: str = "ok"
    time_ms: Optional[float] = None
    rel_err: Optional[float] = None
    err_shape: Optional[dict] = None
    mask_build_s: Optional[float] = None  # building the block mask (untimed in time_ms)
    note: str = ""
    speedup: dict[str, float] = field(default_factory=dict)  # sparse only: peer -> peer time / sparse time
    tflops: Optional[float] = None         # unused; kept so sweep._fail applies
    peak_mem_bytes: Optional[int] = None   # unused; kept so sweep._fail applies


def mask_mod_for(name: str, seqlen: int, device: str, block_size: int):
    """The ``mask_mod`` of mask ``name`` at ``seqlen`` (about 10 % density where it has a knob)."""
    if name == "sliding":
        return sliding_window_mask(max(1, seqlen // 10), seqlen, seqlen)
    if name == "local_global":
        return local_global_mask(max(1, seqlen // 20), min(128, max(1, seqlen // 64)))
    if name == "document":
        ids = (torch.arange(seqlen, device=device) * 10) // seqlen
        return document_mask(ids, causal=True)
    if name == "butterfly":
        return butterfly_mask(None, block=block_size)
    if name == "causal":
        return causal_mask(seqlen, seqlen)
    raise KeyError(f"unknown mask {name!r}; known: {', '.join(MASK_RULES)}")


def _rand(shape: Shape, heads: int, gen: torch.Generator, config: SweepConfig) -> Tensor:
    return torch.randn(shape.batch, shape.seqlen, heads, shape.head_dim, generator=gen, device=config.device,
                       dtype=config.torch_dtype)


def _bhsd(t: Tensor, requires_grad: bool) -> Tensor:
    return t.detach().transpose(1, 2).contiguous().requires_grad_(requires_grad)


def _measure(cell: SparseCell, forward, inputs: list[Tensor], grad: Tensor, config: SweepConfig) -> None:
    fn, setup = _pass_fns(forward, inputs, grad, cell.pass_)

    def measure():
        cell.time_ms = median_ms(fn, setup, config.device, config.plan)
    run_guarded(cell, fn, setup, inputs, config.device, measure)


def _masked_ref_err(shape: Shape, block_mask, config: SweepConfig, with_grads: bool):
    """(output error, gradient error or None, the checked shape) of block-sparse attention on one head."""
    sample = dataclasses.replace(shape, batch=1, heads=1, kv_heads=1)
    gen = torch.Generator(device=config.device).manual_seed(SEED + 1)
    q, k, v, g = (_rand(sample, 1, gen, config) for _ in range(4))
    dense = block_mask.to_dense()[0, 0]                                       # [s, s] bool
    q64, k64, v64 = (t.double().requires_grad_(with_grads) for t in (q, k, v))
    scores = torch.einsum("bqhd,bkhd->bhqk", q64, k64) * shape.head_dim ** -0.5
    scores = scores.masked_fill(~dense, torch.finfo(torch.float64).min)
    probs = torch.where(dense.any(-1, keepdim=True), torch.softmax(scores, -1), 0.0)
    ref = torch.einsum("bhqk,bkhd->bqhd", probs, v64)
    leaves = [t.detach().requires_grad_(with_grads) for t in (q, k, v)]
    out = block_sparse_attn_func(*leaves, block_mask)

    def err(x: Tensor, r: Tensor) -> float:
        return float((x.double() - r).norm() / r.norm().clamp_min(1e-300))

    out_err = err(out.detach(), ref.detach())
    if not with_grads:
        return out_err, None, sample
    refs = torch.autograd.grad(ref, (q64, k64, v64), g.double())
    out.backward(g)
    return out_err, max(err(t.grad, r) for t, r in zip(leaves, refs)), sample


def _new(config: SweepConfig, shape: Shape, provider: str, mask: Optional[str], pass_: str) -> SparseCell:
    return SparseCell(provider, mask, pass_, shape.seqlen, shape.batch, shape.heads, shape.kv_heads,
                      shape.head_dim, config.dtype, config.block_size)


def run_sparse(config: SweepConfig, progress: Optional[Progress] = None) -> SweepResult:
    """Run sparse mode: dense, block-sparse and FlexAttention for every (head dim, seqlen, mask, pass)."""
    progress = progress or _Silent()
    notes: list[str] = []
    flex: Optional[Flex] = None
    if "flex" in config.providers:
        flex = Flex()
        reason = flex.unavailable(config.device, config.torch_dtype)
        if reason is not None:
            notes.append(f"flex: skipped ({reason})")
            flex = None
        else:
            note = flex.setup_note()
            notes.extend([note] if note else [])
            Flex.compiled()
    variants = 2 + (flex is not None)
    cells: list[SparseCell] = []
    progress.start(len(config.head_dims) * len(config.seqlens) * len(config.passes) * (1 + (variants - 1) * len(config.masks)))
    needs_grad = any(p != "fwd" for p in config.passes)
    for head_dim in config.head_dims:
        for seqlen in config.seqlens:
            shape = config.shape(seqlen, head_dim, False)
            try:
                _run_seqlen(config, shape, flex, needs_grad, cells, progress)
            finally:
                free_memory(config.device, collect=True)
    progress.close()
    _speedups(cells)
    return SweepResult(cells, notes + _cell_notes(cells))  # type: ignore[arg-type]


def _run_seqlen(config: SweepConfig, shape: Shape, flex: Optional[Flex], needs_grad: bool,
                cells: list[SparseCell], progress: Progress) -> None:
    label = f"d={shape.head_dim} s={shape.seqlen}"
    inputs: list[Tensor] = []
    grad = None
    dense_cells = [_new(config, shape, "dense", None, p) for p in config.passes]
    cells.extend(dense_cells)
    try:
        gen = torch.Generator(device=config.device).manual_seed(SEED)
        q, k, v = (_rand(shape, h, gen, config) for h in (shape.heads, shape.kv_heads, shape.kv_heads))
        grad = _rand(shape, shape.heads, gen, config)
        inputs = [t.requires_grad_(needs_grad) for t in (q, k, v)]
    except Exception as exc:  # noqa: BLE001
        for c in dense_cells:
            _fail(c, exc, [])
    for c in dense_cells:
        progress.step(f"{c.pass_} {label} dense")
        if inputs:
            _measure(c, lambda: flash_attn_func(*inputs, causal=False), inputs, grad, config)
    for mask in config.masks:
        _run_mask(config, shape, mask, inputs, grad, flex, needs_grad, cells, progress)


def _run_mask(config: SweepConfig, shape: Shape, mask: str, inputs: list[Tensor], grad: Optional[Tensor],
              flex: Optional[Flex], needs_grad: bool, cells: list[SparseCell], progress: Progress) -> None:
    label = f"d={shape.head_dim} s={shape.seqlen} {mask}"
    sparse_cells = [_new(config, shape, "sparse", mask, p) for p in config.passes]
    flex_cells = [_new(config, shape, "flex", mask, p) for p in config.passes] if flex is not None else []
    cells.extend(sparse_cells + flex_cells)
    block_mask, mod = None, None
    try:
        if not inputs:
            raise RuntimeError("inputs could not be built (see the dense cells)")
        mod = mask_mod_for(mask, shape.seqlen, config.device, config.block_size)
        start = time.perf_counter()
        block_mask = create_block_mask(mod, None, None, shape.seqlen, shape.seqlen, block_size=config.block_size,
                                       device=config.device)
        build_s = time.perf_counter() - start
        density = block_mask.density()
        for c in sparse_cells + flex_cells:
            c.density = density
        for c in sparse_cells:
            c.mask_build_s = build_s
    except Exception as exc:  # noqa: BLE001
        for c in sparse_cells + flex_cells:
            _fail(c, exc, [])
    for c in sparse_cells:
        progress.step(f"{c.pass_} {label} sparse")
        if block_mask is not None:
            _measure(c, lambda: block_sparse_attn_func(*inputs, block_mask), inputs, grad, config)
    if block_mask is not None and config.check and any(c.status == "ok" for c in sparse_cells):
        _check(config, shape, block_mask, sparse_cells, needs_grad)
    if flex is not None:
        _run_flex(config, shape, mod if block_mask is not None else None, inputs, grad, flex, flex_cells,
                  progress, label)
    del block_mask


def _check(config: SweepConfig, shape: Shape, block_mask, sparse_cells: list[SparseCell], needs_grad: bool) -> None:
    if shape.seqlen * shape.seqlen > CHECK_MAX_SCORES:
        return  # too big for a dense float64 reference: shown "-"
    try:
        out_err, grad_err, sample = _masked_ref_err(shape, block_mask, config, needs_grad)
    except Exception as exc:  # noqa: BLE001 - a failed check is reported, not fatal
        for c in sparse_cells:
            c.note = (c.note + "; " if c.note else "") + f"check failed: {_first_line(exc)}"
        free_memory(config.device, collect=True)
        return
    sampled = None if sample == shape else dataclasses.asdict(sample)
    for c in sparse_cells:
        if c.status == "ok":
            errs = [out_err] + ([grad_err] if c.pass_ != "fwd" and grad_err is not None else [])
            c.rel_err, c.err_shape = max(errs), sampled


def _run_flex(config: SweepConfig, shape: Shape, mod: Optional[Callable], inputs: list[Tensor],
              grad: Optional[Tensor], flex: Flex, flex_cells: list[SparseCell], progress: Progress, label: str) -> None:
    from torch.nn.attention.flex_attention import create_block_mask as flex_block_mask
    no_bwd = flex.backward_unavailable(config.device)
    flex_grad = no_bwd is None and any(c.pass_ != "fwd" for c in flex_cells)
    forward, leaves, grad_t = None, [], None
    if mod is not None:
        try:
            leaves = [_bhsd(t, flex_grad) for t in inputs]
            grad_t = _bhsd(grad, False)
            fm = flex_block_mask(mod, None, None, shape.seqlen, shape.seqlen, device=config.device,
                                 BLOCK_SIZE=config.block_size)
            gqa = {"enable_gqa": True} if shape.heads != shape.kv_heads else {}
            compiled = Flex.compiled()
            forward = lambda: compiled(*leaves, block_mask=fm, **gqa)  # noqa: E731
        except Exception as exc:  # noqa: BLE001
            for c in flex_cells:
                _fail(c, exc, [])
    for c in flex_cells:
        progress.step(f"{c.pass_} {label} flex")
        if forward is None:
            continue
        if c.pass_ != "fwd" and no_bwd is not None:
            c.status, c.note = "skip", no_bwd
        else:
            _measure(c, forward, leaves, grad_t, config)


def _speedups(cells: list[SparseCell]) -> None:
    """Each ok sparse cell gets ``speedup[peer] = peer time / sparse time`` for dense and flex."""
    dense = {(c.pass_, c.head_dim, c.seqlen): c for c in cells if c.provider == "dense" and c.status == "ok"}
    flex = {(c.pass_, c.head_dim, c.seqlen, c.mask): c for c in cells if c.provider == "flex" and c.status == "ok"}
    for c in cells:
        if c.provider != "sparse" or c.status != "ok" or not c.time_ms:
            continue
        peers = {"dense": dense.get((c.pass_, c.head_dim, c.seqlen)),
                 "flex": flex.get((c.pass_, c.head_dim, c.seqlen, c.mask))}
        c.speedup = {name: p.time_ms / c.time_ms for name, p in peers.items() if p is not None and p.time_ms}


# --- report ---------------------------------------------------------------------------------

COLUMNS = ("seqlen", "b x h", "mask", "density", "dense ms", "sparse ms", "flex ms", "vs dense", "vs flex", "rel err")
PASS_NAMES = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward+backward"}


def _ms(c: Optional[SparseCell]) -> str:
    if c is None:
        return "-"
    if c.status != "ok":
        return {"oom": "OOM"}.get(c.status, c.status)
    x = c.time_ms
    return f"{x:.3f}" if x < 10 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def _ratio(c: Optional[SparseCell], peer: str) -> str:
    ratio = None if c is None else c.speedup.get(peer)
    return "-" if ratio is None else f"{ratio:.2f}x"


def _err(c: Optional[SparseCell]) -> str:
    if c is None or c.rel_err is None:
        return "-"
    return f"{c.rel_err:.1e}" + ("~" if c.err_shape is not None else "")


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    left = {1, 2}
    return ["  ".join(cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def format_sparse_table(result: SweepResult, config: SweepConfig, env: dict) -> str:
    """The terminal report: a header, one section per (pass, head dim), one row per (seqlen, mask), the notes."""
    from .report import busy_warning
    where = env.get("gpu") or f"cpu ({env['threads']} threads)"
    lines = [f"pyflashattn bench · sparse · {where} · {config.dtype} · torch {env['torch']} · "
             f"block {config.block_size}x{config.block_size}",
             *busy_warning(env),
             "ms: median of timed calls · dense: flash_attn_func(causal=False), every block · sparse: "
             "block_sparse_attn_func · flex: torch.compile(flex_attention), same mask_mod",
             "density: visited blocks / all blocks of the BlockMask · vs dense = dense ms / sparse ms, "
             "vs flex = flex ms / sparse ms (above 1: block-sparse is faster)",
             "rel err: block-sparse vs float64 dense attention masked with block_mask.to_dense(), one head (~: fewer heads than timed);"
             " fwdbwd: worst of output and dq/dk/dv; - = too big to check",
             "masks: " + "; ".join(f"{m}: {MASK_RULES[m]}" for m in config.masks)]
    cells = result.cells
    by_key = {(c.provider, c.pass_, c.head_dim, c.seqlen, c.mask): c for c in cells}
    for pass_ in config.passes:
        for head_dim in config.head_dims:
            lines += ["", f"{PASS_NAMES[pass_]} · head dim {head_dim}"]
            rows, last = [list(COLUMNS)], None
            for seqlen in config.seqlens:
                dense = by_key.get(("dense", pass_, head_dim, seqlen, None))
                for mask in config.masks:
                    sparse = by_key.get(("sparse", pass_, head_dim, seqlen, mask))
                    flex = by_key.get(("flex", pass_, head_dim, seqlen, mask))
                    first = seqlen != last
                    heads = "" if sparse is None else f"{sparse.batch}x{sparse.heads}" + (
                        f"/{sparse.kv_heads}kv" if sparse.kv_heads != sparse.heads else "")
                    density = None if sparse is None else sparse.density
                    rows.append([str(seqlen) if first else "", heads if first else "", mask,
                                 "-" if density is None else f"{density:.1%}", _ms(dense), _ms(sparse), _ms(flex),
                                 _ratio(sparse, "dense"), _ratio(sparse, "flex"), _err(sparse)])
                    last = seqlen
            lines += _grid(rows)
    if result.notes:
        lines += ["", "notes:"] + [f"  {n}" for n in result.notes]
    return "\n".join(lines)


def sparse_to_json(result: SweepResult, config: SweepConfig, env: dict) -> dict:
    """Every number of a sparse-mode run, the settings that produced it and the environment."""
    cells = []
    for c in result.cells:
        d = dataclasses.asdict(c)
        d["pass"] = d.pop("pass_")
        for unused in ("tflops", "peak_mem_bytes"):
            d.pop(unused)
        cells.append(d)
    return {
        "schema": 1,
        "environment": env,
        "config": dataclasses.asdict(config),
        "methods": {"providers": DESCRIPTIONS, "masks": {m: MASK_RULES[m] for m in config.masks},
                    "density": "visited (partial + full) blocks / all blocks of the pyflashattn BlockMask",
                    "rel_err": ERROR_RULE,
                    "speedup": "on sparse cells: speedup[peer] = peer's time / sparse time, same pass, seqlen, "
                               "mask (dense has no mask)"},
        "notes": result.notes,
        "cells": cells,
    }

#!/usr/bin/env python
"""Ring attention (context parallelism) with ``pyflashattn.distributed``: one sequence split
across the ranks of a process group, exact attention, autograd.

    torchrun --nproc-per-node 2 examples/ring_attention.py                    # check vs one device
    torchrun --nproc-per-node 2 examples/ring_attention.py --bench            # 32k, 128k, 512k tokens
    torchrun --nproc-per-node 2 examples/ring_attention.py --bench --seqlen 131072 --no-peer
    torchrun --nproc-per-node 2 examples/ring_attention.py --low-memory       # the low-memory schedule
    torchrun --nproc-per-node 2 examples/ring_attention.py --max-seqlen --mem-cap-gib 6
    python examples/ring_attention.py                                         # one rank, no torchrun

Backend: NCCL when CUDA is available (rank i on GPU ``LOCAL_RANK``), gloo on CPU otherwise
(small default sizes there). NVLink multicast is left off (``NCCL_NVLS_ENABLE=0``,
``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``, set here unless already set).

Check (default): the full q, k, v (same seed on every rank) are sharded with ``shard_sequence``,
run through ``ring_flash_attn_func`` forward and backward, gathered, and compared with
``flash_attn_func`` on the whole sequence on one device: the ring's error against a reference
(float64 dense where small, else our fp32 kernel) must stay within 2x (output) / 3x (gradients)
of single-device attention's own error in the same dtype, plus a floor. Exit status 1 if not.

Bench (``--bench``): batch 1, 16 heads, d 128, bf16, causal, forward + backward, per total
sequence length:
  single   ``flash_attn_func`` on the whole sequence on one device (every rank runs it at once
           on its own device; the slowest counts);
  ring     ``ring_flash_attn_func`` on the shards (slowest rank, median of the iterations);
  scaling efficiency = single / (world_size x ring);
  overlap  the ring's compute alone (``LoopbackComm``: the same blocks, no data moved) and its
           communication alone (the same exchanges, no compute): hidden = (compute + comm - ring)
           / comm, the share of the communication that the overlap hides;
  peer     torch's ``context_parallel`` (torch.distributed.tensor.experimental, ring SDPA over a
           device mesh) with SDPA's cuDNN and flash backends, when it can be imported and run;
  peak     ``torch.cuda.max_memory_allocated`` per rank (inputs included), and per token the
           rank holds (the whole sequence for one device, its shard for the rings).
A feature that is missing (no context_parallel, an SDPA backend unavailable) gives a note, not
a crash. ``--low-memory``: the ring runs ``low_memory=True`` (2 ranks; the compute-only and
comm-only runs, which model the default ring, are left out).

Longest sequence (``--max-seqlen``): the longest causal sequence (b=1, 16 heads, d 128, bf16 by
default) whose forward + backward fits under ``--mem-cap-gib`` per GPU
(``torch.cuda.set_per_process_memory_fraction``): one GPU with ``flash_attn_func`` over the
whole sequence (every rank at once, on its own GPU), then with 2 ranks the low-memory ring,
then the default ring (last: a rank that runs out of memory in the middle of its transfers can
leave the other waiting; the low-memory schedule allocates its buffers before any transfer, the
default ring does not, and a hang ends at the process group's timeout, ``--timeout``). Lengths
double from ``--search-start``, then bisect, on multiples of 4096 tokens; every rank catches
its out-of-memory error and the ranks agree (all-reduce) before the next length. Each trial is
printed as it ends, the summary at the end: longest length, ratio to one GPU, and peak memory
per token at that length.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import socket
import statistics
import sys
import time
from datetime import timedelta

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")                 # NVLink multicast stays off
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from pyflashattn import flash_attn_func  # noqa: E402
from pyflashattn.distributed import (  # noqa: E402
    LoopbackComm,
    RingComm,
    RingFlashAttnFunc,
    gather_sequence,
    ring_flash_attn_func,
    shard_sequence,
)
from pyflashattn.reference import attention_ref  # noqa: E402
from pyflashattn.testing import max_err  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def log(*args):
    if dist.get_rank() == 0:
        print(*args, flush=True)


def setup(timeout_s: float | None = None) -> torch.device:
    """Join the process group torchrun describes (or a group of one without torchrun)."""
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    timeout = {} if timeout_s is None else dict(timeout=timedelta(seconds=timeout_s))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device, **timeout)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", **timeout)
    return device


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# Check


def check(args, device) -> bool:
    world = dist.get_world_size()
    dtype = DTYPES[args.dtype]
    seqlen = args.seqlen[0]
    gen = torch.Generator().manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=gen).to(device=device, dtype=dtype)  # noqa: E731
    q, k, v = (rand(args.batch, seqlen, h, args.dim) for h in (args.heads, args.heads_k, args.heads_k))
    dout = rand(args.batch, seqlen, args.heads, args.dim)
    log(f"check: {world} rank(s), {device.type}, {args.dtype}, layout {args.layout}, causal {args.causal}, "
        f"q {tuple(q.shape)} k/v {tuple(k.shape)}, local shard {seqlen // world} tokens"
        + (", low_memory" if args.low_memory else ""))

    lq, lk, lv = (shard_sequence(t, layout=args.layout).detach().requires_grad_() for t in (q, k, v))
    sync(device)
    t0 = time.perf_counter()
    out = ring_flash_attn_func(lq, lk, lv, causal=args.causal, layout=args.layout, low_memory=args.low_memory,
                               chunks=args.chunks)
    out.backward(shard_sequence(dout, layout=args.layout))
    sync(device)
    log(f"ring forward + backward: {(time.perf_counter() - t0) * 1e3:.1f} ms (first call, includes warm-up)")
    ring = dict(out=out, dq=lq.grad, dk=lk.grad, dv=lv.grad)
    ring = {name: gather_sequence(t, layout=args.layout) for name, t in ring.items()}

    def run(fn, *inputs):
        inputs = [t.detach().clone().requires_grad_() for t in inputs]
        o = fn(*inputs)
        o.backward(dout.to(o.dtype))
        return dict(out=o, dq=inputs[0].grad, dk=inputs[1].grad, dv=inputs[2].grad)

    single = run(lambda *t: flash_attn_func(*t, causal=args.causal), q, k, v)
    small = args.batch * args.heads * seqlen * seqlen <= 1 << 26
    if small:
        ref_name = "float64 dense"
        ref = run(lambda *t: attention_ref(*t, causal=args.causal)[0], q.double(), k.double(), v.double())
    else:
        ref_name = "flash_attn_func fp32"
        ref = run(lambda *t: flash_attn_func(*t, causal=args.causal), q.float(), k.float(), v.float())
    floor = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-3}[dtype]
    ok = True
    log(f"max |error| against {ref_name}:")
    for name in ring:
        e_ring, e_single = max_err(ring[name], ref[name]), max_err(single[name], ref[name])
        factor = 2.0 if name == "out" else 3.0
        good = e_ring <= factor * e_single + floor
        ok &= good
        log(f"  {name:3s}  ring {e_ring:.3e}   one device {e_single:.3e}   ring vs one device "
            f"{max_err(ring[name], single[name]):.3e}   {'ok' if good else 'FAIL'}")
    log("PASS" if ok else "FAIL")
    return ok


# ----------------------------------------------------------------------------------------------
# Bench


def timed(fn, device, iters: int, warmup: int) -> float:
    """Median over ``iters`` calls of the slowest rank's wall time, in ms (after a barrier)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync(device)
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        sync(device)
        t = torch.tensor([time.perf_counter() - t0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        times.append(t.item() * 1e3)
    return statistics.median(times)


def peak_gib(device):
    if device.type != "cuda":
        return None
    t = torch.tensor([torch.cuda.max_memory_allocated(device) / 2**30], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _agree(ok: bool, device) -> bool:
    """True when every rank says ok (so that all ranks take the same branch)."""
    t = torch.tensor([0.0 if ok else 1.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item() == 0.0


def measure(name, make, device, args, results: dict, tokens: int):
    """``make()`` allocates the inputs and returns the fwd+bwd callable (with an optional
    ``close``). Building it and its first call are guarded on every rank, so a missing feature or
    an out-of-memory becomes a note. (A rank that fails in the middle of a ring while the others
    wait on it still stops the run: NCCL has no way to cancel the peers' receives.) ``tokens``:
    how many tokens a rank holds, for the peak memory per token."""
    reset_peak(device)
    fn, note = None, None
    try:
        fn = make()
        fn()
    except Exception as e:  # noqa: BLE001 - reported, not raised: the other measurements go on
        note = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    try:
        if not _agree(note is None, device):
            results[name] = dict(note=note or "failed on another rank")
            return
        results[name] = dict(ms=timed(fn, device, args.iters, max(args.warmup - 1, 0)), peak_gib=peak_gib(device))
        if results[name]["peak_gib"] is not None:
            results[name]["peak_kb_per_token"] = results[name]["peak_gib"] * 2**30 / 1024 / tokens
    finally:
        if getattr(fn, "close", None) is not None:
            fn.close()
        fn = None
        if device.type == "cuda":
            torch.cuda.empty_cache()


def bench_one(seqlen: int, args, device) -> dict:
    world, dtype = dist.get_world_size(), DTYPES[args.dtype]
    b, h, hk, d = args.batch, args.heads, args.heads_k, args.dim
    local = seqlen // world
    res: dict = dict(seqlen=seqlen, world_size=world, local_tokens=local, batch=b, heads=h, heads_k=hk, dim=d,
                     dtype=args.dtype, causal=True, layout=args.layout, low_memory=args.low_memory)

    def inputs(n, heads_first=False):
        shape_q, shape_kv = ((b, h, n, d), (b, hk, n, d)) if heads_first else ((b, n, h, d), (b, n, hk, d))
        q = torch.randn(shape_q, device=device, dtype=dtype, requires_grad=True)
        k = torch.randn(shape_kv, device=device, dtype=dtype, requires_grad=True)
        v = torch.randn(shape_kv, device=device, dtype=dtype, requires_grad=True)
        return q, k, v, torch.randn_like(q)

    def fwd_bwd(attn, q, k, v, dout):
        def fn():
            for t in (q, k, v):
                t.grad = None
            attn(q, k, v).backward(dout)
        return fn

    if not args.no_single:
        def single():
            q, k, v, dout = inputs(seqlen)
            return fwd_bwd(lambda *t: flash_attn_func(*t, causal=True), q, k, v, dout)
        measure("single", single, device, args, res, seqlen)

    options = dict(causal=True, layout=args.layout, low_memory=args.low_memory, chunks=args.chunks)

    def ring():
        q, k, v, dout = inputs(local)
        ring_flash_attn_func(q, k, v, **options)  # checks the shards once
        return fwd_bwd(lambda *t: ring_flash_attn_func(*t, check_shards=False, **options), q, k, v, dout)
    measure("ring", ring, device, args, res, local)

    if world > 1 and not args.low_memory:
        def compute_only():
            q, k, v, dout = inputs(local)
            comm, scale = LoopbackComm(), 1.0 / math.sqrt(d)
            return fwd_bwd(lambda *t: RingFlashAttnFunc.apply(*t, scale, -1, 0, args.layout, comm)[0], q, k, v, dout)
        measure("ring_compute_only", compute_only, device, args, res, local)

        def comm_only():
            k = torch.randn(b, local, hk, d, device=device, dtype=dtype)
            dk = torch.zeros(b, local, hk, d, device=device, dtype=torch.float32)
            comm = RingComm()

            def fn():  # the ring's exchanges in its order: forward k/v; backward k/v and dk/dv
                for step in range(world - 1):
                    comm.wait(comm.exchange((k, k))[1])
                for step in range(world):
                    reqs = comm.exchange((k, k))[1] if step < world - 1 else []
                    comm.wait(comm.exchange((dk, dk), tag=2)[1])
                    comm.wait(reqs)
            return fn
        measure("ring_comm_only", comm_only, device, args, res, local)

    if args.peer and device.type == "cuda" and hk == h:
        for backend in ("cudnn", "flash"):
            measure(f"torch_cp_{backend}", lambda: torch_context_parallel(backend, seqlen, inputs, args), device, args,
                    res, local)
    elif args.peer:
        res["torch_cp"] = dict(note="torch context_parallel peer needs CUDA and heads_k == heads")

    ms = lambda key: res.get(key, {}).get("ms")  # noqa: E731
    if ms("single") and ms("ring"):
        res["scaling_efficiency"] = ms("single") / (world * ms("ring"))
    if ms("ring") and ms("ring_compute_only") and ms("ring_comm_only"):
        hidden = (ms("ring_compute_only") + ms("ring_comm_only") - ms("ring")) / ms("ring_comm_only")
        res["comm_hidden"] = min(max(hidden, 0.0), 1.0)
    return res


def torch_context_parallel(backend: str, seqlen: int, inputs, args):
    """The peer: torch's context_parallel (ring SDPA over a 1-d device mesh, its default load
    balancer and rotate method) with SDPA forced to ``backend``. Returns the fwd+bwd callable;
    its ``close`` leaves the context (and frees the full-length buffers)."""
    from contextlib import ExitStack

    import torch.nn.functional as F
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.experimental import context_parallel
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mesh = init_device_mesh("cuda", (dist.get_world_size(),))
    q, k, v, dout = (t.detach() for t in inputs(seqlen, heads_first=True))  # full buffers, sharded in place
    stack = ExitStack()
    try:
        stack.enter_context(sdpa_kernel({"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]))
        stack.enter_context(context_parallel(mesh, buffers=[q, k, v, dout], buffer_seq_dims=[2, 2, 2, 2],
                                             no_restore_buffers={q, k, v, dout}))
    except Exception:
        stack.close()
        raise
    q, k, v = (t.requires_grad_() for t in (q, k, v))

    def fn():
        for t in (q, k, v):
            t.grad = None
        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(dout)
    fn.close = stack.close
    return fn


def fmt(res: dict) -> str:
    def cell(key):
        r = res.get(key)
        if r is None:
            return f"{key} -"
        if "note" in r:
            return f"{key} n/a ({r['note']})"
        peak = (f", peak {r['peak_gib']:.1f} GiB = {r['peak_kb_per_token']:.1f} KB/token"
                if r.get("peak_gib") is not None else "")
        return f"{key} {r['ms']:.2f} ms{peak}"
    ring = "ring(low_memory)" if res.get("low_memory") else "ring"
    parts = [f"n={res['seqlen']:>8} ({res['world_size']} x {res['local_tokens']})", cell("single"),
             cell("ring").replace("ring", ring, 1)]
    if "scaling_efficiency" in res:
        parts.append(f"scaling efficiency {res['scaling_efficiency']:.2f}")
    for key in ("ring_compute_only", "ring_comm_only"):
        if key in res:
            parts.append(cell(key))
    if "comm_hidden" in res:
        parts.append(f"comm hidden {res['comm_hidden']:.0%}")
    for key in ("torch_cp_cudnn", "torch_cp_flash", "torch_cp"):
        if key in res:
            parts.append(cell(key))
    return " | ".join(parts)


def bench(args, device):
    world = dist.get_world_size()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    log(f"# ring attention bench: {world} x {name}, backend {dist.get_backend()}, torch {torch.__version__}, "
        f"b={args.batch} h={args.heads} hk={args.heads_k} d={args.dim} {args.dtype} causal, fwd+bwd, "
        f"layout {args.layout}{', low_memory' if args.low_memory else ''}, median of {args.iters} after "
        f"{args.warmup} warm-up; peak per token: per token a rank holds")
    launcher = f"torchrun --nproc-per-node {world}" if "LOCAL_WORLD_SIZE" in os.environ else "python"
    log(f"# command: {launcher} {' '.join(sys.argv)}")
    results = []
    for seqlen in args.seqlen:
        res = bench_one(seqlen, args, device)
        results.append(res)
        log(fmt(res))
    if args.json and dist.get_rank() == 0:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        log(f"# wrote {args.json}")


# ----------------------------------------------------------------------------------------------
# Longest trainable sequence under a memory cap


SEARCH_STEP = 4096  # lengths tried are multiples of this (zigzag over 2 ranks needs 4)


def _oom(fn) -> tuple:
    """``(fn(), False)``, or ``(None, True)`` when it runs out of memory (the device synchronized)."""
    try:
        result = fn()
        torch.cuda.synchronize()
        return result, False
    except torch.cuda.OutOfMemoryError:
        return None, True


def _fits(trial, n: int, device) -> tuple[bool, int]:
    """Whether ``trial(n)`` (allocate the inputs, run the forward, return ``(out, dout)``) and
    then the backward fit on every rank, and the largest peak bytes over the ranks. The ranks
    agree after the forward and after the backward, so that none starts the backward's
    transfers while another has given up."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    graph, failed = _oom(lambda: trial(n))
    ok = _agree(not failed, device)
    if ok:
        _, failed = _oom(lambda: graph[0].backward(graph[1]))
        ok = _agree(not failed, device)
    graph = None
    gc.collect()  # an error's traceback held the trial's tensors
    torch.cuda.empty_cache()
    peak = torch.tensor([float(torch.cuda.max_memory_allocated(device))], device=device)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    return ok, int(peak.item())


def _longest(name: str, trial, tokens_per_rank, device, args) -> dict:
    """Double from ``--search-start`` until a length fails, then bisect on multiples of
    SEARCH_STEP. Returns the longest length that fits, with its peak per rank."""
    ok_n, ok_peak, bad_n = 0, None, None
    n = args.search_start
    t_start = time.perf_counter()

    def attempt(n):
        t0 = time.perf_counter()
        ok, peak = _fits(trial, n, device)
        log(f"  {name:28s} n={n:>8}  {'fits' if ok else 'OOM ':4s}  peak {peak / 2**30:6.2f} GiB = "
            f"{peak / 1024 / tokens_per_rank(n):5.1f} KB per token held  ({time.perf_counter() - t0:.1f} s)")
        return ok, peak

    while bad_n is None:
        ok, peak = attempt(n)
        if ok:
            ok_n, ok_peak, n = n, peak, 2 * n
        else:
            bad_n = n
    while bad_n - ok_n > SEARCH_STEP:
        mid = (ok_n + bad_n) // 2 // SEARCH_STEP * SEARCH_STEP
        ok, peak = attempt(mid)
        if ok:
            ok_n, ok_peak = mid, peak
        else:
            bad_n = mid
    res = dict(name=name, longest=ok_n, first_oom=bad_n, seconds=time.perf_counter() - t_start)
    if ok_n:
        res.update(peak_gib=ok_peak / 2**30, peak_kb_per_token=ok_peak / 1024 / tokens_per_rank(ok_n))
    return res


def max_seqlen(args, device) -> bool:
    world, dtype = dist.get_world_size(), DTYPES[args.dtype]
    if device.type != "cuda":
        log("--max-seqlen needs CUDA GPUs (it measures against a GPU memory cap)")
        return False
    total = torch.cuda.get_device_properties(device).total_memory
    cap = args.mem_cap_gib * 2**30
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), device)
    b, h, hk, d = args.batch, args.heads, args.heads_k, args.dim
    log(f"# longest causal sequence that trains (forward + backward): {world} x {torch.cuda.get_device_name(device)}, "
        f"cap {args.mem_cap_gib:g} GiB per GPU (fraction {cap / total:.4f} of {total / 2**30:.1f} GiB), "
        f"b={b} h={h} hk={hk} d={d} {args.dtype}, layout {args.layout}, torch {torch.__version__}")

    def inputs(n):
        q = torch.randn(b, n, h, d, device=device, dtype=dtype, requires_grad=True)
        k = torch.randn(b, n, hk, d, device=device, dtype=dtype, requires_grad=True)
        v = torch.randn(b, n, hk, d, device=device, dtype=dtype, requires_grad=True)
        return q, k, v, torch.randn_like(q)

    def single(n):  # every trial: the inputs and the forward; (out, dout) for the backward
        q, k, v, dout = inputs(n)
        return flash_attn_func(q, k, v, causal=True), dout

    def ring(low_memory):
        def trial(n):
            q, k, v, dout = inputs(n // world)
            return ring_flash_attn_func(q, k, v, causal=True, layout=args.layout, check_shards=False,
                                        low_memory=low_memory, chunks=args.chunks), dout
        return trial

    searches = [("one GPU (flash_attn_func)", single, lambda n: n)]
    if world == 2:  # the low-memory schedule before the default ring: see the module docstring
        searches += [("ring low_memory, 2 GPUs", ring(True), lambda n: n // world),
                     ("ring, 2 GPUs", ring(False), lambda n: n // world)]
    elif world > 2:
        searches += [(f"ring, {world} GPUs", ring(False), lambda n: n // world)]
    results = []
    for name, trial, per_rank in searches:
        results.append(_longest(name, trial, per_rank, device, args))
        summary(results, args)
    if args.json and dist.get_rank() == 0:
        with open(args.json, "w") as f:
            json.dump(dict(cap_gib=args.mem_cap_gib, batch=b, heads=h, heads_k=hk, dim=d, dtype=args.dtype,
                           layout=args.layout, searches=results), f, indent=1)
        log(f"# wrote {args.json}")
    return True


def summary(results: list, args) -> None:
    base = results[0]["longest"]
    log(f"# summary so far (cap {args.mem_cap_gib:g} GiB per GPU):")
    for r in results:
        ratio = f"{r['longest'] / base:.2f}x one GPU" if base else "-"
        peak = (f"peak {r['peak_gib']:.2f} GiB = {r['peak_kb_per_token']:.1f} KB per token held"
                if "peak_gib" in r else "nothing fits")
        log(f"#   {r['name']:28s} longest {r['longest']:>8} tokens  {ratio:15s} {peak}  "
            f"(first OOM at {r['first_oom']}, search {r['seconds']:.0f} s)")


def main():
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", action="store_true", help="time fwd+bwd: one device vs the ring (and the peer)")
    p.add_argument("--seqlen", type=int, nargs="+", default=None,
                   help="total tokens (check: the first; default GPU 65536 check, 32768 131072 524288 bench; CPU 96 / 2048)")
    p.add_argument("--layout", choices=("zigzag", "contiguous"), default="zigzag")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=16 if cuda else 4)
    p.add_argument("--heads-k", type=int, default=None, help="k/v heads (GQA); default = --heads")
    p.add_argument("--dim", type=int, default=128 if cuda else 16)
    p.add_argument("--dtype", choices=tuple(DTYPES), default="bf16" if cuda else "fp32")
    p.add_argument("--no-causal", dest="causal", action="store_false", help="check mode: full attention")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-single", action="store_true", help="bench: skip the one-device baseline")
    p.add_argument("--no-peer", dest="peer", action="store_false", help="bench: skip torch's context_parallel")
    p.add_argument("--json", default=None, help="bench / --max-seqlen: write the results here (rank 0)")
    p.add_argument("--low-memory", action="store_true",
                   help="check and bench: the ring with low_memory=True (exactly 2 ranks)")
    p.add_argument("--chunks", type=int, default=None, help="low_memory's chunks per shard (default: adaptive)")
    p.add_argument("--max-seqlen", action="store_true",
                   help="find the longest causal sequence whose forward + backward fits under --mem-cap-gib: "
                        "one GPU, the low-memory ring and the ring")
    p.add_argument("--mem-cap-gib", type=float, default=6.0, help="--max-seqlen: memory cap per GPU")
    p.add_argument("--search-start", type=int, default=16384, help="--max-seqlen: first length tried (then doubled)")
    p.add_argument("--timeout", type=float, default=None,
                   help="process group timeout in seconds (default: torch's; --max-seqlen: 60)")
    args = p.parse_args()
    args.heads_k = args.heads_k or args.heads
    if args.seqlen is None:
        args.seqlen = ([32768, 131072, 524288] if args.bench else [65536]) if cuda else ([2048] if args.bench else [96])
    if args.max_seqlen and args.search_start % SEARCH_STEP:
        p.error(f"--search-start must be a multiple of {SEARCH_STEP}")
    device = setup(args.timeout if args.timeout is not None or not args.max_seqlen else 60.0)
    try:
        if args.max_seqlen:
            ok = max_seqlen(args, device)
        elif args.bench:
            bench(args, device)
            ok = True
        else:
            ok = check(args, device)
    finally:
        dist.destroy_process_group()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

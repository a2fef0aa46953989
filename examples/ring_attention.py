#!/usr/bin/env python
"""Ring attention (context parallelism) with ``pyflashattn.distributed``: one sequence split
across the ranks of a process group, exact attention, autograd.

    torchrun --nproc-per-node 2 examples/ring_attention.py                    # check vs one device
    torchrun --nproc-per-node 2 examples/ring_attention.py --bench            # 32k, 128k, 512k tokens
    torchrun --nproc-per-node 2 examples/ring_attention.py --bench --seqlen 131072 --no-peer
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
  peak     ``torch.cuda.max_memory_allocated`` per rank (inputs included).
A feature that is missing (no context_parallel, an SDPA backend unavailable) gives a note, not
a crash.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import sys
import time

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


def setup() -> torch.device:
    """Join the process group torchrun describes (or a group of one without torchrun)."""
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
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
        f"q {tuple(q.shape)} k/v {tuple(k.shape)}, local shard {seqlen // world} tokens")

    lq, lk, lv = (shard_sequence(t, layout=args.layout).detach().requires_grad_() for t in (q, k, v))
    sync(device)
    t0 = time.perf_counter()
    out = ring_flash_attn_func(lq, lk, lv, causal=args.causal, layout=args.layout)
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


def measure(name, make, device, args, results: dict):
    """``make()`` allocates the inputs and returns the fwd+bwd callable (with an optional
    ``close``). Building it and its first call are guarded on every rank, so a missing feature or
    an out-of-memory becomes a note. (A rank that fails in the middle of a ring while the others
    wait on it still stops the run: NCCL has no way to cancel the peers' receives.)"""
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
                     dtype=args.dtype, causal=True, layout=args.layout)

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
        measure("single", single, device, args, res)

    def ring():
        q, k, v, dout = inputs(local)
        ring_flash_attn_func(q, k, v, causal=True, layout=args.layout)  # checks the shards once
        return fwd_bwd(lambda *t: ring_flash_attn_func(*t, causal=True, layout=args.layout, check_shards=False),
                       q, k, v, dout)
    measure("ring", ring, device, args, res)

    if world > 1:
        def compute_only():
            q, k, v, dout = inputs(local)
            comm, scale = LoopbackComm(), 1.0 / math.sqrt(d)
            return fwd_bwd(lambda *t: RingFlashAttnFunc.apply(*t, scale, -1, 0, args.layout, comm)[0], q, k, v, dout)
        measure("ring_compute_only", compute_only, device, args, res)

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
        measure("ring_comm_only", comm_only, device, args, res)

    if args.peer and device.type == "cuda" and hk == h:
        for backend in ("cudnn", "flash"):
            measure(f"torch_cp_{backend}", lambda: torch_context_parallel(backend, seqlen, inputs, args), device, args, res)
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
        peak = f", peak {r['peak_gib']:.1f} GiB" if r.get("peak_gib") is not None else ""
        return f"{key} {r['ms']:.2f} ms{peak}"
    parts = [f"n={res['seqlen']:>8} ({res['world_size']} x {res['local_tokens']})", cell("single"), cell("ring")]
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
        f"layout {args.layout}, median of {args.iters} after {args.warmup} warm-up")
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
    p.add_argument("--json", default=None, help="bench: write the results here (rank 0)")
    args = p.parse_args()
    args.heads_k = args.heads_k or args.heads
    if args.seqlen is None:
        args.seqlen = ([32768, 131072, 524288] if args.bench else [65536]) if cuda else ([2048] if args.bench else [96])
    device = setup()
    try:
        if args.bench:
            bench(args, device)
            ok = True
        else:
            ok = check(args, device)
    finally:
        dist.destroy_process_group()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

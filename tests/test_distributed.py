"""Context parallelism (``pyflashattn.distributed``): the block plan against a dense mask, the
layout helpers, and the ring itself in 2 and 3 processes (gloo on CPU, spawned here): output,
lse and dq/dk/dv equal single-process attention over the whole sequence within fp32 rounding;
causal and not, sliding windows, both layouts, GQA, a subgroup; and the errors. The low-memory
schedule (2 processes): the same comparisons, and its peak memory per token (live tensors
counted with the attention calls stubbed out) against one device's.

Each world size is one spawn that runs every case (a spawn costs seconds, a case milliseconds);
the parametrized tests then read its results. With two or more GPUs, one NCCL run in bf16 at
2 x 32k tokens (the issue's GPU check).
"""
import math
import os
import socket
import sys
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

from pyflashattn import flash_attn_func
from pyflashattn.distributed import (
    _PairPlan,
    gather_sequence,
    layout_segments,
    plan_blocks,
    ring_flash_attn_func,
    shard_positions,
    shard_sequence,
    unshard_sequence,
)
from pyflashattn.reference import attention_ref, dense_mask
from pyflashattn.testing import max_err

LAYOUTS = ("zigzag", "contiguous")

# id -> (layout, causal, window_size, nheads, nheads_k, grad through lse)
CASES = {}
for _layout in LAYOUTS:
    for _causal in (False, True):
        for _hk in (4, 1):
            CASES[f"{_layout}-{'causal' if _causal else 'full'}-H4-HK{_hk}"] = (_layout, _causal, (-1, -1), 4, _hk, False)
    CASES[f"{_layout}-window5-0-H4-HK2"] = (_layout, False, (5, 0), 4, 2, False)
    CASES[f"{_layout}-window3-2-H2-HK2"] = (_layout, False, (3, 2), 2, 2, False)
    CASES[f"{_layout}-causal-H2-HK1-dlse"] = (_layout, True, (-1, -1), 2, 1, True)

# low_memory=True (world 2 only): id -> (layout, causal, window_size, nheads, nheads_k, grad through lse,
# batch, chunks); batch 1 receives dk/dv partials in place, batch 2 through staging buffers
LOW_MEMORY_CASES = {}
for _layout in LAYOUTS:
    for _causal in (False, True):
        LOW_MEMORY_CASES[f"lowmem-{_layout}-{'causal' if _causal else 'full'}-H4-HK4-B2-C3"] = (
            _layout, _causal, (-1, -1), 4, 4, False, 2, 3)
    LOW_MEMORY_CASES[f"lowmem-{_layout}-causal-H4-HK1-B1-C5"] = (_layout, True, (-1, -1), 4, 1, False, 1, 5)
    LOW_MEMORY_CASES[f"lowmem-{_layout}-window5-0-H4-HK2-B2-C4"] = (_layout, False, (5, 0), 4, 2, False, 2, 4)
    LOW_MEMORY_CASES[f"lowmem-{_layout}-window3-2-H2-HK2-B1-C12"] = (_layout, False, (3, 2), 2, 2, False, 1, 12)
LOW_MEMORY_CASES["lowmem-zigzag-causal-H2-HK1-dlse-B2-Cdefault"] = ("zigzag", True, (-1, -1), 2, 1, True, 2, None)
LOW_MEMORY_CASES["lowmem-contiguous-full-H2-HK2-dlse-B1-C2"] = ("contiguous", False, (-1, -1), 2, 2, True, 1, 2)

ERROR_CASES = ("shape", "dtype", "option", "odd-zigzag", "local")
BATCH, HEAD_DIM = 2, 16
# fp32: the ring's largest error against float64 stays within this factor of single-process
# attention's own (same rule as testing.check_close), plus a floor; and within ABS of it.
FACTOR, FLOOR, ABS = 2.0, 1e-5, 1e-5


def seqlen_for(world: int) -> int:
    return 12 * world  # divisible by 2 * world (zigzag): 24 for 2 ranks, 36 for 3


# ----------------------------------------------------------------------------------------------
# Without processes: the block plan and the layout helpers


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_plan_matches_dense_mask(world, layout):
    """Every block, with its window, against the global mask restricted to the local positions:
    each visible (query, key) pair is computed exactly once and nothing else is."""
    for seqlen in (2 * world, 6 * world, 10 * world):
        local = seqlen // world
        for window in [(-1, -1), (-1, 0), (0, 0), (1, 0), (3, 0), (2, 5), (7, 1), (0, 40), (40, -1)]:
            full = dense_mask(seqlen, seqlen, *window)
            for rank in range(world):
                q_segs = layout_segments(local, rank, world, layout)
                for src in range(world):
                    k_segs = layout_segments(local, src, world, layout)
                    want = full[shard_positions(seqlen, rank, world, layout)][:, shard_positions(seqlen, src, world, layout)]
                    got = torch.zeros(local, local, dtype=torch.int64)
                    for blk in plan_blocks(q_segs, k_segs, *window):
                        assert blk.window_left >= -1 and blk.window_right >= -1
                        got[blk.q_lo:blk.q_hi, blk.k_lo:blk.k_hi] += dense_mask(
                            blk.q_hi - blk.q_lo, blk.k_hi - blk.k_lo, blk.window_left, blk.window_right)
                    assert torch.equal(got, want.long()), (seqlen, window, rank, src)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_low_memory_plan_covers_the_mask(layout):
    """low_memory's per-chunk blocks (chunks crossing the zigzag's runs included) cover the
    remote part of the mask exactly once, and each rank's sends mirror the peer's receives."""
    for local in (2, 6, 12):
        seqlen = 2 * local
        for window in [(-1, -1), (-1, 0), (0, 0), (3, 0), (2, 5), (40, -1)]:
            full = dense_mask(seqlen, seqlen, *window)
            for chunks in (1, 3, 5, local):
                plans = [_PairPlan(local, r, layout, window, chunks) for r in range(2)]
                for rank, plan in enumerate(plans):
                    want = full[shard_positions(seqlen, rank, 2, layout)][:, shard_positions(seqlen, 1 - rank, 2, layout)]
                    for per_chunk in (plan.on_peer, plan.on_peer_pieces):  # backward, forward
                        got = torch.zeros(local, local, dtype=torch.int64)
                        for (lo, hi), blocks in zip(plan.chunks, per_chunk):
                            for blk in blocks:
                                got[blk.q_lo:blk.q_hi, lo + blk.k_lo:lo + blk.k_hi] += dense_mask(
                                    blk.q_hi - blk.q_lo, blk.k_hi - blk.k_lo, blk.window_left, blk.window_right)
                        assert torch.equal(got, want.long()), (local, window, chunks, rank)
                    assert all(blk.q_hi - blk.q_lo <= plan.max_rows for blocks in plan.on_peer_pieces for blk in blocks)
                    assert plan.peer_on_mine == [bool(b) for b in plans[1 - rank].on_peer]
                    assert [b for lo, hi in plan.chunks for b in range(lo, hi)] == list(range(local))


def test_plan_block_kinds():
    """Causal: future blocks are skipped, past ones run unmasked as one call, the diagonal masked."""
    z = lambda r: layout_segments(8, r, 2, "zigzag")  # noqa: E731
    assert [(b.q_lo, b.q_hi, b.k_lo, b.k_hi, b.window_left, b.window_right) for b in plan_blocks(z(0), z(0), -1, 0)] == [(0, 8, 0, 8, -1, 0)]
    assert [(b.q_lo, b.q_hi, b.k_lo, b.k_hi, b.full) for b in plan_blocks(z(0), z(1), -1, 0)] == [(4, 8, 0, 8, True)]
    assert [(b.q_lo, b.q_hi, b.k_lo, b.k_hi, b.full) for b in plan_blocks(z(1), z(0), -1, 0)] == [(0, 8, 0, 4, True)]
    c = lambda r: layout_segments(4, r, 2, "contiguous")  # noqa: E731
    assert plan_blocks(c(0), c(1), -1, 0) == []
    assert [b.full for b in plan_blocks(c(1), c(0), -1, 0)] == [True]
    assert [b.full for b in plan_blocks(c(0), c(1), -1, -1)] == [True]


@pytest.mark.parametrize("world", [2, 3, 4, 8])
def test_zigzag_balances_causal_work(world):
    """Under causal masking every rank computes the same number of pairs at every ring step."""
    local = 4 * world
    for step in range(world):
        work = set()
        for rank in range(world):
            blocks = plan_blocks(layout_segments(local, rank, world, "zigzag"),
                                 layout_segments(local, (rank - step) % world, world, "zigzag"), -1, 0)
            work.add(sum(int(dense_mask(b.q_hi - b.q_lo, b.k_hi - b.k_lo, b.window_left, b.window_right).sum())
                         for b in blocks))
        assert len(work) == 1, (step, work)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shard_unshard_roundtrip(layout):
    x = torch.arange(2 * 24 * 3).reshape(2, 24, 3)
    for world in (1, 2, 3, 4):
        shards = [shard_sequence(x, layout=layout, rank=r, world_size=world) for r in range(world)]
        assert all(s.shape == (2, 24 // world, 3) for s in shards)
        assert torch.equal(unshard_sequence(shards, layout), x)
        for r, s in enumerate(shards):
            assert torch.equal(s[0, :, 0] // 3, shard_positions(24, r, world, layout))
    if layout == "zigzag":
        assert shard_positions(8, 0, 2).tolist() == [0, 1, 6, 7]
        assert shard_positions(8, 1, 2).tolist() == [2, 3, 4, 5]


def test_shard_errors():
    x = torch.zeros(1, 10, 2, 4)
    with pytest.raises(ValueError, match=r"not divisible by 2 \* world_size = 6"):
        shard_sequence(x, rank=0, world_size=3)
    with pytest.raises(ValueError, match=r"not divisible by world_size = 4"):
        shard_sequence(x, layout="contiguous", rank=0, world_size=4)
    with pytest.raises(ValueError, match="layout must be one of"):
        shard_sequence(x, layout="striped", rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank must be in"):
        shard_sequence(x, rank=2, world_size=2)


def test_needs_process_group():
    assert not dist.is_initialized()
    q = torch.zeros(1, 8, 2, 16)
    for call in (lambda: ring_flash_attn_func(q, q, q), lambda: gather_sequence(q), lambda: shard_sequence(q)):
        with pytest.raises(RuntimeError, match="init_process_group"):
            call()


# ----------------------------------------------------------------------------------------------
# In processes: the workers (module-level so that spawn can import them)


def _poison_empty():
    """As conftest's fixture, in the worker: torch.empty comes back NaN-filled."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def fill(t):
        if t.is_floating_point() and t.numel():
            t.fill_(float("nan"))
        return t

    torch.empty = lambda *a, **kw: fill(real_empty(*a, **kw))
    torch.empty_like = lambda *a, **kw: fill(real_empty_like(*a, **kw))


def _full_inputs(case_id: str, seqlen: int, nheads: int, nheads_k: int, head_dim: int, dtype, device, batch=BATCH):
    """The whole sequence's q, k, v, dout, dlse: the same on every rank (seeded by the case)."""
    gen = torch.Generator().manual_seed(sum(map(ord, case_id)) * 7919 + seqlen)
    rand = lambda *s: torch.randn(*s, generator=gen).to(device=device, dtype=dtype)  # noqa: E731
    q, k, v = rand(batch, seqlen, nheads, head_dim), rand(batch, seqlen, nheads_k, head_dim), rand(batch, seqlen, nheads_k, head_dim)
    return q, k, v, rand(batch, seqlen, nheads, head_dim), rand(batch, nheads, seqlen).float()


def _run_case(case_id, layout, causal, window, nheads, nheads_k, lse_grad, group, seqlen,
              head_dim=HEAD_DIM, dtype=torch.float32, device="cpu", reference="float64", batch=BATCH,
              low_memory=False, chunks=None):
    """Ring vs single-process on the whole sequence. Returns {name: (ring err, single err, ring vs single)},
    errors measured against the reference (float64 dense, or our fp32 kernel on a GPU)."""
    q, k, v, dout, dlse = _full_inputs(case_id, seqlen, nheads, nheads_k, head_dim, dtype, device, batch)
    shard = lambda t, dim=1: shard_sequence(t, group, layout, dim).detach().contiguous()  # noqa: E731
    lq, lk, lv = (shard(t).requires_grad_() for t in (q, k, v))
    out, lse, _ = ring_flash_attn_func(lq, lk, lv, group=group, causal=causal, window_size=window,
                                       layout=layout, return_attn_probs=True, low_memory=low_memory, chunks=chunks)
    grads = (shard(dout), shard(dlse, 2)) if lse_grad else (shard(dout), None)
    torch.autograd.backward([out, lse] if lse_grad else [out], [g for g in grads if g is not None])
    gather = lambda t, dim=1: gather_sequence(t, group, layout, dim)  # noqa: E731
    ring = dict(out=gather(out), lse=gather(lse, 2), dq=gather(lq.grad), dk=gather(lk.grad), dv=gather(lv.grad))

    def run(fn, *inputs):
        inputs = [t.detach().clone().requires_grad_() for t in inputs]
        o, l = fn(*inputs)
        torch.autograd.backward([o, l] if lse_grad else [o], [dout.to(o.dtype), dlse.to(l.dtype)] if lse_grad else [dout.to(o.dtype)])
        return dict(out=o, lse=l, dq=inputs[0].grad, dk=inputs[1].grad, dv=inputs[2].grad)

    single = run(lambda *t: flash_attn_func(*t, causal=causal, window_size=window, return_attn_probs=True)[:2], q, k, v)
    if reference == "float64":
        ref = run(lambda *t: attention_ref(*t, causal=causal, window_size=window), q.double(), k.double(), v.double())
    else:  # our single-device kernel in fp32 (on the GPU: 3xTF32, fp32-level error)
        ref = run(lambda *t: flash_attn_func(*t, causal=causal, window_size=window, return_attn_probs=True)[:2],
                  q.float(), k.float(), v.float())
    return {name: (max_err(ring[name], ref[name]), max_err(single[name], ref[name]), max_err(ring[name], single[name]))
            for name in ring}


def _run_error(kind, rank, world, group=None):
    """Inputs that must fail on every rank with a clear message (and leave the group usable)."""
    seqlen = 6 if kind != "shape" else (6 if rank == 0 else 8)
    seqlen = 7 if kind == "odd-zigzag" else seqlen
    dtype = torch.bfloat16 if kind == "dtype" and rank == world - 1 else torch.float32
    q = torch.randn(1, seqlen, 2, 8, dtype=dtype)
    if kind == "local" and rank == 1:
        q = q[0]
    causal = kind == "option" and rank == 0
    try:
        ring_flash_attn_func(q, q, q, group=group, causal=causal, low_memory=kind == "low-memory")
    except (ValueError, TypeError, RuntimeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


class _LiveBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages alive at once, among those created under the mode."""

    def __init__(self):
        super().__init__()
        self.storages, self.peak = {}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes():
                st = t.untyped_storage()
                self.storages.setdefault((st.data_ptr(), st.nbytes()), (StorageWeakRef(st), st.nbytes()))
        self.storages = {key: (ref, n) for key, (ref, n) in self.storages.items() if not ref.expired()}
        self.peak = max(self.peak, sum(n for _, n in self.storages.values()))
        return out


def _memory_per_token(low_memory: bool, seqlen_local: int = 16384, heads: int = 2, head_dim: int = 64) -> float:
    """The ring's peak live memory over forward + backward (inputs, dout and gradients included),
    per local token, in units of one bf16 (token x heads x head_dim) tensor: one device holds 8
    (q, k, v, out, dout, dq, dk, dv). The attention calls are stand-ins that allocate their
    outputs and compute nothing (the kernels' own temporaries are per-row scalars)."""
    from pyflashattn import ops

    def fwd(q, k, v, *options):
        return torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype), torch.zeros(q.shape[0], q.shape[2], q.shape[1])

    saved = ops.attn_fwd, ops.attn_bwd, ops.attn_bwd_into
    ops.attn_fwd = fwd
    ops.attn_bwd = lambda dout, q, k, v, *options: (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
    ops.attn_bwd_into = lambda *args, **kwargs: None
    try:
        with _LiveBytes() as live:
            q, k, v, dout = (torch.zeros(1, seqlen_local, heads, head_dim, dtype=torch.bfloat16) for _ in range(4))
            q, k, v = (t.requires_grad_() for t in (q, k, v))
            ring_flash_attn_func(q, k, v, causal=True, low_memory=low_memory, chunks=16).backward(dout)
    finally:
        ops.attn_fwd, ops.attn_bwd, ops.attn_bwd_into = saved
    return live.peak / (seqlen_local * heads * head_dim * 2)


def _init(rank, world, port, backend):
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    if sys.platform.startswith("linux") and backend == "gloo":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))


def _cpu_worker(rank, world, port, out_dir):
    torch.set_num_threads(1)
    _poison_empty()
    _init(rank, world, port, "gloo")
    results = {}
    try:
        for kind in ERROR_CASES:
            results[("error", kind)] = _run_error(kind, rank, world)
        for case_id, args in CASES.items():
            results[case_id] = _run_case(case_id, *args, group=None, seqlen=seqlen_for(world))
        if world == 2:
            for case_id, (*args, batch, chunks) in LOW_MEMORY_CASES.items():
                results[case_id] = _run_case(case_id, *args, group=None, seqlen=seqlen_for(world), batch=batch,
                                             low_memory=True, chunks=chunks)
            results["memory"] = {low_memory: _memory_per_token(low_memory) for low_memory in (False, True)}
        else:
            results[("error", "low-memory")] = _run_error("low-memory", rank, world)
        if world == 3:  # a ring over a subgroup (ranks 1 and 2): group ranks != global ranks
            sub = dist.new_group([1, 2])
            if rank in (1, 2):
                results["subgroup"] = _run_case("subgroup", "zigzag", True, (-1, -1), 4, 2, False, group=sub, seqlen=16)
            dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


def _gpu_worker(rank, world, port, out_dir):
    _init(rank, world, port, "nccl")
    res = {}
    try:  # the ring at batch 2; low_memory at batch 2 (staged receives) and 1 (into dk/dv directly)
        for name, batch, low_memory in (("ring", BATCH, False), ("low_memory-B2", 2, True), ("low_memory-B1", 1, True)):
            res[name] = _run_case("gpu", "zigzag", True, (-1, -1), 16, 16, False, group=None,
                                  seqlen=world * 32768, head_dim=128, dtype=torch.bfloat16, device=f"cuda:{rank}",
                                  reference="fp32", batch=batch, low_memory=low_memory)
    finally:
        dist.destroy_process_group()
    torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(worker, world: int, out_dir, timeout: float = 240.0) -> list:
    """Run ``worker`` in ``world`` processes; every one is joined (or killed) before returning."""
    ctx = mp.start_processes(worker, args=(world, _free_port(), str(out_dir)), nprocs=world,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{world} ring processes did not finish within {timeout:.0f} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
            p.join()
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(world)]


@pytest.fixture(scope="module", params=[2, 3], ids=lambda w: f"W{w}")
def ring_results(request, tmp_path_factory):
    world = request.param
    return world, _spawn(_cpu_worker, world, tmp_path_factory.mktemp(f"ring{world}"))


def _assert_close(errors: dict, factor=FACTOR, floor=FLOOR, abs_tol=ABS):
    for name, (ring, single, between) in errors.items():
        assert ring <= factor * single + floor, f"{name}: ring error {ring:.2e} vs single-process {single:.2e}"
        assert between <= abs_tol, f"{name}: ring differs from single-process by {between:.2e}"


def _two_ranks(ring_results) -> list:
    world, results = ring_results
    if world != 2:
        pytest.skip("low_memory runs in the 2-process spawn")
    return results


@pytest.mark.parametrize("case_id", list(CASES) + list(LOW_MEMORY_CASES))
def test_ring_matches_single_process(ring_results, case_id):
    world, results = ring_results
    if case_id in LOW_MEMORY_CASES:
        results = _two_ranks(ring_results)
    for rank in range(world):  # every rank gathered the same full result
        assert results[rank][case_id] == results[0][case_id]
    _assert_close(results[0][case_id])


def test_ring_low_memory_peak(ring_results):
    """Issue 8: two ranks must train >= 1.9x one device's longest sequence, so a rank may hold at
    most 2 x 8 / 1.9 = 8.42 units per local token where one device holds 8 (q, k, v, out, dout,
    dq, dk, dv): low_memory holds 8, two chunks of partial dk/dv (16 chunks: 0.25) and lse
    (0.03 here). The ring: 22-23."""
    for rank, result in enumerate(_two_ranks(ring_results)):
        ring, low = result["memory"][False], result["memory"][True]
        assert low <= 8.4, f"rank {rank}: low_memory peaks at {low:.2f} units per local token (ring: {ring:.2f})"
        assert ring > 2 * low


def test_ring_low_memory_needs_two_ranks(ring_results):
    world, results = ring_results
    if world == 2:
        pytest.skip("the error needs a group of another size (the 3-process spawn)")
    for rank in range(world):
        message = results[rank][("error", "low-memory")]
        assert message is not None and message.startswith(
            "ValueError: low_memory=True needs a group of exactly 2 ranks, got a group of 3"), message


def test_ring_subgroup(ring_results):
    world, results = ring_results
    if world != 3:
        pytest.skip("the subgroup case runs in the 3-process spawn")
    _assert_close(results[1]["subgroup"])


ERROR_MESSAGES = {
    "shape": ["ValueError: ring_flash_attn_func: the q shape differs across the ranks"],
    "dtype": ["ValueError: ring_flash_attn_func: the dtype differs", "torch.bfloat16"],
    "option": ["ValueError: ring_flash_attn_func: the window (causal folded in) differs"],
    "odd-zigzag": ["ValueError: the zigzag layout needs an even local sequence length", "layout='contiguous'"],
}


@pytest.mark.parametrize("kind", ERROR_CASES)
def test_ring_errors(ring_results, kind):
    world, results = ring_results
    messages = [results[r][("error", kind)] for r in range(world)]
    assert all(m is not None for m in messages), messages
    if kind == "local":  # only rank 1 had bad input: it says why, the others name it
        assert messages[1].startswith("ValueError: q must have 4 dimensions")
        assert all("rank(s) [1] of the group rejected their input" in m for r, m in enumerate(messages) if r != 1)
        return
    for m in messages:
        for fragment in ERROR_MESSAGES[kind]:
            assert fragment in m, m


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (NCCL)")
def test_ring_nccl_bf16_2x32k(tmp_path):
    """The issue's GPU check: 2 ranks, bf16, causal zigzag, 2 x 32k tokens, 16 heads, d 128,
    against our single-GPU kernel in fp32, with single-GPU bf16 as the yardstick; the ring and
    the low-memory schedule."""
    results = _spawn(_gpu_worker, 2, tmp_path, timeout=600)
    for name, errors in results[0].items():
        print(name, {k: tuple(f"{e:.2e}" for e in errs) for k, errs in errors.items()})
        _assert_close(errors, factor=3.0, floor=1e-3, abs_tol=math.inf)

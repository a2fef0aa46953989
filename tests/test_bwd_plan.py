"""The backward plan (``kernels.bwd.BackwardPlan``, made by ``plan_bwd`` once per layout and kept
by ``ops._cached_plan``): it makes the launches the general path makes, argument for argument,
and declines what it was not made for. On the CPU the kernels are recording stand-ins
(``test_launch``'s); on an H200 the plan's gradients are checked bitwise against the general
path's."""
import json

import pytest
import torch

triton = pytest.importorskip("triton")
from pyflashattn.configs import _config  # noqa: E402
from pyflashattn.kernels import bwd, hopper, launch  # noqa: E402
from pyflashattn.kernels.launch import Launcher, LightDescriptor  # noqa: E402
from pyflashattn.ops import _params  # noqa: E402
from test_launch import _FakeDriver, _RecordingJIT  # noqa: E402

from conftest import HAS_CUDA  # noqa: E402


def record_launches(monkeypatch, module, names) -> list:
    """``module``'s Triton launchers ``names`` and every Gluon launcher (``hopper._launcher``)
    over recording stand-ins of their kernels, behind a fake driver; returns the log of what the
    C launcher was handed, in launch order (one shared list)."""
    monkeypatch.setattr(launch, "driver", _FakeDriver)
    monkeypatch.setattr(launch, "FAST_LAUNCH", True)
    log, gluon = [], {}

    def recording(kernel):
        fn = _RecordingJIT(getattr(kernel, "fn", kernel))
        fn.slow_calls, fn.kernel_runs = [], log
        return Launcher(fn)
    for name in names:
        monkeypatch.setattr(module, name, recording(getattr(module, name).fn))
    monkeypatch.setattr(hopper, "_launcher", lambda kernel: gluon.setdefault(id(kernel), recording(kernel)))
    return log


@pytest.fixture
def runs(monkeypatch):
    """Every launcher of the backward over a recording stand-in of its kernel (``record_launches``)."""
    return record_launches(monkeypatch, bwd, ("_launch_preprocess", "_launch_dkdv", "_launch_dq"))


def _inputs(d, sq=300, sk=500, h=4, hk=2):
    q = torch.randn(2, sq, h, d, dtype=torch.bfloat16)
    k, v = (torch.randn(2, sk, hk, d, dtype=torch.bfloat16) for _ in range(2))
    out, dout = torch.randn_like(q), torch.randn_like(q)
    lse = torch.randn(2, h, sq)
    return q, k, v, out, lse, dout


def _normal(log_entry, known: dict, layouts: bool = True):
    """One launch's arguments, tensors named by role (``known``: data_ptr -> name) or described;
    without ``layouts`` a tensor is its role and dtype only (what the C launcher reads of a
    pointer argument is its address)."""
    def norm(a):
        if isinstance(a, LightDescriptor):
            return ("desc", norm(a.base), tuple(a.shape), tuple(a.strides), tuple(a.block_shape), repr(a.layout))
        if isinstance(a, torch.Tensor):
            role = known.get(a.data_ptr(), "other")
            return (role, a.dtype, tuple(a.shape), a.stride()) if layouts else (role, a.dtype)
        return a
    grid = log_entry[:3]
    return grid, tuple(map(norm, log_entry[9:]))


@pytest.mark.parametrize("d,causal,kernel", [(64, True, "triton"), (96, False, "triton"), (128, True, "gluon"),
                                             (128, False, "gluon"), (128, False, "ws")])
def test_plan_launches_what_the_general_path_launches(runs, monkeypatch, d, causal, kernel):
    if kernel != "triton":  # the Gluon dK/dV on this CPU: its launch only, recorded
        usable = hopper.usable
        monkeypatch.setattr(hopper, "usable", lambda *a, **kw: usable(*a, **{**kw, "device_ok": True}))
    override = {"triton": {"hopper_dkdv_block_n": 0}, "gluon": {"hopper_dkdv_block_n": 64},
                "ws": {"hopper_dkdv_block_n": 64, "hopper_dkdv_ws_min_seqlen_k": 1}}[kernel]
    cfg = _config(d, d, torch.bfloat16, False, json.dumps(override))
    q, k, v, out, lse, dout = _inputs(d)
    p = _params(q, k, d ** -0.5, -1, 0 if causal else -1, 0.0, None, None, None, None, None, None)
    assert bwd.plan_bwd(q, k, v, out, lse, p, cfg) is None   # nothing launched yet: no kernel to bind
    bwd.attn_bwd(dout, q, k, v, out, lse, None, p, cfg)       # the first launches (Triton's path)
    runs.clear()
    general = bwd.attn_bwd(dout, q, k, v, out, lse, None, p, cfg)
    general_log = list(runs)
    runs.clear()
    plan = bwd.plan_bwd(q, k, v, out, lse, p, cfg)
    assert plan is not None
    planned = plan.run(dout, q, k, v, out, lse)
    planned_log = list(runs)
    assert len(general_log) == len(planned_log) == 3
    names = dict(dout=dout, q=q, k=k, v=v, out=out, lse=lse)
    for grads, log in ((general, general_log), (planned, planned_log)):
        known = {t.data_ptr(): n for n, t in names.items()}
        known.update({t.data_ptr(): n for n, t in zip(("dq", "dk", "dv"), grads)})
        log[:] = [_normal(entry, known) for entry in log]
    assert planned_log == general_log
    if kernel != "triton":  # the Gluon launch's descriptors were filled in too
        assert any(isinstance(a, tuple) and a[0] == "desc" and a[1][0] == "dout" for a in planned_log[1][1])
    for g, t in zip(planned, (q, k, v)):
        assert g.shape == t.shape and g.dtype == t.dtype and g.is_contiguous()
    # plans are cached beyond the call (ops._PLANS): none may keep a tensor alive
    held = [x for _, template, slots in plan.launches for x in (*template, *(s[2] for s in slots))]
    assert not any(isinstance(x, (torch.Tensor, LightDescriptor)) for x in held)
    assert all(s is None or not any(isinstance(f, torch.Tensor) for f in s) for _, _, slots in plan.launches
               for _, _, s in slots)


def test_plan_declines_what_it_was_not_made_for(runs):
    cfg = _config(64, 64, torch.bfloat16, False, "")
    q, k, v, out, lse, dout = _inputs(64)
    p = _params(q, k, 0.125, -1, 0, 0.0, None, None, None, None, None, None)
    bwd.attn_bwd(dout, q, k, v, out, lse, None, p, cfg)
    plan = bwd.plan_bwd(q, k, v, out, lse, p, cfg)
    assert plan is not None and plan.run(dout, q, k, v, out, lse) is not None
    # dout with another layout, dtype or alignment; an input that changed shape
    assert plan.run(dout.transpose(1, 2).contiguous().transpose(1, 2), q, k, v, out, lse) is None
    assert plan.run(dout.half(), q, k, v, out, lse) is None
    assert plan.run(torch.randn(dout.numel() + 1, dtype=dout.dtype)[1:].view(dout.shape), q, k, v, out, lse) is None
    assert plan.run(dout, q, k[:, :499], v, out, lse) is None
    # options the plan does not cover, and inputs that alias
    slopes = torch.rand(4)
    for other in (_params(q, k, 0.125, -1, 0, 0.0, slopes, None, None, None, None, None),
                  _params(q, k, 0.125, -1, 0, 0.0, None, None, None, None, None, None, 0.1, torch.zeros(1))):
        assert bwd.plan_bwd(q, k, v, out, lse, other, cfg) is None
    assert bwd.plan_bwd(q, q, q, out, lse, _params(q, q, 0.125, -1, 0, 0.0, None, None, None, None, None, None),
                        cfg) is None


def test_plans_are_kept_by_layout(runs, monkeypatch):
    """None until the general path has launched (and compiled) the kernels; then one plan per
    layout and options, the same object on every later backward."""
    from pyflashattn import ops
    monkeypatch.setattr(ops, "_PLANS", {})
    q, k, v, out, lse, dout = _inputs(64)
    opts = (0.125, -1, 0, 0.0)
    assert ops._cached_plan(q, k, v, out, lse, *opts) is None
    # the failed attempt is not repeated until a kernel has been compiled since
    tried = []
    monkeypatch.setattr(bwd, "plan_bwd", lambda *a, real=bwd.plan_bwd: tried.append(1) or real(*a))
    assert ops._cached_plan(q, k, v, out, lse, *opts) is None and not tried
    p = _params(q, k, 0.125, -1, 0, 0.0, None, None, None, None, None, None)
    bwd.attn_bwd(dout, q, k, v, out, lse, None, p, ops._config(q, v, p))
    plan = ops._cached_plan(q, k, v, out, lse, *opts)
    assert tried
    assert plan is not None and ops._cached_plan(q, k, v, out, lse, *opts) is plan
    # other tensors of the same layouts share it; another window or another layout does not
    assert ops._cached_plan(*(t.clone() for t in (q, k, v, out, lse)), *opts) is plan
    assert ops._cached_plan(q, k, v, out, lse, 0.125, 64, 0, 0.0) is not plan
    assert ops._cached_plan(q, k[:, :400], v[:, :400], out, lse, *opts) is not plan
    assert sum(type(x) is bwd.BackwardPlan for x in ops._PLANS.values()) == 1
    # inputs no plan can serve are refused before any lookup: nothing kept for them
    kept = len(ops._PLANS)
    assert ops._cached_plan(q, q, v, out, lse, *opts) is None and len(ops._PLANS) == kept


def test_no_plan_with_the_fast_path_off(runs, monkeypatch):
    cfg = _config(64, 64, torch.bfloat16, False, "")
    q, k, v, out, lse, dout = _inputs(64)
    p = _params(q, k, 0.125, -1, 0, 0.0, None, None, None, None, None, None)
    bwd.attn_bwd(dout, q, k, v, out, lse, None, p, cfg)
    monkeypatch.setattr(launch, "FAST_LAUNCH", False)
    assert bwd.plan_bwd(q, k, v, out, lse, p, cfg) is None


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
@pytest.mark.parametrize("d,causal", [(64, True), (128, False), (128, True)])
def test_gpu_plan_gradients_equal_the_general_path(d, causal, monkeypatch):
    """The second forward + backward of a shape runs the plan (counted); its gradients equal the
    first's bitwise (the backward has no atomics); a dout of another layout takes the general
    path and still matches."""
    import pyflashattn as pfa
    from pyflashattn import ops
    monkeypatch.setattr(ops, "PLAN_BACKWARD", True)
    used = []
    run = bwd.BackwardPlan.run
    monkeypatch.setattr(bwd.BackwardPlan, "run", lambda self, *a: used.append(run(self, *a)) or used[-1])
    q, k, v = (torch.randn(2, 1000, 4, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = torch.randn(2, 1000, 4, d, device="cuda", dtype=torch.bfloat16)

    def grads(dout):
        return torch.autograd.grad(pfa.flash_attn_func(q, k, v, causal=causal), (q, k, v), dout)
    first = grads(g)
    second = grads(g)
    assert any(r is not None for r in used), "the plan did not run"
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    used.clear()
    strided = g.transpose(1, 2).contiguous().transpose(1, 2)   # the same values, another layout
    third = grads(strided)
    assert used and all(r is None for r in used)
    # another layout may take another kernel (a dout TMA cannot read runs the Triton dK/dV), so
    # equal up to the order of the fp32 sums, not bitwise
    for a, b in zip(first, third):
        assert ((a.float() - b.float()).norm() / b.float().norm()).item() < 1e-2



def _varlen_inputs(d, lq=(100, 0, 201), lk=(150, 33, 201), h=4, hk=2):
    cu_q, cu_k = (torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0).to(torch.int32) for lengths in (lq, lk))
    q = torch.randn(sum(lq), h, d, dtype=torch.bfloat16)
    k, v = (torch.randn(sum(lk), hk, d, dtype=torch.bfloat16) for _ in range(2))
    out, dout = torch.randn_like(q), torch.randn_like(q)
    lse = torch.randn(h, sum(lq))
    return q, k, v, out, lse, dout, cu_q, cu_k, max(lq), max(lk)


@pytest.mark.parametrize("kernel", ["triton", "gluon"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_varlen_plan_launches_what_the_general_path_launches(runs, monkeypatch, causal, kernel):
    """Varlen (v15): the plan fills the kernels' 4-d views of dout, q, ... (``p.as_4d``) with the
    tensors themselves (the launcher reads addresses only) and cu_seqlens from ``run``'s
    arguments, so its launches equal the general path's; new cu_seqlens values of the same
    layout go through it, one tensor for both only where the plan's was one."""
    if kernel != "triton":
        usable = hopper.usable
        monkeypatch.setattr(hopper, "usable", lambda *a, **kw: usable(*a, **{**kw, "device_ok": True}))
    override = {"triton": {"hopper_dkdv_block_n": 0}, "gluon": {"hopper_dkdv_block_n": 64}}[kernel]
    cfg = _config(128, 128, torch.bfloat16, False, json.dumps(override))
    q, k, v, out, lse, dout, cu_q, cu_k, max_q, max_k = _varlen_inputs(128)
    p = _params(q, k, 128 ** -0.5, -1, 0 if causal else -1, 0.0, None, cu_q, cu_k, max_q, max_k, None)
    assert bwd.plan_bwd(q, k, v, out, lse, p, cfg) is None
    bwd.attn_bwd(dout, q, k, v, out, lse, None, p, cfg)
    runs.clear()
    general = bwd.attn_bwd(dout, q, k, v, out, lse, None, p, cfg)
    general_log = list(runs)
    runs.clear()
    plan = bwd.plan_bwd(q, k, v, out, lse, p, cfg)
    assert plan is not None and plan.shared_cu is False
    # other cu_seqlens tensors (new values, same layout): the kernels read them where they are
    cu_q2, cu_k2 = cu_q.clone(), cu_k.clone()
    planned = plan.run(dout, q, k, v, out, lse, cu_q2, cu_k2)
    planned_log = list(runs)
    assert len(general_log) == len(planned_log) == 3
    for grads, log, cus in ((general, general_log, (cu_q, cu_k)), (planned, planned_log, (cu_q2, cu_k2))):
        known = {t.data_ptr(): n for n, t in dict(dout=dout, q=q, k=k, v=v, out=out, lse=lse).items()}
        known.update({t.data_ptr(): n for n, t in zip(("dq", "dk", "dv", "cu_q", "cu_k"), (*grads, *cus))})
        log[:] = [_normal(entry, known, layouts=False) for entry in log]
    assert planned_log == general_log
    assert sum(a[0] in ("cu_q", "cu_k") for _, args in planned_log for a in args if isinstance(a, tuple)) >= 4
    # refused: no cu_seqlens, one tensor for both where the plan had two, unaligned cu_seqlens
    assert plan.run(dout, q, k, v, out, lse) is None
    assert plan.run(dout, q, k, v, out, lse, cu_q, cu_q) is None
    unaligned = torch.empty(cu_q.numel() + 1, dtype=torch.int32)[1:]
    assert plan.run(dout, q, k, v, out, lse, unaligned.copy_(cu_q), cu_k) is None
    # a dense plan takes no cu_seqlens
    qd, kd, vd, outd, lsed, doutd = _inputs(128)
    pd = _params(qd, kd, 128 ** -0.5, -1, -1, 0.0, None, None, None, None, None, None)
    bwd.attn_bwd(doutd, qd, kd, vd, outd, lsed, None, pd, cfg)
    dense = bwd.plan_bwd(qd, kd, vd, outd, lsed, pd, cfg)
    assert dense is not None and dense.run(doutd, qd, kd, vd, outd, lsed, cu_q, cu_k) is None


def test_varlen_plans_are_kept_by_maxima(runs, monkeypatch):
    from pyflashattn import ops
    monkeypatch.setattr(ops, "_PLANS", {})
    q, k, v, out, lse, dout, cu_q, cu_k, max_q, max_k = _varlen_inputs(64)
    opts = (0.125, -1, 0, 0.0, False)
    p = _params(q, k, 0.125, -1, 0, 0.0, None, cu_q, cu_k, max_q, max_k, None)
    bwd.attn_bwd(dout, q, k, v, out, lse, None, p, ops._config(q, v, p))
    plan = ops._cached_plan(q, k, v, out, lse, *opts, cu_q, cu_k, max_q, max_k)
    assert plan is not None and ops._cached_plan(q, k, v, out, lse, *opts, cu_q.clone(), cu_k, max_q, max_k) is plan
    assert ops._cached_plan(q, k, v, out, lse, *opts, cu_q, cu_k, max_q + 1, max_k) is not plan


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
@pytest.mark.parametrize("d,causal", [(64, True), (128, False), (128, True)])
def test_gpu_varlen_plan_gradients_equal_the_general_path(d, causal, monkeypatch):
    """Varlen (v15): the second forward + backward runs the plan (counted) and its gradients
    equal the first's bitwise; new cu_seqlens values of the same layout (other lengths, the same
    total and maxima) run the same plan and match a fresh general-path backward."""
    import pyflashattn as pfa
    from pyflashattn import ops
    monkeypatch.setattr(ops, "PLAN_BACKWARD", True)
    used = []
    run = bwd.BackwardPlan.run
    monkeypatch.setattr(bwd.BackwardPlan, "run", lambda self, *a: used.append(run(self, *a)) or used[-1])
    lengths, other = [300, 0, 1000, 77], [1000, 300, 70, 7]
    cu, cu2 = (torch.tensor([0, *n], device="cuda").cumsum(0).to(torch.int32) for n in (lengths, other))
    q, k, v = (torch.randn(sum(lengths), 4, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    g = torch.randn_like(q)

    def grads(cu_seqlens):
        out = pfa.flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, 1000, 1000, causal=causal)
        return torch.autograd.grad(out, (q, k, v), g)
    first = grads(cu)
    second = grads(cu)
    assert any(r is not None for r in used), "the plan did not run"
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    used.clear()
    planned = grads(cu2)
    assert used and all(r is not None for r in used)
    monkeypatch.setattr(ops, "PLAN_BACKWARD", False)
    general = grads(cu2)
    for a, b in zip(planned, general):
        assert torch.equal(a, b)

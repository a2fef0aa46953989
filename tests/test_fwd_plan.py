"""The forward plan (``kernels.fwd.ForwardPlan``, made by ``plan_fwd`` once per layout and kept by
``ops._cached_fwd_plan``): its launch is the general path's, argument for argument, and it declines
what it was not made for. On the CPU the kernels are recording stand-ins (``test_launch``'s); on
an H200 the plan's outputs are checked bitwise against the general path's."""
import json

import pytest
import torch

triton = pytest.importorskip("triton")
from pyflashattn.configs import _config  # noqa: E402
from pyflashattn.kernels import fwd, hopper  # noqa: E402
from pyflashattn.kernels.launch import LightDescriptor  # noqa: E402
from pyflashattn.ops import _params  # noqa: E402
from test_bwd_plan import _inputs, _normal, _varlen_inputs, record_launches  # noqa: E402

from conftest import HAS_CUDA  # noqa: E402

# the forward's Triton kernel, the Gluon one-warpgroup forward, the warp-specialized one
KERNELS = {"triton": {"hopper_block_m": 0}, "gluon": {"hopper_ws_min_seqlen_k": 0},
           "ws": {"hopper_ws_min_seqlen_k": 1}}


@pytest.fixture
def runs(monkeypatch):
    """The forward's launchers over recording stand-ins of their kernels (``record_launches``)."""
    return record_launches(monkeypatch, fwd, ("_launch_fwd",))


def _gluon_on_cpu(monkeypatch, kernel):
    if kernel != "triton":  # the Gluon forward on this CPU: its launch only, recorded
        usable = hopper.usable
        monkeypatch.setattr(hopper, "usable", lambda *a, **kw: usable(*a, **{**kw, "device_ok": True}))
        monkeypatch.setattr(hopper, "_sm_count", lambda index: 5)   # the persistent grid's SMs


def _compare(general, planned, general_log, planned_log, names: dict, layouts: bool):
    assert len(general_log) == len(planned_log) == 1
    for (out, lse), log in ((general, general_log), (planned, planned_log)):
        known = {t.data_ptr(): n for n, t in {**names, "out": out, "lse": lse}.items() if t is not None}
        log[:] = [_normal(entry, known, layouts) for entry in log]
    assert planned_log == general_log
    for a, b in zip(planned, general):
        assert a.shape == b.shape and a.dtype == b.dtype and a.stride() == b.stride()


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_plan_launches_what_the_general_path_launches(runs, monkeypatch, causal, kernel):
    _gluon_on_cpu(monkeypatch, kernel)
    cfg = _config(128, 128, torch.bfloat16, False, json.dumps(KERNELS[kernel]))
    q, k, v, *_ = _inputs(128)
    p = _params(q, k, 128 ** -0.5, -1, 0 if causal else -1, 0.0, None, None, None, None, None, None)
    assert fwd.plan_fwd(q, k, v, p, cfg) is None   # nothing launched yet: no kernel to bind
    fwd.attn_fwd(q, k, v, p, cfg)
    runs.clear()
    general = fwd.attn_fwd(q, k, v, p, cfg)
    general_log = list(runs)
    runs.clear()
    plan = fwd.plan_fwd(q, k, v, p, cfg)
    assert plan is not None
    planned = plan.run(q, k, v)
    _compare(general, planned, general_log, list(runs), dict(q=q, k=k, v=v), layouts=True)
    if kernel != "triton":   # the descriptors were filled in from the call's tensors
        assert sum(isinstance(a, tuple) and a[0] == "desc" for a in _normal(runs[0], {})[1]) >= 3
    # plans are cached beyond the call (ops._PLANS): none may keep a tensor alive
    held = [x for _, template, slots in plan.launches for x in (*template, *(s[2] for s in slots))]
    assert not any(isinstance(x, (torch.Tensor, LightDescriptor)) for x in held)


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_varlen_plan_launches_what_the_general_path_launches(runs, monkeypatch, causal, kernel):
    """Varlen: the Triton kernel's 4-d views take their tensors; cu_seqlens come from ``run``."""
    _gluon_on_cpu(monkeypatch, kernel)
    cfg = _config(128, 128, torch.bfloat16, False, json.dumps(KERNELS[kernel]))
    q, k, v, _, _, _, cu_q, cu_k, max_q, max_k = _varlen_inputs(128)
    p = _params(q, k, 128 ** -0.5, -1, 0 if causal else -1, 0.0, None, cu_q, cu_k, max_q, max_k, None)
    fwd.attn_fwd(q, k, v, p, cfg)
    runs.clear()
    general = fwd.attn_fwd(q, k, v, p, cfg)
    general_log = list(runs)
    runs.clear()
    plan = fwd.plan_fwd(q, k, v, p, cfg)
    assert plan is not None and plan.shared_cu is False
    cu_q2, cu_k2 = cu_q.clone(), cu_k.clone()
    planned = plan.run(q, k, v, cu_q2, cu_k2)
    planned_log = list(runs)
    assert len(general_log) == len(planned_log) == 1
    for (out, lse), log, cus in ((general, general_log, (cu_q, cu_k)), (planned, planned_log, (cu_q2, cu_k2))):
        known = {t.data_ptr(): n for n, t in zip(("q", "k", "v", "out", "lse", "cu_q", "cu_k"), (q, k, v, out, lse, *cus))}
        log[:] = [_normal(entry, known, layouts=False) for entry in log]
    assert planned_log == general_log
    roles = [a[0] for a in planned_log[0][1] if isinstance(a, tuple)]
    assert {"cu_q", "cu_k", "out", "lse"} <= set(roles) and "other" not in roles
    for a, b in zip(planned, general):
        assert a.shape == b.shape and a.dtype == b.dtype and a.stride() == b.stride()
    assert plan.run(q, k, v) is None and plan.run(q, k, v, cu_q, cu_q) is None


def test_plan_declines_what_it_was_not_made_for(runs):
    cfg = _config(64, 64, torch.bfloat16, False, json.dumps(KERNELS["triton"]))
    q, k, v, *_ = _inputs(64)
    p = _params(q, k, 0.125, -1, 0, 0.0, None, None, None, None, None, None)
    fwd.attn_fwd(q, k, v, p, cfg)
    plan = fwd.plan_fwd(q, k, v, p, cfg)
    assert plan is not None and plan.run(q, k, v) is not None
    # another layout, dtype or alignment; another shape; inputs that alias
    assert plan.run(q.transpose(1, 2).contiguous().transpose(1, 2), k, v) is None
    assert plan.run(q.half(), k, v) is None
    assert plan.run(torch.randn(q.numel() + 1, dtype=q.dtype)[1:].view(q.shape), k, v) is None
    assert plan.run(q, k[:, :499], v) is None
    assert plan.run(q, k, k) is None
    # options the plan does not cover
    slopes = torch.rand(4)
    for other in (_params(q, k, 0.125, -1, 0, 0.0, slopes, None, None, None, None, None),
                  _params(q, k, 0.125, -1, 0, 0.0, None, None, None, None, None, None, 0.1, torch.zeros(1))):
        assert fwd.plan_fwd(q, k, v, other, cfg) is None


def test_plans_are_kept_by_layout(runs, monkeypatch):
    from pyflashattn import ops
    monkeypatch.setattr(ops, "_PLANS", {})
    q, k, v, *_ = _inputs(64)
    opts = (0.125, -1, 0, 0.0)
    assert ops._cached_fwd_plan(q, k, v, *opts) is None
    p = _params(q, k, 0.125, -1, 0, 0.0, None, None, None, None, None, None)
    fwd.attn_fwd(q, k, v, p, ops._config(q, v, p))
    plan = ops._cached_fwd_plan(q, k, v, *opts)
    assert plan is not None and ops._cached_fwd_plan(q, k, v, *opts) is plan
    assert ops._cached_fwd_plan(*(t.clone() for t in (q, k, v)), *opts) is plan
    assert ops._cached_fwd_plan(q, k, v, 0.125, 64, 0, 0.0) is not plan
    # the backward's plans of the same tensors are other entries
    assert sum(type(x) is fwd.ForwardPlan for x in ops._PLANS.values()) == 1


def test_forward_op_takes_the_plan(runs, monkeypatch):
    """``ops._fwd_impl`` with ``PLAN_FORWARD``: the second forward of a layout runs the plan; a
    layout it cannot serve (a non-unit last stride) goes the general way."""
    from pyflashattn import ops
    monkeypatch.setattr(ops, "_PLANS", {})
    monkeypatch.setattr(ops, "PLAN_FORWARD", True)
    monkeypatch.setattr(ops, "backend_for", lambda q: "triton")
    q, k, v, *_ = _inputs(64)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    used = []
    run = fwd.ForwardPlan.run
    monkeypatch.setattr(fwd.ForwardPlan, "run", lambda self, *a: used.append(run(self, *a)) or used[-1])
    first = ops._fwd_impl(q, k, v, 0.125, -1, 0)
    second = ops._fwd_impl(q, k, v, 0.125, -1, 0)
    assert used and used[-1] is not None and second[0].shape == first[0].shape
    used.clear()
    ops._fwd_impl(q.transpose(-1, -2).contiguous().transpose(-1, -2), k, v, 0.125, -1, 0)
    assert not used


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
@pytest.mark.parametrize("d,causal,varlen", [(64, True, False), (128, False, False), (128, True, False),
                                             (128, True, True), (64, False, True)])
def test_gpu_plan_outputs_equal_the_general_path(d, causal, varlen, monkeypatch):
    """The second forward of a layout runs the plan (counted); out and lse equal the general
    path's bitwise (out poisoned first, as every allocation the plan makes)."""
    import pyflashattn as pfa
    from pyflashattn import ops
    monkeypatch.setattr(ops, "PLAN_FORWARD", True)
    used = []
    run = fwd.ForwardPlan.run
    monkeypatch.setattr(fwd.ForwardPlan, "run", lambda self, *a: used.append(run(self, *a)) or used[-1])
    empty, empty_like = torch.empty, torch.empty_like

    def poisoned(*a, _make=empty, **kw):
        t = _make(*a, **kw)
        return t.fill_(float("nan")) if t.is_floating_point() else t
    monkeypatch.setattr(torch, "empty", poisoned)
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: poisoned(*a, _make=empty_like, **kw))
    if varlen:
        lengths = [300, 0, 1000, 77]
        cu = torch.tensor([0, *lengths], device="cuda").cumsum(0).to(torch.int32)
        q, k, v = (torch.randn(sum(lengths), 4, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))

        def forward():
            return pfa.flash_attn_varlen_func(q, k, v, cu, cu, 1000, 1000, causal=causal, return_attn_probs=True)[:2]
    else:
        q, k, v = (torch.randn(2, 1000, 4, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))

        def forward():
            return pfa.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)[:2]
    first = forward()
    planned = forward()
    assert any(r is not None for r in used), "the plan did not run"
    monkeypatch.setattr(ops, "PLAN_FORWARD", False)
    general = forward()
    for a, b, c in zip(first, planned, general):
        assert torch.equal(a, b) and torch.equal(b, c)

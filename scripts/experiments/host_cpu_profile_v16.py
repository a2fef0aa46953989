"""The forward's Python on this CPU, the H200's launch path stood in (tests/test_launch.py's
recording kernels and fake driver; the Gluon warp-specialized forward chosen as on the H200):
us per call for flash_attn_func and flash_attn_varlen_func with the forward plan on, then
cProfile's top entries for each. Why: on the H200 varlen's forward costs ~30-50 us more host
time than dense's (v16 item 6); this shows where, without a GPU.
    TRITON_INTERPRET=1 PYTHONPATH=src:tests python scripts/experiments/host_cpu_profile_v16.py
"""
import cProfile
import pstats
import time

import pytest
import torch

import pyflashattn as pfa
from pyflashattn import ops
from pyflashattn.kernels import fwd, hopper, launch
from pyflashattn.kernels.launch import Launcher
from test_launch import _FakeDriver, _RecordingJIT


def main():
    mp = pytest.MonkeyPatch()
    mp.setattr(launch, "driver", _FakeDriver)
    mp.setattr(launch, "FAST_LAUNCH", True)
    gluon = {}

    def recording(kernel):
        fn = _RecordingJIT(getattr(kernel, "fn", kernel))
        fn.slow_calls, fn.kernel_runs = [], []
        return Launcher(fn)
    mp.setattr(fwd, "_launch_fwd", recording(fwd._launch_fwd.fn))
    mp.setattr(hopper, "_launcher", lambda kernel: gluon.setdefault(id(kernel), recording(kernel)))
    usable = hopper.usable
    mp.setattr(hopper, "usable", lambda *a, **kw: usable(*a, **{**kw, "device_ok": True}))
    mp.setattr(hopper, "_sm_count", lambda index: 132)
    mp.setattr(ops, "backend_for", lambda q: "triton")
    from pyflashattn import validate
    mp.setattr(validate, "capturing", lambda t: False)   # (no CUDA here; a stream query on the H200)
    mp.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    b, n, h, d = 4, 1024, 16, 128
    q, k, v = (torch.randn(b, n, h, d, dtype=torch.bfloat16) for _ in range(3))
    cu = torch.arange(0, (b + 1) * n, n, dtype=torch.int32)
    qp, kp, vp = (t.reshape(b * n, h, d) for t in (q, k, v))
    calls = {"dense": lambda: pfa.flash_attn_func(q, k, v, causal=True),
             "varlen": lambda: pfa.flash_attn_varlen_func(qp, kp, vp, cu, cu, n, n, causal=True)}
    for name, fn in calls.items():
        for _ in range(5):
            fn()
        t = time.perf_counter()
        for _ in range(2000):
            fn()
        print(f"{name}: {(time.perf_counter() - t) / 2000 * 1e6:.1f} us per forward")
    for name, fn in calls.items():
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(2000):
            fn()
        prof.disable()
        print(f"== {name}")
        pstats.Stats(prof).sort_stats("tottime").print_stats(14)
    mp.undo()


if __name__ == "__main__":
    main()

"""The cached launcher (kernels/launch.py) on Gluon kernels: ``LightDescriptor`` keys as Triton
specializes a Gluon ``TensorDescriptor`` (its type string), turns into one on a miss, and a hit
passes the C launcher what ``JITFunction.run`` bound on the miss, ``num_warps`` parameter and
extra launch options (``maxnreg``) included.

Pure Python: ``native_specialize_impl`` and Triton's own binder (``create_function_from_signature``)
are the references, and the launches run against recording stand-ins, so no GPU is needed.
"""
import itertools
import json
import random

import pytest
import torch

triton = pytest.importorskip("triton")
hopper_api = pytest.importorskip("triton.experimental.gluon.nvidia.hopper")
from triton import knobs  # noqa: E402
from triton._C.libtriton import native_specialize_impl  # noqa: E402
from triton.backends.compiler import BaseBackend  # noqa: E402
from triton.experimental import gluon  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon._runtime import GluonJITFunction  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

from pyflashattn.configs import _config  # noqa: E402
from pyflashattn.kernels import hopper, launch  # noqa: E402
from pyflashattn.kernels.launch import ArgKey, Launcher, LightDescriptor, descriptor_key  # noqa: E402
from pyflashattn.ops import _params  # noqa: E402
from test_launch import _FakeDriver, _FakeKernel  # noqa: E402  (the fakes both launcher suites share)

TensorDescriptor = hopper_api.TensorDescriptor
NVMMA = gl.NVMMASharedLayout
GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float32: gl.float32}


def triton_spec(arg, specialize: bool = True):
    return native_specialize_impl(BaseBackend, arg, False, specialize, True)


def layouts(dtype: torch.dtype, block: list) -> list:
    """The default layout for (block, dtype) and a few others, with two traps: an equal-by-``==``
    layout whose repr differs (``transposed=1``), and a fresh object equal to a cached one."""
    bits = torch.finfo(dtype).bits
    return [NVMMA.get_default_for(block, GL_DTYPES[dtype]), NVMMA.get_default_for(block, GL_DTYPES[dtype]),
            NVMMA(64, bits), NVMMA(128, bits), NVMMA(128, bits, transposed=True), NVMMA(128, bits, transposed=1),
            NVMMA(0, bits)]


def descriptor_cases() -> list:
    """(light, real) pairs over dtypes, block shapes, layouts, bases (aligned views, other shapes)."""
    out = []
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        storage = torch.zeros(4096, dtype=dtype)
        for block in ([64, 64], [128, 64], [64, 128], [128, 128], [64, 32]):
            for layout in layouts(dtype, block):
                for base, rows in ((storage, 32), (storage[16:16 + 31 * 128], 31)):  # 16 elements: aligned
                    light = LightDescriptor(base, [rows, 128], [128, 1], block, layout)
                    out.append((light, light.real()))
    return out


CASES = descriptor_cases()


def test_descriptor_key_is_triton_type_string():
    """Equal keys iff equal ``tensordesc<...>`` strings from ``native_specialize_impl`` on the
    real descriptors, over every pair; and the specialization holds nothing else (no alignment)."""
    keys = [descriptor_key(light) for light, _ in CASES]
    specs = [triton_spec(real) for _, real in CASES]
    assert all(value is None and name.startswith("tensordesc<") for name, value in specs)
    for (ka, sa), (kb, sb) in itertools.combinations(zip(keys, specs), 2):
        assert (ka == kb) == (sa == sb), (ka, kb, sa, sb)
    assert len(set(keys)) == len({s for s, _ in specs}) > 30
    # do_not_specialize or not, the type string is all: descriptors have no value to specialize
    assert [triton_spec(real, False) for _, real in CASES] == specs


def test_layout_equal_by_eq_but_not_by_repr_is_told_apart():
    a, b = NVMMA(128, 16, transposed=True), NVMMA(128, 16, transposed=1)
    assert a == b and repr(a) != repr(b)  # why the key holds the repr, not the layout
    t = torch.zeros(64, 64, dtype=torch.bfloat16)
    da, db = (LightDescriptor(t, [64, 64], [64, 1], [64, 64], x) for x in (a, b))
    assert descriptor_key(da) != descriptor_key(db)
    assert triton_spec(da.real()) != triton_spec(db.real())


def test_real_preserves_every_field_and_validates():
    for light, real in CASES:
        assert type(real) is TensorDescriptor
        assert real.base is light.base and real.layout is light.layout and real.padding == light.padding
        assert list(real.shape) == list(light.shape) and list(real.strides) == list(light.strides)
        assert list(real.block_shape) == list(light.block_shape)
    t = torch.zeros(4096, dtype=torch.bfloat16)
    layout = NVMMA.get_default_for([64, 64], gl.bfloat16)
    nan = LightDescriptor(t, [32, 128], [128, 1], [64, 64], layout, "nan").real()
    assert nan.padding == "nan"
    # the light one checks nothing; its real one does, as Gluon's TensorDescriptor always has
    bad = LightDescriptor(t[1:], [32, 128], [128, 1], [64, 64], layout)   # 2-byte aligned base
    with pytest.raises(AssertionError, match="aligned"):
        bad.real()


def test_hopper_descriptor_fields():
    """``hopper._descriptor``: ``(b, s, h, d)`` or ``(total, h, d)`` as the 2-D ``(rows, h * d)``,
    the same fields as the ``TensorDescriptor`` it used to build."""
    packed = torch.zeros(2, 300, 3, 4, 128, dtype=torch.bfloat16)
    for t, rows in ((torch.zeros(2, 300, 4, 128, dtype=torch.float16), 64), (packed[:, :, 1], 128),
                    (torch.zeros(600, 4, 64, dtype=torch.bfloat16), 64)):
        d = hopper._descriptor(t, rows)
        assert type(d) is LightDescriptor and d.base is t and d.padding == "zero"
        h, hd = t.shape[-2], t.shape[-1]
        assert d.shape == [t.numel() // (h * hd), h * hd] and d.strides == [t.stride(-3), 1]
        assert d.block_shape == [rows, hd] and d.layout is hopper._smem_layout(rows, hd, t.dtype)
        real = d.real()
        assert triton_spec(real)[0] == f"tensordesc<{'bf16' if t.dtype == torch.bfloat16 else 'fp16'}" \
                                       f"[{rows}, {hd}],{d.layout!r}>"


def test_argkey_with_descriptors_as_fine_as_triton():
    """Tuples mixing descriptors with the other kinds: equal keys mean equal specialization,
    position by position (descriptors through their real counterpart)."""
    rng = random.Random(0)
    pool = [light for light, _ in CASES[::3]] + [0, 1, 16, 17, 2 ** 40, 0.5, True, None,
                                                  torch.zeros(8), torch.zeros(8)[1:], torch.zeros(8, dtype=torch.int32)]
    for length in (2, 4):
        key_fn = ArgKey((False,) * length)
        by_key = {}
        for _ in range(2000):
            args = tuple(rng.choice(pool) for _ in range(length))
            key = key_fn(args)
            assert key is not None
            spec = [triton_spec(a.real() if type(a) is LightDescriptor else a) for a in args]
            assert by_key.setdefault(key, spec) == spec, args
        assert len(by_key) > 50


def test_argkey_descriptor_runtime_fields_share_a_key():
    """Shape, strides, base (any aligned one) and padding are runtime values: one key."""
    layout = NVMMA.get_default_for([64, 128], gl.bfloat16)
    t = torch.zeros(2, 300, 4, 128, dtype=torch.bfloat16)
    key = ArgKey((False, False))
    a = key((LightDescriptor(t, [600, 512], [512, 1], [64, 128], layout), 7))
    assert a == key((LightDescriptor(t[1], [300, 512], [512, 1], [64, 128], layout, "nan"), 23))  # 23 = 7 mod 16
    assert a != key((LightDescriptor(t, [600, 512], [512, 1], [128, 128], layout), 7))
    assert a != key((LightDescriptor(t.half(), [600, 512], [512, 1], [64, 128], layout), 7))
    assert a != key((LightDescriptor(t, [600, 512], [512, 1], [64, 128], NVMMA(64, 16)), 7))
    # a real TensorDescriptor is not modelled: that call goes through Triton
    assert key((hopper._descriptor(t, 64).real(), 7)) is None


# -- the launch path, against Triton's own binder and a recording stand-in for the kernel -----

class _BindingGluonJIT(GluonJITFunction):
    """A Gluon JITFunction whose ``fn[grid](...)`` binds the call with Triton's own binder, as
    ``JITFunction.run`` does (its kwargs then options), records what it bound, and returns a fake
    compiled kernel that records what a hit hands the C launcher."""

    def run(self, *args, grid, warmup, **kwargs):
        kwargs["debug"] = kwargs.get("debug", self.debug) or knobs.runtime.debug
        kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
        binder = create_function_from_signature(self.signature, self.params, BaseBackend)
        bound, specialization, options = binder(*args, **kwargs)
        self.slow_calls.append(dict(grid=grid, bound=list(bound.values()), spec=specialization, options=options,
                                    kwargs=kwargs))
        return _FakeKernel(self.kernel_runs)


def binding(fn) -> _BindingGluonJIT:
    jit = _BindingGluonJIT(fn.fn if isinstance(fn, JITFunction) else fn)
    jit.slow_calls, jit.kernel_runs = [], []
    return jit


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(launch, "driver", _FakeDriver)
    monkeypatch.setattr(launch, "FAST_LAUNCH", True)
    if not launch._KNOWN_TRITON:
        pytest.skip("the cached path is for Triton 3.6 only")


def _toy(x_desc, O, n, scale, BLOCK: gl.constexpr, FLAG: gl.constexpr, num_warps: gl.constexpr,
         EXTRA: gl.constexpr = 3):
    pass


def test_gluon_kernels_fit_the_launcher():
    """The Gluon kernels are JITFunctions with constexprs last, ``num_warps`` among them."""
    mods = hopper._kernel_modules()
    assert mods is not None
    for fn in (mods[0].attn_fwd_hopper_kernel, mods[1].dkdv_hopper_kernel, mods[2].attn_fwd_ws_kernel,
               mods[4].dq_hopper_kernel, mods[4].dq_hopper_ws_kernel):
        assert isinstance(fn, GluonJITFunction) and isinstance(fn, JITFunction) and fn.is_gluon()
        launcher = Launcher(fn)
        names = [p.name for p in fn.params if p.is_constexpr]
        assert launcher._constexpr_names == tuple(n for n in names if n != "num_warps")
        assert launcher._warps_at == names.index("num_warps")
        assert launcher.cached == launch._KNOWN_TRITON


def _capture(monkeypatch, call):
    """What ``hopper.attn_fwd``/``attn_dkdv`` hand their launcher: (grid, args, constexprs, kw)."""
    seen = []

    def fake_launcher(kernel):
        return lambda grid, args, constexprs, **kw: seen.append((kernel, grid, args, constexprs, kw))
    monkeypatch.setattr(hopper, "_launcher", fake_launcher)
    monkeypatch.setattr(hopper, "_sm_count", lambda index: 132)   # the persistent grids' size, no GPU here
    call()
    ((kernel, grid, args, constexprs, kw),) = seen
    return kernel, grid, args, constexprs, kw


def _hopper_calls():
    """(name, thunk) for each Gluon launch site: the forward (one warpgroup; warp-specialized,
    dense and varlen with features), dK/dV and dQ, on CPU tensors (nothing runs)."""
    def fwd(kernel_override, varlen=False):
        def call():
            cfg = _config(128, 128, torch.bfloat16, False, json.dumps(
                {"hopper_ws_min_seqlen_k": kernel_override, "hopper_features": 1, "hopper_alibi": 1}))
            if varlen:
                q, k, v = (torch.randn(600, h, 128, dtype=torch.bfloat16) for h in (4, 2, 2))
                cu = torch.tensor([0, 100, 300, 600], dtype=torch.int32)
                p = _params(q, k, 128 ** -0.5, 50, 0, 5.0, torch.rand(3, 4), cu, cu, 300, 300, None)
            else:
                q, k, v = (torch.randn(2, s, h, 128, dtype=torch.bfloat16) for s, h in ((300, 4), (500, 2), (500, 2)))
                p = _params(q, k, 128 ** -0.5, -1, 0, 0.0, None, None, None, None, None, None)
            hopper.attn_fwd(q, k, v, p, cfg)
        return call

    def dkdv():
        cfg = _config(128, 128, torch.bfloat16, False, json.dumps({"hopper_dkdv_block_n": 64}))
        q, k, v = (torch.randn(2, s, h, 128, dtype=torch.bfloat16) for s, h in ((300, 4), (500, 2), (500, 2)))
        p = _params(q, k, 128 ** -0.5, -1, 0, 0.0, None, None, None, None, None, None)
        dout, lse, delta = torch.randn_like(q), torch.randn(2, 4, 300), torch.randn(2, 4, 300)
        hopper.attn_dkdv(q, k, v, dout, lse, delta, torch.empty_like(k), torch.empty_like(v), p, cfg)

    def dq(ws):  # the Gluon dQ kernels (experiment)
        def call():
            cfg = _config(128, 128, torch.bfloat16, False, json.dumps({"hopper_dq_block_n": 64, "hopper_dq_ws": ws}))
            q, k, v = (torch.randn(2, s, h, 128, dtype=torch.bfloat16) for s, h in ((300, 4), (500, 2), (500, 2)))
            p = _params(q, k, 128 ** -0.5, -1, 0, 0.0, None, None, None, None, None, None)
            dout, lse, delta = torch.randn_like(q), torch.randn(2, 4, 300), torch.randn(2, 4, 300)
            launcher, grid, args, constexprs, num_warps, _, options = hopper.dq_launch(q, k, v, dout, lse, delta,
                                                                                        torch.empty_like(q), p, cfg)
            launcher(grid, args, constexprs, num_warps=num_warps, **options)
        return call

    return [("fwd1wg", fwd(0)), ("fwdws", fwd(1)), ("fwdws_varlen", fwd(1, varlen=True)),
            ("fwd1wg_varlen", fwd(0, varlen=True)), ("dkdv", dkdv), ("dq", dq(False)), ("dqws", dq(True))]


@pytest.mark.parametrize("name,call", _hopper_calls(), ids=[n for n, _ in _hopper_calls()])
def test_hit_passes_what_triton_bound_on_the_miss(monkeypatch, fast, name, call):
    """The real launch sites through a Launcher over the real kernel (bound by Triton's binder):
    the miss hands Triton real descriptors and ``num_warps``/``maxnreg`` as launch keywords; the
    hit hands the C launcher the same values in the same order, the light descriptors in place of
    the real ones (same base, shape, strides, padding: all the C launcher reads)."""
    kernel, grid, args, constexprs, kw = _capture(monkeypatch, call)
    jit = binding(kernel)
    launcher = Launcher(jit)
    assert launcher.cached
    launcher(grid, args, constexprs, **kw)
    launcher(grid, args, constexprs, **kw)
    (miss,), (hit,) = jit.slow_calls, jit.kernel_runs
    assert miss["grid"] == grid and hit[:3] == (*grid, 1, 1)[:3]
    assert hit[3:9] == (777, 1234, (4, 1, 0), None, None, None)  # stream, function, metadata, no hooks
    bound, passed = miss["bound"], list(hit[9:])
    assert len(bound) == len(passed) == len(kernel.params)
    for param, b, h in zip(kernel.params, bound, passed):
        if type(h) is LightDescriptor:
            assert type(b) is TensorDescriptor, param.name
            assert (b.base, list(b.shape), list(b.strides), b.padding) == (h.base, list(h.shape), list(h.strides),
                                                                           h.padding), param.name
            assert triton_spec(b) == triton_spec(h.real())
        else:
            assert b is h or (type(b) is type(h) and b == h), param.name
    # num_warps: a launch keyword bound to the kernel's parameter, not an option; maxnreg (the
    # warp-specialized forward) an option, in Triton's key and in ours
    assert bound[kernel.arg_names.index("num_warps")] == kw["num_warps"]
    assert "num_warps" not in miss["options"] and miss["kwargs"]["num_warps"] == kw["num_warps"]
    assert ("maxnreg" in miss["options"]) == (name.startswith("fwdws") or name == "dqws") == ("maxnreg" in kw)
    assert "num_stages" not in miss["kwargs"]  # as before: Triton's default, not given
    assert launcher.cache_size() == 1


def test_extra_options_are_in_the_key(fast):
    jit = binding(_toy)
    launcher = Launcher(jit)
    assert launcher._constexpr_names == ("BLOCK", "FLAG", "EXTRA") and launcher._warps_at == 2
    t = torch.zeros(2, 64, 4, 64, dtype=torch.bfloat16)
    desc = hopper._descriptor(t, 64)
    args, cx = (desc, t, 32, 0.5), dict(BLOCK=64, FLAG=True)

    def call(*, args=args, num_warps=4, EXTRA=None, **options):
        before = len(jit.slow_calls)
        launcher((3,), args, cx if EXTRA is None else dict(cx, EXTRA=EXTRA), num_warps, **options)
        return "miss" if len(jit.slow_calls) > before else "hit"

    assert call(maxnreg=168) == "miss"
    assert jit.slow_calls[-1]["options"]["maxnreg"] == 168
    assert call(maxnreg=168) == "hit"
    assert call(maxnreg=128) == "miss"     # differs only in maxnreg: another entry
    assert jit.slow_calls[-1]["options"]["maxnreg"] == 128
    assert call() == "miss"                # no maxnreg at all: another again
    assert call(maxnreg=128) == "hit" and call(maxnreg=168) == "hit" and call() == "hit"
    assert call(num_warps=8) == "miss"
    assert jit.slow_calls[-1]["bound"][-2] == 8 and jit.kernel_runs[-1][-2] == 4
    # EXTRA left out: its default, where Triton's binder puts it
    assert jit.slow_calls[-1]["bound"][-1] == 3 and jit.kernel_runs[-1][-1] == 3
    assert call(EXTRA=4) == "miss" and jit.slow_calls[-1]["bound"][-1] == 4
    assert call(EXTRA=4) == "hit" and jit.kernel_runs[-1][-1] == 4
    assert launcher.cache_size() == 5
    # a descriptor over another tensor of the same kind: a hit, with that tensor's fields
    other = torch.zeros(3, 100, 4, 64, dtype=torch.bfloat16)
    assert call(args=(hopper._descriptor(other, 64), t, 48, 2.0)) == "hit"
    passed = jit.kernel_runs[-1][9]
    assert passed.base is other and passed.shape == [300, 256]
    assert call(args=(hopper._descriptor(other.half(), 64), t, 48, 2.0)) == "miss"   # dtype
    assert call(args=(hopper._descriptor(other, 128), t, 48, 2.0)) == "miss"         # block shape
    with pytest.raises(TypeError, match="constexprs"):
        launcher((3,), args, dict(cx, num_warps=4), 4)
    with pytest.raises(TypeError, match="constexprs"):
        launcher((3,), args, dict(BLOCK=64), 4)


def test_plain_path_gets_real_descriptors(monkeypatch, fast):
    """FAST_LAUNCH off (and a kernel that is not a JITFunction): ``fn[grid](...)`` with real
    descriptors, every keyword as given."""
    jit = binding(_toy)
    launcher = Launcher(jit)
    t = torch.zeros(2, 64, 4, 64, dtype=torch.bfloat16)
    monkeypatch.setattr(launch, "FAST_LAUNCH", False)
    launcher((3,), (hopper._descriptor(t, 64), t, 32, 0.5), dict(BLOCK=64, FLAG=True), 4, maxnreg=100)
    launcher((3,), (hopper._descriptor(t, 64), t, 32, 0.5), dict(BLOCK=64, FLAG=True), 4, 3)
    first, second = jit.slow_calls
    assert type(first["bound"][0]) is TensorDescriptor and jit.kernel_runs == []
    assert first["kwargs"]["maxnreg"] == 100 and "num_stages" not in first["kwargs"]
    assert second["kwargs"]["num_stages"] == 3
    assert launcher.cache_size() == 0


def test_unaligned_descriptor_fails_on_a_miss(fast):
    """A miss validates through the real descriptor, so a bad one still fails loudly there."""
    launcher = Launcher(binding(_toy))
    flat = torch.zeros(2 * 64 * 256 + 1, dtype=torch.bfloat16)
    bad = LightDescriptor(flat[1:], [128, 256], [256, 1], [64, 64], hopper._smem_layout(64, 64, torch.bfloat16))
    with pytest.raises(AssertionError, match="aligned"):
        launcher((3,), (bad, flat, 32, 0.5), dict(BLOCK=64, FLAG=True), 4)
    assert launcher.cache_size() == 0

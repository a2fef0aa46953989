"""The cached launcher (kernels/launch.py): its key is never coarser than Triton's own
specialization, and a hit passes the C launcher what ``JITFunction.run`` would.

Pure Python: Triton's ``native_specialize_impl`` is the reference, and the launch path runs
against a recording stand-in for the compiled kernel, so no GPU is needed.
"""
import itertools
import random

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402
from triton import knobs  # noqa: E402
from triton._C.libtriton import native_specialize_impl  # noqa: E402
from triton.backends.compiler import BaseBackend  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from pyflashattn.kernels import launch  # noqa: E402
from pyflashattn.kernels.launch import ArgKey, Launcher  # noqa: E402

INTS = [0, 1, 2, 15, 16, 17, 32, 48, 33, -1, -15, -16, -17, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 16, -2 ** 31,
        -2 ** 31 - 1, -2 ** 31 - 16, 2 ** 32, 2 ** 63 - 1, 2 ** 63, 2 ** 63 + 16, 2 ** 64 - 1]
OTHERS = [0.0, 1.0, 0.5, -2.0, float("inf"), True, False, None]


def tensors():
    """Aligned storage and views at 1-, 2-, 4- and 8-byte offsets from it, in several dtypes."""
    out = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.int32, torch.int64, torch.int8):
        base = torch.zeros(64, dtype=dtype)
        assert base.data_ptr() % 16 == 0
        for start in (0, 1, 2, 4, 8, 16):
            out.append(base[start:])
    return out


VALUES = INTS + OTHERS + tensors()


def triton_spec(arg, specialize: bool):
    return native_specialize_impl(BaseBackend, arg, False, specialize, True)


def coarser_pairs(key_fn, values, specialize: bool) -> list:
    """Pairs of single arguments that ``key_fn`` gives one key but Triton specializes apart."""
    by_key = {}
    for value in values:
        key = key_fn((value,))
        if key is not None:
            by_key.setdefault(key, []).append(value)
    bad = []
    for group in by_key.values():
        first = triton_spec(group[0], specialize)
        bad += [(group[0], v) for v in group[1:] if triton_spec(v, specialize) != first]
    return bad


@pytest.mark.parametrize("specialize", [True, False])
def test_key_at_least_as_fine_as_triton(specialize):
    assert coarser_pairs(ArgKey((not specialize,)), VALUES, specialize) == []


def test_key_refuses_what_triton_refuses():
    assert ArgKey((False,))((2 ** 64,)) is None
    assert ArgKey((False,))((-2 ** 63 - 1,)) is None
    with pytest.raises(Exception):
        triton_spec(2 ** 64, True)


def test_coarser_keys_are_caught():
    """The check above can fail: keys that drop alignment, the value 1, the integer range or the
    do_not_specialize distinction each produce pairs."""
    def dtype_only(args):
        (a,) = args
        return ("tensor", a.dtype) if isinstance(a, torch.Tensor) else ArgKey((False,))(args)

    def no_one(args):
        (a,) = args
        return ("int", a % 16) if type(a) is int else ArgKey((False,))(args)

    def no_range(args):
        (a,) = args
        return ("int", -1 if a == 1 else a % 16) if type(a) is int else ArgKey((False,))(args)

    for coarse in (dtype_only, no_one, no_range):
        assert coarser_pairs(coarse, VALUES, True), coarse.__name__
    # the do_not_specialize key used where Triton specializes
    assert coarser_pairs(ArgKey((True,)), VALUES, True)


def test_key_of_mixed_arguments():
    """Tuples of several kinds: equal keys mean equal specialization position by position, with
    a do_not_specialize position among them."""
    rng = random.Random(0)
    pool = VALUES
    for length in (2, 3, 5):
        unspecialized = tuple(i == 1 for i in range(length))
        key_fn = ArgKey(unspecialized)
        by_key = {}
        for _ in range(3000):
            args = tuple(rng.choice(pool) for _ in range(length))
            key = key_fn(args)
            if key is None:
                continue
            spec = [triton_spec(a, not u) for a, u in zip(args, unspecialized)]
            assert by_key.setdefault(key, spec) == spec, args
        assert len(by_key) > 100  # the key tells many of these apart


def test_key_distinguishes_bool_from_int_and_float():
    key = ArgKey((False,))
    assert len({key((1,)), key((True,)), key((1.0,))}) == 3


# -- the launch path, against a recording stand-in for Triton -------------------------------

def _toy_kernel(X, Y, n, m, scale, BLOCK: tl.constexpr, FLAG: tl.constexpr):
    pass


class _RecordingJIT(JITFunction):
    """A JITFunction whose ``fn[grid](...)`` records the call and returns a fake compiled kernel."""

    def run(self, *args, grid, warmup, **kwargs):
        self.slow_calls.append((grid, args, kwargs))
        return _FakeKernel(self.kernel_runs)


class _FakeKernel:
    function = 1234
    packed_metadata = (4, 1, 0)

    def __init__(self, runs):
        self.run = lambda *a: runs.append(a)

    def launch_metadata(self, grid, stream, *args):
        return ("metadata", grid, stream, args)


class _FakeDriver:
    class active:
        get_current_device = staticmethod(lambda: 0)
        get_current_stream = staticmethod(lambda device: 777)


@pytest.fixture
def toy(monkeypatch):
    fn = _RecordingJIT(_toy_kernel, do_not_specialize=["m"])
    fn.slow_calls, fn.kernel_runs = [], []
    monkeypatch.setattr(launch, "driver", _FakeDriver)
    monkeypatch.setattr(launch, "FAST_LAUNCH", True)
    return fn, Launcher(fn)


def test_launcher_reads_the_signature(toy):
    fn, launcher = toy
    assert launcher.cached
    assert launcher._arg_key.unspecialized == (False, False, False, True, False)
    assert launcher._constexpr_names == ("BLOCK", "FLAG")


def test_launcher_needs_constexprs_last():
    def bad(X, BLOCK: tl.constexpr, n):
        pass
    with pytest.raises(TypeError, match="constexpr"):
        Launcher(JITFunction(bad))


def test_launcher_hits_and_misses(toy):
    fn, launcher = toy
    x, y = torch.zeros(64), torch.zeros(64, dtype=torch.float16)
    cx = dict(BLOCK=16, FLAG=True)

    def call(args, constexprs=cx, num_warps=4, grid=(3,)):
        before = len(fn.slow_calls)
        launcher(grid, args, constexprs, num_warps, 2)
        return "miss" if len(fn.slow_calls) > before else "hit"

    assert call((x, y, 32, 5, 0.5)) == "miss"
    assert fn.slow_calls[-1] == ((3,), (x, y, 32, 5, 0.5), dict(cx, num_warps=4, num_stages=2))
    assert call((x, y, 32, 5, 0.5), grid=(7, 2)) == "hit"
    # a hit passes what JITFunction.run passes: grid, stream, function, metadata, hooks (off:
    # Triton's hook chains are empty), then every parameter in order, constexprs included
    assert fn.kernel_runs[-1] == (7, 2, 1, 777, 1234, (4, 1, 0), None, None, None, x, y, 32, 5, 0.5, 16, True)
    assert call((torch.zeros(64), y, 48, 9, 2.0)) == "hit"      # same dtypes, alignment, classes
    assert call((x, y, 32, 2 ** 40, 0.5)) == "miss"              # do_not_specialize: i32 -> i64
    assert call((x[1:], y, 32, 5, 0.5)) == "miss"                # unaligned pointer
    assert call((x, y[8:], 32, 5, 0.5)) == "hit"                 # 16 bytes in: still aligned
    assert call((x, y, 33, 5, 0.5)) == "miss"                    # not divisible by 16
    assert call((x, y, 1, 5, 0.5)) == "miss"                     # 1 is a constexpr
    assert call((x, y.float(), 32, 5, 0.5)) == "miss"            # dtype
    assert call((x, y, 32, 5, 0.5), dict(BLOCK=32, FLAG=True)) == "miss"
    assert call((x, y, 32, 5, 0.5), dict(BLOCK=16, FLAG=1)) == "miss"  # True == 1, not to Triton
    assert call((x, y, 32, 5, 0.5), num_warps=8) == "miss"
    assert call((x, y, 32, 5, 0.5)) == "hit"
    with pytest.raises(TypeError, match="constexprs"):
        call((x, y, 32, 5, 0.5), dict(cx, num_ctas=2))


def test_launcher_passes_active_hooks(toy):
    fn, launcher = toy
    x = torch.zeros(64)
    args = (x, x, 32, 5, 0.5)
    launcher((3,), args, dict(BLOCK=16, FLAG=True), 4, 2)
    seen = []
    hook = seen.append
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        launcher((3,), args, dict(BLOCK=16, FLAG=True), 4, 2)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    run = fn.kernel_runs[-1]
    assert run[6] == ("metadata", (3,), 777, (*args, 16, True))
    assert run[7] is knobs.runtime.launch_enter_hook and run[8] is knobs.runtime.launch_exit_hook


def test_launcher_switch_and_debug_knob(toy, monkeypatch):
    fn, launcher = toy
    x = torch.zeros(64)
    args, cx = (x, x, 32, 5, 0.5), dict(BLOCK=16, FLAG=True)
    launcher((3,), args, cx, 4, 2)
    monkeypatch.setattr(knobs.runtime, "debug", True)
    launcher((3,), args, cx, 4, 2)           # debug kernels are another specialization
    assert len(fn.slow_calls) == 2
    monkeypatch.setattr(launch, "FAST_LAUNCH", False)
    launcher((3,), args, cx, 4, 2)
    assert len(fn.slow_calls) == 3 and fn.kernel_runs == []


def test_interpreted_kernels_take_the_plain_path():
    """Under TRITON_INTERPRET=1 (the CPU test run) the kernels are not JITFunctions."""
    if torch.cuda.is_available():
        pytest.skip("compiled kernels here")
    from pyflashattn.configs import interpreting
    from pyflashattn.kernels import fwd
    assert interpreting() and not fwd._launch_fwd.cached


def test_every_kind_in_values_is_keyed():
    """VALUES exercises every branch of the key (no value falls back to None by accident)."""
    for value, u in itertools.product(VALUES, (False, True)):
        if type(value) is int and not (-2 ** 63 <= value < 2 ** 64):
            continue
        assert ArgKey((u,))((value,)) is not None, value


def _gpu_inputs(kind: str, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    rnd = lambda *shape: torch.randn(*shape, generator=g, device="cuda", dtype=torch.bfloat16)  # noqa: E731
    b, s, h, d = 2, 333, 4, 64
    if kind == "contiguous":
        qkv = [rnd(b, s, h, d) for _ in range(3)]
    elif kind == "unaligned":  # one element into a flat buffer: pointers 2 bytes off 16-byte alignment
        qkv = [rnd(b * s * h * d + 1)[1:].view(b, s, h, d) for _ in range(3)]
        assert all(t.data_ptr() % 16 == 2 for t in qkv)
    elif kind == "qkv72":  # packed views, head dim 72
        qkv = list(rnd(b, s, 3, h, 72).unbind(2))
    else:  # GQA, another sequence length
        qkv = [rnd(b, 200, h, d), rnd(b, 200, 1, d), rnd(b, 200, 1, d)]
    return [t.requires_grad_() for t in qkv]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_launch_matches_triton_launch_bitwise(monkeypatch):
    """On the GPU: outputs and gradients through the cached launcher are bitwise those of
    Triton's own launch, for inputs that must miss each other's cache entries (alignment, head
    dim, GQA), on the miss and on the hit that follows."""
    import pyflashattn
    from pyflashattn.kernels import bwd, fwd

    launchers = (fwd._launch_fwd, bwd._launch_preprocess, bwd._launch_dkdv, bwd._launch_dq)

    def fwd_bwd(q, k, v):
        out = pyflashattn.flash_attn_func(q, k, v, causal=True)
        grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
        return [t.contiguous().view(torch.int16) for t in (out, *grads)]

    for i, kind in enumerate(("contiguous", "unaligned", "qkv72", "gqa")):
        qkv = _gpu_inputs(kind, i)
        monkeypatch.setattr(launch, "FAST_LAUNCH", False)
        ref = fwd_bwd(*qkv)
        monkeypatch.setattr(launch, "FAST_LAUNCH", True)
        for attempt in ("miss", "hit"):
            entries = [entry.cache_size() for entry in launchers]
            got = fwd_bwd(*qkv)
            assert all(torch.equal(a, r) for a, r in zip(got, ref)), (kind, attempt)
            if attempt == "hit":
                assert [entry.cache_size() for entry in launchers] == entries, kind

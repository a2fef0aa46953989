"""A cached launcher: Triton's kernel launch without its per-call argument specialization.

``fn[grid](*args, **constexprs)`` (``JITFunction.run``) binds and specializes every argument in
Python on each call, builds a cache key from the result, looks the compiled kernel up, and only
then calls the kernel's C launcher. With ~60 arguments per launch and four launches per
forward + backward, that is a large share of a call's host time at small shapes. ``Launcher``
keeps its own map from a cheaper key to the ``CompiledKernel`` that Triton chose: the first call
with a new key goes through ``fn[grid](...)`` (compiling if needed), and later calls with the
same key hand the arguments to the kernel's C launcher the way ``JITFunction.run`` does.

The key is at least as fine as Triton's own specialization (``ArgKey`` below; tests check it
against ``native_specialize_impl``), so a hit always finds the kernel Triton would have run.

``PYFLASHATTN_FAST_LAUNCH=0`` (read at import) or ``launch.FAST_LAUNCH = False`` sends every
call through ``fn[grid](...)``, for A/B measurements. Under ``TRITON_INTERPRET=1`` the kernels
are interpreter functions and every call goes through ``fn[grid](...)`` as well, and so does
every call under a Triton other than 3.6, whose launch internals this module was not checked
against.
"""
from __future__ import annotations

import operator
import os

import torch
import triton
from triton.runtime.jit import JITFunction

try:  # what a hit does is JITFunction.run's second half as of Triton 3.6; other versions launch plainly
    from triton import knobs
    from triton.knobs import HookChain
    from triton.runtime.driver import driver
    _KNOWN_TRITON = triton.__version__.startswith("3.6.")
except ImportError:
    _KNOWN_TRITON = False

FAST_LAUNCH = os.environ.get("PYFLASHATTN_FAST_LAUNCH", "1").strip().lower() not in ("0", "false", "off", "no")

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1


def _int_width(value: int) -> int | None:
    """Triton's integer type for ``value``: 32, 64 (signed) or -64 (unsigned); None if none fits."""
    if _INT32_MIN <= value <= _INT32_MAX:
        return 32
    if _INT64_MIN <= value <= _INT64_MAX:
        return 64
    return -64 if 0 <= value <= _UINT64_MAX else None


def _picker(positions: list[int]):
    """``args -> tuple(args[i] for i in positions)`` at C speed (``itemgetter``, which returns a
    bare item for one position and cannot take none)."""
    if not positions:
        return lambda args: ()
    if len(positions) == 1:
        (i,) = positions
        return lambda args: (args[i],)
    return operator.itemgetter(*positions)


class ArgKey:
    """What Triton 3.6 specializes a kernel on, for its runtime (non-constexpr) arguments:
    ``ArgKey(unspecialized)(args)``, where ``unspecialized[i]`` is True when the kernel lists
    argument ``i`` in ``do_not_specialize``. Returns None for arguments this key does not model
    (the caller then launches through Triton).

    Triton's ``native_specialize_impl`` gives: a tensor, its dtype and whether its data pointer is
    16-byte aligned; an int, ``constexpr`` when it is 1, else i32, i64 or u64 by range and whether
    it is divisible by 16 (a ``do_not_specialize`` int: the type by range only); a float, fp32; a
    bool, u1; None, ``constexpr None``. The key holds, finer where it is cheaper:

    - the type of every argument (``bool`` apart from ``int``: True == 1 in Python);
    - each specialized int's remainder modulo 16, or -1 for the value 1;
    - each tensor's dtype and its data pointer's remainder modulo 16;
    - the range of every int, as one None when all fit in i32 (the usual case), else per int.

    The types select a plan (which positions hold tensors, ints, specialized ints), cached, so
    that the rest is a few comprehensions over those positions: ~60 arguments make this run
    on every launch, and one Python branch per argument would cost as much as Triton's own
    specialization.
    """

    def __init__(self, unspecialized: tuple[bool, ...]):
        self.unspecialized = unspecialized
        self._plans: dict = {}

    def _plan(self, types: tuple):
        """Positions of (ints, specialized ints, tensors) for arguments of these types, or None."""
        ints = [i for i, kind in enumerate(types) if kind is int]
        tensors = [i for i, kind in enumerate(types) if issubclass(kind, torch.Tensor)]
        others = set(types) - {int, float, bool, type(None)}
        if any(not issubclass(kind, torch.Tensor) for kind in others) or len(types) != len(self.unspecialized):
            return None  # a kind of argument (or a count) this key does not model
        specialized = [i for i in ints if not self.unspecialized[i]]
        return _picker(ints), _picker(specialized), _picker(tensors)

    def __call__(self, args: tuple) -> tuple | None:
        types = tuple(map(type, args))
        plan = self._plans.get(types, False)
        if plan is False:
            plan = self._plans[types] = self._plan(types)
        if plan is None:
            return None
        pick_ints, pick_specialized, pick_tensors = plan
        ints = pick_ints(args)
        widths = None
        if ints and (min(ints) < _INT32_MIN or max(ints) > _INT32_MAX):
            widths = tuple(map(_int_width, ints))
            if None in widths:
                return None  # Triton refuses it; let it say so
        tensors = pick_tensors(args)
        return (types, widths,
                tuple([-1 if value == 1 else value % 16 for value in pick_specialized(args)]),
                tuple([t.dtype for t in tensors]), tuple([t.data_ptr() % 16 for t in tensors]))


def _hook_active(hook) -> bool:
    """Whether a launch hook would do anything. Triton 3.6's hooks are ``HookChain`` objects that
    are never None, so ``JITFunction.run`` builds launch metadata and the C launcher calls both
    chains on every launch even when they are empty; an empty chain is skipped here."""
    return hook is not None and (type(hook) is not HookChain or bool(hook.calls))


class Launcher:
    """Launches one ``@triton.jit`` kernel whose constexpr parameters all come after its runtime
    parameters (true of every kernel here; checked at construction).

    ``launcher(grid, args, constexprs, num_warps, num_stages)`` does what
    ``fn[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages)`` does: ``args``
    are the runtime arguments in signature order, ``constexprs`` a dict by name.
    """

    def __init__(self, fn):
        self.fn = fn
        # Under TRITON_INTERPRET=1, @triton.jit made an interpreter function (no compiled
        # kernels to keep); under another Triton version, the launch protocol may differ
        self.cached = isinstance(fn, JITFunction) and _KNOWN_TRITON
        self._cache: dict = {}
        if not self.cached:
            return
        params = fn.params
        num_args = sum(not p.is_constexpr for p in params)
        runtime, constexpr = params[:num_args], params[num_args:]
        if any(p.is_constexpr for p in runtime):
            raise TypeError(f"{fn}: constexpr parameters must come after the runtime ones")
        self._arg_key = ArgKey(tuple(p.do_not_specialize for p in runtime))
        self._constexpr_names = tuple(p.name for p in constexpr)

    def __call__(self, grid: tuple, args: tuple, constexprs: dict, num_warps: int, num_stages: int) -> None:
        fn = self.fn
        if not (FAST_LAUNCH and self.cached) or fn.pre_run_hooks:
            fn[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages)
            return
        if len(constexprs) != len(self._constexpr_names):
            raise TypeError(f"{fn}: constexprs must be exactly {self._constexpr_names}, got {tuple(constexprs)}")
        constexpr_values = tuple(map(constexprs.__getitem__, self._constexpr_names))
        active = driver.active
        device = active.get_current_device()
        spec = self._arg_key(args)
        # Triton's key also holds the launch options that reach it: num_warps, num_stages and
        # ``debug``/``instrumentation_mode`` (from knobs, per call). The constexprs' types are
        # here too because True == 1 == 1.0 in Python while Triton's key tells them apart.
        key = (device, num_warps, num_stages, fn.debug or knobs.runtime.debug,
               knobs.compilation.instrumentation_mode, constexpr_values,
               tuple(map(type, constexpr_values)), spec)
        entry = self._cache.get(key) if spec is not None else None
        if entry is None:
            kernel = fn[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages)
            # None: a jit_cache_hook skipped the compile, nothing to remember
            if spec is not None and kernel is not None:
                self._cache[key] = (kernel.run, kernel.function, kernel.packed_metadata, kernel)
            return
        # A hit: what JITFunction.run does after its cache lookup. Its check that the globals a
        # kernel read at compile time still hold their values (``used_global_vals``) is skipped:
        # the kernels here read one global each at most, a tl.constexpr (LOG2E or LN2) that
        # nothing reassigns, and the first launch of every key still runs the check.
        run, function, packed_metadata, kernel = entry
        full_args = args + constexpr_values  # the C launcher takes every parameter, constexprs included
        stream = active.get_current_stream(device)
        enter_hook, exit_hook = knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook
        if _hook_active(enter_hook) or _hook_active(exit_hook):
            metadata = kernel.launch_metadata(grid, stream, *full_args)
        else:
            enter_hook = exit_hook = metadata = None
        dims = len(grid)
        run(grid[0], grid[1] if dims > 1 else 1, grid[2] if dims > 2 else 1, stream, function, packed_metadata,
            metadata, enter_hook, exit_hook, *full_args)

    def cache_size(self) -> int:
        """How many specializations this launcher has seen (for tests and measurements)."""
        return len(self._cache)

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

Gluon kernels (``hopper.py``) take TMA descriptors. Building Gluon's ``TensorDescriptor`` costs
~6 us each on the H200 host, mostly its validation; they pass a ``LightDescriptor`` instead, which the key reads
as Triton's specialization does and which a miss turns into a real ``TensorDescriptor`` before
Triton sees it (so Triton validates and compiles as before). A hit hands the light object
straight to the C launcher, which reads only what both have (``.base``, ``.shape``,
``.strides``, ``.padding``). Extra launch options (``maxnreg=``) go through and into the key.

``PYFLASHATTN_FAST_LAUNCH=0`` (read at import) or ``launch.FAST_LAUNCH = False`` sends every
call through ``fn[grid](...)``, for A/B measurements. Under ``TRITON_INTERPRET=1`` the kernels
are interpreter functions and every call goes through ``fn[grid](...)`` as well, and so does
every call under a Triton other than 3.6, whose launch internals this module was not checked
against.
"""
from __future__ import annotations

import operator

import torch
import triton
from triton.runtime.jit import JITFunction

from ..configs import env_switch

try:  # what a hit does is JITFunction.run's second half as of Triton 3.6; other versions launch plainly
    from triton import knobs
    from triton.knobs import HookChain
    from triton.runtime.driver import driver
    _KNOWN_TRITON = triton.__version__.startswith("3.6.")
except ImportError:
    _KNOWN_TRITON = False

FAST_LAUNCH = env_switch("PYFLASHATTN_FAST_LAUNCH")

# compiled kernels remembered by every Launcher so far: what a bind that missed waits for
ENTRIES = 0

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


class LightDescriptor:
    """A TMA descriptor argument for a Gluon kernel: the fields of Gluon's ``TensorDescriptor``
    (``triton.experimental.gluon.nvidia.hopper``) without its ``__post_init__`` checks, which
    make most of that one's cost (~0.3 us to build against ~2.5 us on a CPU test machine).

    Nothing here validates: the caller vouches that ``base`` is 16-byte aligned, the outer strides
    are multiples of 16 bytes, the last stride is 1 and the shape is positive (``hopper.usable``
    refuses tensors TMA cannot read, ``merges_rows``; empty inputs never reach a kernel). Every
    cache miss (and every launch through ``fn[grid](...)``) goes through ``real()``, so Triton
    still checks the first launch of each key; hits are the caller's word.
    """
    __slots__ = ("base", "shape", "strides", "block_shape", "layout", "padding")

    def __init__(self, base, shape, strides, block_shape, layout, padding: str = "zero"):
        self.base, self.shape, self.strides = base, shape, strides
        self.block_shape, self.layout, self.padding = block_shape, layout, padding

    def real(self):
        """The Gluon ``TensorDescriptor`` with these fields (validated by its constructor)."""
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
        return TensorDescriptor(self.base, list(self.shape), list(self.strides), list(self.block_shape), self.layout,
                                self.padding)

    def __repr__(self) -> str:
        return (f"LightDescriptor({tuple(self.base.shape)} {self.base.dtype}, shape={self.shape}, "
                f"strides={self.strides}, block_shape={self.block_shape}, {self.layout!r}, {self.padding!r})")


def _real_args(args: tuple) -> tuple:
    """``args`` with each ``LightDescriptor`` replaced by Gluon's ``TensorDescriptor``, for Triton."""
    if LightDescriptor not in map(type, args):
        return args
    return tuple([a.real() if type(a) is LightDescriptor else a for a in args])


_LAYOUT_NAMES: dict = {}


def _layout_name(layout) -> str:
    """``repr(layout)``: the layout's part of Triton's type string for a descriptor, memoized by
    identity. Keying on the layout itself would be near enough but not exact (a dataclass's
    ``==`` has ``True == 1`` where its repr does not) and would run its Python ``__hash__`` on
    every lookup, where a str's hash is cached. The entry holds the layout, so its id is not
    reused while remembered; layouts are frozen dataclasses, and the kernels use a few cached
    ones (``hopper._smem_layout``)."""
    entry = _LAYOUT_NAMES.get(id(layout))
    if entry is None:
        if len(_LAYOUT_NAMES) >= 1024:  # a caller that builds a layout per call: stay bounded
            _LAYOUT_NAMES.clear()
        entry = _LAYOUT_NAMES[id(layout)] = (layout, repr(layout))
    return entry[1]


def descriptor_key(d: LightDescriptor) -> tuple:
    """What Triton 3.6 specializes a Gluon descriptor on: its type string
    ``tensordesc<{dtype}{list(block_shape)},{layout!r}>`` and nothing else (no alignment, shape,
    strides or padding: those are runtime values of the C launcher)."""
    return d.base.dtype, tuple(d.block_shape), _layout_name(d.layout)


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
    - the range of every int, as one None when all fit in i32 (the usual case), else per int;
    - each ``LightDescriptor``'s ``descriptor_key`` (Triton: its ``tensordesc<...>`` type string).

    The types select a plan (which positions hold tensors, ints, specialized ints), cached, so
    that the rest is a few comprehensions over those positions: ~60 arguments make this run
    on every launch, and one Python branch per argument would cost as much as Triton's own
    specialization.
    """

    def __init__(self, unspecialized: tuple[bool, ...]):
        self.unspecialized = unspecialized
        self._plans: dict = {}

    def _plan(self, types: tuple):
        """Pickers of (ints, specialized ints, tensors, descriptors or None) for arguments of these
        types, or None."""
        ints = [i for i, kind in enumerate(types) if kind is int]
        tensors = [i for i, kind in enumerate(types) if issubclass(kind, torch.Tensor)]
        descs = [i for i, kind in enumerate(types) if kind is LightDescriptor]
        others = set(types) - {int, float, bool, type(None), LightDescriptor}
        if any(not issubclass(kind, torch.Tensor) for kind in others) or len(types) != len(self.unspecialized):
            return None  # a kind of argument (or a count) this key does not model
        specialized = [i for i in ints if not self.unspecialized[i]]
        return _picker(ints), _picker(specialized), _picker(tensors), _picker(descs) if descs else None

    def __call__(self, args: tuple) -> tuple | None:
        types = tuple(map(type, args))
        plan = self._plans.get(types, False)
        if plan is False:
            plan = self._plans[types] = self._plan(types)
        if plan is None:
            return None
        pick_ints, pick_specialized, pick_tensors, pick_descs = plan
        ints = pick_ints(args)
        widths = None
        if ints and (min(ints) < _INT32_MIN or max(ints) > _INT32_MAX):
            widths = tuple(map(_int_width, ints))
            if None in widths:
                return None  # Triton refuses it; let it say so
        tensors = pick_tensors(args)
        key = (types, widths,
               tuple([-1 if value == 1 else value % 16 for value in pick_specialized(args)]),
               tuple([t.dtype for t in tensors]), tuple([t.data_ptr() % 16 for t in tensors]))
        if pick_descs is None:
            return key
        return key + tuple(map(descriptor_key, pick_descs(args)))


def _hook_active(hook) -> bool:
    """Whether a launch hook would do anything. Triton 3.6's hooks are ``HookChain`` objects that
    are never None, so ``JITFunction.run`` builds launch metadata and the C launcher calls both
    chains on every launch even when they are empty; an empty chain is skipped here."""
    return hook is not None and (type(hook) is not HookChain or bool(hook.calls))


class Launcher:
    """Launches one ``@triton.jit`` or ``@gluon.jit`` kernel whose constexpr parameters all come
    after its runtime parameters (true of every kernel here; checked at construction).

    ``launcher(grid, args, constexprs, num_warps, num_stages, **options)`` does what
    ``fn[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages, **options)`` does:
    ``args`` are the runtime arguments in signature order (``LightDescriptor`` for a descriptor),
    ``constexprs`` a dict by name (those with a default may be left out), ``num_stages=None``
    leaves Triton's default, ``options`` are further launch options (``maxnreg=``).

    A Gluon kernel declares ``num_warps: gl.constexpr`` among its parameters. ``fn[grid](...,
    num_warps=4)`` binds the keyword to that parameter (Triton's binder is a function with the
    kernel's parameters and ``**options``); ``JITFunction._pack_args`` parses the options from
    the same keywords, so 4 is both the launch option and the parameter's value, and the C
    launcher gets it among the constexprs, at the parameter's place. Here it comes from
    ``num_warps``, never from ``constexprs``.
    """

    def __init__(self, fn):
        self.fn = fn
        # Under TRITON_INTERPRET=1, @triton.jit made an interpreter function (no compiled
        # kernels to keep); under another Triton version, the launch protocol may differ
        self.cached = isinstance(fn, JITFunction) and _KNOWN_TRITON
        self._cache: dict = {}
        # whether arguments may hold a LightDescriptor to convert for Triton: not for a plain
        # @triton.jit kernel (what Gluon's TensorDescriptor is for), which skips the scan
        self._gluon = not isinstance(fn, JITFunction) or fn.is_gluon()
        if not self.cached:
            return
        params = fn.params
        num_args = sum(not p.is_constexpr for p in params)
        runtime, constexpr = params[:num_args], params[num_args:]
        if any(p.is_constexpr for p in runtime):
            raise TypeError(f"{fn}: constexpr parameters must come after the runtime ones")
        self._arg_key = ArgKey(tuple(p.do_not_specialize for p in runtime))
        names = tuple(p.name for p in constexpr)
        # where the num_warps parameter sits among the constexprs (Gluon kernels), or None
        self._warps_at = names.index("num_warps") if "num_warps" in names else None
        self._constexpr_names = tuple(n for n in names if n != "num_warps")
        # constexprs a call may leave out: Triton's binder fills in their defaults
        self._constexpr_defaults = {p.name: p.default for p in constexpr if p.has_default and p.name != "num_warps"}

    def _launch_plainly(self, grid, args, constexprs, num_warps, num_stages, options):
        """``fn[grid](...)``: Triton binds, specializes, compiles if needed and launches."""
        if num_stages is not None:
            options = dict(options, num_stages=num_stages)
        return self.fn[grid](*(_real_args(args) if self._gluon else args), **constexprs, num_warps=num_warps,
                             **options)

    def _lookup(self, args: tuple, constexprs: dict, num_warps: int, num_stages: int | None, options: dict):
        """(cache key or None, cache entry or None, every constexpr's value in parameter order)."""
        fn = self.fn
        names = self._constexpr_names
        if len(constexprs) != len(names):
            constexprs = {**self._constexpr_defaults, **constexprs}
        try:
            constexpr_values = tuple(map(constexprs.__getitem__, names))
        except KeyError:
            constexpr_values = None
        if constexpr_values is None or len(constexprs) != len(names):
            raise TypeError(f"{fn}: constexprs must be {names} (those with a default may be left out), "
                            f"got {tuple(constexprs)}")
        at = self._warps_at
        if at is not None:
            constexpr_values = constexpr_values[:at] + (num_warps,) + constexpr_values[at:]
        spec = self._arg_key(args)
        if spec is None:
            return None, None, constexpr_values
        # Triton's key also holds the launch options that reach it: num_warps, num_stages, the
        # other options given (maxnreg) and ``debug``/``instrumentation_mode`` (from knobs, per
        # call). The constexprs' types are here too because True == 1 == 1.0 in Python while
        # Triton's key tells them apart.
        key = (driver.active.get_current_device(), num_warps, num_stages, fn.debug or knobs.runtime.debug,
               knobs.compilation.instrumentation_mode, constexpr_values,
               tuple(map(type, constexpr_values)), spec, tuple(options.items()) if options else None)
        return key, self._cache.get(key), constexpr_values

    def _fast(self) -> bool:
        """Whether launches may skip Triton's own (a pre-run hook must see every call)."""
        return FAST_LAUNCH and self.cached and not self.fn.pre_run_hooks

    def __call__(self, grid: tuple, args: tuple, constexprs: dict, num_warps: int, num_stages: int | None = None,
                 **options) -> None:
        if not self._fast():
            self._launch_plainly(grid, args, constexprs, num_warps, num_stages, options)
            return
        key, entry, constexpr_values = self._lookup(args, constexprs, num_warps, num_stages, options)
        if entry is None:
            kernel = self._launch_plainly(grid, args, constexprs, num_warps, num_stages, options)
            # None: a jit_cache_hook skipped the compile, nothing to remember
            if key is not None and kernel is not None:
                self._cache[key] = (kernel.run, kernel.function, kernel.packed_metadata, kernel)
                global ENTRIES
                ENTRIES += 1
            return
        _run_entry(entry, grid, args + constexpr_values)

    def bind(self, grid: tuple, args: tuple, constexprs: dict, num_warps: int, num_stages: int | None = None,
             **options) -> "Bound | None":
        """The compiled kernel this launch would run, bound to its grid and constexprs: ``Bound``,
        whose ``launch(args)`` runs it with other runtime arguments of the same specialization
        (the caller's promise: same types, tensor dtypes and 16-byte alignment, the same ints
        modulo 16). None where this launch would not be a cached hit (the fast path is off, or
        this key never launched)."""
        if not self._fast():
            return None
        key, entry, constexpr_values = self._lookup(args, constexprs, num_warps, num_stages, options)
        return None if entry is None else Bound(entry, grid, constexpr_values, key[0])

    def cache_size(self) -> int:
        """How many specializations this launcher has seen (for tests and measurements)."""
        return len(self._cache)


class Bound:
    """A cached launch with its grid and constexprs fixed (``Launcher.bind``); ``device`` is the
    CUDA device it was bound on."""
    __slots__ = ("entry", "grid", "constexpr_values", "device")

    def __init__(self, entry: tuple, grid: tuple, constexpr_values: tuple, device: int):
        self.entry, self.grid, self.constexpr_values, self.device = entry, grid, constexpr_values, device

    def launch(self, args: tuple) -> None:
        _run_entry(self.entry, self.grid, args + self.constexpr_values)


def _run_entry(entry: tuple, grid: tuple, full_args: tuple) -> None:
    """A hit: what JITFunction.run does after its cache lookup. Its check that the globals a
    kernel read at compile time still hold their values (``used_global_vals``) is skipped: the
    kernels here read module-level constexprs at most (LOG2E, LN2, ROWS: gl/tl.constexpr that
    nothing reassigns), and the first launch of every key still runs the check. ``full_args``:
    every parameter, constexprs included (the C launcher takes them all); a LightDescriptor as
    it is: the launcher reads .base (data_ptr), .shape, .strides and .padding of a descriptor
    (driver.py, make_tensordesc_arg), all of which it has."""
    run, function, packed_metadata, kernel = entry
    active = driver.active
    stream = active.get_current_stream(active.get_current_device())
    enter_hook, exit_hook = knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook
    if _hook_active(enter_hook) or _hook_active(exit_hook):
        metadata = kernel.launch_metadata(grid, stream, *full_args)
    else:
        enter_hook = exit_hook = metadata = None
    dims = len(grid)
    run(grid[0], grid[1] if dims > 1 else 1, grid[2] if dims > 2 else 1, stream, function, packed_metadata,
        metadata, enter_hook, exit_hook, *full_args)

"""Launch plans: a pass's launches bound to their compiled kernels once per layout, so that a
later call of the same layout does little Python (``bwd.BackwardPlan``, ``fwd.ForwardPlan``).

A plan keeps no tensor. Each launch keeps its ``launch.Bound`` (compiled kernel, grid,
constexprs), its arguments with every tensor slot emptied (the template), and per slot which
of the call's tensors goes there (its role: an index into the tuple the plan's ``run`` builds)
and, for a TMA descriptor, the descriptor's shape, strides, block shape and layout. A plan is
made from the general path's launches, built with meta tensors standing in for what the call
allocates (shapes, strides and dtypes, a 16-byte aligned address, no memory), after the general
path has compiled the kernels.
"""
from __future__ import annotations

import torch

from . import launch
from .launch import LightDescriptor


def knob_values() -> tuple:
    """Triton's per-call options that reach a kernel's cache key: a plan made under other
    values would launch the wrong compiled kernel."""
    return launch.knobs.runtime.debug, launch.knobs.compilation.instrumentation_mode


def plannable(*given: torch.Tensor) -> bool:
    """Whether a plan may serve these inputs at all: the launchers' fast path on, no two the
    same object, a unit last stride and 16-byte alignment each (what the plan's stand-ins
    assume)."""
    return (launch.FAST_LAUNCH and len(set(map(id, given))) == len(given)
            and not any(t.stride(-1) != 1 or t.data_ptr() % 16 for t in given))


def serves(p, *given: torch.Tensor) -> bool:
    """Whether a plan may be made for options ``p`` (``params.KernelParams``) and inputs
    ``given``: no block mask, dropout or ALiBi (per-call arguments a plan does not fill in),
    and ``plannable``."""
    return not (p.is_sparse or p.has_dropout or p.has_alibi) and plannable(*given)


def cu_seqlens(p) -> tuple:
    """Varlen's ``(cu_seqlens_q, cu_seqlens_k)``, the plan's last two roles; ``(None, None)``."""
    return (p.cu_seqlens_q, p.cu_seqlens_k) if p.is_varlen else (None, None)


class Plan:
    """What a pass's plan (``bwd.BackwardPlan``, ``fwd.ForwardPlan``) keeps besides its own
    allocations: the bound launches (``bind``), the layouts, device and Triton knobs they were
    bound for, and for varlen whether one cu_seqlens served both (else None)."""

    __slots__ = ("launches", "layouts", "device", "knobs", "shared_cu")

    def __init__(self, launches: tuple, given: tuple, p):
        self.launches, self.layouts = launches, layouts(given)
        self.device, self.knobs = launches[0][0].device, knob_values()
        self.shared_cu = (p.cu_seqlens_q is p.cu_seqlens_k) if p.is_varlen else None

    def accepts(self, given: tuple, cu_seqlens_q, cu_seqlens_k) -> bool:
        """Whether ``run`` may serve this call: the launchers' fast path on, ``given`` with the
        plan's layouts (``matches``: with the key's strides, the unit last stride ``plannable``
        asked for), cu_seqlens as the plan had them (``cu_matches``), on the plan's device and
        knobs."""
        return (launch.FAST_LAUNCH and matches(given, self.layouts)
                and cu_matches(cu_seqlens_q, cu_seqlens_k, self.shared_cu)
                and launch.driver.active.get_current_device() == self.device and knob_values() == self.knobs)


def layouts(given: tuple) -> tuple:
    return tuple((t.dtype, t.shape, t.stride()) for t in given)


def matches(given: tuple, expected: tuple) -> bool:
    """``given`` has the ``layouts`` a plan was made for, 16-byte aligned, no two the same object."""
    for t, (dtype, shape, stride) in zip(given, expected):
        if t.dtype != dtype or t.shape != shape or t.stride() != stride or t.data_ptr() % 16:
            return False
    return len(set(map(id, given))) == len(given)


def cu_aligned(cu_seqlens_q, cu_seqlens_k) -> bool:
    """Both cu_seqlens 16-byte aligned, as the kernels a plan binds were specialized."""
    return not cu_seqlens_q.data_ptr() % 16 and not cu_seqlens_k.data_ptr() % 16


def cu_matches(cu_seqlens_q, cu_seqlens_k, shared_cu: bool | None) -> bool:
    """Varlen's cu_seqlens as the plan had them: present exactly for a varlen plan
    (``shared_cu`` not None), one tensor for both exactly where the plan's was one, aligned
    (``cu_aligned``)."""
    if (cu_seqlens_q is None) != (shared_cu is None):
        return False
    return cu_seqlens_q is None or ((cu_seqlens_q is cu_seqlens_k) == shared_cu
                                    and cu_aligned(cu_seqlens_q, cu_seqlens_k))


def bind(launches: list, roles: tuple) -> tuple | None:
    """The launches (``(launcher, grid, args, constexprs, num_warps, num_stages, options)``, as
    the general path builds them from ``roles``' tensors) bound: ``((bound, template, slots),
    ...)``, or None where a launch is not a cached hit or passes a tensor that is none of
    ``roles`` (a plan could not fill it in)."""
    ids = {id(t): which for which, t in enumerate(roles) if t is not None}
    # varlen's 4-d views (``p.as_4d``): the C launcher reads a tensor argument's address only,
    # so a view at its base's address takes the base
    views = {(t.untyped_storage()._cdata, t.storage_offset(), t.dtype): which for which, t in enumerate(roles)
             if t is not None}
    bound_launches = []
    for launcher, grid, args, constexprs, num_warps, num_stages, options in launches:
        bound = launcher.bind(grid, args, constexprs, num_warps, num_stages, **options)
        if bound is None:
            return None
        template, slots = list(args), []
        for i, a in enumerate(args):
            is_desc = type(a) is LightDescriptor
            if not is_desc and not isinstance(a, torch.Tensor):
                continue
            which = ids.get(id(a.base if is_desc else a))
            if which is None and not is_desc:
                which = views.get((a.untyped_storage()._cdata, a.storage_offset(), a.dtype))
            if which is None:
                return None
            # no tensor kept: a plan is cached beyond this call (ops._PLANS)
            slots.append((i, which, (a.shape, a.strides, a.block_shape, a.layout) if is_desc else None))
            template[i] = None
        bound_launches.append((bound, tuple(template), tuple(slots)))
    return tuple(bound_launches)


def run(bound_launches: tuple, tensors: tuple) -> None:
    """Each bound launch with its slots filled from ``tensors`` (indexed by role)."""
    for bound, template, slots in bound_launches:
        args = list(template)
        for i, which, desc in slots:   # desc: a descriptor's (shape, strides, block shape, layout)
            args[i] = tensors[which] if desc is None else LightDescriptor(tensors[which], *desc)
        bound.launch(tuple(args))

"""The Gluon kernels on Hopper (kernels/hopper*.py): when they are chosen, that it compiles for
sm_90 within the SM's registers and shared memory (on any machine, ahead of time), and on an
H200 its results against the float64 reference."""
import importlib.util
import json
from dataclasses import replace

import pytest
import torch

from pyflashattn.configs import _config
from pyflashattn import ops
from pyflashattn.ops import _params
from pyflashattn.testing import compare_with_reference

from conftest import HAS_CUDA, compiled_json

hopper = pytest.importorskip("pyflashattn.kernels.hopper")


# the Gluon dK/dV kernel ships on at d=128 and off at d=64 (configs.py), the warp-specialized
# one from 2048 keys without causal, and that one with dQ fused from 2048 keys without causal;
# the tests choose
DKDV_KERNELS = {"triton": {"hopper_dkdv_block_n": 0, "hopper_dkdv_ws_min_seqlen_k": 0, "hopper_fused_dq_min_seqlen_k": 0},
                "gluon": {"hopper_dkdv_block_n": 64, "hopper_dkdv_ws_min_seqlen_k": 0,
                          "hopper_fused_dq_min_seqlen_k": 0},
                "ws": {"hopper_dkdv_block_n": 64, "hopper_dkdv_ws_min_seqlen_k": 1,
                       "hopper_dkdv_ws_min_seqlen_k_causal": 1, "hopper_fused_dq_min_seqlen_k": 0},
                "fused": {"hopper_dkdv_block_n": 64, "hopper_dkdv_ws_min_seqlen_k": 0,
                          "hopper_fused_dq_min_seqlen_k": 1}}
DKDV_ON = json.dumps(DKDV_KERNELS["gluon"])
DKDV_OFF = json.dumps(DKDV_KERNELS["triton"])
# which forward kernel: the one-warpgroup one, or the warp-specialized one (the shipped one)
FWD_KERNELS = {"fwd1wg": {"hopper_ws_min_seqlen_k": 0}, "fwdws": {"hopper_ws_min_seqlen_k": 1}}


def overrides(*parts: dict) -> str:
    return json.dumps({k: v for part in parts for k, v in part.items()})


def cfg(d=128, dtype=torch.bfloat16, override=""):
    return _config(d, d, dtype, False, override)


def params(q, k, causal=False, window=(-1, -1), softcap=0.0, alibi=None, dropout_p=0.0):
    right = 0 if causal else window[1]
    return _params(q, k, q.shape[-1] ** -0.5, window[0], right, softcap, alibi, None, None, None, None, None,
                   dropout_p)


def qkv(b=2, sq=300, sk=300, h=4, hk=4, d=128, dtype=torch.bfloat16, device="cpu"):
    return (torch.randn(b, sq, h, d, dtype=dtype, device=device), torch.randn(b, sk, hk, d, dtype=dtype, device=device),
            torch.randn(b, sk, hk, d, dtype=dtype, device=device))


def usable(q, k, v, **kw):
    return hopper.usable(q, k, v, params(q, k, **kw), cfg(q.shape[-1], q.dtype), device_ok=True)


def test_chosen_for_the_dense_cases_it_covers():
    q, k, v = qkv()
    assert usable(q, k, v) and usable(q, k, v, causal=True)
    assert usable(*qkv(d=64, dtype=torch.float16), causal=True)
    assert usable(*qkv(sq=1, sk=4097, h=8, hk=2))                 # GQA, seqlen_q != seqlen_k
    assert usable(*qkv(sq=77, sk=300), causal=True)               # causal, every row sees a key
    assert usable(*qkv(), window=(100000, -1))                    # a window that never binds
    packed = torch.randn(2, 300, 3, 4, 128, dtype=torch.bfloat16)
    assert usable(*packed.unbind(2), causal=True)                 # qkv-packed: (b * s) rows, stride 3hd


def test_dkdv_chosen_when_turned_on():
    q, k, v = qkv()
    p, c = params(q, k, causal=True), cfg(override=DKDV_ON)
    assert hopper.usable(q, k, v, p, cfg(), device_ok=True, dout=torch.randn_like(q))  # the shipped table: d=128
    q64, k64, v64 = qkv(d=64)                                                           # and d=64 (since v12)
    assert hopper.usable(q64, k64, v64, params(q64, k64), cfg(64), device_ok=True, dout=torch.randn_like(q64))
    assert not hopper.dkdv_warp_specialized(params(q64, k64), cfg(64))                  # the one-warpgroup kernel
    q96, k96, v96 = qkv(d=96)                                                           # not at d=96 (no Gluon)
    assert not hopper.usable(q96, k96, v96, params(q96, k96), cfg(96), device_ok=True, dout=torch.randn_like(q96))
    assert hopper.usable(q, k, v, p, c, device_ok=True, dout=torch.randn_like(q))
    assert hopper.usable(q, k, v, params(q, k), c, device_ok=True, dout=torch.randn_like(q))
    assert not hopper.usable(q, k, v, p, c, device_ok=True, dout=torch.randn_like(q).float())  # dout's dtype
    heads_first = torch.randn(2, 4, 300, 128, dtype=q.dtype).transpose(1, 2)
    assert not hopper.usable(q, k, v, p, c, device_ok=True, dout=heads_first)     # dout TMA cannot read
    off = _config(128, 128, torch.bfloat16, False, json.dumps({"hopper_dkdv_block_n": 0}))
    assert not hopper.usable(q, k, v, p, off, device_ok=True, dout=torch.randn_like(q))
    assert hopper.usable(q, k, v, p, off, device_ok=True)                            # the forward is not


FEATURES_ON = {"hopper_features": 1, "hopper_alibi": 1}   # as the table ships them (ALiBi since v14)


def varlen_params(q, k, cu_q, cu_k, max_q, max_k, causal=False, window=(-1, -1), softcap=0.0, alibi=None):
    right = 0 if causal else window[1]
    return _params(q, k, q.shape[-1] ** -0.5, window[0], right, softcap, alibi, cu_q, cu_k, max_q, max_k, None)


def test_features_as_the_table_says():
    """Varlen, softcap, left windows and causal rows with no key: the forward takes them in the
    shipped table (``hopper_features``), ALiBi with ``hopper_alibi`` (on since v14)."""
    shipped, on, off = cfg(), cfg(override=json.dumps(FEATURES_ON)), cfg(override=json.dumps({"hopper_features": 0}))
    q, k, v = qkv()
    cu = torch.tensor([0, 100, 300, 600], dtype=torch.int32)
    qp, kp, vp = (t.reshape(600, 4, 128) for t in (q, k, v))
    for p in (params(q, k, causal=True, window=(256, -1)), params(q, k, window=(256, -1)),
              params(q, k, softcap=30.0), varlen_params(qp, kp, cu, cu, 300, 300, causal=True, softcap=5.0)):
        args = (qp, kp, vp) if p.is_varlen else (q, k, v)
        assert hopper.usable(*args, p, shipped, device_ok=True) and hopper.usable(*args, p, on, device_ok=True)
        assert not hopper.usable(*args, p, off, device_ok=True)
    for p in (params(q, k, causal=True, alibi=torch.rand(2, 4)),
              varlen_params(qp, kp, cu, cu, 300, 300, causal=True, softcap=5.0, alibi=torch.rand(4))):
        args = (qp, kp, vp) if p.is_varlen else (q, k, v)
        assert hopper.usable(*args, p, on, device_ok=True) and hopper.usable(*args, p, shipped, device_ok=True)
        assert not hopper.usable(*args, p, cfg(override=json.dumps({"hopper_alibi": 0})), device_ok=True)
    q2, k2, v2 = qkv(sq=301, sk=300)
    assert hopper.usable(q2, k2, v2, params(q2, k2, causal=True), shipped, device_ok=True)  # rows with no key
    assert not hopper.usable(q2, k2, v2, params(q2, k2, causal=True), off, device_ok=True)
    # still refused: a bounded right side other than causal; dropout without hopper_dropout
    assert not hopper.usable(q, k, v, params(q, k, window=(64, 64)), on, device_ok=True)
    assert not hopper.usable(q, k, v, params(q, k, dropout_p=0.1), cfg(override=json.dumps({"hopper_dropout": 0})),
                             device_ok=True)
    # the dK/dV kernel takes varlen as shipped (hopper_bwd_varlen, v15), not without the switch
    p_vl, dop = varlen_params(qp, kp, cu, cu, 300, 300), torch.randn_like(qp)
    dkdv_on = {"hopper_features": 1, "hopper_dkdv_block_n": 64}
    assert hopper.usable(qp, kp, vp, p_vl, cfg(override=json.dumps(dkdv_on)), device_ok=True, dout=dop)
    assert not hopper.usable(qp, kp, vp, p_vl, cfg(override=json.dumps({**dkdv_on, "hopper_bwd_varlen": 0})),
                             device_ok=True, dout=dop)


def test_refused_where_it_does_not_apply():
    q, k, v = qkv()
    assert not usable(q.float(), k.float(), v.float())                                 # fp32
    assert not hopper.usable(q, k, v, params(q, k), cfg(), device_ok=False)       # not an sm_90 GPU
    for d in (32, 96, 256):
        assert not usable(*qkv(d=d)), d
    assert not usable(q, k, torch.randn(2, 300, 4, 64, dtype=q.dtype))               # dv != d
    assert not usable(q, k, v, window=(64, 64))
    assert not hopper.usable(q, k, v, params(q, k, dropout_p=0.1), cfg(override=json.dumps({"hopper_dropout": 0})),
                             device_ok=True)
    assert not hopper.usable(q, k, v, params(q, k, alibi=torch.rand(4)),
                             cfg(override=json.dumps({"hopper_alibi": 0})), device_ok=True)
    assert not usable(q, k[:, :0], v[:, :0])                                          # no keys
    heads_first = torch.randn(2, 4, 300, 128, dtype=q.dtype).transpose(1, 2)
    assert not usable(heads_first, k, v)                                              # (b, h, s, d) storage
    assert not usable(q, torch.randn(2, 300, 4, 130, dtype=q.dtype)[..., 1:129], v)   # heads not adjacent
    flat = torch.randn(2 * 300 * 4 * 128 + 1, dtype=q.dtype)
    assert not usable(q, flat[1:].view(2, 300, 4, 128), v)                           # 2-byte aligned base
    off = _config(128, 128, torch.bfloat16, False, json.dumps({"hopper_block_m": 0}))
    assert not hopper.usable(q, k, v, params(q, k), off, device_ok=True)          # switched off
    assert not hopper.usable(q, k, v, params(q, k), _config(128, 128, torch.bfloat16, True, ""),
                                 device_ok=True)                                       # interpreter config


class _Recorder:
    """Stands in for a Gluon kernel: records what a launch binds to each parameter name."""

    def __init__(self, kernel):
        self.arg_names = kernel.arg_names
        self.seen = {}

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            assert len(args) + len([k for k in kwargs if k in self.arg_names]) == len(self.arg_names), (
                "every parameter bound once")
            self.seen.update(zip(self.arg_names, args), **kwargs, grid=grid)
        return run


def _record(monkeypatch, index, name):
    if hopper._kernel_modules() is None:
        pytest.skip("this Triton has no Hopper Gluon API")
    module = hopper._kernel_modules()[index]
    rec = _Recorder(getattr(module, name))
    monkeypatch.setattr(module, name, rec)
    return rec.seen


def _check_descriptor(desc, t, rows):
    h, d = t.shape[-2], t.shape[-1]
    assert desc.base is t and list(desc.shape) == [t.numel() // (h * d), h * d]
    assert list(desc.strides) == [t.stride(-3), 1] and list(desc.block_shape) == [rows, d]


@pytest.mark.parametrize("kernel", ["fwd1wg", "fwdws"])
def test_forward_launch_binds_every_argument_by_name(monkeypatch, kernel):
    """The Gluon launches, checked without a GPU: each parameter gets the value meant for it (a
    swapped scale or stride would run and be wrong on the GPU without an error)."""
    ws = kernel == "fwdws"
    seen = _record(monkeypatch, 2, "attn_fwd_ws_kernel") if ws else _record(monkeypatch, 0, "attn_fwd_hopper_kernel")
    c = cfg(override=overrides(FWD_KERNELS[kernel]))
    # the rows a program takes, those of its Q tile, its key tile, stages, launch options
    if ws:
        bm, q_rows, bn, stages = 128, 64, c.hopper_ws_block_n, c.hopper_ws_stages
        options = dict(num_warps=4, maxnreg=hopper._kernel_modules()[2].MAXNREG)  # lets the consumers take 240
    else:
        bm, q_rows, bn, stages = c.hopper_block_m, c.hopper_block_m, c.hopper_block_n, c.hopper_stages
        options = dict(num_warps=c.hopper_warps)
    q, k, v = qkv(b=2, sq=300, sk=500, h=4, hk=2)
    p = params(q, k, causal=True)
    assert hopper.warp_specialized(p, c) == ws
    monkeypatch.setattr(hopper, "_sm_count", lambda index: 132)
    out, lse = hopper.attn_fwd(q, k, v, p, c)
    if ws:   # shipped: persistent over units of two query blocks of one head (3 blocks: 2 units a head)
        assert seen["grid"] == (2 * 2 * 4,) and seen["n_tiles"] == seen["grid"][0] and seen["PAIRED"] is True
    else:
        assert seen["grid"] == ((300 + bm - 1) // bm * 2 * 4,)
    assert {name: seen.get(name) for name in options} == options
    for name, t, rows in (("q_desc", q, q_rows), ("k_desc", k, bn), ("v_desc", v, bn)):
        _check_descriptor(seen[name], t, rows)
    assert seen["O"] is out and seen["LSE"] is lse and out.shape == q.shape and lse.shape == (2, 4, 300)
    assert (seen["seqlen_q"], seen["seqlen_k"], seen["nheads"], seen["group"]) == (300, 500, 4, 2)
    assert (seen["qk_scale"], seen["softcap_scale"], seen["alibi_log2"]) == (p.qk_scale, p.softcap_scale, p.alibi_log2)
    assert seen["window_left"] == p.window_left and seen["stride_os"] == out.stride(1) == 4 * 128
    assert (seen["CAUSAL"], seen["IS_VARLEN"], seen["HAS_WINDOW"], seen["MAY_BE_EMPTY"], seen["HAS_SOFTCAP"],
            seen["HAS_ALIBI"]) == (True, False, False, False, False, False)
    assert (seen["BLOCK_M"], seen["BLOCK_N"], seen["HEAD_DIM"], seen["NUM_STAGES"]) == (bm, bn, 128, stages)
    if ws:  # out's TMA stores, on as the table ships them; off: q's descriptor stands in, unused
        assert seen["O_TMA"] is True and seen["O"] is out
        _check_descriptor(seen["o_desc"], out, q_rows)
        c_ptr = cfg(override=overrides(FWD_KERNELS[kernel], {"hopper_ws_tma_store": 0}))
        out, lse = hopper.attn_fwd(q, k, v, p, c_ptr)
        assert seen["O_TMA"] is False and seen["o_desc"].base is q and seen["O"] is out
    # varlen with every feature: the packed layout's strides, cu_seqlens, slopes, lse (h, total)
    on = cfg(override=overrides(FEATURES_ON, FWD_KERNELS[kernel]))
    cu = torch.tensor([0, 100, 300, 600], dtype=torch.int32)
    qp, kp, vp = (t.reshape(600, *t.shape[2:]) for t in qkv(b=2, sq=300, sk=300, h=4, hk=2))
    slopes = torch.rand(3, 4)
    p = varlen_params(qp, kp, cu, cu, 300, 300, causal=True, window=(50, 0), softcap=5.0, alibi=slopes)
    out, lse = hopper.attn_fwd(qp, kp, vp, p, on)
    assert seen["CU_Q"] is cu and seen["CU_K"] is cu and torch.equal(seen["SLOPES"], slopes)
    assert (seen["stride_sb"], seen["stride_sh"]) == (4, 1) and seen["stride_lh"] == 600 == lse.stride(0)
    assert seen["stride_os"] == out.stride(0) and seen["window_left"] == 50
    assert seen["grid"] == ((300 + bm - 1) // bm * 3 * 4,)
    # one-sided ALiBi (hopper_alibi_one_sided, on since v16): HAS_ALIBI 2 where no visible key lies
    # right of the diagonal (window_right 0), the two-sided bias (True) elsewhere or switched off
    assert (seen["IS_VARLEN"], seen["HAS_WINDOW"], seen["MAY_BE_EMPTY"], seen["HAS_SOFTCAP"], seen["HAS_ALIBI"]) == (
        True, True, True, True, 2) and type(seen["HAS_ALIBI"]) is int
    assert (seen["qk_scale"], seen["softcap_scale"]) == (p.qk_scale, p.softcap_scale) and p.softcap_scale != 1.0
    two = cfg(override=overrides(FEATURES_ON, FWD_KERNELS[kernel], {"hopper_alibi_one_sided": 0}))
    hopper.attn_fwd(qp, kp, vp, p, two)
    assert seen["HAS_ALIBI"] is True
    one = on
    for other in (varlen_params(qp, kp, cu, cu, 300, 300, window=(50, 3), alibi=slopes),
                  varlen_params(qp, kp, cu, cu, 300, 300, alibi=slopes)):
        hopper.attn_fwd(qp, kp, vp, other, one)
        assert seen["HAS_ALIBI"] is True
    _check_descriptor(seen["q_desc"], qp, q_rows)


def test_forward_persistent_where_tiles_are_equal(monkeypatch):
    """The warp-specialized forward runs one program per SM walking the tiles up to the table's
    ``hopper_ws_persistent_max_seqlen_k`` keys, and only where every tile has the same work (no
    causal rows, varlen or window); otherwise one program per tile."""
    seen = _record(monkeypatch, 2, "attn_fwd_ws_kernel")
    monkeypatch.setattr(hopper, "_sm_count", lambda index: 5)
    c = cfg(override=overrides(FWD_KERNELS["fwdws"], {"hopper_ws_persistent_max_seqlen_k": 500,
                                                      "hopper_ws_persistent_causal": False}))
    for sk, causal, window, persistent in ((500, False, (-1, -1), True), (501, False, (-1, -1), False),
                                           (500, True, (-1, -1), False), (500, False, (100, -1), False)):
        q, k, v = qkv(b=2, sq=300, sk=sk, h=4, hk=2)
        hopper.attn_fwd(q, k, v, params(q, k, causal=causal, window=window), c)
        tiles = (300 + 127) // 128 * 2 * 4
        assert seen["n_tiles"] == tiles and seen["grid"] == ((5 if persistent else tiles),), (sk, causal, window)
    # a causal band within hopper_ws_persistent_window keys, at any length: persistent too
    # (on since v14); a band wider than that, a right side other than 0, varlen: a program per tile
    c_band = cfg(override=overrides(FWD_KERNELS["fwdws"], {"hopper_ws_persistent_max_seqlen_k": 500,
                                                           "hopper_ws_persistent_window": 1024}))
    for sk, window, persistent in ((4000, (1024, 0), True), (4000, (1025, 0), False), (4000, (100, 5), False),
                                   (300, (0, 0), True)):
        q, k, v = qkv(b=2, sq=300, sk=sk, h=4, hk=2)
        hopper.attn_fwd(q, k, v, params(q, k, window=window), c_band)
        tiles = (300 + 127) // 128 * 2 * 4
        assert seen["n_tiles"] == tiles and seen["PAIRED"] is False, window
        assert seen["grid"] == ((5 if persistent else tiles),), (sk, window)
    cu = torch.tensor([0, 100, 300], dtype=torch.int32)
    qp, kp, vp = (t.reshape(600, *t.shape[2:])[:300] for t in qkv(b=2, sq=300, sk=300, h=4, hk=2))
    hopper.attn_fwd(qp, kp, vp, varlen_params(qp, kp, cu, cu, 200, 200, window=(64, 0)), c_band)
    assert seen["grid"] == ((200 + 127) // 128 * 2 * 4,)
    # varlen persistent where the sequences fill hopper_ws_persistent_varlen_fill % of batch x the
    # longest (queries and keys): the band, pairs under causal, tiles without it; units counted
    # over the longest sequence. Lengths 100 and 200 fill 75 %: not at the table's 90, yes at 75
    vl = {"hopper_ws_persistent_max_seqlen_k": 500, "hopper_ws_persistent_window": 1024}
    for fill, persistent in ((90, False), (76, False), (75, True)):
        c_vl = cfg(override=overrides(FWD_KERNELS["fwdws"], {**vl, "hopper_ws_persistent_varlen_fill": fill}))
        for causal, window, paired in ((False, (64, 0), False), (True, (-1, -1), True), (False, (-1, -1), False)):
            hopper.attn_fwd(qp, kp, vp, varlen_params(qp, kp, cu, cu, 200, 200, causal=causal, window=window), c_vl)
            units = ((2 + 1) // 2 if paired else 2) * 2 * 4
            assert seen["IS_VARLEN"] is True and seen["CU_Q"] is cu
            if persistent:
                assert seen["grid"] == (5,) and seen["n_tiles"] == units and seen["PAIRED"] is paired, (causal, window)
            else:
                assert seen["grid"] == (2 * 2 * 4,) and seen["PAIRED"] is False, (fill, causal, window)
    # the keys count too: queries of equal lengths, keys 100 and 200
    cu_eq = torch.tensor([0, 150, 300], dtype=torch.int32)
    c_vl = cfg(override=overrides(FWD_KERNELS["fwdws"], {**vl, "hopper_ws_persistent_varlen_fill": 90}))
    hopper.attn_fwd(qp, kp, vp, varlen_params(qp, kp, cu_eq, cu_eq, 150, 150, causal=True), c_vl)
    assert seen["grid"] == (5,) and seen["PAIRED"] is True
    hopper.attn_fwd(qp, kp, vp, varlen_params(qp, kp, cu_eq, cu, 150, 200, causal=True), c_vl)
    assert seen["grid"] == (2 * 2 * 4,) and seen["PAIRED"] is False
    # fewer tiles than SMs: a program per tile
    q, k, v = qkv(b=1, sq=100, sk=100, h=2, hk=2)
    hopper.attn_fwd(q, k, v, params(q, k), c)
    assert seen["grid"] == (2,) and seen["n_tiles"] == 2 and seen["PAIRED"] is False
    # causal with hopper_ws_persistent_causal: units of two query blocks of one head (the
    # middle block of an odd count alone), where no row sees fewer keys than its block's first
    c = cfg(override=overrides(FWD_KERNELS["fwdws"], {"hopper_ws_persistent_max_seqlen_k": 500,
                                                      "hopper_ws_persistent_causal": True}))
    for sq, sk, paired in ((300, 500, True), (300, 300, True), (500, 300, False)):
        q, k, v = qkv(b=2, sq=sq, sk=sk, h=4, hk=2)
        hopper.attn_fwd(q, k, v, params(q, k, causal=True), c)
        num_m = (sq + 127) // 128
        units = ((num_m + 1) // 2 if paired else num_m) * 2 * 4
        assert seen["PAIRED"] is paired and seen["n_tiles"] == units, (sq, sk)
        assert seen["grid"] == ((5 if paired else units),), (sq, sk)


@pytest.mark.parametrize("kernel", ["gluon", "ws"])
def test_dkdv_launch_binds_every_argument_by_name(monkeypatch, kernel):
    """Both dK/dV launches; the warp-specialized one: 128 keys per program, K/V read as 64-key
    tiles (one per consumer warpgroup), its own stages, and the register cap that lets the
    consumers take 240."""
    ws = kernel == "ws"
    seen = _record(monkeypatch, 3, "dkdv_hopper_ws_kernel") if ws else _record(monkeypatch, 1, "dkdv_hopper_kernel")
    c = cfg(override=json.dumps(DKDV_KERNELS[kernel]))
    q, k, v = qkv(b=2, sq=300, sk=500, h=4, hk=2)
    dout, lse, delta = torch.randn_like(q), torch.randn(2, 4, 300), torch.randn(2, 4, 300)
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    p = params(q, k, causal=ws)
    assert hopper.dkdv_warp_specialized(p, c) == ws
    hopper.attn_dkdv(q, k, v, dout, lse, delta, dk, dv, p, c)
    bn = 128 if ws else 64
    assert seen["grid"] == ((500 + bn - 1) // bn * 2 * 2,)
    for name, t, rows in (("q_desc", q, 64), ("k_desc", k, 64), ("v_desc", v, 64), ("do_desc", dout, 64)):
        _check_descriptor(seen[name], t, rows)
    assert seen["LSE"] is lse and seen["DELTA"] is delta and seen["DK"] is dk and seen["DV"] is dv
    assert (seen["seqlen_q"], seen["seqlen_k"], seen["nheads"], seen["group"]) == (300, 500, 4, 2)
    assert (seen["qk_scale"], seen["softmax_scale"], seen["stride_dks"]) == (p.qk_scale, p.softmax_scale, dk.stride(1))
    assert seen["softcap_scale"] == p.softcap_scale and seen["HAS_SOFTCAP"] is False
    assert seen["HAS_ALIBI"] is False and seen["SLOPES"] is lse and (seen["stride_sb"], seen["stride_sh"]) == (0, 0)
    assert seen["CAUSAL"] is ws and (seen["BLOCK_M"], seen["BLOCK_N"], seen["HEAD_DIM"]) == (64, bn, 128)
    assert seen["NUM_STAGES"] == (c.hopper_dkdv_ws_stages if ws else c.hopper_dkdv_stages) and seen["num_warps"] == 4
    assert seen.get("maxnreg") == (hopper._kernel_modules()[3].MAXNREG if ws else None)
    # ALiBi (hopper_bwd_alibi, on since v14): slopes per (batch, head) through their strides
    slopes = torch.rand(2, 4)   # (batch, heads)
    p_al = params(q, k, causal=ws, alibi=slopes)
    c_off = cfg(override=json.dumps({**DKDV_KERNELS[kernel], "hopper_bwd_alibi": 0}))
    assert not hopper.usable(q, k, v, p_al, c_off, device_ok=True, dout=dout)
    c_al = cfg(override=json.dumps({**DKDV_KERNELS[kernel], "hopper_bwd_alibi": 1}))
    assert hopper.usable(q, k, v, p_al, c_al, device_ok=True, dout=dout)
    hopper.attn_dkdv(q, k, v, dout, lse, delta, dk, dv, p_al, c_al)
    assert seen["HAS_ALIBI"] is True and seen["SLOPES"] is p_al.alibi_slopes and seen["alibi_log2"] == p_al.alibi_log2
    assert torch.equal(p_al.alibi_slopes, slopes)
    assert (seen["stride_sb"], seen["stride_sh"]) == p_al.alibi_slopes.stride()
    assert seen["IS_VARLEN"] is False and seen["CU_Q"] is lse and seen["CU_K"] is lse
    # varlen (hopper_bwd_varlen, on since v15): packed rows, cu_seqlens, lse (h, total), a grid
    # over the longest sequence's key blocks
    cu_q, cu_k = torch.tensor([0, 100, 300], dtype=torch.int32), torch.tensor([0, 250, 400], dtype=torch.int32)
    qp, kp, vp = torch.randn(300, 4, 128, dtype=q.dtype), *(torch.randn(400, 2, 128, dtype=q.dtype) for _ in range(2))
    dop, lsep, deltap = torch.randn_like(qp), torch.randn(4, 300), torch.randn(4, 300)
    dkp, dvp = torch.empty_like(kp), torch.empty_like(vp)
    p_vl = varlen_params(qp, kp, cu_q, cu_k, 200, 250, causal=ws)
    c_off = cfg(override=json.dumps({**DKDV_KERNELS[kernel], "hopper_bwd_varlen": 0}))
    assert not hopper.usable(qp, kp, vp, p_vl, c_off, device_ok=True, dout=dop)
    c_vl = cfg(override=json.dumps({**DKDV_KERNELS[kernel], "hopper_bwd_varlen": 1}))
    assert hopper.usable(qp, kp, vp, p_vl, c_vl, device_ok=True, dout=dop)
    hopper.attn_dkdv(qp, kp, vp, dop, lsep, deltap, dkp, dvp, p_vl, c_vl)
    assert seen["IS_VARLEN"] is True and seen["CU_Q"] is cu_q and seen["CU_K"] is cu_k
    assert (seen["seqlen_q"], seen["seqlen_k"], seen["nheads"], seen["group"]) == (200, 250, 4, 2)
    assert (seen["stride_dks"], seen["stride_lh"]) == (dkp.stride(0), lsep.stride(0)) == (2 * 128, 300)
    assert seen["grid"] == ((250 + bn - 1) // bn * 2 * 2,) and seen["DK"] is dkp and seen["LSE"] is lsep
    for name, t, rows in (("q_desc", qp, 64), ("k_desc", kp, 64), ("v_desc", vp, 64), ("do_desc", dop, 64)):
        _check_descriptor(seen[name], t, rows)


DQ_ON = {"hopper_dq_block_n": 64}   # the Gluon dQ kernel (on in the table since v13; named for clarity)


@pytest.mark.parametrize("ws", [False, True], ids=["1wg", "ws"])
def test_dq_launch_binds_every_argument_by_name(monkeypatch, ws):
    """The Gluon dQ launch: a program of 64 query rows (128, two consumer warpgroups of 64, for
    the warp-specialized kernel) per (query block, batch x head), K/V in 64-key tiles, Q and dO
    in 64-row ones, dq's row stride; and when it is chosen."""
    seen = _record(monkeypatch, 4, "dq_hopper_ws_kernel" if ws else "dq_hopper_kernel")
    c = cfg(override=json.dumps({**DQ_ON, "hopper_dq_ws": ws}))
    q, k, v = qkv(b=2, sq=300, sk=500, h=4, hk=2)
    dout, lse, delta, dq = torch.randn_like(q), torch.randn(2, 4, 300), torch.randn(2, 4, 300), torch.empty_like(q)
    p = params(q, k, causal=True)
    assert hopper.dq_usable(q, k, v, dout, dq, p, c, device_ok=True)
    launcher, grid, args, constexprs, num_warps, _, options = hopper.dq_launch(q, k, v, dout, lse, delta, dq, p, c)
    launcher(grid, args, constexprs, num_warps=num_warps, **options)
    bm = 128 if ws else 64
    assert seen["grid"] == ((300 + bm - 1) // bm * 2 * 4,)
    for name, t, rows in (("q_desc", q, 64), ("k_desc", k, 64), ("v_desc", v, 64), ("do_desc", dout, 64)):
        _check_descriptor(seen[name], t, rows)
    assert seen["LSE"] is lse and seen["DELTA"] is delta and seen["DQ"] is dq
    assert seen.get("maxnreg") == (hopper._kernel_modules()[4].MAXNREG if ws else None)
    assert seen["HAS_ALIBI"] is False and seen["SLOPES"] is lse and (seen["stride_sb"], seen["stride_sh"]) == (0, 0)
    assert seen["IS_VARLEN"] is False and seen["CU_Q"] is lse and seen["stride_lh"] == lse.stride(1)
    assert (seen["seqlen_q"], seen["seqlen_k"], seen["nheads"], seen["group"]) == (300, 500, 4, 2)
    assert (seen["qk_scale"], seen["softmax_scale"], seen["stride_dqs"]) == (p.qk_scale, p.softmax_scale, dq.stride(1))
    assert seen["softcap_scale"] == p.softcap_scale and seen["HAS_SOFTCAP"] is False
    assert seen["CAUSAL"] is True and (seen["BLOCK_M"], seen["BLOCK_N"], seen["HEAD_DIM"]) == (bm, 64, 128)
    assert seen["NUM_STAGES"] == c.hopper_dq_stages and seen["num_warps"] == 4
    # not chosen: off in the table, added into the buffer, a buffer of another dtype or layout,
    # or what the Gluon dK/dV kernel would not take either (here: softcap, unless hopper_bwd_softcap)
    assert not hopper.dq_usable(q, k, v, dout, dq, p, cfg(override=json.dumps({"hopper_dq_block_n": 0})), device_ok=True)
    assert not hopper.dq_usable(q, k, v, dout, dq, p, c, accumulate=True, device_ok=True)
    assert not hopper.dq_usable(q, k, v, dout, dq.float(), p, c, device_ok=True)
    assert not hopper.dq_usable(q, k, v, dout, dq.transpose(1, 2).contiguous().transpose(1, 2), p, c, device_ok=True)
    c_nosc = cfg(override=json.dumps({**DQ_ON, "hopper_dq_ws": ws, "hopper_bwd_softcap": 0}))
    assert not hopper.dq_usable(q, k, v, dout, dq, params(q, k, softcap=5.0), c_nosc, device_ok=True)
    c_sc = cfg(override=json.dumps({**DQ_ON, "hopper_dq_ws": ws, "hopper_bwd_softcap": 1}))
    p_sc = params(q, k, causal=True, softcap=5.0)
    assert hopper.dq_usable(q, k, v, dout, dq, p_sc, c_sc, device_ok=True)
    launcher, grid, args, constexprs, num_warps, _, options = hopper.dq_launch(q, k, v, dout, lse, delta, dq, p_sc, c_sc)
    launcher(grid, args, constexprs, num_warps=num_warps, **options)
    assert seen["HAS_SOFTCAP"] is True and (seen["qk_scale"], seen["softcap_scale"]) == (p_sc.qk_scale,
                                                                                         p_sc.softcap_scale)
    # ALiBi with hopper_bwd_alibi (on since v14), slopes per head: softcap's path, the bias added
    slopes = torch.rand(4)
    p_al = params(q, k, causal=True, softcap=5.0, alibi=slopes)
    c_sc_only = cfg(override=json.dumps({**DQ_ON, "hopper_dq_ws": ws, "hopper_bwd_softcap": 1, "hopper_bwd_alibi": 0}))
    assert not hopper.dq_usable(q, k, v, dout, dq, p_al, c_sc_only, device_ok=True)
    c_al = cfg(override=json.dumps({**DQ_ON, "hopper_dq_ws": ws, "hopper_bwd_softcap": 1, "hopper_bwd_alibi": 1}))
    assert hopper.dq_usable(q, k, v, dout, dq, p_al, c_al, device_ok=True)
    launcher, grid, args, constexprs, num_warps, _, options = hopper.dq_launch(q, k, v, dout, lse, delta, dq, p_al, c_al)
    launcher(grid, args, constexprs, num_warps=num_warps, **options)
    assert seen["HAS_ALIBI"] == 2 and seen["HAS_SOFTCAP"] is True and seen["SLOPES"] is p_al.alibi_slopes
    assert (seen["stride_sb"], seen["stride_sh"], seen["alibi_log2"]) == (0, 1, p_al.alibi_log2)
    # one-sided ALiBi (hopper_alibi_one_sided, on since v16): 2 under causal, two-sided without
    c_one = cfg(override=json.dumps({**DQ_ON, "hopper_dq_ws": ws, "hopper_alibi_one_sided": 1}))
    for causal, kind in ((True, 2), (False, True)):
        p_one = params(q, k, causal=causal, alibi=slopes)
        launcher, grid, args, constexprs, num_warps, _, options = hopper.dq_launch(q, k, v, dout, lse, delta, dq,
                                                                                   p_one, c_one)
        launcher(grid, args, constexprs, num_warps=num_warps, **options)
        assert seen["HAS_ALIBI"] == kind and type(seen["HAS_ALIBI"]) is type(kind), causal
    # varlen with hopper_bwd_varlen (on since v15): a grid over the longest sequence's query blocks
    cu_q, cu_k = torch.tensor([0, 100, 300], dtype=torch.int32), torch.tensor([0, 250, 400], dtype=torch.int32)
    qp, kp, vp = torch.randn(300, 4, 128, dtype=q.dtype), *(torch.randn(400, 2, 128, dtype=q.dtype) for _ in range(2))
    dop, lsep, deltap, dqp = torch.randn_like(qp), torch.randn(4, 300), torch.randn(4, 300), torch.empty_like(qp)
    p_vl = varlen_params(qp, kp, cu_q, cu_k, 200, 250, causal=True)
    c_off = cfg(override=json.dumps({**DQ_ON, "hopper_dq_ws": ws, "hopper_bwd_varlen": 0}))
    assert not hopper.dq_usable(qp, kp, vp, dop, dqp, p_vl, c_off, device_ok=True)
    c_vl = cfg(override=json.dumps({**DQ_ON, "hopper_dq_ws": ws, "hopper_bwd_varlen": 1}))
    assert hopper.dq_usable(qp, kp, vp, dop, dqp, p_vl, c_vl, device_ok=True)
    launcher, grid, args, constexprs, num_warps, _, options = hopper.dq_launch(qp, kp, vp, dop, lsep, deltap, dqp,
                                                                               p_vl, c_vl)
    launcher(grid, args, constexprs, num_warps=num_warps, **options)
    assert seen["IS_VARLEN"] is True and seen["CU_Q"] is cu_q and seen["CU_K"] is cu_k and seen["DQ"] is dqp
    assert (seen["stride_dqs"], seen["stride_lh"]) == (4 * 128, 300) and seen["grid"] == ((200 + bm - 1) // bm * 2 * 4,)


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", [(2, 17, 17, 2, 2, 128), (2, 1000, 1000, 4, 4, 64), (1, 1023, 4097, 8, 2, 128),
                                   (1, 77, 300, 4, 1, 128), (3, 640, 640, 2, 2, 64)],
                         ids=lambda s: "B{}-SQ{}-SK{}-H{}-HK{}-D{}".format(*s))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize("ws", [False, True], ids=["1wg", "ws"])
def test_gpu_gluon_dq_against_float64(shape, causal, dtype, stages, ws, monkeypatch):
    """The Gluon dQ kernels against float64, with the table's forward and dK/dV."""
    import pyflashattn as pfa
    override = json.dumps({**DQ_ON, "hopper_dq_stages": stages, "hopper_dq_ws": ws})
    monkeypatch.setenv("PYFLASHATTN_CONFIG", override)
    b, sq, sk, h, hk, d = shape
    q, k, v = (t.requires_grad_() for t in qkv(b, sq, sk, h, hk, d, dtype, "cuda"))
    dq = torch.empty_like(q)
    assert hopper.dq_usable(q, k, v, torch.randn_like(q), dq, params(q, k, causal=causal), cfg(d, dtype, override))

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
        return out, lse
    compare_with_reference(fn, q, k, v, causal=causal)


def test_dkdv_launch_with_fused_dq(monkeypatch):
    """With a dQ buffer: the warp-specialized kernel whatever the table says, ``FUSED_DQ`` on,
    and the buffer as a descriptor of ``(b * sq, h * d)`` fp32 in blocks of 64 rows x d/2."""
    seen = _record(monkeypatch, 3, "dkdv_hopper_ws_kernel")
    c = cfg(override=json.dumps(DKDV_KERNELS["gluon"]))
    q, k, v = qkv(b=2, sq=300, sk=500, h=4, hk=2)
    dout, lse, delta = torch.randn_like(q), torch.randn(2, 4, 300), torch.randn(2, 4, 300)
    dk, dv, acc = torch.empty_like(k), torch.empty_like(v), torch.empty(q.shape)
    p = params(q, k)
    assert not hopper.dkdv_warp_specialized(p, c)
    launcher, grid, args, constexprs, num_warps, _, options = hopper.dkdv_launch(q, k, v, dout, lse, delta, dk, dv,
                                                                                  p, c, dq_acc=acc)
    launcher(grid, args, constexprs, num_warps=num_warps, **options)
    assert seen["FUSED_DQ"] is True and seen["BLOCK_N"] == 128 and seen["grid"] == (4 * 2 * 2,)
    # its own Q/dO ring depth (2 since v12), not the non-fused kernel's
    assert seen["NUM_STAGES"] == c.hopper_fused_dq_stages == 2 != c.hopper_dkdv_ws_stages
    desc = seen["dq_desc"]
    assert desc.base is acc and list(desc.shape) == [600, 512] and list(desc.strides) == [512, 1]
    assert list(desc.block_shape) == [64, 64]
    # without a buffer: the one-warpgroup kernel as the table says, or the other with FUSED_DQ off
    assert "FUSED_DQ" not in hopper.dkdv_launch(q, k, v, dout, lse, delta, dk, dv, p, c)[3]
    c_ws = cfg(override=json.dumps(DKDV_KERNELS["ws"]))
    assert hopper.dkdv_launch(q, k, v, dout, lse, delta, dk, dv, p, c_ws)[3]["FUSED_DQ"] is False


def test_fused_dq_chosen_by_the_table_and_never_when_deterministic(monkeypatch):
    """Shipped: d=128 from 2048 keys without causal; never with causal, never with
    ``deterministic=True`` or under torch's deterministic mode (its dQ sums come in any order)."""
    c = cfg()
    for sk, causal, want in ((2048, False, True), (16384, False, True), (2047, False, False), (16384, True, False)):
        q, k, _ = qkv(b=1, sq=16, sk=sk, h=1, hk=1)
        assert hopper.fused_dq(params(q, k, causal=causal), c) == want, (sk, causal)
    q, k, _ = qkv(b=1, sq=16, sk=8192, h=1, hk=1)
    p = _params(q, k, 0.1, -1, -1, 0.0, None, None, None, -1, -1, None, deterministic=True)
    assert p.deterministic and not hopper.fused_dq(p, c)
    from pyflashattn import ops
    assert not ops._deterministic(False) and ops._deterministic(True)
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    assert ops._deterministic(False)   # what the backward passes on (ops._bwd_impl, attn_bwd_into)


def test_dkdv_ws_chosen_by_the_table():
    """Shipped: at d=128 from 2048 keys without causal; never with causal, never at d=64."""
    c128, c64 = cfg(), cfg(64)
    for sk, causal, want in ((2048, False, True), (16384, False, True), (2047, False, False), (16384, True, False)):
        q, k, _ = qkv(b=1, sq=16, sk=sk, h=1, hk=1)
        assert hopper.dkdv_warp_specialized(params(q, k, causal=causal), c128) == want, (sk, causal)
    q, k, _ = qkv(b=1, sq=16, sk=16384, h=1, hk=1, d=64)
    assert not hopper.dkdv_warp_specialized(params(q, k), c64)


AOT = """
import json, torch
from dataclasses import replace
from pyflashattn.configs import _config
from pyflashattn.kernels import hopper
cfg = {d: _config(d, d, torch.bfloat16, False, '{"hopper_dkdv_block_n": 64}') for d in (64, 128)}
res = [dict(kind=kind, d=d, causal=causal, **hopper.compile_sm90(cfg[d], d, torch.bfloat16, causal, kind))
       for d in (64, 128) for causal in (False, True) for kind in ("fwd", "fwd_ws", "dkdv", "dkdv_ws")
       if kind == "fwd" or d == 128]
res += [dict(kind="dkdv_ws", d=128, causal=causal, fused_dq=True,
             **hopper.compile_sm90(cfg[128], 128, torch.bfloat16, causal, "dkdv_ws", fused_dq=True))
        for causal in (False, True)]
res += [dict(kind="dq", d=d, causal=causal, ws=ws,
             **hopper.compile_sm90(replace(cfg[d], hopper_dq_block_n=64, hopper_dq_ws=ws), d, torch.bfloat16, causal,
                                   "dq"))
        for d in (64, 128) for causal in (False, True) for ws in (False, True)]
res += [dict(kind="fwd_ws", d=d, causal=True, paired=True,
             **hopper.compile_sm90(cfg[d], d, torch.bfloat16, True, "fwd_ws", paired=True)) for d in (64, 128)]
res += [dict(kind=kind, d=128, causal=True, features=True,
             **hopper.compile_sm90(cfg[128], 128, torch.bfloat16, True, kind, **f)) for kind in ("fwd", "fwd_ws")
        for f in (dict(varlen=True), dict(window=True), dict(softcap=True, alibi=True, varlen=True, window=True))]
# dropout's keep mask drawn in the accumulator's registers: the build asserts that its layout
# conversion is trivial (hopper_dropout.dropout_keep), so compiling is the check
res += [dict(kind="fwd_ws", d=d, causal=causal, dropout=True,
             **hopper.compile_sm90(cfg[d], d, torch.bfloat16, causal, "fwd_ws", paired=causal, dropout=True))
        for d in (64, 128) for causal in (False, True)]
res += [dict(kind="dkdv", d=d, causal=causal, dropout=True,
             **hopper.compile_sm90(cfg[d], d, torch.bfloat16, causal, "dkdv", dropout=True, stats=True))
        for d in (64, 128) for causal in (False, True)]
res += [dict(kind="dq", d=d, causal=causal, dropout=True,
             **hopper.compile_sm90(replace(cfg[d], hopper_dq_block_n=64, hopper_dq_ws=d == 128), d, torch.bfloat16,
                                   causal, "dq", dropout=True))
        for d in (64, 128) for causal in (False, True)]
print(json.dumps(res))
"""


@pytest.mark.skipif(hopper._kernel_modules() is None, reason="this Triton has no Hopper Gluon API")
@pytest.mark.skipif(importlib.util.find_spec("triton.backends.nvidia") is None, reason="no NVIDIA backend")
def test_compiles_for_sm90_without_spills():
    """The shipped configs (d 64 and 128, causal or not), built for sm_90 here with no GPU: no
    spills, shared memory within the 227 KB an H100/H200 block may have. In a process of its own:
    under ``TRITON_INTERPRET=1`` (this suite on a CPU) Triton cannot compile."""
    results = compiled_json(AOT, timeout=600)
    # both forwards (d 64 and 128 / 128), both dK/dV at 128 and the fused one, causal or not; the
    # persistent causal pairs; the Gluon dQ kernels; features; dropout
    assert len(results) == 40, results
    for res in results:
        # a little stack, no spills: the dK/dV kernel holds two 64 x 128 fp32 accumulators, two
        # score tiles and the operands of the dots in flight (8-48 B at d=128, and it beat the
        # Triton kernel's 152 B by 6-13 %); the warp-specialized forward 0-56 B under the
        # consumers' 240 registers (48 B when it measured +23 % at causal 16k), its feature
        # variants up to 176 B (a window); more would be a regression (docs/performance.md, v7).
        # With its out by TMA stores (v14) 128 B under causal, and 2-13 % faster there all the same
        # the warp-specialized dK/dV: 56 B without causal, 104 B with it (not shipped), under 240 registers
        # the fused dK/dV/dQ: 224 B without causal (shipped: +7 % on the backward at 16k), 360 B with
        # (not shipped; 328 B with 3 Q/dO stages, v12's 2 stages being the faster without causal)
        # with dropout 0-128 B (its Philox draws; v17 item 8); the one-warpgroup dK/dV with
        # dropout at d=128 under causal 64 B, 96 B since v18's SWAR verdicts and wide multiplies
        # (forward+backward with dropout 2-3 % faster all the same, h200-dropout-*-ab-v18.log)
        limit = {"fwd": 0, "fwd_ws": 192 if res.get("features") else 128, "dkdv": 96 if res.get("dropout") else 64,
                 "dq": 0,
                 "dkdv_ws": 368 if res.get("fused_dq") else 128}[res["kind"]]
        assert res["local"] == 0 and res["stack"] <= limit, res
        assert res["shared"] <= 227 * 1024, res
        assert res["reg"] <= 255, res
        # ptxas has not serialized the wgmmas (one full wait after each: kernels.aot.wgmma_waits).
        # The warp-specialized dK/dV kernel was, 48 of 48 at d=128, until it retired every wgmma
        # at each step's end (performance.md v10 item 6, v11)
        assert res["hgmma"] > 0 and res["hgmma_full_waits"] <= res["hgmma"] // 4, res


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1, 64), (2, 17, 17, 2, 2, 128), (2, 1000, 1000, 4, 4, 64),
                                   (1, 1023, 4097, 8, 2, 128), (1, 77, 300, 4, 1, 128), (3, 640, 640, 2, 2, 128)],
                         ids=lambda s: "B{}-SQ{}-SK{}-H{}-HK{}-D{}".format(*s))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("kernels", ["fwd1wg-dkdvtriton", "fwd1wg-dkdvgluon", "fwdws-dkdvgluon", "fwdws-dkdvws",
                                     "fwdws-dkdvfused"])
def test_gpu_against_float64(shape, causal, dtype, kernels, monkeypatch):
    import pyflashattn as pfa
    b, sq, sk, h, hk, d = shape
    fwd, dkdv = kernels.split("-")
    dkdv = dkdv.removeprefix("dkdv")
    override = overrides(DKDV_KERNELS[dkdv], FWD_KERNELS[fwd])
    monkeypatch.setenv("PYFLASHATTN_CONFIG", override)
    q, k, v = (t.requires_grad_() for t in qkv(b, sq, sk, h, hk, d, dtype, "cuda"))
    p, c = params(q, k, causal=causal), cfg(d, dtype, override)
    assert hopper.usable(q, k, v, p, c)
    assert hopper.warp_specialized(p, c) == (fwd == "fwdws")
    # which dK/dV kernel the gradients below come from
    assert hopper.usable(q, k, v, p, c, dout=torch.randn_like(q)) == (dkdv != "triton")
    assert hopper.dkdv_warp_specialized(p, c) == (dkdv == "ws")
    assert hopper.fused_dq(p, c) == (dkdv == "fused" and not causal)

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
        return out, lse
    compare_with_reference(fn, q, k, v, causal=causal)


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
def test_gpu_packed_qkv_and_the_triton_kernels_agree(monkeypatch):
    import pyflashattn as pfa

    def run():
        qkv_ = base.clone().requires_grad_()
        out = pfa.flash_attn_qkvpacked_func(qkv_, causal=True)
        return out, torch.autograd.grad(out, qkv_, g)[0]
    base = torch.randn(2, 999, 3, 4, 128, dtype=torch.bfloat16, device="cuda")
    g = torch.randn(2, 999, 4, 128, dtype=torch.bfloat16, device="cuda")
    monkeypatch.setenv("PYFLASHATTN_CONFIG", DKDV_ON)
    gluon_out, gluon_grad = run()
    # the Gluon kernels on qkv-packed inputs (row stride 3 h d) against float64, gradients too
    compare_with_reference(lambda q, k, v: pfa.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)[:2],
                           *base.clone().requires_grad_().unbind(2), causal=True)
    monkeypatch.setenv("PYFLASHATTN_CONFIG", json.dumps({"hopper_block_m": 0, "hopper_dkdv_block_n": 0}))
    triton_out, triton_grad = run()
    for a, b in ((gluon_out, triton_out), (gluon_grad, triton_grad)):
        err = ((a.float() - b.float()).norm() / b.float().norm()).item()
        assert err < 1e-2, err


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
def test_gpu_more_heads_than_a_grid_axis_holds():
    """batch x heads = 67200 programs per query block: past the 65535 of a second grid axis."""
    import pyflashattn as pfa
    from pyflashattn.reference import attention_ref
    q, k, v = qkv(2100, 64, 64, 32, 32, 64, torch.bfloat16, "cuda")
    assert hopper.usable(q, k, v, params(q, k, causal=True), cfg(64))
    out = pfa.flash_attn_func(q, k, v, causal=True)
    for batch in (slice(0, 2), slice(2098, 2100)):
        ref, _ = attention_ref(q[batch], k[batch], v[batch], causal=True)
        assert (out[batch].double() - ref).abs().max() < 2e-2


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("mods", [{}, {"softcap": 4.0}, {"alibi": True}], ids=["plain", "softcap", "alibi"])
@pytest.mark.parametrize("fwd", list(FWD_KERNELS))
def test_gpu_varlen_against_float64(d, causal, mods, fwd, monkeypatch):
    """The forward's varlen path (with ``hopper_features`` on): empty sequences on either side,
    a sequence longer than a block, GQA, softcap or ALiBi (per (batch, head)); gradients
    through the Triton backward."""
    import pyflashattn as pfa
    from pyflashattn.reference import varlen_attention_ref
    override = overrides(FEATURES_ON, FWD_KERNELS[fwd])
    monkeypatch.setenv("PYFLASHATTN_CONFIG", override)
    lq, lk = [5, 0, 300, 33, 1, 129], [9, 4, 300, 20, 0, 700]
    cu_q, cu_k = (torch.tensor([0] + n, device="cuda").cumsum(0).to(torch.int32) for n in (lq, lk))
    q = torch.randn(sum(lq), 4, d, dtype=torch.bfloat16, device="cuda", requires_grad=True)
    k, v = (torch.randn(sum(lk), 2, d, dtype=torch.bfloat16, device="cuda", requires_grad=True) for _ in range(2))
    kw = dict(softcap=mods.get("softcap", 0.0),
              alibi_slopes=torch.rand(len(lq), 4, device="cuda") if mods.get("alibi") else None)
    p = varlen_params(q, k, cu_q, cu_k, max(lq), max(lk), causal=causal, softcap=kw["softcap"],
                      alibi=kw["alibi_slopes"])
    assert hopper.usable(q, k, v, p, cfg(d, override=override))

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lq), max(lk), causal=causal,
                                                 return_attn_probs=True, **kw)
        return out, lse
    compare_with_reference(fn, q, k, v, causal=causal, ref=varlen_attention_ref, cu_seqlens_q=cu_q,
                           cu_seqlens_k=cu_k, **kw)


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", [(2, 1000, 1000, 4, 2, 128), (1, 300, 2500, 4, 4, 64), (2, 777, 300, 2, 1, 128),
                                   (1, 4097, 4097, 2, 2, 128)], ids=lambda s: "B{}-SQ{}-SK{}-H{}-HK{}-D{}".format(*s))
@pytest.mark.parametrize("window", [-1, 200], ids=["causal", "left200"])
@pytest.mark.parametrize("slopes", ["head", "batch_head"])
@pytest.mark.parametrize("fwd", list(FWD_KERNELS))
def test_gpu_alibi_one_sided_against_float64(fwd, slopes, window, shape, dtype, monkeypatch):
    """One-sided ALiBi in the Gluon forwards (``hopper_alibi_one_sided``, on since v16): under
    causal (and a left window under it) the bias as ``slope * (j - the tile's first row)`` per
    column and the per-row rest added to lse; out, lse (against float64) and the gradients
    (the backward reads that lse), with more queries than keys (rows that see no key), more
    keys than queries, lengths off the blocks, GQA, slopes up to 2 per head or per (batch, head)."""
    import pyflashattn as pfa
    monkeypatch.setenv("PYFLASHATTN_CONFIG", overrides(FWD_KERNELS[fwd], {"hopper_alibi_one_sided": 1}))
    b, sq, sk, h, hk, d = shape
    q, k, v = (t.requires_grad_() for t in qkv(b, sq, sk, h, hk, d, dtype, "cuda"))
    alibi = 2 * torch.rand(*((b, h) if slopes == "batch_head" else (h,)), device="cuda")
    kw = dict(causal=True, window_size=(window, -1), alibi_slopes=alibi)
    launched = []
    kind = hopper._alibi_kind
    monkeypatch.setattr(hopper, "_alibi_kind", lambda *a: launched.append(kind(*a)) or launched[-1])

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, return_attn_probs=True, **kw)
        return out, lse
    compare_with_reference(fn, q, k, v, **kw)
    assert launched and all(x == 2 for x in launched)


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("window", [(100, 0), (256, -1), (1, 0), (5000, 0)], ids=str)
@pytest.mark.parametrize("shape", [(2, 1000, 1000, 4, 2, 128), (1, 77, 4097, 4, 4, 64), (1, 300, 77, 2, 2, 128)],
                         ids=lambda s: "B{}-SQ{}-SK{}-H{}-HK{}-D{}".format(*s))
@pytest.mark.parametrize("fwd", list(FWD_KERNELS))
def test_gpu_window_and_empty_rows_against_float64(shape, window, fwd, monkeypatch):
    """Left windows (with causal or an unbounded right side), and causal with more queries than
    keys (rows that see no key: out 0, lse +inf) through the forward's feature path."""
    import pyflashattn as pfa
    override = overrides(FEATURES_ON, FWD_KERNELS[fwd])
    monkeypatch.setenv("PYFLASHATTN_CONFIG", override)
    b, sq, sk, h, hk, d = shape
    q, k, v = (t.requires_grad_() for t in qkv(b, sq, sk, h, hk, d, torch.bfloat16, "cuda"))
    causal = window[1] == 0
    assert hopper.usable(q, k, v, params(q, k, causal=causal, window=window), cfg(d, override=override))

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, causal=causal, window_size=window, return_attn_probs=True)
        return out, lse
    compare_with_reference(fn, q, k, v, causal=causal, window_size=window)


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("fwd", list(FWD_KERNELS))
def test_gpu_softcap_alibi_window_against_float64(d, causal, fwd, monkeypatch):
    """Softcap, ALiBi (per head) and a left window together on the forward's feature path."""
    import pyflashattn as pfa
    override = overrides(FEATURES_ON, FWD_KERNELS[fwd])
    monkeypatch.setenv("PYFLASHATTN_CONFIG", override)
    q, k, v = (t.requires_grad_() for t in qkv(2, 777, 1000, 4, 2, d, torch.bfloat16, "cuda"))
    kw = dict(softcap=8.0, alibi_slopes=torch.rand(4, device="cuda"), window_size=(300, 0 if causal else -1))
    assert hopper.usable(q, k, v, params(q, k, causal=causal, window=kw["window_size"], softcap=8.0,
                                         alibi=kw["alibi_slopes"]), cfg(d, override=override))

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True, **kw)
        return out, lse
    compare_with_reference(fn, q, k, v, causal=causal, **kw)


def _poison_empty_like(monkeypatch) -> None:
    """Floating-point tensors from ``torch.empty_like`` start as NaN from now on (outputs,
    gradients and buffers), so that an element a kernel leaves unwritten shows."""
    empty = torch.empty_like

    def poisoned(t, **kw):
        return empty(t, **kw).fill_(float("nan")) if t.is_floating_point() else empty(t, **kw)
    monkeypatch.setattr(torch, "empty_like", poisoned)


def _gluon_backward_only(monkeypatch) -> list:
    """The names of the Gluon kernels launched from now on (a list that fills as they run), with
    Triton's dK/dV kernel made unlaunchable: a backward that falls back to it fails."""
    from pyflashattn.kernels import bwd
    launched = []
    gluon_launcher = hopper._launcher
    monkeypatch.setattr(hopper, "_launcher", lambda kernel: launched.append(kernel.fn.__name__)
                        or gluon_launcher(kernel))
    monkeypatch.setattr(bwd, "_launch_dkdv", None)
    # the general path only: plans skip _launcher, and cannot bind the stand-in above
    monkeypatch.setattr(ops, "PLAN_FORWARD", False)
    monkeypatch.setattr(ops, "PLAN_BACKWARD", False)
    return launched


# the Gluon backward's feature tests: GQA, 2.5k keys (warp-specialized and fused dK/dV at d=128),
# lengths off the blocks, seqlen_q != seqlen_k
GLUON_BWD_SHAPES = pytest.mark.parametrize(
    "shape", [(2, 300, 500, 4, 2, 128), (1, 1000, 1000, 4, 4, 64), (2, 2500, 2500, 2, 1, 128), (1, 77, 300, 4, 1, 128)],
    ids=lambda s: "B{}-SQ{}-SK{}-H{}-HK{}-D{}".format(*s))


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@GLUON_BWD_SHAPES
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("cap", [0.5, 30.0])
def test_gpu_softcap_gluon_backward_against_float64(shape, causal, dtype, cap, monkeypatch):
    """Softcap through the Gluon backward (``hopper_bwd_softcap``, on since v14): the table's
    dK/dV (one warpgroup, or at d=128 from 2k keys the warp-specialized or, without causal, the
    fused dK/dV/dQ kernel) and dQ kernels, against float64; a cap of 0.5 saturates tanh (scores
    of +-40 there), 30 is the usual."""
    import pyflashattn as pfa
    override = json.dumps({"hopper_bwd_softcap": 1})
    monkeypatch.setenv("PYFLASHATTN_CONFIG", override)
    b, sq, sk, h, hk, d = shape
    q, k, v = qkv(b, sq, sk, h, hk, d, dtype, "cuda")
    q = (q * (8 if cap < 1 else 1)).requires_grad_()
    k, v = k.requires_grad_(), v.requires_grad_()
    p = params(q, k, causal=causal, softcap=cap)
    assert hopper.usable(q, k, v, p, cfg(d, dtype, override), dout=torch.randn_like(q))
    launched = _gluon_backward_only(monkeypatch)

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, causal=causal, softcap=cap, return_attn_probs=True)
        return out, lse
    compare_with_reference(fn, q, k, v, causal=causal, softcap=cap)
    assert any(name.startswith("dkdv_hopper") for name in launched), launched


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@GLUON_BWD_SHAPES
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("mods", [dict(per_batch=False), dict(per_batch=True), dict(per_batch=True, softcap=30.0)],
                         ids=["slopes_h", "slopes_bh", "slopes_bh-softcap"])
def test_gpu_alibi_gluon_backward_against_float64(shape, causal, dtype, mods, monkeypatch):
    """ALiBi through the Gluon backward (``hopper_bwd_alibi``, on since v14): the table's dK/dV
    (one warpgroup, or at d=128 from 2k keys the warp-specialized or, without causal, the fused
    dK/dV/dQ kernel) and dQ kernels, slopes per head or per (batch, head), with softcap once;
    large slopes (up to 2, ALiBi's first head is 0.5) so the bias dominates far keys."""
    import pyflashattn as pfa
    override = json.dumps({"hopper_bwd_alibi": 1})
    monkeypatch.setenv("PYFLASHATTN_CONFIG", override)
    b, sq, sk, h, hk, d = shape
    q, k, v = (t.requires_grad_() for t in qkv(b, sq, sk, h, hk, d, dtype, "cuda"))
    slopes = 2 * torch.rand(*((b, h) if mods["per_batch"] else (h,)), device="cuda")
    cap = mods.get("softcap", 0.0)
    p = params(q, k, causal=causal, softcap=cap, alibi=slopes)
    assert hopper.usable(q, k, v, p, cfg(d, dtype, override), dout=torch.randn_like(q))
    launched = _gluon_backward_only(monkeypatch)

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, causal=causal, softcap=cap, alibi_slopes=slopes,
                                          return_attn_probs=True)
        return out, lse
    compare_with_reference(fn, q, k, v, causal=causal, softcap=cap, alibi_slopes=slopes)
    assert any(name.startswith("dkdv_hopper") for name in launched), launched


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("lengths", ["mixed", "long"])
def test_gpu_varlen_gluon_backward_against_float64(lengths, causal, d, dtype, monkeypatch):
    """Varlen through the Gluon backward (``hopper_bwd_varlen``, on since v15): the table's dK/dV
    and dQ kernels on packed sequences, GQA. "mixed": empty sequences on either side, more
    queries than keys (causal rows that see no key), lengths off the blocks; "long": up to
    2500 keys, where d=128 runs the warp-specialized dK/dV, and without causal the fused
    dK/dV/dQ kernel."""
    import pyflashattn as pfa
    from pyflashattn.reference import varlen_attention_ref
    override = json.dumps({"hopper_bwd_varlen": 1})
    monkeypatch.setenv("PYFLASHATTN_CONFIG", override)
    lq, lk = {"mixed": ([5, 0, 300, 33, 1, 129, 70], [9, 4, 300, 20, 0, 700, 3]),
              "long": ([2500, 17, 1000], [2500, 999, 2047])}[lengths]
    cu_q, cu_k = (torch.tensor([0] + n, device="cuda").cumsum(0).to(torch.int32) for n in (lq, lk))
    q = torch.randn(sum(lq), 4, d, dtype=dtype, device="cuda", requires_grad=True)
    k, v = (torch.randn(sum(lk), 2, d, dtype=dtype, device="cuda", requires_grad=True) for _ in range(2))
    p = varlen_params(q, k, cu_q, cu_k, max(lq), max(lk), causal=causal)
    assert hopper.usable(q, k, v, p, cfg(d, dtype, override), dout=torch.randn_like(q))
    launched = _gluon_backward_only(monkeypatch)
    _poison_empty_like(monkeypatch)   # a row left unwritten shows

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lq), max(lk), causal=causal,
                                                 return_attn_probs=True)
        return out, lse
    compare_with_reference(fn, q, k, v, causal=causal, ref=varlen_attention_ref, cu_seqlens_q=cu_q,
                           cu_seqlens_k=cu_k)
    assert any(name.startswith("dkdv_hopper") for name in launched), launched
    assert any(name.startswith("dq_hopper") or name == "dkdv_hopper_ws_kernel" for name in launched), launched


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", [(2, 1024, 1024, 16, 16, 128), (2, 300, 500, 4, 2, 128), (1, 4097, 4097, 2, 2, 64),
                                   (3, 1000, 1000, 8, 2, 64), (1, 17, 300, 4, 1, 128)],
                         ids=lambda s: "B{}-SQ{}-SK{}-H{}-HK{}-D{}".format(*s))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_gpu_forward_tma_store_against_float64(shape, causal, dtype, monkeypatch):
    """The warp-specialized forward with its out tiles stored by TMA (``hopper_ws_tma_store``,
    on since v14): full tiles through shared memory, a sequence's partial last tile by pointer
    stores; persistent walks of many tiles per program (1k), a program per tile (4097 keys), GQA,
    one partial tile only (17 queries); out poisoned first, so a row left unwritten shows."""
    import pyflashattn as pfa
    override = json.dumps({"hopper_ws_tma_store": 1})
    monkeypatch.setenv("PYFLASHATTN_CONFIG", override)
    b, sq, sk, h, hk, d = shape
    q, k, v = (t.requires_grad_() for t in qkv(b, sq, sk, h, hk, d, dtype, "cuda"))
    p = params(q, k, causal=causal)
    assert hopper.usable(q, k, v, p, cfg(d, dtype, override)) and hopper.warp_specialized(p, cfg(d, dtype, override))
    _poison_empty_like(monkeypatch)   # a row left unwritten shows

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
        return out, lse
    compare_with_reference(fn, q, k, v, causal=causal)


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("shape,window", [((2, 4096, 4096, 8, 2, 128), (1000, 0)), ((2, 4096, 4096, 8, 8, 64), (300, 0)),
                                          ((1, 3000, 3500, 8, 4, 128), (0, 0)), ((2, 2100, 1900, 4, 2, 128), (200, 0))],
                         ids=["d128-w1000", "d64-w300", "diagonal-sk>sq", "sq>sk-empty-rows"])
def test_gpu_window_persistent_against_float64(shape, window, monkeypatch):
    """The warp-specialized forward persistent under a causal band (``hopper_ws_persistent_window``,
    on since v14): 132 programs walking 128-1024 tiles each of a few key blocks, GQA, keys past the
    queries, and rows that see no key (more queries than keys: out 0, lse +inf); out and lse
    against float64, gradients through the table's backward."""
    import pyflashattn as pfa
    override = json.dumps({"hopper_ws_persistent_window": 4096})
    monkeypatch.setenv("PYFLASHATTN_CONFIG", override)
    b, sq, sk, h, hk, d = shape
    q, k, v = (t.requires_grad_() for t in qkv(b, sq, sk, h, hk, d, torch.bfloat16, "cuda"))
    grids = []
    launcher = hopper._launcher
    # the general path's grid: plans skip _launcher, and cannot bind the stand-in below
    monkeypatch.setattr(ops, "PLAN_FORWARD", False)
    monkeypatch.setattr(ops, "PLAN_BACKWARD", False)
    monkeypatch.setattr(hopper, "_launcher", lambda kernel: (lambda grid, *a, **kw: grids.append(grid) or
                                                             launcher(kernel)(grid, *a, **kw)))

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, window_size=window, return_attn_probs=True)
        return out, lse
    compare_with_reference(fn, q, k, v, window_size=window)
    assert grids[0] == (torch.cuda.get_device_properties(0).multi_processor_count,), grids


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("mask", ["full", "causal", "band"])
@pytest.mark.parametrize("lengths", ["mixed", "alike"])
def test_gpu_varlen_persistent_against_float64(lengths, mask, d, monkeypatch):
    """The warp-specialized forward persistent over packed sequences: 132 programs walking tiles
    numbered over the longest sequence, pairs under causal, the band under a causal window.
    "mixed" (forced by ``hopper_ws_persistent_varlen_fill`` = 1; the table's 90 % refuses them):
    empty sequences on either side, more queries than keys, lengths off the blocks; "alike"
    (the table's own choice): lengths within 5 % of the longest, off the blocks. GQA; out
    poisoned first, so a row left unwritten shows."""
    import pyflashattn as pfa
    from pyflashattn.reference import varlen_attention_ref
    if lengths == "mixed":
        monkeypatch.setenv("PYFLASHATTN_CONFIG", json.dumps({"hopper_ws_persistent_varlen_fill": 1}))
        lq, lk = [5, 0, 3000, 33, 1, 129, 700, 2048], [9, 4, 3000, 20, 0, 700, 650, 2048]
    else:
        lq, lk = [1000, 977, 1000, 1000, 961], [1000, 1000, 990, 1000, 1000]
    cu_q, cu_k = (torch.tensor([0] + n, device="cuda").cumsum(0).to(torch.int32) for n in (lq, lk))
    q = torch.randn(sum(lq), 8, d, dtype=torch.bfloat16, device="cuda", requires_grad=True)
    k, v = (torch.randn(sum(lk), 2, d, dtype=torch.bfloat16, device="cuda", requires_grad=True) for _ in range(2))
    kw = dict(causal=mask == "causal", window_size=(300, 0) if mask == "band" else (-1, -1))
    grids = []
    launcher = hopper._launcher
    # the general path's grid: plans skip _launcher, and cannot bind the stand-in below
    monkeypatch.setattr(ops, "PLAN_FORWARD", False)
    monkeypatch.setattr(ops, "PLAN_BACKWARD", False)
    monkeypatch.setattr(hopper, "_launcher", lambda kernel: (lambda grid, *a, **k_: grids.append(grid) or
                                                             launcher(kernel)(grid, *a, **k_)))
    _poison_empty_like(monkeypatch)   # a row left unwritten shows

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lq), max(lk), return_attn_probs=True, **kw)
        return out, lse
    compare_with_reference(fn, q, k, v, ref=varlen_attention_ref, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, **kw)
    assert grids[0] == (torch.cuda.get_device_properties(0).multi_processor_count,), grids


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("fwd", list(FWD_KERNELS))
def test_gpu_softcap_saturates(fwd, monkeypatch):
    """Softcap where tanh saturates: scores of +-40 against a cap of 0.5 (tanh's argument up to
    ~80, e^{2x} past fp32's range), both signs, on the Gluon forwards; out and lse against
    float64, gradients through the Triton backward."""
    import pyflashattn as pfa
    monkeypatch.setenv("PYFLASHATTN_CONFIG", overrides(FWD_KERNELS[fwd]))
    q, k, v = qkv(2, 300, 500, 4, 2, 128, torch.bfloat16, "cuda")
    q = (q * 8).requires_grad_()
    k, v = k.requires_grad_(), v.requires_grad_()
    assert hopper.usable(q, k, v, params(q, k, softcap=0.5), cfg(override=overrides(FWD_KERNELS[fwd])))

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, softcap=0.5, return_attn_probs=True)
        return out, lse
    compare_with_reference(fn, q, k, v, softcap=0.5)


def test_fused_dq_launches_zero_and_scale_its_buffer():
    """The fused backward's Triton launches (on the GPU, or the interpreter on a CPU): the
    preprocess zeroes the fp32 dQ buffer (poisoned first) beside delta, and the last launch
    writes ``dq = buffer * softmax_scale`` in q's dtype. The Gluon launch between them is only
    built."""
    from pyflashattn import ops
    from pyflashattn.kernels import bwd
    dev = "cuda" if HAS_CUDA else "cpu"
    q, k, v = qkv(b=2, sq=37, sk=45, h=3, hk=3, d=128, dtype=torch.float32, device=dev)
    out, dout = torch.randn_like(q), torch.randn_like(q)
    lse, delta = torch.randn(2, 3, 37, device=dev), torch.full((2, 3, 37), float("nan"), device=dev)
    p = params(q, k)
    c = ops._config(q, v, p)
    dq, dk, dv = bwd._new_grads(q, k, v)
    acc = torch.full(q.shape, float("nan"), device=dev)
    launches = bwd._launches(dout, q, k, v, out, lse, None, p, c, delta, dq, dk, dv, False, acc)
    assert len(launches) == 3 and launches[1][3]["FUSED_DQ"] is True
    pre, scale = launches[0], launches[2]
    pre[0](*pre[1:6], **pre[6])
    assert torch.equal(acc, torch.zeros_like(acc))
    torch.testing.assert_close(delta, (out * dout).sum(-1).transpose(1, 2))
    acc.copy_(torch.randn(q.shape, device=dev))
    scale[0](*scale[1:6], **scale[6])
    torch.testing.assert_close(dq, acc * p.softmax_scale)


@pytest.mark.parametrize("fused", [False, True], ids=["dkdv", "fused"])
def test_preprocess_writes_padded_stats(fused, monkeypatch):
    """``hopper_bwd_stats`` (on since v15): the preprocess also writes the Gluon dK/dV kernels'
    ``(b, h, 2, n)`` statistics, lse in base 2 then delta, rows past seqlen_q up to n (128 here
    for 37 queries) +inf and 0 (poisoned first, so a row left unwritten shows); the dK/dV launch
    reads them instead of lse and delta (``PADDED_STATS``, the row count as ``stats_len``)."""
    from pyflashattn import ops
    from pyflashattn.kernels import bwd
    dev = "cuda" if HAS_CUDA else "cpu"
    q, k, v = qkv(b=2, sq=37, sk=45, h=3, hk=3, d=128, dtype=torch.float32, device=dev)
    out, dout = torch.randn_like(q), torch.randn_like(q)
    lse, delta = torch.randn(2, 3, 37, device=dev), torch.full((2, 3, 37), float("nan"), device=dev)
    p = params(q, k)
    c = replace(ops._config(q, v, p), hopper_dkdv_block_n=64, hopper_bwd_stats=1)   # the table's Gluon tiles
    dq, dk, dv = bwd._new_grads(q, k, v)
    acc = torch.full(q.shape, float("nan"), device=dev) if fused else None
    stats = bwd._new_stats(lse).fill_(float("nan"))
    assert stats.shape == (2, 3, 2, 128)
    monkeypatch.setattr(bwd, "_gluon_dkdv", lambda *args: True)   # the Gluon dK/dV launch, built only
    launches = bwd._launches(dout, q, k, v, out, lse, None, p, c, delta, dq, dk, dv, False, acc, stats)
    pre, dkdv = launches[0], launches[1]
    assert pre[3]["WRITE_STATS"] is True and dkdv[3]["PADDED_STATS"] is True
    assert dkdv[2][4] is stats and dkdv[2][-4] == 128   # LSE's slot and stats_len (then dropout's three)
    pre[0](*pre[1:6], **pre[6])
    torch.testing.assert_close(delta, (out * dout).sum(-1).transpose(1, 2))
    torch.testing.assert_close(stats[:, :, 0, :37], lse * 1.4426950408889634)
    torch.testing.assert_close(stats[:, :, 1, :37], delta)
    assert torch.all(stats[:, :, 0, 37:] == float("inf")) and torch.all(stats[:, :, 1, 37:] == 0)
    # without the switch, or where Triton's dK/dV runs, no statistics
    assert not bwd._backward_kernels(q, k, v, dout, dq, dk, dv, p, cfg(override=json.dumps({"hopper_bwd_stats": 0})),
                                     False)[2]


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", [(2, 300, 500, 4, 2, 128), (1, 1000, 1000, 4, 4, 64), (2, 2500, 2500, 2, 1, 128),
                                   (1, 77, 300, 4, 1, 128), (1, 4097, 4097, 2, 2, 64)],
                         ids=lambda s: "B{}-SQ{}-SK{}-H{}-HK{}-D{}".format(*s))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("deterministic", [False, True], ids=["", "det"])
def test_gpu_padded_stats_against_float64(shape, causal, deterministic, dtype, monkeypatch):
    """``hopper_bwd_stats`` (on since v15): the table's Gluon dK/dV kernels (one warpgroup; at
    d=128 from 2k keys the fused or, deterministic, the warp-specialized one) reading the
    preprocess's padded statistics, gradients poisoned first, against float64; query lengths off
    the 128-row padding, GQA."""
    import pyflashattn as pfa
    from pyflashattn.kernels import bwd
    override = json.dumps({"hopper_bwd_stats": 1})
    monkeypatch.setenv("PYFLASHATTN_CONFIG", override)
    b, sq, sk, h, hk, d = shape
    q, k, v = (t.requires_grad_() for t in qkv(b, sq, sk, h, hk, d, dtype, "cuda"))
    made = []
    new_stats = bwd._new_stats
    monkeypatch.setattr(bwd, "_new_stats", lambda lse, device=None: made.append(device)
                        or new_stats(lse, device).fill_(float("nan")))   # every padded row must be written
    monkeypatch.setattr(bwd, "_launch_dkdv", None)   # Triton's dK/dV must not run
    _poison_empty_like(monkeypatch)   # a row left unwritten shows

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, causal=causal, deterministic=deterministic,
                                          return_attn_probs=True)
        return out, lse
    compare_with_reference(fn, q, k, v, causal=causal)
    assert made, "no statistics were made"


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("shape", [(2, 4111, 4111, 4, 2, 128), (1, 1000, 4096, 8, 8, 128)],
                         ids=lambda s: "B{}-SQ{}-SK{}-H{}-HK{}-D{}".format(*s))
def test_gpu_fused_dq_as_shipped(shape, monkeypatch):
    """The shipped table at 4k keys and more without causal: dQ comes from the fused kernel (its
    buffer allocated; GQA; rows of the first batch's last block that belong to the next one),
    the gradients against float64 as every path's; with ``deterministic=True`` the dQ kernel
    instead, bitwise the same on a second run."""
    import pyflashattn as pfa
    from pyflashattn.kernels import bwd
    monkeypatch.delenv("PYFLASHATTN_CONFIG", raising=False)
    made = []
    new_acc = bwd._new_dq_acc
    # counted where the backward runs, not where a plan describes it (device="meta")
    monkeypatch.setattr(bwd, "_new_dq_acc", lambda q, device=None: (device is None and made.append(q.shape))
                        or new_acc(q, device))
    b, sq, sk, h, hk, d = shape
    q, k, v = (t.requires_grad_() for t in qkv(b, sq, sk, h, hk, d, torch.bfloat16, "cuda"))

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, return_attn_probs=True)
        return out, lse
    compare_with_reference(fn, q, k, v)
    assert made == [q.shape]
    made.clear()
    g = torch.randn_like(q)
    runs = [torch.autograd.grad(pfa.flash_attn_func(q, k, v, deterministic=True), (q, k, v), g) for _ in range(2)]
    assert not made and all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("shape", [(40, 256, 256, 16, 16, 128), (3, 1000, 1000, 8, 2, 64), (2, 300, 4096, 32, 4, 128)],
                         ids=lambda s: "B{}-SQ{}-SK{}-H{}-HK{}-D{}".format(*s))
def test_gpu_persistent_forward_walks_many_tiles(shape, monkeypatch):
    """The shipped table's persistent forward (one program per SM) where every program walks
    several tiles (1280, 192 and 192 tiles over 132 SMs): the rings' phases across tiles, the
    next tile's Q loaded while the current one ends, GQA, a partial last query block; outputs
    and gradients against float64 as every path's."""
    import pyflashattn as pfa
    monkeypatch.delenv("PYFLASHATTN_CONFIG", raising=False)
    b, sq, sk, h, hk, d = shape
    q, k, v = (t.requires_grad_() for t in qkv(b, sq, sk, h, hk, d, torch.bfloat16, "cuda"))
    p, c = params(q, k), cfg(d)
    assert hopper.warp_specialized(p, c) and sk <= c.hopper_ws_persistent_max_seqlen_k
    assert (sq + 127) // 128 * b * h > torch.cuda.get_device_properties(0).multi_processor_count

    def fn(q, k, v):
        out, lse, _ = pfa.flash_attn_func(q, k, v, return_attn_probs=True)
        return out, lse
    compare_with_reference(fn, q, k, v)


def test_dropout_chosen_only_with_hopper_dropout():
    """Dropout's forward takes the warp-specialized Gluon kernel where the table has
    ``hopper_dropout`` (d 64 and 128), never the one-warpgroup one; its backward the Gluon dQ
    with ``hopper_dq_dropout`` and the one-warpgroup Gluon dK/dV with ``hopper_dkdv_dropout``
    (both on at d 64 and 128 since v18), never the warp-specialized or fused dK/dV; with
    varlen, softcap, ALiBi, a left window or rows that see no key only with
    ``hopper_dropout_features`` (on since v18)."""
    for d in (64, 128):
        q, k, v = qkv(d=d)
        p = params(q, k, causal=True, dropout_p=0.1)
        dout, dq = torch.randn_like(q), torch.empty_like(q)
        assert hopper.usable(q, k, v, p, cfg(d), device_ok=True)
        assert not hopper.usable(q, k, v, p, cfg(d, override='{"hopper_dropout": false}'), device_ok=True)
        assert not hopper.usable(q, k, v, p, cfg(d, override='{"hopper_ws_min_seqlen_k": 0}'), device_ok=True)
        assert hopper.dq_usable(q, k, v, dout, dq, p, cfg(d), device_ok=True)
        assert not hopper.dq_usable(q, k, v, dout, dq, p, cfg(d, override='{"hopper_dq_dropout": false}'),
                                    device_ok=True)
        assert hopper.usable(q, k, v, p, cfg(d), device_ok=True, dout=dout)
        assert not hopper.usable(q, k, v, p, cfg(d, override='{"hopper_dkdv_dropout": false}'), device_ok=True,
                                 dout=dout)
        ws = cfg(d, override='{"hopper_dkdv_ws_min_seqlen_k_causal": 1}')
        assert not hopper.dkdv_warp_specialized(p, ws) and hopper.dkdv_warp_specialized(params(q, k, causal=True), ws)
        no_feats = cfg(d, override='{"hopper_dropout_features": false}')
        q2, k2, v2 = qkv(sq=301, sk=300, d=d)
        for args, p2 in (((q, k, v), params(q, k, causal=True, softcap=30.0, dropout_p=0.1)),
                         ((q, k, v), params(q, k, causal=True, alibi=torch.rand(4), dropout_p=0.1)),
                         ((q, k, v), params(q, k, window=(128, 0), dropout_p=0.1)),
                         ((q2, k2, v2), params(q2, k2, causal=True, dropout_p=0.1))):
            assert hopper.usable(*args, p2, cfg(d), device_ok=True)
            assert not hopper.usable(*args, p2, no_feats, device_ok=True)
            assert not hopper.dq_usable(*args, torch.randn_like(args[0]), torch.empty_like(args[0]), p2, no_feats,
                                        device_ok=True)


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", [(2, 300, 300, 4, 4, 128), (1, 77, 1000, 4, 2, 64), (2, 1000, 1000, 2, 2, 64),
                                   (1, 640, 333, 4, 4, 128)],
                         ids=lambda s: "B{}-SQ{}-SK{}-H{}-HK{}-D{}".format(*s))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("bwd", ["dqtriton", "dqgluon", "dkdvgluon"])
def test_gpu_gluon_dropout_against_float64(shape, causal, dtype, bwd, monkeypatch):
    """The warp-specialized forward with dropout (``hopper_dropout``, on in the table): out against float64
    attention under the mask ``return_attn_probs`` rebuilds from the seed (``dropout.keep_mask``),
    within twice the same-dtype reference's error; the gradients (the Triton kernels, which draw
    the same mask; with ``hopper_dq_dropout`` the Gluon dQ kernel, drawing it as the forward does;
    with ``hopper_dkdv_dropout`` too the Gluon dK/dV, turning it through shared memory) likewise."""
    import pyflashattn as pfa
    from test_features import dense_dropout_ref
    b, sq, sk, h, hk, d = shape
    override = json.dumps({"hopper_dropout": True, "hopper_dq_dropout": bwd != "dqtriton",
                           "hopper_dkdv_dropout": bwd == "dkdvgluon"})
    monkeypatch.setenv("PYFLASHATTN_CONFIG", override)
    q, k, v = (t.requires_grad_() for t in qkv(b, sq, sk, h, hk, d, dtype, "cuda"))
    p, c = params(q, k, causal=causal, dropout_p=0.17), cfg(d, dtype, override)
    if causal and sq > sk:
        pytest.skip("rows that see no key: not what this test is about")
    assert hopper.usable(q, k, v, p, c) and hopper.warp_specialized(p, c)
    assert hopper.dq_usable(q, k, v, torch.randn_like(q), torch.empty_like(q), p, c) == (bwd != "dqtriton")
    assert hopper.usable(q, k, v, p, c, dout=torch.randn_like(q)) == (bwd == "dkdvgluon")
    torch.manual_seed(11)
    out, _, probs = pfa.flash_attn_func(q, k, v, dropout_p=0.17, causal=causal, return_attn_probs=True)
    keep = probs > 0
    if not causal:   # (under causal the masked elements have probability 0 too)
        assert 0.75 < keep.float().mean() < 0.9
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = dense_dropout_ref(q64, k64, v64, keep, 0.17, causal)
    low = dense_dropout_ref(q.detach(), k.detach(), v.detach(), keep.to(dtype), 0.17, causal)
    assert not out.isnan().any()
    assert (out.double() - ref).abs().max() <= 2 * (low.double() - ref).abs().max() + 1e-5
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), g.double())
    qd, kd, vd = (t.detach().requires_grad_() for t in (q, k, v))
    low_grads = torch.autograd.grad(dense_dropout_ref(qd, kd, vd, keep.to(dtype), 0.17, causal), (qd, kd, vd), g)
    for name, a, r, lo in zip("qkv", grads, ref_grads, low_grads):
        assert (a.double() - r).abs().max() <= 2 * (lo.double() - r).abs().max() + 1e-4, name


# every Gluon kernel with dropout off: the Triton kernels, the control
TRITON_DROPOUT = '{"hopper_dropout": false, "hopper_dq_dropout": false, "hopper_dkdv_dropout": false}'


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("case", ["varlen", "softcap", "alibi", "window", "sq>sk"])
@pytest.mark.parametrize("d", [64, 128])
def test_gpu_gluon_dropout_features_against_fp32(case, d, monkeypatch):
    """Dropout on the Gluon forward with varlen, softcap, ALiBi, a left window, or causal rows
    that see no key (``hopper_dropout_features``), and the Gluon backward where it takes the
    feature (``hopper_dq_dropout``, ``hopper_dkdv_dropout``; the table's defaults): out and
    gradients against the PyTorch backend in fp32 under the same seed (the same mask:
    ``dropout.keep_mask``), within twice the Triton kernels' error (``TRITON_DROPOUT``), bf16."""
    import pyflashattn as pfa
    h, hk = 4, 2
    if case == "varlen":
        lens = [300, 17, 1000, 0, 129]
        cu = torch.tensor([0] + lens, device="cuda").cumsum(0).to(torch.int32)
        shapes = [(sum(lens), h, d), (sum(lens), hk, d), (sum(lens), hk, d)]

        def call(q, k, v):
            return pfa.flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), dropout_p=0.17, causal=True)
    else:
        sq = 400 if case == "sq>sk" else 300
        shapes = [(2, sq, h, d), (2, 300, hk, d), (2, 300, hk, d)]
        kw = {"softcap": dict(causal=True, softcap=20.0), "alibi": dict(causal=True, alibi_slopes=torch.rand(h, device="cuda")),
              "window": dict(window_size=(128, 0)), "sq>sk": dict(causal=True)}[case]

        def call(q, k, v):
            return pfa.flash_attn_func(q, k, v, dropout_p=0.17, **kw)
    base = [torch.randn(s, device="cuda") for s in shapes]
    g = torch.randn(shapes[0][:-1] + (d,), device="cuda")

    def run(backend, config, dtype):
        monkeypatch.setenv("PYFLASHATTN_BACKEND", backend)
        monkeypatch.setenv("PYFLASHATTN_CONFIG", config)
        q, k, v = (t.detach().to(dtype).clone().requires_grad_() for t in base)
        torch.manual_seed(5)
        out = call(q, k, v)
        return (out, *torch.autograd.grad(out, (q, k, v), g.to(dtype)))
    gluon = run("triton", "{}", torch.bfloat16)   # the table: the Gluon forward and backward with dropout
    triton_fwd = run("triton", TRITON_DROPOUT, torch.bfloat16)
    ref = run("torch", "{}", torch.float32)
    q, k, v = (t.to(torch.bfloat16) for t in base)
    on = cfg(d)
    if case != "varlen":   # the Gluon forward took it (varlen: the same rule, ``_has_features``)
        p = ops._params(q, k, d ** -0.5, *(kw.get("window_size", (-1, 0 if kw.get("causal") else -1))),
                        kw.get("softcap", 0.0), kw.get("alibi_slopes"), None, None, None, None, None, 0.17)
        assert hopper.usable(q, k, v, p, on)
    for name, a, b, r in zip(["out", "dq", "dk", "dv"], gluon, triton_fwd, ref):
        assert not a.isnan().any(), name
        assert (a.float() - r).abs().max() <= 2 * (b.float() - r).abs().max() + 1e-3, name

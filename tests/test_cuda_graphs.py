"""CUDA graphs: a forward + backward captured once (``torch.cuda.graph``, or
``torch.compile(mode="reduce-overhead")``) and replayed on new inputs computes what eager mode
computes, so the host time of small, launch-bound shapes can be taken out of the loop. Every
replay must write its outputs (poisoned before), and dropout must draw a fresh seed per replay
(``dropout.new_seed`` draws on the device: a seed copied from the CPU would be captured once).
GPU only."""
import pytest
import torch

import pyflashattn as pfa
from conftest import HAS_CUDA

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason="CUDA graphs need a GPU")


def _leaves(b, s, h, d, gen):
    return [torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_()
            for _ in range(3)]


def _capture(fn, q, k, v, dout):
    """Warm up on a side stream (torch's recipe), then capture out = fn(q, k, v) and its backward."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn(q, k, v).backward(dout)
    torch.cuda.current_stream().wait_stream(side)
    for t in (q, k, v):
        t.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(q, k, v)
        out.backward(dout)
    return graph, out


def _replay_equals_eager(graph, fn, out, q, k, v, dout, gen):
    """New random inputs in the captured buffers, outputs and grads poisoned, one replay: output
    and gradients bitwise equal to eager mode's on the same inputs."""
    for t in (q, k, v, dout):
        t.data.copy_(torch.randn(t.shape, device="cuda", dtype=t.dtype, generator=gen))
    for t in (out, q.grad, k.grad, v.grad):
        t.fill_(float("nan"))
    graph.replay()
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ref = fn(q2, k2, v2)
    ref.backward(dout)
    for got, want in ((out, ref), (q.grad, q2.grad), (k.grad, k2.grad), (v.grad, v2.grad)):
        assert torch.equal(got, want), (got.float() - want.float()).abs().max()


@pytest.mark.parametrize("d,causal,s", [(64, True, 512), (128, False, 512), (128, True, 1000), (80, True, 300)])
def test_graph_replay_equals_eager(d, causal, s):
    gen = torch.Generator(device="cuda").manual_seed(d + s)
    q, k, v = _leaves(2, s, 4, d, gen)
    dout = torch.randn(2, s, 4, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    fn = lambda q, k, v: pfa.flash_attn_func(q, k, v, causal=causal)
    graph, out = _capture(fn, q, k, v, dout)
    for _ in range(2):
        _replay_equals_eager(graph, fn, out, q, k, v, dout, gen)


def test_graph_dropout_draws_a_new_mask_per_replay():
    gen = torch.Generator(device="cuda").manual_seed(5)
    q, k, v = _leaves(1, 256, 2, 64, gen)
    dout = torch.randn(1, 256, 2, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
    graph, out = _capture(lambda q, k, v: pfa.flash_attn_func(q, k, v, dropout_p=0.3), q, k, v, dout)
    outs = []
    for _ in range(2):
        out.fill_(float("nan"))
        graph.replay()
        assert torch.isfinite(out).all()
        outs.append(out.clone())
    assert not torch.equal(outs[0], outs[1]), "the captured dropout repeated its mask"


def test_compile_reduce_overhead_matches_eager():
    gen = torch.Generator(device="cuda").manual_seed(9)
    q, k, v = _leaves(2, 384, 4, 64, gen)
    dout = torch.randn(2, 384, 4, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
    fn = lambda q, k, v: pfa.flash_attn_func(q, k, v, causal=True)
    compiled = torch.compile(fn, mode="reduce-overhead", fullgraph=True)
    for _ in range(3):   # the first calls record, later ones replay
        torch.compiler.cudagraph_mark_step_begin()
        for t in (q, k, v):
            t.grad = None
        out = compiled(q, k, v)
        out.backward(dout)
    got = [out.detach().clone()] + [t.grad.clone() for t in (q, k, v)]
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    ref = fn(q2, k2, v2)
    ref.backward(dout)
    for g, want in zip(got, (ref, q2.grad, k2.grad, v2.grad)):
        assert ((g.float() - want.float()).norm() / want.float().norm()).item() < 1e-2


def test_graph_replay_varlen():
    """Packed sequences with static cu_seqlens: the warm-up checks their values, the capture does
    not read them (it cannot), replays equal eager mode."""
    gen = torch.Generator(device="cuda").manual_seed(3)
    lens = [5, 0, 130, 64]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    total, h, d = sum(lens), 4, 64
    q, k, v = (torch.randn(total, h, d, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_()
               for _ in range(3))
    dout = torch.randn(total, h, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    fn = lambda q, k, v: pfa.flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), causal=True)
    graph, out = _capture(fn, q, k, v, dout)
    _replay_equals_eager(graph, fn, out, q, k, v, dout, gen)

"""The benchmark CLI: argument handling, the FLOP arithmetic, the table/JSON shape of a tiny
CPU run, and skip/OOM/error cells. No timing assertions."""
import json

import pytest
import torch

from pyflashattn import cli
from pyflashattn.bench import providers as prov
from pyflashattn.bench.config import Shape
from pyflashattn.bench.flops import attention_flops, tflops
from pyflashattn.bench.report import environment, format_table, memory_summary, to_json
from pyflashattn.bench.sweep import CHECK_MAX_SCORES, Cell, mark_best, run_sweep, sampled_shape

TINY = ["--quick", "--seqlens", "32,64", "--head-dims", "16", "--batch", "1", "--heads", "2"]


def parse(*argv, cuda=False):
    return cli.parse_bench_args(list(argv), cuda_available=cuda)


def parse_error(capsys, *argv, cuda=False) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv, cuda=cuda)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# --- arguments -------------------------------------------------------------------------

def test_cpu_defaults_are_small():
    config = parse()
    assert config.device == "cpu" and config.dtype == "fp32" and config.mode == "speed"
    assert config.seqlens == (128, 256, 512, 1024) and config.head_dims == (64,)
    assert config.providers == ("pyflashattn", "sdpa-math", "standard")
    assert config.passes == ("fwd", "bwd", "fwdbwd") and config.causal == (False, True)
    assert config.shape(1024, 64, True) == Shape(2, 1024, 4, 4, 64, True)


def test_cuda_defaults_are_the_papers_sweep():
    config = parse(cuda=True)
    assert config.device == "cuda" and config.dtype == "bf16"
    assert config.seqlens == (512, 1024, 2048, 4096, 8192, 16384) and config.head_dims == (64, 128)
    assert set(config.providers) == set(prov.PROVIDERS)
    # 16k tokens, hidden 2048
    assert config.shape(512, 64, False) == Shape(32, 512, 32, 32, 64, False)
    assert config.shape(16384, 128, True) == Shape(1, 16384, 16, 16, 128, True)


def test_memory_mode_climbs_with_batch_one():
    gpu = parse("--mode", "memory", cuda=True)
    assert gpu.mode == "memory" and parse(cuda=True).mode == "speed"
    assert gpu.batch == 1 and max(gpu.seqlens) >= 128 * 1024 and gpu.passes == ("fwdbwd",)
    cpu = parse("--mode", "memory")
    assert cpu.batch == 1 and max(cpu.seqlens) <= 8192


def test_quick_is_shorter():
    for cuda in (False, True):
        full, quick = parse(cuda=cuda), parse("--quick", cuda=cuda)
        assert len(quick.seqlens) * len(quick.passes) < len(full.seqlens) * len(full.passes)


def test_flags_override_defaults():
    config = parse("--seqlens", "1k,2k", "4096", "--head-dims", "32", "128", "--dtype", "bf16",
                   "--batch", "3", "--heads", "8", "--kv-heads", "2", "--causal", "yes",
                   "--passes", "bwd", "--providers", "pyflashattn,standard", "--no-check")
    assert config.seqlens == (1024, 2048, 4096) and config.head_dims == (32, 128)
    assert config.dtype == "bf16" and config.causal == (True,) and config.passes == ("bwd",)
    assert config.providers == ("pyflashattn", "standard") and not config.check
    assert config.shape(1024, 32, True) == Shape(3, 1024, 8, 2, 32, True)
    assert parse("--providers", "all").providers == tuple(prov.PROVIDERS)
    assert parse("--cuda-graph", cuda=True).cuda_graph and not parse(cuda=True).cuda_graph


@pytest.mark.parametrize("argv, message", [
    (["--dtype", "fp64"], "invalid choice: 'fp64'"),
    (["--seqlens", "abc"], "expected a positive integer"),
    (["--seqlens", "0"], "expected a positive integer"),
    (["--providers", "nope"], "unknown name 'nope'"),
    (["--passes", "fwd,sideways"], "unknown name 'sideways'"),
    (["--heads", "4", "--kv-heads", "3"], "--kv-heads 3 must divide"),
    (["--head-dims", "512"], "at most 256"),
    (["--device", "cuda"], "no CUDA GPU is visible"),
    (["--causal", "maybe"], "invalid choice: 'maybe'"),
    (["--cuda-graph"], "--cuda-graph: only in speed mode on a GPU"),
])
def test_bad_flags_are_argparse_errors(capsys, argv, message):
    assert message in parse_error(capsys, *argv)


def test_main_needs_a_command(capsys):
    with pytest.raises(SystemExit):
        cli.main([])
    assert "COMMAND" in capsys.readouterr().err


# --- FLOPs -------------------------------------------------------------------------------

def test_flops_follow_the_papers():
    full = 4 * 2 * 4 * 1024 * 1024 * 64
    assert attention_flops(2, 4, 1024, 1024, 64, False, "fwd") == full == 2_147_483_648
    assert attention_flops(2, 4, 1024, 1024, 64, True, "fwd") == 1_073_741_824
    assert attention_flops(2, 4, 1024, 1024, 64, False, "bwd") == 5_368_709_120      # 2.5x
    assert attention_flops(2, 4, 1024, 1024, 64, False, "fwdbwd") == 7_516_192_768   # 3.5x
    assert attention_flops(2, 4, 1024, 1024, 64, True, "bwd") == 2_684_354_560
    assert attention_flops(1, 1, 3, 5, 7, True, "fwdbwd") == 735  # 4*3*5*7 / 2 * 3.5
    # the papers' setting: 16k tokens, hidden 2048, seqlen 2k, causal forward
    assert attention_flops(8, 16, 2048, 2048, 128, True) == 137_438_953_472
    with pytest.raises(ValueError, match="pass_ must be one of"):
        attention_flops(1, 1, 1, 1, 1, False, "sideways")


def test_tflops():
    assert tflops(2 * 10**12, 1000.0) == pytest.approx(2.0)
    assert tflops(10**12, 0.5) == pytest.approx(2000.0)
    assert tflops(10**12, None) is None and tflops(10**12, 0.0) is None


# --- a tiny CPU run ----------------------------------------------------------------------

def test_tiny_cpu_run_table_and_json(tmp_path):
    config = parse(*TINY, "--passes", "fwd,bwd,fwdbwd")
    result = run_sweep(config)
    assert len(result.cells) == 2 * 2 * 3 * 3  # seqlens x causal x providers x passes
    assert all(c.status == "ok" for c in result.cells), [c.note for c in result.cells]
    for c in result.cells:
        assert c.time_ms > 0 and c.tflops > 0 and c.rel_err < 1e-5 and c.err_shape is None
        assert c.flops == attention_flops(1, 2, c.seqlen, c.seqlen, 16, c.causal, c.pass_)
        assert set(c.speedup) == {"pyflashattn", "sdpa-math", "standard"} - {c.provider}
    rows = {}
    for c in result.cells:
        rows.setdefault(c.row_key(), []).append(c)
    assert len(rows) == 12 and all(sum(c.best for c in row) == 1 for row in rows.values())

    env = environment("cpu")
    table = format_table(result, config, env)
    for header in ("forward · head dim 16 · not causal", "backward · head dim 16 · causal",
                   "forward+backward · head dim 16 · causal"):
        assert header in table
    assert sum(table.count(f"{name} *") for name in config.providers) == 12
    assert "pfa speedup" in table and "TFLOP/s" in table

    doc = json.loads(json.dumps(to_json(result, config, env)))
    assert doc["environment"]["torch"] == torch.__version__ and "triton" in doc["environment"]
    assert doc["config"]["seqlens"] == [32, 64] and len(doc["cells"]) == len(result.cells)
    cell = doc["cells"][0]
    for key in ("provider", "pass", "seqlen", "batch", "heads", "kv_heads", "head_dim", "causal",
                "dtype", "status", "time_ms", "flops", "tflops", "peak_mem_bytes", "rel_err", "speedup", "best"):
        assert key in cell


def test_main_writes_json_and_notes_missing_matplotlib(tmp_path, capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    path = tmp_path / "out.json"
    code = cli.main(["bench", *TINY, "--device", "cpu", "--causal", "no", "--passes", "fwd",
                     "--json", str(path), "--plot", str(tmp_path / "plots")])
    out = capsys.readouterr().out
    assert code == 0
    assert "forward · head dim 16 · not causal" in out and "plots skipped: matplotlib" in out
    assert len(json.loads(path.read_text())["cells"]) == 2 * 3


def test_gqa_runs_everywhere():
    result = run_sweep(parse(*TINY, "--heads", "4", "--kv-heads", "2", "--causal", "yes"))
    assert result.cells and all(c.status == "ok" and c.rel_err < 1e-5 for c in result.cells)


def test_big_shapes_are_checked_on_a_sample():
    shape = Shape(16, 4096, 16, 4, 128, True)
    small = sampled_shape(shape)
    assert small.score_elements() <= CHECK_MAX_SCORES
    assert (small.batch, small.heads, small.kv_heads, small.head_dim, small.causal) == (1, 4, 1, 128, True)
    tiny = Shape(1, 64, 2, 2, 16, False)
    assert sampled_shape(tiny) is tiny


# --- skip, OOM and error cells --------------------------------------------------------

def test_unavailable_provider_is_a_skip_note():
    result = run_sweep(parse(*TINY, "--providers", "pyflashattn,sdpa-cudnn,sdpa-efficient", "--causal", "no"))
    assert "sdpa-cudnn: skipped (needs a CUDA device)" in result.notes
    assert "sdpa-efficient: skipped (needs a CUDA device)" in result.notes
    assert {c.provider for c in result.cells} == {"pyflashattn"}
    assert prov.Flex().backward_unavailable("cpu")


class _Raises(prov.Provider):
    """A provider whose forward raises ``exc`` from seqlen ``from_seqlen`` on."""
    layout = "bhsd"

    def __init__(self, name, exc, from_seqlen=0):
        self.name, self.exc, self.from_seqlen = name, exc, from_seqlen

    def bind(self, q, k, v, causal):
        def forward():
            if q.shape[2] >= self.from_seqlen:
                raise self.exc
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return forward


def _with(monkeypatch, provider):
    monkeypatch.setitem(prov.PROVIDERS, provider.name, lambda: provider)


def test_unsupported_shape_is_a_skip_cell(monkeypatch):
    _with(monkeypatch, _Raises("nokernel", NotImplementedError("no kernel for head dim 16 here")))
    result = run_sweep(parse(*TINY, "--providers", "pyflashattn,nokernel", "--causal", "no"))
    skipped = [c for c in result.cells if c.provider == "nokernel"]
    assert skipped and all(c.status == "skip" for c in skipped)
    assert any(n.startswith("nokernel: skip in 4 cells (no kernel for head dim 16 here)") for n in result.notes)
    assert "nokernel" not in format_table(result, parse(*TINY)).split("notes:")[0]


def test_sdpa_no_kernel_message_is_a_skip():
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("Flash attention kernel not used because:")
        warnings.warn("Flash attention only supports fp16 and bf16")
    reason = prov.skip_reason(RuntimeError("No available kernel. Aborting execution."), caught)
    assert reason == "no kernel for this shape/dtype (Flash attention only supports fp16 and bf16)"
    assert prov.skip_reason(RuntimeError("something broke"), []) is None


def test_oom_cell_and_the_sweep_goes_on(monkeypatch):
    _with(monkeypatch, _Raises("hungry", torch.cuda.OutOfMemoryError("CUDA out of memory."), from_seqlen=64))
    result = run_sweep(parse(*TINY, "--providers", "hungry,pyflashattn", "--mode", "memory", "--seqlens", "32,64,128"))
    status = {(c.provider, c.seqlen): c.status for c in result.cells}
    assert status[("hungry", 32)] == "ok" and status[("hungry", 64)] == status[("hungry", 128)] == "oom"
    assert all(status[("pyflashattn", s)] == "ok" for s in (32, 64, 128))
    summary = memory_summary(result.cells)
    assert any("hungry" in line and "out of memory at seqlen 64, largest that ran 32" in line for line in summary)
    assert "OOM" in format_table(result, parse(*TINY, "--mode", "memory"))


def test_error_cell_is_reported_and_main_fails(monkeypatch, capsys):
    _with(monkeypatch, _Raises("broken", ValueError("bad things")))
    assert cli.main(["bench", *TINY, "--device", "cpu", "--providers", "broken,pyflashattn",
                     "--causal", "no", "--passes", "fwd"]) == 1
    captured = capsys.readouterr()
    assert "broken: error in 2 cells (ValueError: bad things)" in captured.out
    assert "failed with an error" in captured.err


def test_mark_best_and_speedups():
    def cell(provider, ms, mem=None):
        return Cell(provider, "fwd", 128, 1, 1, 1, 64, False, "fp32", time_ms=ms, peak_mem_bytes=mem)

    cells = [cell("a", 2.0, 10), cell("b", 1.0, 30), cell("c", 4.0, 20)]
    mark_best(cells, "speed")
    assert [c.best for c in cells] == [False, True, False]
    assert cells[0].speedup == {"b": 0.5, "c": 2.0}
    cells = [cell("a", 2.0, 10), cell("b", 1.0, 30)]
    mark_best(cells, "memory")
    assert [c.best for c in cells] == [True, False]


def test_failure_while_preparing_inputs_is_a_cell_state(monkeypatch):
    class BindOOM(prov.Provider):
        name = "bindoom"

        def bind(self, q, k, v, causal):
            raise MemoryError("no room for the block mask")

    _with(monkeypatch, BindOOM())
    result = run_sweep(parse(*TINY, "--providers", "bindoom,pyflashattn", "--causal", "no"))
    assert {c.status for c in result.cells if c.provider == "bindoom"} == {"oom"}
    assert {c.status for c in result.cells if c.provider == "pyflashattn"} == {"ok"}


# --- progress and plots ------------------------------------------------------------------

def test_progress_bar_writes_labels_only_when_enabled():
    import io

    from pyflashattn.bench.progress import ProgressBar
    for enabled in (True, False):
        stream = io.StringIO()
        bar = ProgressBar(enabled, stream)
        bar.start(2)
        bar.step("fwd s=32 pyflashattn")
        bar.step("fwd s=64 pyflashattn")
        bar.close()
        assert ("s=64 pyflashattn" in stream.getvalue()) is enabled


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    from pyflashattn.bench.plots import write_plots
    result = run_sweep(parse(*TINY, "--causal", "no", "--passes", "fwd", "--no-check"))
    written, notes = write_plots(result.cells, str(tmp_path), "cpu, fp32")
    assert sorted(p.split("/")[-1] for p in written) == ["memory_fwd.png", "speed_fwd.png"] and not notes
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("memory_fwd.png", "speed_fwd.png"))


def test_busy_machine_warning():
    from pyflashattn.bench.report import busy_warning
    from pyflashattn.bench.timing import busy_by_others
    assert busy_by_others((10.0, 20.0, 1.0), (13.0, 24.0, 2.0)) == pytest.approx(0.5)  # 2 of 4 s by others
    assert busy_by_others(None, (1.0, 2.0, 0.0)) is None
    assert busy_warning({"cpu_busy_by_others": 0.5, "cpu_count": 2})[0].startswith("warning: other processes used 50%")
    assert busy_warning({"cpu_busy_by_others": 0.01}) == [] and busy_warning({}) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_cells_are_timed_and_bwd_is_a_skip():
    config = parse("--cuda-graph", "--seqlens", "256", "--head-dims", "64", "--causal", "yes", "--batch", "2",
                   "--heads", "4", "--providers", "pyflashattn,sdpa-flash", cuda=True)
    cells = run_sweep(config).cells
    timed = [c for c in cells if c.pass_ != "bwd"]
    assert timed and all(c.status == "ok" and c.time_ms > 0 and c.peak_mem_bytes > 0 for c in timed)
    assert all(c.status == "skip" and "--cuda-graph" in c.note for c in cells if c.pass_ == "bwd")

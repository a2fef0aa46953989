"""Sparse mode of the benchmark CLI: argument handling and the table/JSON shape of a tiny CPU
run (dense vs block-sparse vs FlexAttention). No timing assertions."""
import json

import pytest
import torch

from pyflashattn import cli
from pyflashattn.bench.config import SPARSE_DEFAULT_MASKS, SPARSE_MASKS
from pyflashattn.bench.report import environment
from pyflashattn.bench.sparse import format_sparse_table, mask_mod_for, run_sparse, sparse_to_json

TINY = ["--mode", "sparse", "--quick", "--seqlens", "64,128", "--head-dims", "16", "--heads", "2",
        "--block-size", "32"]


def parse(*argv, cuda=False):
    return cli.parse_bench_args(list(argv), cuda_available=cuda)


def test_sparse_defaults():
    cpu, gpu = parse("--mode", "sparse"), parse("--mode", "sparse", cuda=True)
    assert cpu.seqlens == (512, 1024) and cpu.head_dims == (64,) and cpu.block_size == 32
    assert cpu.shape(512, 64, False).batch == 1 and cpu.heads_for(64) == 4
    assert gpu.seqlens == (16384, 65536) and gpu.head_dims == (128,) and gpu.block_size == 128
    assert gpu.heads_for(128) == 16 and gpu.shape(65536, 128, False).batch == 1 and gpu.dtype == "bf16"
    for config in (cpu, gpu):
        assert config.masks == SPARSE_DEFAULT_MASKS == ("sliding", "local_global", "document")
        assert config.passes == ("fwd", "fwdbwd") and config.providers == ("pyflashattn", "flex")


def test_masks_argument(capsys):
    assert parse("--mode", "sparse", "--masks", "butterfly,causal", "sliding").masks == ("butterfly", "causal", "sliding")
    assert parse("--mode", "sparse", "--masks", *SPARSE_MASKS).masks == SPARSE_MASKS
    assert parse("--mode", "sparse", "--providers", "pyflashattn").providers == ("pyflashattn",)
    assert parse("--mode", "sparse", "--providers", "all").providers == ("pyflashattn", "flex")
    for argv, message in [(["--mode", "sparse", "--masks", "diagonal"], "unknown name 'diagonal'"),
                          (["--masks", "sliding"], "--masks: only with --mode sparse"),
                          (["--mode", "sparse", "--block-size", "24"], "power of two >= 16"),
                          (["--mode", "sparse", "--providers", "sdpa-math"], "sparse mode compares")]:
        with pytest.raises(SystemExit) as exit_info:
            parse(*argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("name", SPARSE_MASKS)
def test_masks_are_about_ten_percent_where_they_have_a_knob(name):
    from pyflashattn.block_mask import create_block_mask
    mask = create_block_mask(mask_mod_for(name, 2048, "cpu", 64), None, None, 2048, 2048, block_size=64)
    dense = mask.to_dense().float().mean().item()
    expected = {"sliding": (0.07, 0.13), "local_global": (0.08, 0.2), "document": (0.03, 0.07),
                "butterfly": (0.1, 0.25), "causal": (0.45, 0.55)}[name]
    assert expected[0] < dense < expected[1]


def test_tiny_cpu_sparse_run_table_and_json():
    config = parse(*TINY, "--masks", "sliding,document,butterfly", "--providers", "pyflashattn")
    result = run_sparse(config)
    assert not result.errors, [c.note for c in result.cells]
    dense = [c for c in result.cells if c.provider == "dense"]
    sparse = [c for c in result.cells if c.provider == "sparse"]
    assert len(dense) == 2 * 2 and len(sparse) == 2 * 3 * 2  # seqlens x (masks x) passes
    assert not [c for c in result.cells if c.provider == "flex"]
    for c in sparse:
        assert c.status == "ok" and c.time_ms > 0 and 0 < c.density <= 1 and c.rel_err < 1e-5
        assert set(c.speedup) == {"dense"} and c.block_size == 32
    env = environment("cpu")
    table = format_sparse_table(result, config, env)
    for text in ("forward · head dim 16", "forward+backward · head dim 16", "vs dense", "vs flex", "density",
                 "sliding", "document", "butterfly"):
        assert text in table
    doc = json.loads(json.dumps(sparse_to_json(result, config, env)))
    assert doc["config"]["mode"] == "sparse" and doc["config"]["masks"] == ["sliding", "document", "butterfly"]
    assert len(doc["cells"]) == len(result.cells)
    for key in ("provider", "mask", "pass", "seqlen", "batch", "heads", "head_dim", "density", "status",
                "time_ms", "rel_err", "speedup", "block_size"):
        assert key in doc["cells"][0]


def test_flex_runs_on_cpu_forward_and_skips_backward(tmp_path, capsys):
    pytest.importorskip("torch.nn.attention.flex_attention")
    path = tmp_path / "sparse.json"
    code = cli.main(["bench", *TINY, "--device", "cpu", "--seqlens", "64", "--masks", "sliding",
                     "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 0 and "FlexAttention has no backward on CPU" in out, out
    cells = json.loads(path.read_text())["cells"]
    flex = {c["pass"]: c for c in cells if c["provider"] == "flex"}
    assert flex["fwd"]["status"] == "ok" and flex["fwdbwd"]["status"] == "skip"
    sparse = {c["pass"]: c for c in cells if c["provider"] == "sparse"}
    assert set(sparse["fwd"]["speedup"]) == {"dense", "flex"} and set(sparse["fwdbwd"]["speedup"]) == {"dense"}
    assert torch.isfinite(torch.tensor(sparse["fwd"]["time_ms"]))

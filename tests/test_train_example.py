"""examples/train_gpt.py runs end to end on the CPU: the tiny preset learns, every attention
choice available here gives the same loss curve, and the seqlen search finishes."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from conftest import DEVICE

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_gpt.py"


@pytest.fixture(scope="module")
def train_gpt():
    spec = importlib.util.spec_from_file_location("train_gpt", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_gpt"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("train_gpt", None)


def common(tmp_path):
    return ["--tiny", "--device", DEVICE, "--no-progress", "--eval-batches", "1", "--out", str(tmp_path)]


def test_tiny_training_learns(train_gpt, tmp_path):
    (record,) = train_gpt.main(common(tmp_path) + ["--steps", "25", "--attn", "pyfa"])
    losses = record["losses"]
    assert len(losses) == 25 and all(math.isfinite(x) for x in losses)
    assert losses[0] > 5.0  # about ln(256) = 5.55 at initialisation
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0
    assert record["tokens_per_s"] > 0 and (record["mfu"] is None) == (DEVICE == "cpu")
    saved = json.loads((tmp_path / "train_pyfa.json").read_text())
    assert saved["runs"][0]["losses"] == losses and saved["corpus"]["bytes"] > 0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "train_pyfa_loss.png").stat().st_size > 0


def test_compare_curves_agree(train_gpt, tmp_path):
    records = train_gpt.main(common(tmp_path) + ["--steps", "8", "--n-layer", "1", "--dtype", "fp32",
                                                 "--compare", "standard,sdpa,pyfa"])
    assert [r["attn"] for r in records] == ["standard", "sdpa", "pyfa"]
    base = records[0]["losses"]
    for r in records[1:]:  # same weights, same data: fp32 rounding differences only
        assert max(abs(a - b) for a, b in zip(r["losses"], base)) < 1e-3
    assert (tmp_path / "compare.json").exists()


def test_max_seqlen_search_smoke(train_gpt, tmp_path):
    results = train_gpt.main(common(tmp_path) + ["--max-seqlen-search", "--compare", "standard,pyfa", "--n-layer", "1",
                                                 "--search-start", "32", "--search-cap", "64", "--search-steps", "1"])
    assert [(r["attn"], r["max_seqlen"], r["stopped_by"]) for r in results] == [("standard", 64, "cap"),
                                                                                 ("pyfa", 64, "cap")]


def test_gpu_only_choice_is_refused_on_cpu(train_gpt, tmp_path):
    if DEVICE != "cpu":
        pytest.skip("GPU present")
    with pytest.raises(SystemExit, match="CUDA"):
        train_gpt.main(common(tmp_path) + ["--attn", "flex"])

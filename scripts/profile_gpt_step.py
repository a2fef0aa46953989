"""Where a GPT training step's time goes, per attention choice: host time per attention call
(forward and forward+backward, no synchronization inside the loop) and a torch.profiler table
of one step of examples/train_gpt.py's model. GPU only.

    python scripts/profile_gpt_step.py --attn pyfa sdpa_flash --seqlen 1024 --batch-size 8
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import train_gpt  # noqa: E402


def host_us_per_call(fn, q, k, v, backward: bool, n: int = 200) -> float:
    """Wall time per call issuing ``n`` calls back to back, synchronized only at the ends: with
    a queue that never drains, this is the host's cost, not the GPU's, when the host is slower."""
    def once():
        out = fn(q, k, v)
        if backward:
            out.backward(torch.ones_like(out))
    for _ in range(5):
        once()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        once()
    host = time.perf_counter() - t0
    torch.cuda.synchronize()
    return 1e6 * host / n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--attn", nargs="+", default=["pyfa", "sdpa_flash"])
    p.add_argument("--seqlen", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args()
    dev = torch.device("cuda")
    # tiny tensors: the GPU finishes each call at once, so the loop measures host time
    q, k, v = (torch.randn(1, 128, 12, 64, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    for name in a.attn:
        fn = train_gpt.attention_fn(name, dev)
        fwd = host_us_per_call(fn, q, k, v, backward=False)
        both = host_us_per_call(fn, q, k, v, backward=True)
        print(f"{name:>10}: host {fwd:7.1f} us per forward call, {both:7.1f} us per forward+backward", flush=True)
    args = train_gpt.parse_args(["--seqlen", str(a.seqlen), "--batch-size", str(a.batch_size)])
    data, _ = train_gpt.load_corpus(4_000_000)
    for name in a.attn:
        _, model, step_model, opt = train_gpt.build(args, name, dev, a.seqlen)
        batches = train_gpt.Batches(data, a.batch_size, a.seqlen, 0, dev)
        for _ in range(5):
            train_gpt.train_step(step_model, opt, *batches.next(), args, dev, torch.bfloat16).item()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                train_gpt.train_step(step_model, opt, *batches.next(), args, dev, torch.bfloat16).item()
            torch.cuda.synchronize()
        print(f"\n=== {name}: 3 steps, by CPU time")
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=18, max_name_column_width=60))
        print(f"=== {name}: by GPU time")
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60))
        del model, step_model, opt


if __name__ == "__main__":
    main()

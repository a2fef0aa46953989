#!/usr/bin/env python
"""Train a GPT-2-shaped model from scratch on bytes of the Python standard library's own source.

    python examples/train_gpt.py --tiny                                  # CPU, seconds
    python examples/train_gpt.py --attn pyfa --seqlen 4096 --batch-size 4 # GPU, GPT-2 small shape
    python examples/train_gpt.py --compare standard,sdpa_flash,sdpa_cudnn,flex,pyfa --steps 300
    python examples/train_gpt.py --max-seqlen-search --compare standard,sdpa_flash,pyfa

The data is every ``*.py`` file under the directory of the ``os`` module (sorted by path,
site-packages excluded), one byte one token (vocabulary 256): every machine has it, and the
same Python version gives the same bytes. Batches are random windows drawn from a generator
seeded by ``--seed``, so every ``--attn`` choice sees the same data in the same order and starts
from the same weights; only the attention computation differs:

    standard    the materialized N x N matrix (pyflashattn.reference.standard_attention)
    sdpa        torch.nn.functional.scaled_dot_product_attention, torch's choice of backend
    sdpa_flash  SDPA forced to its FlashAttention-2 backend (GPU)
    sdpa_cudnn  SDPA forced to its cuDNN backend (GPU)
    flex        torch.nn.attention.flex_attention, compiled, causal BlockMask (GPU)
    pyfa        pyflashattn.flash_attn_func

Reported: tokens/s and step time (steps after ``--timing-warmup``), MFU (model FLOPs
``6 * params * tokens`` plus causal attention ``6 * layers * seqlen * width`` per token, i.e.
forward + 2x backward of the two attention matmuls over half the matrix; the FlashAttention
backward's recomputation is not counted; divided by ``--peak-flops``, n/a on CPU), peak memory
(CUDA allocator peak on GPU, process peak RSS on CPU), the loss curve as JSON and, with
matplotlib, as PNG.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pyflashattn
from pyflashattn.nn import MultiheadAttention
from pyflashattn.reference import standard_attention

ATTN_CHOICES = ("standard", "sdpa", "sdpa_flash", "sdpa_cudnn", "flex", "pyfa")
GPU_ONLY = ("sdpa_flash", "sdpa_cudnn", "flex")
TINY = dict(n_layer=2, n_embd=64, n_head=4, seqlen=128, batch_size=8, steps=60, lr=3e-3, warmup=5,
            data_mb=1.0, log_every=10, timing_warmup=2, eval_batches=2)


# ----------------------------------------------------------------------------- data

def load_corpus(max_bytes: int) -> tuple[Tensor, dict]:
    """The standard library's ``*.py`` files, sorted by relative path, joined by newlines, cut at
    ``max_bytes`` (0: all). Returns uint8 ``(n,)`` and a description."""
    root = Path(os.__file__).resolve().parent
    files = sorted((p for p in root.rglob("*.py")
                    if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts)),
                   key=lambda p: p.relative_to(root).as_posix())
    chunks, total = [], 0
    for path in files:
        chunks.append(path.read_bytes())
        total += len(chunks[-1]) + 1
        if max_bytes and total >= max_bytes:
            break
    data = b"\n".join(chunks)
    data = data[:max_bytes] if max_bytes else data
    info = {"root": str(root), "files": len(chunks), "bytes": len(data), "python": platform.python_version()}
    return torch.frombuffer(bytearray(data), dtype=torch.uint8), info


class Batches:
    """Random ``(x, y)`` windows of ``seqlen + 1`` bytes, the same sequence for a given seed."""

    def __init__(self, data: Tensor, batch_size: int, seqlen: int, seed: int, device: torch.device):
        if data.numel() < seqlen + 2:
            raise ValueError(f"corpus has {data.numel()} bytes, fewer than seqlen + 2 = {seqlen + 2}: raise --data-mb")
        self.data, self.batch_size, self.seqlen, self.device = data, batch_size, seqlen, device
        self.gen = torch.Generator().manual_seed(seed)
        self.offsets = torch.arange(seqlen + 1)

    def next(self) -> tuple[Tensor, Tensor]:
        starts = torch.randint(0, self.data.numel() - self.seqlen - 1, (self.batch_size, 1), generator=self.gen)
        chunk = self.data[starts + self.offsets].long().to(self.device, non_blocking=True)
        return chunk[:, :-1], chunk[:, 1:]


# ----------------------------------------------------------------------------- attention choices
# Each takes q (batch, seq, heads, dim), k, v and returns (batch, seq, heads, dim), causal.

def _heads_first(*ts: Tensor) -> list[Tensor]:
    return [t.transpose(1, 2) for t in ts]


def attn_standard(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return standard_attention(*_heads_first(q, k, v), causal=True).transpose(1, 2)


def attn_sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return F.scaled_dot_product_attention(*_heads_first(q, k, v), is_causal=True).transpose(1, 2)


def _sdpa_with(backend_name: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = getattr(SDPBackend, backend_name)

    def attn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        with sdpa_kernel(backend):
            return attn_sdpa(q, k, v)
    return attn


class FlexCausal:
    """flex_attention compiled once, with a causal BlockMask built per (seqlen, device)."""

    def __init__(self):
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        self.create_block_mask = create_block_mask
        self.flex = torch.compile(flex_attention, dynamic=False)
        self.masks: dict = {}

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        key = (q.shape[1], q.device)
        if key not in self.masks:
            self.masks[key] = self.create_block_mask(lambda b, h, i, j: j <= i, None, None, q.shape[1], q.shape[1],
                                                     device=q.device)
        return self.flex(*_heads_first(q, k, v), block_mask=self.masks[key]).transpose(1, 2)


def attn_pyfa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return pyflashattn.flash_attn_func(q, k, v, causal=True)


def attention_fn(name: str, device: torch.device) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    if name not in ATTN_CHOICES:
        raise ValueError(f"--attn must be one of {ATTN_CHOICES}, got {name!r}")
    if name in GPU_ONLY and device.type != "cuda":
        raise SystemExit(f"--attn {name} needs a CUDA GPU; on CPU use standard, sdpa or pyfa")
    if name == "sdpa_flash":
        return _sdpa_with("FLASH_ATTENTION")
    if name == "sdpa_cudnn":
        return _sdpa_with("CUDNN_ATTENTION")
    if name == "flex":
        return FlexCausal()
    return {"standard": attn_standard, "sdpa": attn_sdpa, "pyfa": attn_pyfa}[name]


# ----------------------------------------------------------------------------- model

@dataclass
class GPTConfig:
    n_layer: int = 12
    n_embd: int = 768
    n_head: int = 12
    seqlen: int = 1024
    vocab_size: int = 256


class CausalSelfAttention(MultiheadAttention):
    """pyflashattn.nn.MultiheadAttention (fused QKV, causal) with a swappable kernel: the weights
    and their initialisation are the same whatever the choice."""

    def __init__(self, cfg: GPTConfig, attn: Callable[[Tensor, Tensor, Tensor], Tensor]):
        super().__init__(cfg.n_embd, cfg.n_head, causal=True, bias=True)
        self.attn = attn

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return self.attn(q, k, v)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, attn):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg, attn)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2: learned positions, pre-LayerNorm blocks, GELU MLP, tied input/output embedding."""

    def __init__(self, cfg: GPTConfig, attn):
        super().__init__()
        self.cfg = cfg
        self.wte, self.wpe = nn.Embedding(cfg.vocab_size, cfg.n_embd), nn.Embedding(cfg.seqlen, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, attn) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():  # GPT-2's init: residual projections scaled by depth
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith(("out_proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))

    def num_params(self) -> int:
        """Parameters doing FLOPs: all (the tied embedding counted once as the output layer)
        except the position table, a lookup."""
        return sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()


def flops_per_token(cfg: GPTConfig, n_params: int) -> int:
    """Training FLOPs per token: 6N for the weights, plus causal attention's two matmuls
    (forward ``2 * seqlen * width`` per layer over half the matrix, backward twice that)."""
    return 6 * n_params + 6 * cfg.n_layer * cfg.seqlen * cfg.n_embd


# ----------------------------------------------------------------------------- training

def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def autocast_for(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "CUDA allocator peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"


class Progress:
    """A tqdm bar on a terminal where tqdm is installed; otherwise (logs, CI) a line every
    ``log_every`` steps."""

    def __init__(self, total: int, desc: str, log_every: int, enabled: bool = True):
        self.log_every, self.desc, self.bar = log_every, desc, None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                pass

    def update(self, step: int, loss: float, tok_s: Optional[float]) -> None:
        rate = f"{tok_s:,.0f} tok/s" if tok_s else "-"
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f}  {rate}", refresh=False)
            self.bar.update(1)
        elif self.enabled and (step % self.log_every == 0 or step == 1):
            print(f"  [{self.desc}] step {step:5d}  loss {loss:.4f}  {rate}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(args, attn_name: str, device: torch.device, seqlen: int):
    cfg = GPTConfig(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, seqlen=seqlen)
    torch.manual_seed(args.seed)  # same weights for every attention choice
    model = GPT(cfg, attention_fn(attn_name, device)).to(device)
    optimizer = make_optimizer(model, args.lr, args.weight_decay, device)
    if args.compile or args.compile_mode:
        step_model = torch.compile(model, mode=args.compile_mode or "default")
    else:
        step_model = model
    return cfg, model, step_model, optimizer


def train_step(step_model, optimizer, x, y, args, device, dtype) -> Tensor:
    with autocast_for(device, dtype):
        loss = step_model(x, y)
    loss.backward()
    if args.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(step_model.parameters(), args.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def train(args, attn_name: str, data: Tensor, device: torch.device, dtype: torch.dtype) -> dict:
    """One training run; returns its record (config, losses, timings, memory)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    cfg, model, step_model, optimizer = build(args, attn_name, device, args.seqlen)
    n_params = model.num_params()
    holdout = max(int(data.numel() * 0.02), args.seqlen + 2)
    train_batches = Batches(data[:-holdout], args.batch_size, args.seqlen, args.seed, device)
    tokens_per_step = args.batch_size * args.seqlen
    losses, times = [], []
    progress = Progress(args.steps, attn_name, args.log_every, enabled=not args.no_progress)
    model.train()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        x, y = train_batches.next()
        synchronize(device)
        t0 = time.perf_counter()
        if args.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()   # last step's graph outputs are consumed
        loss = train_step(step_model, optimizer, x, y, args, device, dtype)
        value = loss.item()  # synchronizes
        times.append(time.perf_counter() - t0)
        losses.append(value)
        steady = times[args.timing_warmup:]
        progress.update(step + 1, value, tokens_per_step * len(steady) / sum(steady) if steady else None)
        if not math.isfinite(value):
            progress.close()
            raise FloatingPointError(f"{attn_name}: loss is {value} at step {step}")
    progress.close()
    val_loss = evaluate(model, data[-holdout:], args, device, dtype)
    steady = times[args.timing_warmup:] or times
    step_time = sum(steady) / len(steady)
    flops = flops_per_token(cfg, n_params) * tokens_per_step
    peak, peak_kind = peak_memory_bytes(device)
    record = {
        "attn": attn_name, "config": asdict(cfg), "batch_size": args.batch_size, "steps": args.steps,
        "params": n_params, "dtype": str(dtype).replace("torch.", ""), "device": describe(device),
        "losses": losses, "step_times_s": times, "val_loss": val_loss,
        "step_time_ms": step_time * 1e3, "tokens_per_s": tokens_per_step / step_time,
        "tflops": flops / step_time / 1e12,
        "mfu": (flops / step_time / args.peak_flops) if device.type == "cuda" else None,
        "peak_memory_bytes": peak, "peak_memory_kind": peak_kind,
    }
    del model, step_model, optimizer
    gc.collect()
    return record


@torch.no_grad()
def evaluate(model: GPT, data: Tensor, args, device: torch.device, dtype: torch.dtype) -> Optional[float]:
    """Mean loss on ``--eval-batches`` fixed windows of the held-out tail of the corpus."""
    if args.eval_batches <= 0:
        return None
    model.eval()
    batches = Batches(data, args.batch_size, min(args.seqlen, data.numel() - 2), args.seed + 1, device)
    total = 0.0
    for _ in range(args.eval_batches):
        x, y = batches.next()
        with autocast_for(device, dtype):
            total += model(x, y).item()
    model.train()
    return total / args.eval_batches


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def fmt_bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def summary_line(r: dict) -> str:
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
    val = f"{r['val_loss']:.4f}" if r["val_loss"] is not None else "-"
    return (f"{r['attn']:>10}  loss {r['losses'][0]:.3f} -> {r['losses'][-1]:.4f}  val {val}  "
            f"step {r['step_time_ms']:8.1f} ms  {r['tokens_per_s']:12,.0f} tok/s  {r['tflops']:7.2f} TFLOP/s  "
            f"MFU {mfu:>6}  peak {fmt_bytes(r['peak_memory_bytes'])} ({r['peak_memory_kind']})")


# ----------------------------------------------------------------------------- outputs

def plot_losses(records: list[dict], path: Path) -> Optional[Path]:
    """Loss curves (and, for several runs, their difference to the first) as PNG; None without
    matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no PNG (the losses are in the JSON)")
        return None
    rows = 2 if len(records) > 1 else 1
    fig, axes = plt.subplots(rows, 1, figsize=(8, 4 * rows), squeeze=False)
    colors = {}
    for r in records:
        (line,) = axes[0][0].plot(range(1, len(r["losses"]) + 1), r["losses"], label=r["attn"], linewidth=1)
        colors[r["attn"]] = line.get_color()
    cfg = records[0]["config"]
    axes[0][0].set(xlabel="step", ylabel="train loss (nats/byte)",
                   title=f"GPT L{cfg['n_layer']} d{cfg['n_embd']} h{cfg['n_head']} seqlen {cfg['seqlen']} "
                         f"batch {records[0]['batch_size']}, {records[0]['dtype']}, {records[0]['device']}")
    axes[0][0].legend()
    axes[0][0].grid(alpha=0.3)
    if rows == 2:
        base = records[0]["losses"]
        for r in records[1:]:
            diff = [a - b for a, b in zip(r["losses"], base)]
            axes[1][0].plot(range(1, len(diff) + 1), diff, label=f"{r['attn']} - {records[0]['attn']}",
                            color=colors[r["attn"]], linewidth=1)
        axes[1][0].set(xlabel="step", ylabel="loss difference")
        axes[1][0].legend()
        axes[1][0].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save(records: list[dict], out: Path, tag: str, extra: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{tag}.json"
    json_path.write_text(json.dumps({**extra, "runs": records}, indent=1))
    png = plot_losses(records, out / f"{tag}_loss.png")
    print(f"wrote {json_path}" + (f" and {png}" if png else ""))


# ----------------------------------------------------------------------------- longest seqlen

def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def release_memory(device: torch.device) -> None:
    """Free what a finished (or out-of-memory) run left behind, before the next one."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def max_seqlen_search(args, names: list[str], data: Tensor, device: torch.device, dtype: torch.dtype) -> list[dict]:
    """For each choice: double the sequence length from ``--search-start`` (batch 1, a few full
    training steps each) until out of memory or past ``--search-cap``."""
    results = []
    for name in names:
        best, best_mem, seqlen, failed_at, stop = None, None, args.search_start, None, "cap"
        while seqlen <= args.search_cap:
            if seqlen + 2 > data.numel():
                print(f"  {name:>10} seqlen {seqlen:>8}: corpus too short ({data.numel():,} bytes): raise --data-mb")
                stop = "corpus"
                break
            try:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                _, model, step_model, optimizer = build(args, name, device, seqlen)
                batches = Batches(data, 1, seqlen, args.seed, device)
                t0 = time.perf_counter()
                for _ in range(args.search_steps):
                    x, y = batches.next()
                    loss = train_step(step_model, optimizer, x, y, args, device, dtype).item()
                synchronize(device)
                elapsed = (time.perf_counter() - t0) / args.search_steps
                best, best_mem = seqlen, peak_memory_bytes(device)[0]
                print(f"  {name:>10} seqlen {seqlen:>8}: ok   {elapsed * 1e3:9.1f} ms/step  peak {fmt_bytes(best_mem)}"
                      f"  loss {loss:.3f}", flush=True)
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if not is_oom(e):
                    raise
                failed_at, stop = seqlen, "oom"
                print(f"  {name:>10} seqlen {seqlen:>8}: out of memory", flush=True)
            finally:
                model = step_model = optimizer = None  # noqa: F841 - drop references before freeing
                release_memory(device)
            if failed_at is not None:
                break
            seqlen *= 2
        results.append({"attn": name, "max_seqlen": best, "peak_memory_bytes": best_mem, "oom_at": failed_at,
                        "stopped_by": stop})
    return results


# ----------------------------------------------------------------------------- main

def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help=f"CPU-sized preset (explicit flags still win): {TINY}")
    p.add_argument("--attn", default="pyfa", help=f"one of {', '.join(ATTN_CHOICES)}")
    p.add_argument("--compare", default=None, const="auto", nargs="?",
                   help="comma list of --attn choices run in sequence and plotted together "
                        "(no value: standard,sdpa,pyfa on CPU, all on GPU)")
    p.add_argument("--max-seqlen-search", action="store_true",
                   help="longest trainable seqlen at batch 1 per choice (--attn or --compare list); GPU")
    p.add_argument("--n-layer", type=int, default=12)
    p.add_argument("--n-embd", type=int, default=768)
    p.add_argument("--n-head", type=int, default=12)
    p.add_argument("--seqlen", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="autocast dtype; auto: bf16 on GPU, fp32 on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--compile-mode", choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
                   help="torch.compile the model in this mode (implies --compile); reduce-overhead replays the "
                        "forward and backward as CUDA graphs (GPU), which takes the host time out of the step")
    p.add_argument("--peak-flops", type=float, default=989e12,
                   help="peak FLOP/s for MFU (default: H100/H200 dense bf16)")
    p.add_argument("--data-mb", type=float, default=32.0, help="corpus size in MB (0: all of it)")
    p.add_argument("--eval-batches", type=int, default=8, help="held-out batches for the final val loss")
    p.add_argument("--timing-warmup", type=int, default=5, help="first steps left out of the timing")
    p.add_argument("--log-every", type=int, default=20, help="print interval when tqdm is not installed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-step lines")
    p.add_argument("--search-start", type=int, default=1024)
    p.add_argument("--search-cap", type=int, default=None, help="largest seqlen tried (default 2^20 on GPU)")
    p.add_argument("--search-steps", type=int, default=2)
    p.add_argument("--out", default="out/train_gpt", help="directory for JSON and PNG")
    pre, _ = p.parse_known_args(argv)
    if pre.tiny:
        p.set_defaults(**TINY)
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    dtype_name = args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    if args.compare is None:
        names = [args.attn]
    elif args.compare == "auto":
        names = list(ATTN_CHOICES) if device.type == "cuda" else ["standard", "sdpa", "pyfa"]
    else:
        names = [n.strip() for n in args.compare.split(",") if n.strip()]
    for name in names:
        attention_fn(name, device)  # fail early on a bad or unavailable choice
    data, corpus = load_corpus(int(args.data_mb * 1e6))
    print(f"data: {corpus['bytes']:,} bytes from {corpus['files']} files under {corpus['root']} "
          f"(Python {corpus['python']});  device: {describe(device)}, {dtype_name}")
    out = Path(args.out)
    extra = {"corpus": corpus, "args": vars(args), "torch": torch.__version__}

    if args.max_seqlen_search:
        if args.search_cap is None:
            if device.type != "cuda":
                raise SystemExit("--max-seqlen-search finds out-of-memory on a GPU; on CPU give --search-cap")
            args.search_cap = 2**20
        print(f"longest trainable seqlen, batch 1, {args.search_steps} steps each, "
              f"L{args.n_layer} d{args.n_embd} h{args.n_head}:")
        results = max_seqlen_search(args, names, data, device, dtype)
        for r in results:
            limit = {"cap": f"--search-cap {args.search_cap}", "corpus": "corpus too short"}.get(
                r["stopped_by"], f"out of memory at {r['oom_at']}")
            print(f"{r['attn']:>10}: {r['max_seqlen']}  ({limit})")
        out.mkdir(parents=True, exist_ok=True)
        (out / "max_seqlen.json").write_text(json.dumps({**extra, "results": results}, indent=1))
        print(f"wrote {out / 'max_seqlen.json'}")
        return results

    cfg_line = (f"model: L{args.n_layer} d{args.n_embd} h{args.n_head}, seqlen {args.seqlen}, batch {args.batch_size}, "
                f"{args.steps} steps, MFU peak {'n/a (CPU)' if device.type != 'cuda' else f'{args.peak_flops:.3g}'}")
    print(cfg_line)
    records, out_of_memory = [], []
    for name in names:
        try:
            record = train(args, name, data, device, dtype)
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not is_oom(e):
                raise
            out_of_memory.append(name)  # e.g. standard attention's N x N matrices at long seqlen
            print(f"{name:>10}  out of memory at seqlen {args.seqlen}, batch {args.batch_size}", flush=True)
            release_memory(device)
            continue
        records.append(record)
        print(summary_line(record), flush=True)
    if not records:
        raise SystemExit("every choice ran out of memory")
    extra["out_of_memory"] = out_of_memory
    if len(records) > 1:
        base = records[0]["losses"]
        for r in records[1:]:
            diffs = [abs(a - b) for a, b in zip(r["losses"], base)]
            print(f"{r['attn']:>10} vs {records[0]['attn']}: max |loss diff| {max(diffs):.2e}, "
                  f"mean {sum(diffs) / len(diffs):.2e} over {len(diffs)} steps")
    tag = "compare" if args.compare is not None else f"train_{names[0]}"
    save(records, out, tag, extra)
    return records


if __name__ == "__main__":
    main()

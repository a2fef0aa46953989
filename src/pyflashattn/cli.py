"""The ``pyflashattn`` command. One subcommand for now: ``bench``.

    pyflashattn bench                     # CPU: small sweep; GPU: the papers' sweep
    pyflashattn bench --quick             # a few seconds
    pyflashattn bench --mode memory       # climb seqlen until each provider runs out of memory
    pyflashattn bench --mode sparse       # block-sparse vs dense vs FlexAttention at ~10 % density
    pyflashattn bench --seqlens 1k 4k --head-dims 128 --causal yes --json out.json --plot figs/
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Optional, Sequence

import torch

from .bench.config import DTYPES, MODES, SPARSE_MASKS, SPARSE_PROVIDERS, SweepConfig, defaults
from .bench.flops import PASSES
from .bench.providers import PROVIDERS
from .configs import MAX_HEAD_DIM

CAUSAL = {"both": (False, True), "yes": (True,), "no": (False,)}


def _positive(text: str) -> int:
    """An integer > 0; ``k`` means x1024 (``16k`` = 16384)."""
    scale = 1024 if text.lower().endswith("k") else 1
    try:
        value = int(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (or like 16k), got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _int_list(text: str) -> list[int]:
    return [_positive(part) for part in text.split(",") if part] or [_positive(text)]


def _names(choices: Sequence[str], extra: Sequence[str] = ()):
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        for name in names:
            if name not in choices and name not in extra:
                raise argparse.ArgumentTypeError(
                    f"unknown name {name!r}; choose from {', '.join([*choices, *extra])}")
        return names
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyflashattn", description="pyflashattn command-line tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser(
        "bench", help="speed and memory against every peer, as a table, JSON and plots",
        description="Benchmark pyflashattn against torch SDPA (each backend), FlexAttention and standard "
                    "attention. Defaults: on a GPU, the FlashAttention papers' sweep (16k tokens, hidden 2048, "
                    "seqlen 512-16k, head dim 64 and 128, causal and not, bf16); on CPU a small sweep that "
                    "finishes within a minute. Lists take spaces or commas: --seqlens 1k 2k or 1024,2048.")
    bench.add_argument("--mode", choices=MODES, default="speed",
                       help="speed: time every cell; memory: batch 1, climb seqlen until each provider runs out; "
                            "sparse: pyflashattn dense vs block-sparse vs FlexAttention on the same masks "
                            "(~10%% density), batch 1")
    bench.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when a GPU is visible")
    bench.add_argument("--quick", action="store_true", help="a very short run (fewer lengths and timing calls)")
    bench.add_argument("--seqlens", nargs="+", type=_int_list, metavar="N", help="sequence lengths (seq_q = seq_k)")
    bench.add_argument("--head-dims", nargs="+", type=_int_list, metavar="D", help=f"head dims (at most {MAX_HEAD_DIM})")
    bench.add_argument("--dtype", choices=tuple(DTYPES), help="default: bf16 on a GPU, fp32 on CPU")
    bench.add_argument("--batch", type=_positive, help="default: 16k tokens / seqlen on a GPU (1 in memory mode), 2 on CPU")
    bench.add_argument("--heads", type=_positive, help="query heads; default: hidden 2048 / head dim on a GPU, 4 on CPU")
    bench.add_argument("--kv-heads", type=_positive, help="key/value heads for GQA/MQA (must divide --heads); default: --heads")
    bench.add_argument("--causal", choices=tuple(CAUSAL), help="default: both (speed), no (memory)")
    bench.add_argument("--passes", nargs="+", type=_names(PASSES), metavar="PASS",
                       help=f"any of {', '.join(PASSES)} (default: all; memory mode: fwdbwd)")
    bench.add_argument("--providers", nargs="+", type=_names(tuple(PROVIDERS), ("all",)), metavar="NAME",
                       help=f"any of {', '.join(PROVIDERS)} or all (default: all on a GPU; "
                            f"pyflashattn, sdpa-math, standard on CPU)")
    bench.add_argument("--masks", nargs="+", type=_names(SPARSE_MASKS), metavar="MASK",
                       help=f"sparse mode: any of {', '.join(SPARSE_MASKS)} (default: sliding, local_global, "
                            f"document)")
    bench.add_argument("--block-size", type=_positive, metavar="B",
                       help="sparse mode: BlockMask block (power of two >= 16); default 128 on a GPU, 32 on CPU")
    bench.add_argument("--cuda-graph", action="store_true",
                       help="speed mode on a GPU: capture each timed call once as a CUDA graph and time its "
                            "replays (no host time, as under torch.compile(mode='reduce-overhead')); the bwd pass "
                            "is not timed this way (use fwdbwd)")
    bench.add_argument("--no-check", action="store_true", help="skip the correctness column (float64 reference)")
    bench.add_argument("--json", metavar="PATH", help="write every number and the environment as JSON")
    bench.add_argument("--plot", metavar="DIR", help="write PNG figures (needs matplotlib)")
    bench.set_defaults(command_parser=bench)  # errors found after parsing show bench's usage
    return parser


def _flat(lists: Optional[list[list]]) -> Optional[tuple]:
    return None if lists is None else tuple(dict.fromkeys(x for part in lists for x in part))


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace, cuda_available: bool) -> SweepConfig:
    """The sweep the flags ask for: the device's defaults with each given flag applied.
    Inconsistent flags end in an argparse error (exit 2, a message naming the flag)."""
    parser = getattr(args, "command_parser", parser)
    device = args.device or ("cuda" if cuda_available else "cpu")
    if device == "cuda" and not cuda_available:
        parser.error("--device cuda: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                     "use --device cpu")
    config = defaults(device, args.mode, args.quick)
    changes: dict = {}
    for field, value in (("seqlens", _flat(args.seqlens)), ("head_dims", _flat(args.head_dims)),
                         ("passes", _flat(args.passes)), ("dtype", args.dtype), ("batch", args.batch),
                         ("heads", args.heads), ("kv_heads", args.kv_heads)):
        if value is not None:
            changes[field] = value
    if args.causal:
        changes["causal"] = CAUSAL[args.causal]
    providers = _flat(args.providers)
    if providers:
        changes["providers"] = tuple(PROVIDERS) if "all" in providers else providers
    if args.no_check:
        changes["check"] = False
    if getattr(args, "cuda_graph", False):
        if device != "cuda" or config.mode != "speed":
            parser.error("--cuda-graph: only in speed mode on a GPU (--device cuda)")
        changes["cuda_graph"] = True
    masks, block_size = _flat(args.masks), args.block_size
    if config.mode != "sparse" and (masks or block_size):
        parser.error(f"{'--masks' if masks else '--block-size'}: only with --mode sparse")
    if config.mode == "sparse":
        if providers and "all" in providers:
            changes["providers"] = SPARSE_PROVIDERS
        unknown = [p for p in changes.get("providers", ()) if p not in SPARSE_PROVIDERS]
        if unknown:
            parser.error(f"--providers: sparse mode compares {' and '.join(SPARSE_PROVIDERS)} "
                         f"(pyflashattn runs dense and block-sparse), got {', '.join(unknown)}")
        if masks:
            changes["masks"] = masks
        if block_size is not None:
            if block_size < 16 or block_size & (block_size - 1):
                parser.error(f"--block-size: a power of two >= 16, got {block_size}")
            changes["block_size"] = block_size
    config = dataclasses.replace(config, **changes)
    if max(config.head_dims) > MAX_HEAD_DIM:
        parser.error(f"--head-dims: at most {MAX_HEAD_DIM}, got {max(config.head_dims)}")
    if config.kv_heads is not None:
        for head_dim in config.head_dims:
            heads = config.heads_for(head_dim)
            if heads % config.kv_heads:
                parser.error(f"--kv-heads {config.kv_heads} must divide the number of query heads "
                             f"({heads} at head dim {head_dim}); pass --heads too")
    return config


def parse_bench_args(argv: Sequence[str], cuda_available: Optional[bool] = None) -> SweepConfig:
    """``pyflashattn bench ARGV`` as a config; ``cuda_available`` defaults to this machine's."""
    parser = build_parser()
    args = parser.parse_args(["bench", *argv])
    return config_from_args(parser, args, torch.cuda.is_available() if cuda_available is None else cuda_available)


def _bench(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .bench.plots import write_plots
    from .bench.progress import ProgressBar
    from .bench.report import environment, format_table, to_json
    from .bench.sweep import run_sweep
    from .bench.timing import busy_by_others, cpu_snapshot

    config = config_from_args(parser, args, torch.cuda.is_available())
    env = environment(config.device)
    before = cpu_snapshot()
    if config.mode == "sparse":
        from .bench.sparse import format_sparse_table, run_sparse, sparse_to_json
        result = run_sparse(config, ProgressBar())
        env["cpu_busy_by_others"] = busy_by_others(before, cpu_snapshot())
        if args.plot:
            result.notes.append("plots: not drawn in sparse mode")
        return _finish(args, result, format_sparse_table(result, config, env), sparse_to_json(result, config, env))
    result = run_sweep(config, ProgressBar())
    env["cpu_busy_by_others"] = busy_by_others(before, cpu_snapshot())
    if args.plot:
        where = env.get("gpu") or "cpu"
        written, notes = write_plots(result.cells, args.plot, f"{where}, {config.dtype}")
        result.notes.extend(notes + [f"plot: {path}" for path in written])
    return _finish(args, result, format_table(result, config, env), to_json(result, config, env))


def _finish(args: argparse.Namespace, result, table: str, doc: dict) -> int:
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"\nwrote {args.json}")
    if result.errors:
        print(f"{len(result.errors)} cell(s) failed with an error; see the notes", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench(parser, args)
    parser.error(f"unknown command {args.command!r}")
    return 2

"""PNG figures in the FlashAttention papers' style, with matplotlib when it is installed.

- ``speed_<pass>.png``: TFLOP/s against seqlen, one line per provider, one panel per
  (head dim, causal).
- ``memory_<pass>.png``: peak memory against seqlen on log axes, same panels; OOM cells are
  marked with an x at the top of the panel.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

from .sweep import Cell


def _panels(cells: list[Cell], pass_: str) -> dict[tuple[int, bool], list[Cell]]:
    out: dict[tuple[int, bool], list[Cell]] = {}
    for c in cells:
        if c.pass_ == pass_:
            out.setdefault((c.head_dim, c.causal), []).append(c)
    return out


def _figure(plt, panels: dict, title: str, ylabel: str, value: Callable[[Cell], Optional[float]], log_y: bool):
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, ((head_dim, causal), cells) in zip(axes[0], sorted(panels.items())):
        for provider in dict.fromkeys(c.provider for c in cells):
            points = [(c.seqlen, value(c)) for c in cells if c.provider == provider and c.status == "ok"
                      and value(c) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=provider)
            ooms = [c.seqlen for c in cells if c.provider == provider and c.status == "oom"]
            if ooms:
                ax.plot(ooms, [1.0] * len(ooms), "x", color="red", transform=ax.get_xaxis_transform(),
                        clip_on=False, label=f"{provider} OOM")
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(f"head dim {head_dim}, {'causal' if causal else 'not causal'}")
        ax.set_xlabel("sequence length")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def write_plots(cells: list[Cell], out_dir: str, subtitle: str) -> tuple[list[str], list[str]]:
    """Write the figures to ``out_dir``; returns (paths written, notes on what was skipped)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], ["plots skipped: matplotlib is not installed (pip install matplotlib)"]
    os.makedirs(out_dir, exist_ok=True)
    written, notes = [], []
    for pass_ in dict.fromkeys(c.pass_ for c in cells):
        panels = _panels(cells, pass_)
        figures = [(f"speed_{pass_}.png", f"{pass_} speed · {subtitle}", "TFLOP/s", lambda c: c.tflops, False)]
        if any(c.peak_mem_bytes for c in cells if c.pass_ == pass_):
            figures.append((f"memory_{pass_}.png", f"{pass_} peak memory · {subtitle}", "MiB",
                            lambda c: c.peak_mem_bytes / 2**20 if c.peak_mem_bytes else None, True))
        else:
            notes.append(f"memory_{pass_}.png skipped: no memory measurements")
        for name, title, ylabel, value, log_y in figures:
            fig = _figure(plt, panels, title, ylabel, value, log_y)
            path = os.path.join(out_dir, name)
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
    return written, notes

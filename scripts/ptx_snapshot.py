"""Build every Gluon kernel variant for sm_90 here (no GPU) and write its PTX, stripped of debug
lines and labels, one file per variant: a refactor that leaves every file the same leaves the
kernels the same, with no device time spent (session 12 checked the shared forward step loop
``_fwd_steps`` this way: 34 variants, identical).

    PYTHONPATH=<tree>/src python scripts/ptx_snapshot.py DIR [--kinds fwd fwd_ws dkdv dkdv_ws dq]
    python scripts/ptx_snapshot.py --compare DIR_BEFORE DIR_AFTER
"""
from __future__ import annotations

import argparse
import os
import re
import sys

_DEBUG_LABEL = re.compile(r"^\$L__tmp\d+:$")
FEATURES = [dict(), dict(varlen=True), dict(window=True), dict(softcap=True, alibi=True, varlen=True, window=True)]


def normalized(ptx: str) -> str:
    """The PTX without what moves when only source lines do: debug sections, .loc/.file lines,
    comments and the debug labels between instructions."""
    lines, in_debug = [], False
    for line in ptx.splitlines():
        s = line.strip()
        if s.startswith(".section") and "debug" in s:
            in_debug = True
        if in_debug:
            in_debug = s != "}"
            continue
        if not s or s.startswith((".loc", ".file", "//")) or _DEBUG_LABEL.match(s):
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def variants(kinds):
    """(name, head_dim, causal, kind, flags) for every kernel build the table can ship."""
    for kind in kinds:
        for d in (64, 128):
            for causal in (False, True):
                if kind.startswith("fwd"):
                    extra = [dict(paired=True)] if kind == "fwd_ws" and causal else []
                    flags_list = FEATURES + extra
                else:  # the backward's features (hopper_bwd_softcap, hopper_bwd_alibi, hopper_bwd_varlen)
                    flags_list = [dict(), dict(softcap=True), dict(alibi=True), dict(softcap=True, alibi=True),
                                  dict(varlen=True)]
                    flags_list += [dict(fused_dq=True), dict(fused_dq=True, varlen=True)] if kind == "dkdv_ws" else []
                for flags in flags_list:
                    yield f"{kind}-d{d}-c{int(causal)}-" + "-".join(sorted(flags)), d, causal, kind, flags


def snapshot(out: str, kinds) -> None:
    import torch

    from pyflashattn.configs import _config
    from pyflashattn.kernels import hopper
    os.makedirs(out, exist_ok=True)
    for name, d, causal, kind, flags in variants(kinds):
        config = _config(d, d, torch.bfloat16, False, '{"hopper_dkdv_block_n": 64}')
        res = hopper.compile_sm90(config, d, torch.bfloat16, causal, kind, dump=True, **flags)
        with open(os.path.join(out, name + ".ptx"), "w") as f:
            f.write(normalized(res["ptx"]))
        print(name, {k: res[k] for k in ("reg", "stack", "shared", "hgmma", "hgmma_full_waits")}, flush=True)


def compare(a: str, b: str) -> int:
    names = sorted(set(os.listdir(a)) | set(os.listdir(b)))
    differ = [n for n in names if not (os.path.exists(os.path.join(a, n)) and os.path.exists(os.path.join(b, n))
                                       and open(os.path.join(a, n)).read() == open(os.path.join(b, n)).read())]
    print(f"{len(names) - len(differ)} of {len(names)} the same" + "".join(f"\n  differs: {n}" for n in differ))
    return 1 if differ else 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dirs", nargs="+")
    p.add_argument("--compare", action="store_true")
    p.add_argument("--kinds", nargs="+", default=["fwd", "fwd_ws", "dkdv", "dkdv_ws", "dq"])
    args = p.parse_args()
    if args.compare:
        sys.exit(compare(*args.dirs))
    snapshot(args.dirs[0], args.kinds)


if __name__ == "__main__":
    main()

"""A/B of two jax_roi builds on the CPU benchmark's shapes, in alternated processes.

    python benchmarks/ab.py OLD NEW                  # roi_align avg forward, both layouts
    python benchmarks/ab.py OLD NEW --layout NCHW --only 200x304 --rounds 3
    python benchmarks/ab.py OLD NEW --ops avg max pool --passes fwd fwd+bwd

OLD and NEW are directories that hold an importable `jax_roi` package with its built
extension (a copy of the package directory, a worktree after `pip install -e`, a
site-packages). Each round runs one process per build and layout, OLD then NEW, each timing
each op's forward and/or forward+backward (benchmarks/cpu.py's shapes, settings and
timing: `op_times`; ops: roi_align "avg" and "max", roi_pool "pool") over `--reps` calls. On a shared machine a neighbour's load changes absolute times by 2x
within minutes; alternating the builds exposes both to the same spells, so compare the rows
of one run, not runs of different times. Prints the median of each process and old/new per case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def child(root, layout, only, reps, ops, passes):
    sys.path.insert(0, root)
    sys.path.insert(1, HERE)
    import jax_roi
    from cpu import op_times

    if not os.path.abspath(jax_roi.__file__).startswith(os.path.abspath(root)):
        raise SystemExit(f"imported {jax_roi.__file__}, not the build under {root}")
    times = op_times(reps, layouts=(layout,), only=only, ops=ops, passes=passes)
    return {key.rsplit("/", 1)[0]: ms for key, ms in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--layout", nargs="+", default=["NCHW", "NHWC"])
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--ops", nargs="+", default=["avg"], choices=["avg", "max", "pool"])
    parser.add_argument("--passes", nargs="+", default=["fwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # old = the build's root, new = the layout
        print(json.dumps(child(args.old, args.new, args.only, args.reps, args.ops, args.passes)))
        return
    runs = {}  # (layout, build) -> [{case: ms}, ...]
    for _ in range(args.rounds):
        for layout in args.layout:
            for build in ("old", "new"):
                root = getattr(args, build)
                out = subprocess.run(
                    [sys.executable, __file__, root, layout, "--child", "--only", args.only,
                     "--reps", str(args.reps), "--ops", *args.ops, "--passes", *args.passes],
                    check=True, capture_output=True, text=True)
                runs.setdefault((layout, build), []).append(
                    json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"median ms of {args.reps} calls per process, rounds in order")
    print("| case | layout | old | new | old/new |")
    print("|---|---|---|---|---|")
    for layout in args.layout:
        for case in runs[(layout, "old")][0]:
            old = [r[case] for r in runs[(layout, "old")]]
            new = [r[case] for r in runs[(layout, "new")]]
            ratio = [o / n for o, n in zip(old, new)]
            fmt = lambda xs, f: " / ".join(f % x for x in xs)
            print(f"| {case} | {layout} | {fmt(old, '%.2f')} | {fmt(new, '%.2f')} | "
                  f"{fmt(ratio, '%.2f')} |")


if __name__ == "__main__":
    main()

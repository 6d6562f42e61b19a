"""A/B of two jax_roi builds on the CPU benchmark's forward shapes, in alternated processes.

    python benchmarks/ab.py OLD NEW                  # both layouts, every case, 2 rounds
    python benchmarks/ab.py OLD NEW --layout NCHW --only 200x304 --rounds 3

OLD and NEW are directories that hold an importable `jax_roi` package with its built
extension (a copy of the package directory, a worktree after `pip install -e`, a
site-packages). Each round runs one process per build and layout, OLD then NEW, each timing
the roi_align forward (benchmarks/cpu.py's shapes and settings) over `--reps` calls after a
warm-up. On a shared machine a neighbour's load changes absolute times by 2x within minutes;
alternating the builds exposes both to the same spells, so compare the rows of one run, not
runs of different times. Prints the median of each process and old/new per case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def child(root, layout, only, reps):
    sys.path.insert(0, root)
    sys.path.insert(1, HERE)
    import jax
    import jax.numpy as jnp

    import jax_roi
    from cpu import CASES, RATIO, SCALE, make_inputs

    if not os.path.abspath(jax_roi.__file__).startswith(os.path.abspath(root)):
        raise SystemExit(f"imported {jax_roi.__file__}, not the build under {root}")
    result = {}
    for name, n, c, h, w, k, p in CASES:
        if only and only not in name:
            continue
        feats, rois = make_inputs(n, c, h, w, k)
        if layout == "NHWC":
            feats = np.ascontiguousarray(feats.transpose(0, 2, 3, 1))
        fj, rj = jnp.asarray(feats), jnp.asarray(rois)
        fwd = jax.jit(partial(jax_roi.roi_align, output_size=p, spatial_scale=SCALE,
                              sampling_ratio=RATIO, aligned=True, layout=layout))
        jax.block_until_ready(fwd(fj, rj))
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            jax.block_until_ready(fwd(fj, rj))
            times.append(time.perf_counter() - t0)
        result[name] = 1e3 * float(np.median(times))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--layout", nargs="+", default=["NCHW", "NHWC"])
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # old = the build's root, new = the layout
        print(json.dumps(child(args.old, args.new, args.only, args.reps)))
        return
    runs = {}  # (layout, build) -> [{case: ms}, ...]
    for _ in range(args.rounds):
        for layout in args.layout:
            for build in ("old", "new"):
                root = getattr(args, build)
                out = subprocess.run(
                    [sys.executable, __file__, root, layout, "--child", "--only", args.only,
                     "--reps", str(args.reps)], check=True, capture_output=True, text=True)
                runs.setdefault((layout, build), []).append(
                    json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"roi_align forward, median ms of {args.reps} calls per process, rounds in order")
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

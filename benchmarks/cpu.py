"""CPU benchmark: jax_roi's kernels against the pure-JAX implementation and onnxruntime.

    python benchmarks/cpu.py            # full table (about 5 minutes on 2 cores)
    python benchmarks/cpu.py --quick    # fewer repetitions
    python benchmarks/cpu.py --traffic  # each shape's unavoidable bytes, for memory_floor.c

Shapes are Mask R-CNN's (torchvision defaults): box head N=2, C=256, K=512 rois pooled to
7x7, mask head K=128 to 14x14, sampling_ratio=2, aligned=True, spatial_scale=1/4, on a 64x64
and a 200x304 map, in both layouts. Times are medians of blocked wall-clock runs after a
warm-up, in milliseconds. Columns:
  fwd           jax_roi roi_align forward
  ort           onnxruntime RoiAlign (avg, half_pixel, NCHW only), same threads, timed in
                turns with fwd (blocks of back-to-back runs: see `alternating`)
  fwd/ort       ratio (targets: <= 0.5 NCHW, <= 0.125 NHWC)
  ref fwd       the pure-JAX implementation (jax_roi._reference) under jit
  fwd+bwd       jax_roi forward + backward (value_and_grad)
  ref f+b       pure-JAX forward + backward, timed in turns with fwd+bwd
  speedup       ref f+b / fwd+bwd (target >= 10)
  floor         jax_roi forward + backward with every roi's batch index set to -1: the
                kernels then only write their outputs (zeros), into the buffers XLA gives
                them; timed in turns with fwd+bwd and ref f+b
  ref/floor     ref f+b / floor: the speedup that this call could reach if the ops cost
                nothing beyond writing their outputs. XLA takes a 124 MiB gradient (a
                200x304 map) from a fresh mmap on every call, and the OS zeroes each page
                on its first write, so on the 200x304 maps the floor is most of the
                10x budget or more
  1-core fwd    jax_roi forward in a subprocess pinned to one core
  pool x        1-core fwd / the forward on every core, both from pool_speedups (target >= 1.6)
  tmp/out       XLA temp bytes of the compiled forward / output bytes (target <= 1)
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

CASES = [
    # name, N, C, H, W, K, P
    ("box 64x64", 2, 256, 64, 64, 512, 7),
    ("box 200x304", 2, 256, 200, 304, 512, 7),
    ("mask 64x64", 2, 256, 64, 64, 128, 14),
    ("mask 200x304", 2, 256, 200, 304, 128, 14),
]
SCALE = 0.25
RATIO = 2


def make_inputs(n, c, h, w, k, seed=0, scale=SCALE):
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, c, h, w), dtype=np.float32)
    img_h, img_w = h / scale, w / scale
    # Proposal-like boxes: sizes from 16 px to half the image, anywhere in the image.
    bw = np.exp(rng.uniform(np.log(16), np.log(img_w / 2), k))
    bh = np.exp(rng.uniform(np.log(16), np.log(img_h / 2), k))
    x1 = rng.uniform(0, img_w - bw)
    y1 = rng.uniform(0, img_h - bh)
    rois = np.stack([rng.integers(0, n, k), x1, y1, x1 + bw, y1 + bh], 1).astype(np.float32)
    return feats, rois


def touched_feature_bytes(rois, n, c, h, w, p, itemsize=4):
    """Bytes of the features [N, H, W, C] that some roi's interpolation taps read with a
    nonzero weight (aligned=True, sampling_ratio=RATIO, scale=SCALE): what any roi_align
    forward on these rois must load at least once."""
    touched = np.zeros((n, h, w), bool)
    grid = (np.arange(p)[:, None] + (np.arange(RATIO)[None, :] + 0.5) / RATIO).ravel()

    def taps(lo_edge, hi_edge, size):
        start = lo_edge * SCALE - 0.5
        coord = start + grid * (hi_edge * SCALE - 0.5 - start) / p
        coord = np.maximum(coord[(coord >= -1) & (coord <= size)], 0)
        low = np.floor(coord).astype(int)
        at_end = low >= size - 1
        high = low[~at_end & (coord > low)] + 1  # a zero-weight upper tap is not read
        return np.unique(np.concatenate([np.minimum(low, size - 1), high]))

    for b, x1, y1, x2, y2 in np.asarray(rois, np.float64):
        if 0 <= b < n:
            touched[int(b), taps(y1, y2, h)[:, None], taps(x1, x2, w)[None, :]] = True
    return int(touched.sum()) * c * itemsize


def print_traffic():
    """memory_floor.c's arguments for every shape: the gradient it writes, the features it
    must read, the output it writes (and whose gradient it reads), in MB of float32."""
    for name, n, c, h, w, k, p in CASES:
        _, rois = make_inputs(n, c, h, w, k)
        grad, read = n * c * h * w * 4, touched_feature_bytes(rois, n, c, h, w, p)
        out = k * c * p * p * 4
        print(f"{name}: memory_floor {grad / 1e6:.1f} {read / 1e6:.1f} {out / 1e6:.1f}")


def bench(fn, *args, reps):
    import jax

    return alternating([lambda: jax.block_until_ready(fn(*args))], reps)[0]


def alternating(calls, reps, rounds=5):
    """Median ms of each call over `reps` timed runs: `rounds` rounds, each running every call
    in turn as a block (one untimed warm-up, then reps / rounds timed runs back to back).

    Blocks in turns: a busy spell on the shared machine then slows both sides of a ratio
    alike. Runs back to back within a block: a call that follows an idle spell or another
    op (onnxruntime, the other side) is slowed for reasons that are not its own (on the CI
    VM the jax_roi box-head forward took 3 ms back to back, 5 ms after a 45 ms sleep, 7 to 12
    ms right after an onnxruntime call: the idle second vCPU is handed to a neighbour, and
    caches go cold), which would penalise the shorter op of each pair."""
    per_block = max(1, -(-reps // rounds))
    times = [[] for _ in calls]
    for _ in range(rounds):
        for call, ts in zip(calls, times):
            call()
            for _ in range(per_block):
                t0 = time.perf_counter()
                call()
                ts.append(time.perf_counter() - t0)
    return [1e3 * float(np.median(ts)) for ts in times]


def ort_session(n, c, h, w, k, p, threads):
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    node = helper.make_node(
        "RoiAlign", ["X", "rois", "idx"], ["Y"], mode="avg", output_height=p, output_width=p,
        sampling_ratio=RATIO, spatial_scale=SCALE, coordinate_transformation_mode="half_pixel")
    graph = helper.make_graph(
        [node], "roi_align",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n, c, h, w]),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, [k, 4]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, [k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [k, c, p, p])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def ort_call(sess, feats, rois):
    """A call of the onnxruntime session on the benchmark's inputs (it returns [Y])."""
    inputs = {"X": feats, "rois": np.ascontiguousarray(rois[:, 1:]),
              "idx": rois[:, 0].astype(np.int64)}
    return lambda: sess.run(None, inputs)


def jax_roi_fns(layout, p, op="avg"):
    """(forward, forward+backward) under jit: roi_align in mode `op` ("avg", "max") or, for
    op "pool", roi_pool, at the benchmark's settings."""
    import jax

    import jax_roi

    if op == "pool":
        fwd = jax.jit(partial(jax_roi.roi_pool, output_size=p, spatial_scale=SCALE,
                              layout=layout))
    else:
        fwd = jax.jit(partial(jax_roi.roi_align, output_size=p, spatial_scale=SCALE,
                              sampling_ratio=RATIO, aligned=True, layout=layout, mode=op))

    @jax.jit
    def fwd_bwd(feats, rois, g):
        out, vjp = jax.vjp(lambda f: fwd(f, rois), feats)
        return out, vjp(g)[0]

    return fwd, fwd_bwd


def reference_fns(layout, p):
    import jax

    from jax_roi import _reference

    params = dict(pooled_h=p, pooled_w=p, spatial_scale=SCALE, sampling_ratio=RATIO,
                  aligned=True, channels_last=layout == "NHWC")
    fwd = jax.jit(partial(_reference.roi_align_avg_fwd, **params))

    @jax.jit
    def fwd_bwd(feats, rois, g):
        out = _reference.roi_align_avg_fwd(feats, rois, **params)
        return out, _reference.roi_align_avg_bwd(g, rois, feature_shape=feats.shape, **params)

    return fwd, fwd_bwd


def forward_times(reps, one_core=False, layouts=("NCHW", "NHWC"), only=""):
    """jax_roi roi_align avg forward per case and layout (ms), keyed "case/layout"; cases
    whose name contains `only`. With `one_core`, in a process pinned to one core before jax
    starts (so XLA's pool has one thread): the subprocess of pool_speedups."""
    if one_core:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    times = op_times(reps, layouts=layouts, only=only)
    return {key.replace(" avg fwd/", "/"): ms for key, ms in times.items()}


def op_times(reps, layouts=("NCHW", "NHWC"), only="", ops=("avg",), passes=("fwd",)):
    """ms per case, layout, op ("avg", "max": roi_align modes; "pool": roi_pool) and pass
    ("fwd", "fwd+bwd"), keyed "case op pass/layout": benchmarks/ab.py's rows."""
    import jax.numpy as jnp

    result = {}
    for name, n, c, h, w, k, p in CASES:
        if only not in name:
            continue
        feats, rois = make_inputs(n, c, h, w, k)
        for layout in layouts:
            f = feats if layout == "NCHW" else np.ascontiguousarray(feats.transpose(0, 2, 3, 1))
            f, r = jnp.asarray(f), jnp.asarray(rois)
            for op in ops:
                fwd, fwd_bwd = jax_roi_fns(layout, p, op)
                if "fwd" in passes:
                    result[f"{name} {op} fwd/{layout}"] = bench(fwd, f, r, reps=reps)
                if "fwd+bwd" in passes:
                    g = jnp.ones_like(fwd(f, r))
                    result[f"{name} {op} fwd+bwd/{layout}"] = bench(fwd_bwd, f, r, g, reps=reps)
    return result


def pool_speedups(reps, quick, rounds=3):
    """(1-core forward ms, its ratio to the all-cores forward) per case and layout: rounds of
    a pinned subprocess, each followed by the same forwards in this process, the two sides
    of each ratio measured minutes apart at most (a shared machine's load drifts)."""
    one, every = {}, {}
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, __file__, "--single-core-json"] + (["--quick"] if quick else []),
            check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        for key, ms in json.loads(out).items():
            one.setdefault(key, []).append(ms)
        for key, ms in forward_times(reps).items():
            every.setdefault(key, []).append(ms)
    return {key: (float(np.median(one[key])), float(np.median(one[key]) / np.median(every[key])))
            for key in one}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--traffic", action="store_true",
                        help="print each shape's memory_floor.c arguments and exit")
    parser.add_argument("--single-core-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.traffic:
        print_traffic()
        return
    reps = 5 if args.quick else 30
    if args.single_core_json:
        print(json.dumps(forward_times(reps, one_core=True)))
        return

    pool = pool_speedups(reps, args.quick, rounds=1 if args.quick else 3)

    import jax
    import jax.numpy as jnp

    threads = len(os.sched_getaffinity(0))
    print(f"jax {jax.__version__}, {threads} cores ({os.uname().machine}), float32, "
          f"sampling_ratio={RATIO}, aligned=True, scale={SCALE}; times in ms (median of {reps})")
    header = ("case", "layout", "fwd", "ort", "fwd/ort", "ref fwd", "fwd+bwd", "ref f+b",
              "speedup", "floor", "ref/floor", "1-core fwd", "pool x", "tmp/out")
    rows = []
    for name, n, c, h, w, k, p in CASES:
        feats, rois = make_inputs(n, c, h, w, k)
        no_rois = rois.copy()
        no_rois[:, 0] = -1  # every row invalid: the kernels only write zeros
        sess = ort_session(n, c, h, w, k, p, threads)
        ort = ort_call(sess, feats, rois) if sess else None
        ort_out = ort()[0] if ort else None
        for layout in ("NCHW", "NHWC"):
            f = feats if layout == "NCHW" else np.ascontiguousarray(feats.transpose(0, 2, 3, 1))
            fj, rj, nj = jnp.asarray(f), jnp.asarray(rois), jnp.asarray(no_rois)
            fwd, fwd_bwd = jax_roi_fns(layout, p)
            ref_fwd, ref_fwd_bwd = reference_fns(layout, p)
            out = fwd(fj, rj)
            g = jnp.ones_like(out)
            if ort_out is not None:  # same numbers as onnxruntime, or the comparison is moot
                mine = np.asarray(out if layout == "NCHW" else out.transpose(0, 3, 1, 2))
                np.testing.assert_allclose(mine, ort_out, rtol=1e-4, atol=1e-4)
            compiled = fwd.lower(fj, rj).compile()
            mem = compiled.memory_analysis()
            tmp = getattr(mem, "temp_size_in_bytes", float("nan")) if mem else float("nan")
            run_fwd = lambda: jax.block_until_ready(fwd(fj, rj))
            if ort:
                t_fwd, ort_ms = alternating([run_fwd, ort], reps)
            else:
                t_fwd, ort_ms = alternating([run_fwd], reps)[0], float("nan")
            t_ref = bench(ref_fwd, fj, rj, reps=max(3, reps // 3))
            t_fb, t_ref_fb, t_floor = alternating(
                [lambda: jax.block_until_ready(fwd_bwd(fj, rj, g)),
                 lambda: jax.block_until_ready(ref_fwd_bwd(fj, rj, g)),
                 lambda: jax.block_until_ready(fwd_bwd(fj, nj, g))], reps)
            t_one, pool_x = pool[f"{name}/{layout}"]
            rows.append((name, layout, f"{t_fwd:.2f}", f"{ort_ms:.2f}", f"{t_fwd / ort_ms:.3f}",
                         f"{t_ref:.1f}", f"{t_fb:.2f}", f"{t_ref_fb:.1f}",
                         f"{t_ref_fb / t_fb:.1f}", f"{t_floor:.2f}", f"{t_ref_fb / t_floor:.1f}",
                         f"{t_one:.2f}", f"{pool_x:.2f}",
                         f"{tmp / out.nbytes:.2f}"))
            print("  done:", name, layout, file=sys.stderr)
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(str(v).rjust(wd) for v, wd in zip(r, widths)) + " |"
    print(fmt(header))
    print("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    for r in rows:
        print(fmt(r))


if __name__ == "__main__":
    main()

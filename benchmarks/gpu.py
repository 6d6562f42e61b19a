"""GPU benchmark: jax_roi's CUDA kernels against torchvision.ops and the pure-JAX implementation.

    python benchmarks/gpu.py                 # full table on the default JAX device
    python benchmarks/gpu.py --quick         # fewer repetitions
    python benchmarks/gpu.py --markdown out.md

Shapes (issue 3): Mask R-CNN box head N=2, C=256, 200x336 map, K=1024 rois pooled to 7x7 at
sampling_ratio 2 and 0 (adaptive), aligned=True, spatial_scale 1/4; the mask head 14x14 with
K=256; and roi_align on each map of the 4-level FPN set 200x336, 100x168, 50x84, 25x42 (scales
1/4 to 1/32) with K=1024; roi_pool on the box head; and one large case (N=8, K=8192, box
head) so launch overhead does not hide the kernels (its pure-JAX column is skipped: the
gather formulation needs tens of GB there). float32 and float16, NCHW and NHWC.

Times are per call, in milliseconds: groups of up to 20 calls queued back to back and then
waited for (jax.block_until_ready; torch.cuda.synchronize), median over the groups, warm-up
excluded (see `timed`). Columns:
  fwd, f+b, det bwd   jax_roi forward, forward+backward, deterministic backward alone
  tv fwd, tv f+b      torchvision.ops (NCHW; NHWC runs torchvision on channels_last memory)
  x tv                tv time / jax_roi time (forward; forward+backward)
  ref fwd, x ref      the pure-JAX implementation (jax_roi._reference) under jit, and the ratio
  GB/s, %peak         forward bytes (output written + feature bytes the rois touch + rois) / time,
                      against the device's peak memory bandwidth (--peak-gbs overrides the table)

It runs on any JAX device, so its code paths are exercised on a CPU machine too
(JAX_PLATFORMS=cpu, torch on the CPU when installed); only GPU figures are meaningful.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial

import numpy as np

from cpu import make_inputs  # the same proposal-like boxes as the CPU benchmark

# Peak HBM bandwidth by device kind (GB/s), vendor figures.
PEAK_GBS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0, "L40S": 864.0, "A10": 600.0}

BOX = dict(n=2, c=256, h=200, w=336, k=1024, p=7, scale=0.25)
MASK = dict(n=2, c=256, h=200, w=336, k=256, p=14, scale=0.25)
FPN = [(200, 336, 0.25), (100, 168, 0.125), (50, 84, 0.0625), (25, 42, 0.03125)]
LARGE = dict(BOX, n=8, k=8192)


def touched_pixels(rois, n, h, w, scale):
    """Feature pixels (per channel) inside some roi's aligned footprint, plus one ring."""
    mask = np.zeros((n, h, w), bool)
    for b, x1, y1, x2, y2 in rois:
        xa, xb = int(max(np.floor(x1 * scale - 0.5), 0)), int(min(np.ceil(x2 * scale - 0.5) + 1, w))
        ya, yb = int(max(np.floor(y1 * scale - 0.5), 0)), int(min(np.ceil(y2 * scale - 0.5) + 1, h))
        mask[int(b), ya:yb, xa:xb] = True
    return int(mask.sum())


def timed(fn, reps, sync, max_calls=20):
    """Milliseconds per call: groups of calls queued back to back, then one wait on the last
    result (`sync(result)`), median over `reps` groups, after a warm-up. Queued calls overlap
    the host's dispatch with the GPU's work, so a kernel longer than the dispatch is timed by
    itself, as CUDA events would; a shorter one shows the dispatch cost. Groups last about
    50 ms (at most `max_calls` calls)."""
    t0 = time.perf_counter()
    sync(fn())
    calls = int(min(max_calls, max(2, 0.05 / max(time.perf_counter() - t0, 1e-6))))
    out = None
    for _ in range(calls):
        out = fn()
    sync(out)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = fn()
        sync(out)
        ts.append((time.perf_counter() - t0) / calls)
    return 1e3 * float(np.median(ts))


def jax_fns(op, layout, p, scale, ratio, deterministic=False):
    import jax

    import jax_roi

    if op == "roi_pool":
        fwd = partial(jax_roi.roi_pool, output_size=p, spatial_scale=scale, layout=layout,
                      deterministic=deterministic)
    else:
        fwd = partial(jax_roi.roi_align, output_size=p, spatial_scale=scale,
                      sampling_ratio=ratio, aligned=True, layout=layout,
                      deterministic=deterministic)
    fwd_j = jax.jit(fwd)

    @jax.jit
    def fwd_bwd(feats, rois, g):
        out, vjp = jax.vjp(lambda f: fwd(f, rois), feats)
        return out, vjp(g)[0]

    @jax.jit
    def bwd(feats, rois, g):
        return jax.vjp(lambda f: fwd(f, rois), feats)[1](g)[0]

    return fwd_j, fwd_bwd, bwd


def reference_fwd(op, layout, p, scale, ratio):
    import jax

    from jax_roi import _reference

    cl = layout == "NHWC"
    if op == "roi_pool":
        f = partial(_reference.roi_pool_fwd, pooled_h=p, pooled_w=p, spatial_scale=scale,
                    channels_last=cl)
        return jax.jit(lambda x, r: f(x, r)[0])
    return jax.jit(partial(_reference.roi_align_avg_fwd, pooled_h=p, pooled_w=p,
                           spatial_scale=scale, sampling_ratio=ratio, aligned=True,
                           channels_last=cl))


def torch_fns(op, layout, p, scale, ratio, feats, rois, dtype):
    try:
        import torch
        import torchvision.ops as tvo
    except ImportError:
        return None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tdt = {"float32": torch.float32, "float16": torch.float16}[dtype]
    x = torch.tensor(feats, device=dev, dtype=tdt)
    if layout == "NHWC":
        x = x.contiguous(memory_format=torch.channels_last)
    r = torch.tensor(rois, device=dev, dtype=tdt)
    if op == "roi_pool":
        fwd = lambda t: tvo.roi_pool(t, r, p, scale)
    else:
        fwd = lambda t: tvo.roi_align(t, r, p, scale, ratio, aligned=True)
    xg = x.clone().requires_grad_(True)
    g = torch.ones_like(fwd(x))

    def fwd_bwd():
        xg.grad = None
        fwd(xg).backward(g)

    sync = (lambda _: torch.cuda.synchronize()) if dev == "cuda" else (lambda _: None)
    return (lambda: fwd(x)), fwd_bwd, sync


def cases():
    """(name, op, n, h, w, k, pooled, spatial_scale, sampling_ratio)"""
    b = BOX
    for ratio in (2, 0):
        yield ("box", "roi_align", b["n"], b["h"], b["w"], b["k"], b["p"], b["scale"], ratio)
    m = MASK
    yield ("mask", "roi_align", m["n"], m["h"], m["w"], m["k"], m["p"], m["scale"], 2)
    for h, w, scale in FPN:
        yield (f"fpn {h}x{w}", "roi_align", b["n"], h, w, b["k"], b["p"], scale, 2)
    yield ("box pool", "roi_pool", b["n"], b["h"], b["w"], b["k"], b["p"], b["scale"], 0)
    g = LARGE
    yield ("large", "roi_align", g["n"], g["h"], g["w"], g["k"], g["p"], g["scale"], 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--peak-gbs", type=float, default=None, help="peak memory GB/s")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    parser.add_argument("--max-cases", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--only", default=None,
                        help="comma-separated case names to run (e.g. 'box,large')")
    args = parser.parse_args()
    reps = 3 if args.quick else 10

    import jax
    import jax.numpy as jnp

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    peak = args.peak_gbs or next((v for k, v in PEAK_GBS.items() if k in kind), float("nan"))
    import jax_roi

    head = (f"device: {kind} ({dev.platform}), jax {jax.__version__}, jax_roi CUDA kernels "
            f"{'available' if jax_roi.cuda_available() else 'NOT available'}, peak {peak} GB/s; "
            f"times in ms per call (median of {reps} groups of queued calls)")
    print(head)
    header = ("case", "op", "sr", "dtype", "layout", "fwd", "f+b", "det bwd", "tv fwd", "x tv",
              "tv f+b", "x tv f+b", "ref fwd", "x ref", "GB/s", "%peak")
    rows = []
    jsync = jax.block_until_ready
    for i, (name, op, n, h, w, k, p, scale, ratio) in enumerate(cases()):
        if args.max_cases is not None and i >= args.max_cases:
            break
        if args.only is not None and name not in args.only.split(","):
            continue
        c = BOX["c"]
        feats, rois = make_inputs(n, c, h, w, k, scale=scale)
        touched = touched_pixels(rois, n, h, w, scale)
        for dtype in ("float32", "float16"):
            esize = np.dtype(dtype).itemsize
            for layout in ("NCHW", "NHWC"):
                f = feats if layout == "NCHW" else np.ascontiguousarray(feats.transpose(0, 2, 3, 1))
                fj = jnp.asarray(f, dtype=dtype)
                rj = jnp.asarray(rois, dtype=dtype)
                fwd, fwd_bwd, bwd = jax_fns(op, layout, p, scale, ratio)
                _, _, det_bwd = jax_fns(op, layout, p, scale, ratio, deterministic=True)
                out = fwd(fj, rj)
                g = jnp.ones_like(out)
                t_f = timed(lambda: fwd(fj, rj), reps, jsync)
                t_fb = timed(lambda: fwd_bwd(fj, rj, g), reps, jsync)
                t_det = timed(lambda: det_bwd(fj, rj, g), reps, jsync)
                if name == "large":
                    t_ref = float("nan")
                else:
                    ref = reference_fwd(op, layout, p, scale, ratio)
                    t_ref = timed(lambda: ref(fj, rj), max(3, reps // 5), jsync)
                tv = torch_fns(op, layout, p, scale, ratio, feats, rois, dtype)
                if tv is not None:
                    tv_f, tv_fb, tsync = tv
                    t_tv = timed(tv_f, reps, tsync)
                    t_tvfb = timed(tv_fb, reps, tsync)
                else:
                    t_tv = t_tvfb = float("nan")
                nbytes = out.size * esize + touched * c * esize + rois.size * esize
                gbs = nbytes / (t_f * 1e-3) / 1e9
                rows.append((name, op, ratio, dtype, layout, f"{t_f:.3f}", f"{t_fb:.3f}",
                             f"{t_det:.3f}", f"{t_tv:.3f}", f"{t_tv / t_f:.2f}", f"{t_tvfb:.3f}",
                             f"{t_tvfb / t_fb:.2f}", f"{t_ref:.2f}", f"{t_ref / t_f:.1f}",
                             f"{gbs:.0f}", f"{100 * gbs / peak:.1f}"))
                print("  done:", name, dtype, layout, file=sys.stderr, flush=True)
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(str(v).rjust(wd) for v, wd in zip(r, widths)) + " |"
    lines = [fmt(header), "|" + "|".join("-" * (wd + 2) for wd in widths) + "|"]
    lines += [fmt(r) for r in rows]
    print("\n".join(lines))
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(f"`{' '.join(sys.argv)}`\n\n{head}\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""One call of each GPU kernel on the large case, for Nsight Compute (`ncu`).

    ncu --clock-control none -k regex:"RunOpKernel|roi_" --metrics gpu__time_duration.sum,... \
        python benchmarks/gpu_profile.py [--case box|large]

Runs jax_roi's forward, atomic backward and deterministic backward (float32, both layouts) and
torchvision's roi_align forward and backward on the same inputs, after a warm-up that ncu
skips with --launch-skip (compilation and autotuning launch XLA kernels of their own).
"""

from __future__ import annotations

import argparse
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import jax_roi
from cpu import make_inputs
from gpu import BOX, LARGE


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("box", "large"), default="large")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    cfg = LARGE if args.case == "large" else BOX
    feats, rois = make_inputs(cfg["n"], cfg["c"], cfg["h"], cfg["w"], cfg["k"], scale=cfg["scale"])
    for layout in ("NCHW", "NHWC"):
        f = feats if layout == "NCHW" else np.ascontiguousarray(feats.transpose(0, 2, 3, 1))
        x, r = jnp.asarray(f, args.dtype), jnp.asarray(rois, args.dtype)
        for det in (False, True):
            op = partial(jax_roi.roi_align, output_size=cfg["p"], spatial_scale=cfg["scale"],
                         sampling_ratio=2, aligned=True, layout=layout, deterministic=det)
            fb = jax.jit(lambda a, b, g: jax.vjp(lambda v: op(v, b), a)[1](g)[0])
            out = jax.block_until_ready(jax.jit(op)(x, r))
            jax.block_until_ready(fb(x, r, jnp.ones_like(out)))
    try:
        import torch
        import torchvision.ops as tvo
    except ImportError:
        return
    for layout in ("NCHW", "NHWC"):
        x = torch.tensor(feats, device="cuda", dtype=getattr(torch, args.dtype))
        if layout == "NHWC":
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        r = torch.tensor(rois, device="cuda", dtype=x.dtype)
        out = tvo.roi_align(x, r, cfg["p"], cfg["scale"], 2, aligned=True)
        out.backward(torch.ones_like(out))
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()

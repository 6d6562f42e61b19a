"""Every CUDA kernel on the edge rows, in one process, for compute-sanitizer (.ci/gpu).

Runs forward and backward (atomic and deterministic) of roi_align avg/max and roi_pool, both
layouts, four dtypes, on boxes with NaN/inf coordinates, bad batch indices, boxes outside the
map, huge boxes (adaptive sampling too) and K = 0, and checks that invalid rows are zero. The
sanitizer looks for out-of-bounds accesses and races while this runs; pytest under the
sanitizer would spend its time in test collection and XLA's own kernels.
"""

from __future__ import annotations

import itertools
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jax_roi

jax.config.update("jax_enable_x64", True)

NAN, INF = float("nan"), float("inf")
N, C, H, W = 2, 5, 11, 13
ROWS = [
    [0, 1, 1, 6, 7], [1, 0.5, 2, 12, 10],                          # ordinary
    [0.5, 1, 1, 4, 4],                                             # index truncated to 0
    [-1, 1, 1, 4, 4], [N, 1, 1, 4, 4],                             # bad batch index
    [NAN, 1, 1, 4, 4], [0, NAN, 1, 4, 4], [1, 1, INF, 4, 4], [0, -INF, 1, 4, INF],
    [1, -30, -30, -20, -20], [0, 40, 40, 60, 60],                  # wholly outside
    [0, -3, -2, 3, 2.5], [1, 5, 4, 40, 30],                        # partly outside
    [0, 2, 3, 2, 3], [1, 6, 6, 2, 2],                              # empty, reversed
    [0, 0, 0, 1e6, 1e6], [1, -1e30, -1e30, 1e30, 1e30], [0, 2, 2, 3e38, 3e38],  # huge
]
VALID = np.array([True] * 3 + [False] * 6 + [True] * 9)


def run(op, mode, layout, dtype, det, sr, rois):
    if op == "roi_pool":
        f = lambda x, r: jax_roi.roi_pool(x, r, (3, 4), 0.5, layout=layout, deterministic=det)
    else:
        f = lambda x, r: jax_roi.roi_align(x, r, (3, 4), 0.5, sr, True, mode=mode,
                                           layout=layout, deterministic=det)

    @jax.jit
    def fb(x, r, g):
        out, back = jax.vjp(lambda v: f(v, r), x)
        return out, back(g)[0]

    shape = (N, C, H, W) if layout == "NCHW" else (N, H, W, C)
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), dtype)
    r = jnp.asarray(rois, jnp.float64 if dtype == jnp.float64 else jnp.float32)
    out_shape = jax.eval_shape(f, x, r).shape
    out, grad = jax.block_until_ready(fb(x, r, jnp.ones(out_shape, dtype)))
    out = np.asarray(out, np.float64)
    assert out.shape == out_shape and grad.shape == x.shape
    if len(rois):
        assert not np.any(out[~VALID[:len(rois)]]), "an invalid row is not zero"
    assert np.all(np.isfinite(np.asarray(grad, np.float64)))


def main():
    count = 0
    for (op, mode), layout, dtype, det in itertools.product(
            [("roi_align", "avg"), ("roi_align", "max"), ("roi_pool", None)], ("NCHW", "NHWC"),
            (jnp.float32, jnp.float64, jnp.float16, jnp.bfloat16), (False, True)):
        for sr in ((2, -1) if op == "roi_align" else (0,)):
            run(op, mode, layout, dtype, det, sr, ROWS)
            run(op, mode, layout, dtype, det, sr, np.zeros((0, 5)))
            count += 2
    print(f"{count} edge-case runs OK", file=sys.stderr)


if __name__ == "__main__":
    main()

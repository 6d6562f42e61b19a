"""The CPU roi_align avg kernels on maps big enough to split into tasks.

The kernel cuts the gradient into bands of rows and blocks of channels, each about 512 KiB
of accumulators (see PlanBands in xla_kernels/cpu/roi_align_avg_bwd_cpu.cc); the parity suite's small
maps fit in one band. These shapes force several bands, several channel blocks with a ragged
last one (not a multiple of 8), a width that is not a multiple of 8 (the NCHW transpose's
tails), and rois that cross band edges, hang off the map, or are reversed, against the
float64 oracle. The forward is checked on the same inputs: its NHWC tasks take blocks of
up to 256 channels, which the last shape makes ragged.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import (DTYPE_IDS, DTYPES, LAYOUTS, lib_vjp, oracle_fwd, oracle_grad,
                      random_features, random_rois, rng_for, to_dtype, tol)

SHAPES = [  # N, C, H, W: what the plan makes of it (float32 accumulators)
    pytest.param((2, 130, 9, 1100), id="blocks-64-64-2_band-1-row"),  # C*W*4 > 512 KiB
    pytest.param((2, 16, 400, 50), id="all-channels_bands-of-163-rows"),
    pytest.param((2, 300, 12, 9), id="forward-blocks-256-44"),
    # Wide rows: every channel in bands of 2 rows, so most rois span several bands.
    pytest.param((2, 40, 40, 1100), id="all-channels_bands-of-2-rows"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [DTYPES[0], DTYPES[2]], ids=[DTYPE_IDS[0], DTYPE_IDS[2]])
@pytest.mark.parametrize("shape", SHAPES)
def test_tiled_backward_matches_oracle(shape, dtype, layout):
    n, c, h, w = shape
    rng = rng_for("tiled-backward", shape, layout, str(dtype))
    x = random_features(rng, shape, dtype, layout)
    rois = random_rois(rng, 12, n, h, w, 0.5, dtype=np.float32)
    rois[5, [1, 3]] = rois[5, [3, 1]]  # reversed corners
    rois[6, [2, 4]] = rois[6, [4, 2]]
    kw = dict(op="roi_align", output_size=(3, 4), spatial_scale=0.5, sampling_ratio=2,
              aligned=True, mode="avg", layout=layout)
    out_shape = (12, c, 3, 4) if layout == "NCHW" else (12, 3, 4, c)
    g = to_dtype(rng.standard_normal(out_shape), dtype)
    op = kw.pop("op")
    out, gx = lib_vjp(op, x, rois, g, **kw)
    expected_out = oracle_fwd(op, x, rois, **kw)
    expected = oracle_grad(op, x, rois, g, **kw)
    # The geometry is computed in float32 (the oracle: float64): a sample position off by
    # |coordinate| * eps moves its bilinear weights by as much, which on a map 1100 pixels
    # wide is ~1e-4, far above the small-map parity tolerance.
    scale = max(1.0, float(np.max(np.abs(expected))))
    geometry = 4 * max(h, w) * float(np.finfo(np.float32).eps) * scale
    np.testing.assert_allclose(np.asarray(gx, np.float64), expected, rtol=0,
                               atol=tol(dtype) * scale + geometry, err_msg=f"{shape} {layout}")
    scale = max(1.0, float(np.max(np.abs(expected_out))))
    geometry = 4 * max(h, w) * float(np.finfo(np.float32).eps) * scale
    np.testing.assert_allclose(np.asarray(out, np.float64), expected_out, rtol=0,
                               atol=tol(dtype) * scale + geometry, err_msg=f"{shape} {layout}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode", [("roi_align", "avg"), ("roi_align", "max"),
                                     ("roi_pool", None)])
def test_invalid_rows_across_channel_blocks(op, mode, layout):
    """Rows that add nothing (batch index -1 or N, NaN corners) among valid ones, with more
    channels than one task's block (avg NHWC: 256, max NHWC: 64): their output (and the max
    modes' argmax, through the gradient) is filled block by block in memory order, and must
    be zero in every block, the ragged last one included, while the valid rows around them
    keep their values."""
    n, c, h, w = 2, 300, 12, 9
    rng = rng_for("invalid-rows-blocks", op, mode, layout)
    x = random_features(rng, (n, c, h, w), np.float32, layout)
    rois = random_rois(rng, 10, n, h, w, 0.5, dtype=np.float32)
    rois[1, 0], rois[4, 0], rois[8, 1] = -1, n, np.nan
    kw = dict(output_size=(3, 4), spatial_scale=0.5, layout=layout)
    if op == "roi_align":
        kw.update(sampling_ratio=2, aligned=True, mode=mode)
    out_shape = (10, c, 3, 4) if layout == "NCHW" else (10, 3, 4, c)
    g = rng.standard_normal(out_shape).astype(np.float32)
    out, gx = lib_vjp(op, x, rois, g, **kw)
    out = np.asarray(out, np.float64)
    for k in (1, 4, 8):
        assert not np.any(out[k]), f"row {k} is not zero"
    np.testing.assert_allclose(out, oracle_fwd(op, x, rois, **kw), rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(gx, np.float64), oracle_grad(op, x, rois, g, **kw),
                               rtol=0, atol=1e-4)

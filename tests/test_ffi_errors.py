"""The FFI handlers check their buffers themselves (a hand-written custom call, or an exported
module fed other shapes, never passes through the Python validation)."""

import jax
import numpy as np
import pytest

import jax_roi  # noqa: F401  (registers the targets)

ALIGN = dict(pooled_h=np.int64(2), pooled_w=np.int64(2), spatial_scale=np.float64(1.0),
             sampling_ratio=np.int64(2), aligned=False, channels_last=False,
             deterministic=False)
POOL = dict(pooled_h=np.int64(2), pooled_w=np.int64(2), spatial_scale=np.float64(1.0),
            channels_last=False, deterministic=False)
F = np.zeros((1, 2, 4, 4), np.float32)
R = np.zeros((3, 5), np.float32)

# The CPU handlers' checks (the CUDA handlers run the same code: ffi_checks.h).
pytestmark = pytest.mark.usefixtures("on_cpu")


def _call(target, out, *args, **attrs):
    return jax.block_until_ready(jax.ffi.ffi_call(target, out)(*args, **attrs))


def test_rois_shape_checked():
    with pytest.raises(Exception, match=r"roi_align_avg_fwd: rois must have shape \[K, 5\], got \[3, 4\]"):
        _call("jax_roi_roi_align_avg_fwd", jax.ShapeDtypeStruct((3, 2, 2, 2), np.float32),
              F, np.zeros((3, 4), np.float32), **ALIGN)


def test_rois_dtype_checked():
    with pytest.raises(Exception, match="rois must be float64 for float64 features"):
        _call("jax_roi_roi_align_avg_fwd", jax.ShapeDtypeStruct((3, 2, 2, 2), np.float32),
              F, R.astype(np.float16), **ALIGN)


def test_output_shape_checked():
    outs = (jax.ShapeDtypeStruct((3, 2, 2, 3), np.float32),
            jax.ShapeDtypeStruct((3, 2, 2, 2), np.int32))
    with pytest.raises(Exception, match=r"roi_pool_fwd: output must have shape \[K, C, PH, PW\]"):
        _call("jax_roi_roi_pool_fwd", outs, F, R, **POOL)


def test_scale_checked():
    outs = (jax.ShapeDtypeStruct((3, 2, 2, 2), np.float32),
            jax.ShapeDtypeStruct((3, 2, 2, 2), np.int32))
    with pytest.raises(Exception, match="spatial_scale must be a positive finite number"):
        _call("jax_roi_roi_pool_fwd", outs, F, R, **{**POOL, "spatial_scale": np.float64(-1)})


def test_backward_argmax_shape_checked():
    with pytest.raises(Exception, match=r"roi_pool_bwd: argmax must have shape"):
        _call("jax_roi_roi_pool_bwd", jax.ShapeDtypeStruct(F.shape, np.float32),
              np.zeros((3, 2, 2, 2), np.float32), R, np.zeros((3, 2, 2, 1), np.int32), **POOL)

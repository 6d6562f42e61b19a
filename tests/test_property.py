"""Hypothesis property test over arbitrary box values (marked `edge`).

Rows are drawn from any float (NaN, +-inf, huge, negative, subnormal) mixed with ordinary
coordinates, and any float batch index. For every op / mode / layout / geometry drawn:

* no crash, output and gradient finite (the features are finite);
* invalid rows (batch index outside (-1, N) after truncation, or any NaN/inf) are exactly
  zero and receive exactly zero gradient;
* valid rows of reasonable size (all |coordinate| < 100) match the float64 oracle, forward
  and gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (as_f64, assert_close, lib_op, lib_vjp, op_kwargs, oracle_fwd, oracle_grad,
                      random_features, rng_for, valid_rows)

pytestmark = pytest.mark.edge

N, C, H, W = 2, 2, 5, 7
K = 4
REASONABLE = 100.0

_special = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 7.0, 5.0, 6.999, 1e6, -1e6,
                            1e30, -1e30, 3.4e38, -3.4e38, float("inf"), float("-inf"),
                            float("nan"), 5e-324, 1e-30])
coordinate = st.one_of(
    st.floats(-30.0, 30.0),
    st.floats(-120.0, 120.0),
    st.floats(allow_nan=True, allow_infinity=True),
    _special,
)
batch_index = st.one_of(
    st.sampled_from([0.0, 1.0, -0.5, 1.999, -1.0, 2.0, float("nan"), float("inf"), -0.999]),
    st.floats(-3.0, 4.0),
    st.floats(allow_nan=True, allow_infinity=True),
)
row = st.tuples(batch_index, coordinate, coordinate, coordinate, coordinate)
_plain = st.floats(-20.0, 20.0)
plain_row = st.tuples(st.floats(-0.99, 1.99), _plain, _plain, _plain, _plain)

OPS = [("roi_align", "avg"), ("roi_align", "max"), ("roi_pool", None)]


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.one_of(row, plain_row), min_size=K, max_size=K),
    op_mode=st.sampled_from(OPS),
    layout=st.sampled_from(["NCHW", "NHWC"]),
    aligned=st.booleans(),
    sampling_ratio=st.sampled_from([-1, 0, 1, 2]),
    output_size=st.sampled_from([(2, 3), (1, 1), (3, 2)]),
    spatial_scale=st.sampled_from([1.0, 0.5]),
    dtype=st.sampled_from([jnp.float64, jnp.float32]),
)
def test_arbitrary_boxes(rows, op_mode, layout, aligned, sampling_ratio, output_size,
                         spatial_scale, dtype):
    op, mode = op_mode
    rng = rng_for("prop", layout)
    x = random_features(rng, (N, C, H, W), dtype, layout)
    cdt = np.float64 if dtype == jnp.float64 else np.float32
    with np.errstate(over="ignore"):
        rois = np.asarray(rows, dtype=np.float64).astype(cdt)
    kw = op_kwargs(op, mode, output_size=output_size, spatial_scale=spatial_scale,
                   sampling_ratio=sampling_ratio, aligned=aligned, layout=layout)

    out_shape = jax.eval_shape(lambda v: lib_op(op, v, rois, **kw), x).shape
    g = rng.standard_normal(out_shape).astype(np.dtype(x.dtype))
    out, grad = lib_vjp(op, x, rois, g, **kw)
    out, grad = as_f64(out), as_f64(grad)
    assert np.all(np.isfinite(out))
    assert np.all(np.isfinite(grad))

    valid = valid_rows(rois, N)
    assert not np.any(out[~valid])
    mask = valid.reshape((-1,) + (1,) * (g.ndim - 1))
    _, grad_invalid = lib_vjp(op, x, rois, np.where(mask, 0, g).astype(g.dtype), **kw)
    assert not np.any(as_f64(grad_invalid))

    with np.errstate(invalid="ignore"):
        small = valid & np.all(np.abs(as_f64(rois)[:, 1:]) < REASONABLE, axis=1)
    if not np.any(small):
        return
    sel = np.flatnonzero(small)
    assert_close(out[sel], oracle_fwd(op, x, rois[sel], **kw), dtype, what="forward")
    g_small = np.where(small.reshape(mask.shape), g, 0).astype(g.dtype)
    _, grad_small = lib_vjp(op, x, rois, g_small, **kw)
    want = oracle_grad(op, x, rois[sel], g[sel], **kw)
    assert_close(grad_small, want, dtype, what="gradient")

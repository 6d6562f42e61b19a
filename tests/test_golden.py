"""Every hand-computed GOLDEN case (tests/golden_cases.py) through the public API.

NCHW and NHWC (the case transposed), float32 and float64: forward against `expected`;
gradient against `expected_grad` where the case gives one, otherwise against the oracle's
VJP of a fixed cotangent; for roi_pool the (internal) argmax is checked through the
gradient: the VJP of each output bin's one-hot cotangent is a single 1 at the expected
argmax of the roi's image, or all zeros where the expected argmax is -1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden_cases
import jax_roi
from conftest import (as_f64, assert_close, compute_dtype, lib_vjp, nchw_to, oracle_grad,
                      to_dtype, valid_rows)

GOLDEN = golden_cases.GOLDEN
IDS = [c["name"] for c in GOLDEN]
DT = [jnp.float32, jnp.float64]
DT_IDS = ["f32", "f64"]


def _kw(case, layout):
    kw = dict(case["kwargs"])
    kw["layout"] = layout
    return kw


def _out_to_layout(a, layout):
    return np.transpose(a, (0, 2, 3, 1)) if layout == "NHWC" else a


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", DT, ids=DT_IDS)
@pytest.mark.parametrize("case", GOLDEN, ids=IDS)
def test_golden_forward_and_grad(case, dtype, layout):
    op = case["op"]
    x = to_dtype(nchw_to(layout, case["features"]), dtype)
    rois = case["rois"].astype(compute_dtype(dtype))
    kw = _kw(case, layout)
    expected = _out_to_layout(case["expected"], layout)

    if "grad_out" in case:
        g = _out_to_layout(case["grad_out"], layout)
    else:
        g = np.arange(1, expected.size + 1, dtype=np.float64).reshape(expected.shape) / 7.0
    g = to_dtype(g, dtype)
    out, grad = lib_vjp(op, x, rois, g, **kw)

    assert out.dtype == jnp.dtype(dtype)
    assert out.shape == expected.shape
    assert_close(out, expected, dtype, what=f"{case['name']} forward")
    invalid = ~valid_rows(rois, x.shape[0])
    assert not np.any(as_f64(out)[invalid]), "invalid rows must be exactly zero"
    assert grad.shape == x.shape and grad.dtype == jnp.dtype(dtype)
    if "expected_grad" in case:
        want = nchw_to(layout, case["expected_grad"])
    else:
        want = oracle_grad(op, x, rois, g, **kw)
    assert_close(grad, want, dtype, what=f"{case['name']} gradient")


def _call_eager(case, dtype, layout):
    op = case["op"]
    x = to_dtype(nchw_to(layout, case["features"]), dtype)
    rois = case["rois"].astype(compute_dtype(dtype))
    kw = _kw(case, layout)
    if op == "roi_pool":
        return jax_roi.roi_pool(x, rois, kw["output_size"], kw["spatial_scale"], layout=layout)
    return jax_roi.roi_align(x, rois, kw["output_size"], kw["spatial_scale"],
                             kw["sampling_ratio"], kw["aligned"], mode=kw["mode"],
                             layout=layout)


@pytest.mark.parametrize("case", GOLDEN, ids=IDS)
def test_golden_eager_float64(case):
    """The eager (un-jitted) call path gives the hand-computed numbers too."""
    out = _call_eager(case, jnp.float64, "NCHW")
    np.testing.assert_allclose(as_f64(out), case["expected"], rtol=0, atol=1e-12)


POOL_CASES = [c for c in GOLDEN if "expected_argmax" in c]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", DT, ids=DT_IDS)
@pytest.mark.parametrize("case", POOL_CASES, ids=[c["name"] for c in POOL_CASES])
def test_golden_pool_argmax_via_gradient(case, dtype, layout):
    x = to_dtype(nchw_to(layout, case["features"]), dtype)
    rois = case["rois"].astype(compute_dtype(dtype))
    ps, scale = case["kwargs"]["output_size"], case["kwargs"]["spatial_scale"]
    f = lambda v: jax_roi.roi_pool(v, rois, ps, scale, layout=layout)
    out, vjp = jax.vjp(f, jnp.asarray(x))
    m = out.size
    argmax = case["expected_argmax"]  # NCHW [K, C, PH, PW]
    n, c, h, w = case["features"].shape
    if m == 0:
        assert out.shape == _out_to_layout(argmax, layout).shape
        (gx,) = vjp(jnp.zeros(out.shape, out.dtype))
        assert gx.shape == x.shape and not np.any(as_f64(gx))
        return
    basis = jnp.eye(m, dtype=out.dtype).reshape((m,) + out.shape)
    (onehot,) = jax.jit(jax.vmap(vjp))(basis)
    onehot = as_f64(onehot).reshape(out.shape + x.shape)
    if layout == "NHWC":  # -> [K, C, PH, PW, N, C, H, W]
        onehot = np.transpose(onehot, (0, 3, 1, 2, 4, 7, 5, 6))
    k, _, ph, pw = argmax.shape
    want = np.zeros_like(onehot)
    for ki in range(k):
        for ci in range(c):
            for i in range(ph):
                for j in range(pw):
                    a = argmax[ki, ci, i, j]
                    if a >= 0:
                        b = int(np.trunc(case["rois"][ki, 0]))
                        want[ki, ci, i, j, b, ci, a // w, a % w] = 1.0
    np.testing.assert_array_equal(onehot, want)

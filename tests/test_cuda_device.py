"""The CUDA kernels on a GPU, against the CPU kernels (runs only where a CUDA device exists).

Skipped with the reason "no CUDA device" elsewhere; ``JAX_ROI_REQUIRE_CUDA=1`` makes a
missing GPU (or a missing CUDA extension) a failure. Checks: forward and both backward modes
agree with the CPU (max-type forwards bit for bit, argmax included, as both builds round
alike), invalid rows, K = 0, and the deterministic backward giving identical bits over 20
runs.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_roi
from conftest import (DTYPE_IDS, DTYPES, LAYOUTS, NAN, as_f64, assert_close, compute_dtype,
                      random_features, random_rois, rng_for, valid_rows)
from jax_roi import _native


def _gpu():
    try:
        return jax.devices("cuda")[0]
    except RuntimeError:
        return None


GPU = _gpu()
CPU = jax.devices("cpu")[0]


@pytest.fixture(autouse=True)
def _cuda_device():
    required = os.environ.get("JAX_ROI_REQUIRE_CUDA") == "1"
    if GPU is None:
        if required:
            pytest.fail("no CUDA device and JAX_ROI_REQUIRE_CUDA=1")
        pytest.skip("no CUDA device")
    if not _native.cuda_available():
        pytest.fail("a CUDA device but no CUDA kernels (jax_roi._jax_roi_cuda not built)")


OPS = [pytest.param("roi_align", "avg", id="align_avg"),
       pytest.param("roi_align", "max", id="align_max"),
       pytest.param("roi_pool", None, id="pool")]
N, C, H, W = 2, 6, 13, 17
EDGE = [[-1, 1, 1, 4, 4], [N, 1, 1, 4, 4], [0, NAN, 1, 4, 4], [1, -30, -30, -20, -20],
        [0, -3, -2, 3, 2.5], [1, 5, 4, 40, 30], [0, 2, 3, 2, 3]]


def _case(op, mode, dtype, layout, k=40):
    rng = rng_for("gpu", op, mode, layout, str(jnp.dtype(dtype)))
    x = random_features(rng, (N, C, H, W), dtype, layout)
    rois = np.concatenate([random_rois(rng, k, N, H, W, 0.5), np.asarray(EDGE, np.float64)])
    return x, rois.astype(compute_dtype(dtype)), rng


def _fns(op, mode, layout, deterministic):
    """Jitted forward and VJP of the public op (7x7, scale 1/2, aligned, 2x2 samples)."""
    if op == "roi_pool":
        f = lambda x, r: jax_roi.roi_pool(x, r, (7, 7), 0.5, layout=layout,
                                          deterministic=deterministic)
    else:
        f = lambda x, r: jax_roi.roi_align(x, r, (7, 7), 0.5, 2, True, mode=mode,
                                           layout=layout, deterministic=deterministic)

    def vjp(x, r, g):
        out, back = jax.vjp(lambda v: f(v, r), x)
        return out, back(g)[0]

    return jax.jit(f), jax.jit(vjp)


def _on(device, *arrays):
    return [jax.device_put(a, device) for a in arrays]


def _bits(x):
    x = np.asarray(x)
    return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op,mode", OPS)
def test_gpu_matches_cpu(op, mode, dtype, layout):
    x, rois, rng = _case(op, mode, dtype, layout)
    fwd, vjp = _fns(op, mode, layout, deterministic=False)
    cpu_out = fwd(*_on(CPU, x, rois))
    gpu_out = fwd(*_on(GPU, x, rois))
    if op == "roi_pool" or mode == "max":
        np.testing.assert_array_equal(_bits(gpu_out), _bits(cpu_out))
    else:
        assert_close(gpu_out, as_f64(cpu_out), dtype, what="forward")
    assert not np.any(as_f64(gpu_out)[~valid_rows(rois, N)])

    g = rng.standard_normal(cpu_out.shape).astype(np.dtype(jnp.dtype(dtype)))
    _, cpu_grad = vjp(*_on(CPU, x, rois, g))
    for det in (False, True):
        _, det_vjp = _fns(op, mode, layout, deterministic=det)
        _, gpu_grad = det_vjp(*_on(GPU, x, rois, g))
        assert_close(gpu_grad, as_f64(cpu_grad), dtype, what=f"backward deterministic={det}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("op,mode", OPS)
def test_deterministic_backward_is_bitwise_reproducible(op, mode, dtype, layout):
    x, rois, rng = _case(op, mode, dtype, layout, k=200)  # many overlapping rois
    fwd, vjp = _fns(op, mode, layout, deterministic=True)
    shape = jax.eval_shape(fwd, x, rois).shape
    g = rng.standard_normal(shape).astype(np.dtype(jnp.dtype(dtype)))
    args = _on(GPU, x, rois, g)
    first = _bits(vjp(*args)[1])
    for _ in range(19):
        np.testing.assert_array_equal(_bits(vjp(*args)[1]), first)


@pytest.mark.parametrize("op,mode", OPS)
def test_k0_on_gpu(op, mode):
    x, _, _ = _case(op, mode, jnp.float32, "NCHW")
    rois = np.zeros((0, 5), np.float32)
    for det in (False, True):
        _, vjp = _fns(op, mode, "NCHW", det)
        out, grad = vjp(*_on(GPU, x, rois, np.zeros((0, C, 7, 7), np.float32)))
        assert out.shape == (0, C, 7, 7) and grad.shape == x.shape
        assert not np.any(np.asarray(grad))

"""Shared test setup for jax_roi's public-API tests.

* float64 on (``jax_enable_x64``) so the float64 paths can be exercised.
* The ``edge`` marker (edge-case / robustness tests; a sanitizer build runs ``pytest -m edge``).
* Helpers, imported by the test modules with ``from conftest import ...`` (``tests`` is on
  ``pythonpath``): dtype tolerances, random feature and box generators, and small wrappers
  that call the public op and the NumPy oracle with the same arguments.
"""

from __future__ import annotations

import pathlib
import sys


def _drop_unbuilt_source_tree() -> None:
    """Import the installed jax_roi, not the bare source folder.

    `python -m pytest` run from the repository root puts the root on sys.path, where
    `jax_roi/` has no compiled extension: importing it from there fails. When the source
    folder holds no built `_jax_roi_cpu` module (an in-place build keeps the root usable),
    drop the root from sys.path so the installed package is found.
    """
    root = pathlib.Path(__file__).resolve().parent.parent
    src = root / "jax_roi"
    if not src.is_dir() or any(src.glob("_jax_roi_cpu*")):
        return
    if "jax_roi" in sys.modules:
        return
    sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != root]


_drop_unbuilt_source_tree()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jax_roi  # noqa: E402
import oracle  # noqa: E402

DTYPES = (jnp.float32, jnp.float64, jnp.float16, jnp.bfloat16)
DTYPE_IDS = ("f32", "f64", "f16", "bf16")
LAYOUTS = ("NCHW", "NHWC")
NAN = float("nan")
INF = float("inf")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "edge: edge-case and robustness tests (invalid, huge, NaN/inf boxes, K=0); "
        "the sanitizer build runs `pytest -m edge`",
    )
    config.addinivalue_line(
        "markers",
        "emulation: the CUDA kernels' math run on the CPU through _jax_roi_emu "
        "(skipped when not built; JAX_ROI_REQUIRE_EMULATION=1 makes that a failure)",
    )


# ---------------------------------------------------------------------------------------
# dtypes and tolerances
# ---------------------------------------------------------------------------------------

@pytest.fixture
def on_cpu():
    """Run the test on the CPU device where a GPU is the default (`JAX_PLATFORMS=cuda,cpu`).

    For tests of the CPU kernels themselves, or of what XLA:CPU does to the pure-JAX code
    (IEEE division, no FMA contraction): XLA:GPU rewrites both, and runs the CUDA kernels.
    """
    with jax.default_device(jax.devices("cpu")[0]):
        yield


def assert_same_run(actual, expected, what=""):
    """Two runs of the same computation agree: bit for bit where the backward is
    deterministic (CPU), within float32 reordering where a GPU default backward sums with
    atomics in a varying order."""
    actual, expected = as_f64(actual), as_f64(expected)
    if jax.default_backend() == "gpu":
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5, err_msg=what)
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=what)


def np_dtype(dtype) -> np.dtype:
    return np.dtype(jnp.dtype(dtype))


def compute_dtype(dtype) -> np.dtype:
    """Type the library computes in (and the type the rois are cast to)."""
    return np.dtype(np.float64) if np_dtype(dtype) == np.float64 else np.dtype(np.float32)


def tol(dtype) -> float:
    """Tolerance relative to max |expected| for results in `dtype`.

    float64: 1e-10. Otherwise a multiple of the dtype's eps: the library accumulates 16-bit
    inputs in float32 and rounds once, so the error is a few ulps of the largest value.
    """
    dt = np_dtype(dtype)
    if dt == np.float64:
        return 1e-10
    eps = float(jnp.finfo(dt).eps)
    factor = {np.dtype(np.float32): 64.0, np.dtype(np.float16): 8.0}.get(dt, 6.0)  # bf16: 6
    return factor * eps


def assert_close(actual, expected, dtype, *, what="", scale=None):
    """|actual - expected| <= tol(dtype) * max(1, max|expected|) elementwise; shapes equal."""
    actual = as_f64(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    atol = tol(dtype) * scale
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol, err_msg=what)


def to_dtype(x, dtype) -> np.ndarray:
    """NumPy array rounded to `dtype` (bfloat16 through ml_dtypes, as jax uses)."""
    return np.asarray(x, np.float64).astype(np_dtype(dtype))


def as_f64(x) -> np.ndarray:
    """Any array (jax or numpy, any float dtype) as a float64 NumPy array (no jax dispatch)."""
    return np.asarray(x).astype(np.float64)


# ---------------------------------------------------------------------------------------
# random data
# ---------------------------------------------------------------------------------------

def rng_for(*key) -> np.random.Generator:
    """Deterministic generator from any hashable-as-string key (stable across runs)."""
    import zlib

    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def nchw_to(layout, x):
    """NCHW array -> `layout` (NHWC transposes)."""
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1))) if layout == "NHWC" else x


def random_features(rng, shape_nchw, dtype=jnp.float32, layout="NCHW"):
    """Standard-normal features, rounded to `dtype`, in `layout`."""
    x = rng.standard_normal(shape_nchw)
    return to_dtype(nchw_to(layout, x), dtype)


def separated_features(rng, shape_nchw, dtype=jnp.float64, layout="NCHW", spacing=1.0):
    """Distinct, well separated values (a permutation of spacing*(1..n)), NCHW -> layout.

    All positive, so an out-of-map sample (value 0) never beats an in-map one in max modes.
    """
    n = int(np.prod(shape_nchw))
    x = (rng.permutation(n).astype(np.float64) + 1.0) * spacing
    x = x.reshape(shape_nchw)
    return to_dtype(nchw_to(layout, x), dtype)


def random_rois(rng, k, n_images, height, width, spatial_scale=1.0, *, outside=True,
                dtype=np.float64):
    """[K, 5] boxes in image coordinates for a feature map of `height` x `width`.

    A mix of boxes well inside the map, boxes hanging partly off any edge (if `outside`),
    small (sub-pixel) boxes and large ones; batch indices cover every image and carry a
    fractional part (the op truncates toward zero).
    """
    hi_x = width / spatial_scale
    hi_y = height / spatial_scale
    rows = []
    for i in range(k):
        kind = i % 4 if outside else (0, 2)[i % 2]
        if kind == 0:  # well inside
            x1 = rng.uniform(0.0, 0.6) * hi_x
            y1 = rng.uniform(0.0, 0.6) * hi_y
            x2 = x1 + rng.uniform(0.1, 0.4) * hi_x
            y2 = y1 + rng.uniform(0.1, 0.4) * hi_y
        elif kind == 1:  # partly outside (either side)
            x1 = rng.uniform(-0.3, 0.7) * hi_x
            y1 = rng.uniform(-0.3, 0.7) * hi_y
            x2 = x1 + rng.uniform(0.3, 0.7) * hi_x
            y2 = y1 + rng.uniform(0.3, 0.7) * hi_y
        elif kind == 2:  # small, sub-pixel to a couple of feature pixels
            x1 = rng.uniform(0.0, 0.9) * hi_x
            y1 = rng.uniform(0.0, 0.9) * hi_y
            x2 = x1 + rng.uniform(0.0, 2.0) / spatial_scale
            y2 = y1 + rng.uniform(0.0, 2.0) / spatial_scale
        else:  # large, covering the map and beyond
            x1 = rng.uniform(-0.2, 0.1) * hi_x
            y1 = rng.uniform(-0.2, 0.1) * hi_y
            x2 = rng.uniform(0.9, 1.2) * hi_x
            y2 = rng.uniform(0.9, 1.2) * hi_y
        b = (i % n_images) + rng.uniform(0.0, 0.95)
        rows.append((b, x1, y1, x2, y2))
    rois = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    return rois.astype(dtype)


# ---------------------------------------------------------------------------------------
# op wrappers: the same arguments for the library and the oracle
# ---------------------------------------------------------------------------------------

def lib_op(op, features, rois, *, output_size, spatial_scale=1.0, sampling_ratio=-1,
           aligned=False, mode="avg", layout="NCHW"):
    if op == "roi_pool":
        return jax_roi.roi_pool(features, rois, output_size, spatial_scale, layout=layout)
    return jax_roi.roi_align(features, rois, output_size, spatial_scale, sampling_ratio,
                             aligned, mode=mode, layout=layout)


def oracle_fwd(op, features, rois, *, output_size, spatial_scale=1.0, sampling_ratio=-1,
               aligned=False, mode="avg", layout="NCHW"):
    f = as_f64(features)
    r = as_f64(rois)
    if op == "roi_pool":
        return oracle.roi_pool(f, r, output_size, spatial_scale, layout)[0]
    return oracle.roi_align(f, r, output_size, spatial_scale, sampling_ratio, aligned, mode,
                            layout)


def oracle_grad(op, features, rois, grad_out, *, output_size, spatial_scale=1.0,
                sampling_ratio=-1, aligned=False, mode="avg", layout="NCHW"):
    f = as_f64(features)
    r = as_f64(rois)
    g = as_f64(grad_out)
    if op == "roi_pool":
        return oracle.roi_pool_grad(f, r, g, output_size, spatial_scale, layout)
    return oracle.roi_align_grad(f, r, g, output_size, spatial_scale, sampling_ratio, aligned,
                                 mode, layout)


_VJP_CACHE: dict = {}


def lib_vjp(op, features, rois, grad_out, *, jit=True, **kw):
    """(output, d<grad_out, op(features)>/d features) through the public op.

    Under one jax.jit by default (one compilation instead of one per eager primitive); the
    jitted function is cached per (op, static arguments), so repeated calls with the same
    configuration and shapes compile once.
    """
    def make():
        def f(x, r, g):
            out, vjp = jax.vjp(lambda v: lib_op(op, v, r, **kw), x)
            (gx,) = vjp(g.astype(out.dtype))
            return out, gx

        return jax.jit(f) if jit else f

    key = (op, jit, tuple(sorted(kw.items())))
    try:
        f = _VJP_CACHE.get(key)
    except TypeError:  # unhashable argument (e.g. a list output_size): no caching
        f, key = None, None
    if f is None:
        f = make()
        if key is not None:
            _VJP_CACHE[key] = f
    return f(jnp.asarray(features), jnp.asarray(rois), jnp.asarray(grad_out))


def valid_rows(rois, n_images) -> np.ndarray:
    """Spec validity of each roi row: all finite and -1 < batch_index < N."""
    r = as_f64(rois)
    if r.shape[0] == 0:
        return np.zeros((0,), bool)
    finite = np.all(np.isfinite(r), axis=1)
    with np.errstate(invalid="ignore"):
        b = r[:, 0]
        return finite & (b > -1) & (b < n_images)


# The ops exercised everywhere: (op, mode) pairs with readable ids.
OPS = (("roi_align", "avg"), ("roi_align", "max"), ("roi_pool", None))
OP_IDS = ("align_avg", "align_max", "pool")


def op_kwargs(op, mode, **kw):
    """Keyword arguments for lib_op / oracle_* for one (op, mode); drops align-only keys for pool."""
    if op == "roi_pool":
        return {k: v for k, v in kw.items() if k in ("output_size", "spatial_scale", "layout")}
    kw = dict(kw)
    kw["mode"] = mode
    return kw

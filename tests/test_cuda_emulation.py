"""The CUDA kernels' math, tested on the CPU through their host emulation (marked `emulation`).

`_jax_roi_emu` (built with ``-DJAX_ROI_DEVICE_EMULATION=ON``) registers CPU FFI targets
``jax_roi_emu_<op>`` that run the CUDA kernels' own per-thread ops and launch plans
(xla_kernels/include/jax_roi/roi_device_ops.h) serially over the kernels' index spaces, with
the CUDA targets' attributes (``deterministic`` on the backward ones). What a GPU adds on top
is the order of its atomic additions, nothing else: the rounding is the same (the CUDA build
has ``--fmad=false``, this one ``-ffp-contract=off``).

Checked here, for every op, both layouts, four dtypes and both backward modes: the float64
NumPy oracle, the CPU kernels (max-type forwards bit for bit, argmax included), invalid rows
(exact zeros, zero gradient), K = 0, boxes off the map, huge boxes, and the deterministic
gather against the atomic scatter on geometry made to stress it (sub-pixel bins, reversed
and zero-size boxes, clamped edges, arbitrary max-mode winners).

These skip when `_jax_roi_emu` was not built; ``JAX_ROI_REQUIRE_EMULATION=1`` makes that a
failure (the sanitizer build in .ci/sanitize sets it).
"""

from __future__ import annotations

import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest

from conftest import (DTYPE_IDS, DTYPES, INF, LAYOUTS, NAN, as_f64, assert_close,
                      compute_dtype, nchw_to, oracle_fwd, oracle_grad, random_features,
                      random_rois, rng_for, valid_rows)

pytestmark = pytest.mark.emulation

MISSING = ("the CUDA emulation module jax_roi._jax_roi_emu was not built "
           "(configure with -DJAX_ROI_DEVICE_EMULATION=ON)")


def _load():
    try:
        module = importlib.import_module("jax_roi._jax_roi_emu")
    except ModuleNotFoundError:
        return None
    for name, capsule in module.registrations().items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    return module


EMU = _load()


@pytest.fixture(autouse=True)
def _emulation_built():
    if EMU is None:
        if os.environ.get("JAX_ROI_REQUIRE_EMULATION") == "1":
            pytest.fail(MISSING + " and JAX_ROI_REQUIRE_EMULATION=1")
        pytest.skip(MISSING)


N, C, H, W = 2, 5, 7, 9  # C = 5: channel tiles of the gather kernels (4) are ragged

# (op, mode) -> kernel name stem
OPS = {("roi_align", "avg"): "roi_align_avg", ("roi_align", "max"): "roi_align_max",
       ("roi_pool", None): "roi_pool"}
OP_PARAMS = [pytest.param("roi_align", "avg", id="align_avg"),
             pytest.param("roi_align", "max", id="align_max"),
             pytest.param("roi_pool", None, id="pool")]
# (op, mode, aligned, sampling_ratio): roi_align in two geometries, roi_pool (which has
# neither parameter) once.
CASES = [pytest.param("roi_align", "avg", False, -1, id="align_avg-legacy-adaptive"),
         pytest.param("roi_align", "avg", True, 2, id="align_avg-aligned-sr2"),
         pytest.param("roi_align", "max", False, -1, id="align_max-legacy-adaptive"),
         pytest.param("roi_align", "max", True, 2, id="align_max-aligned-sr2"),
         pytest.param("roi_pool", None, False, -1, id="pool")]
DTYPE_PARAMS = [pytest.param(d, id=i) for d, i in zip(DTYPES, DTYPE_IDS)]

EMU_PREFIX, CPU_PREFIX = "jax_roi_emu_", "jax_roi_"

# Rows that exercise the validity rules and the map's edges (batch index first).
EDGE_ROWS = [
    [-1, 1.0, 1.0, 4.0, 4.0],        # batch index -1
    [N, 1.0, 1.0, 4.0, 4.0],         # batch index N
    [0, NAN, 1.0, 4.0, 4.0],         # NaN coordinate
    [1, 1.0, 1.0, INF, 4.0],         # infinite coordinate
    [NAN, 1.0, 1.0, 4.0, 4.0],       # NaN batch index
    [0, -20.0, -20.0, -10.0, -10.0],  # wholly off the map
    [1, 20.0, 1.0, 30.0, 4.0],
    [0, -3.0, -2.0, 3.0, 2.5],       # over the top-left corner
    [1, 5.0, 4.0, 12.0, 11.0],       # over the bottom-right corner
    [0, 2.0, 3.0, 2.0, 3.0],         # zero size
    [1, 5.0, 4.0, 1.0, 1.0],         # reversed
    [0, 8.6, 6.4, 9.0, 7.0],         # around the far boundary (x = W, y = H)
    [1, -1.5, -1.5, 0.5, 0.5],       # around the -1 boundary
]
HUGE_ROWS = [
    [0, 0.0, 0.0, 1e6, 1e6],
    [1, -1e6, -1e6, 1e6, 1e6],
    [0, -1e30, -1e30, 1e30, 1e30],
    [1, 3.0, -1e30, 5.0, 1e30],
    [0, 1e30, 1e30, -1e30, -1e30],
    [1, -1e30, -1e30, -1e29, -1e29],
]


# ---------------------------------------------------------------------------------------
# calling the FFI targets directly (emulation and CPU kernels alike)
# ---------------------------------------------------------------------------------------

def _attrs(op, *, output_size, layout, spatial_scale=1.0, aligned=False, sampling_ratio=-1):
    ph, pw = output_size
    a = dict(pooled_h=np.int64(ph), pooled_w=np.int64(pw),
             spatial_scale=np.float64(spatial_scale))
    if op == "roi_align":
        a.update(sampling_ratio=np.int64(sampling_ratio), aligned=bool(aligned))
    a["channels_last"] = layout == "NHWC"
    return a


def _pooled_shape(k, attrs):
    ph, pw = int(attrs["pooled_h"]), int(attrs["pooled_w"])
    return (k, ph, pw, C) if attrs["channels_last"] else (k, C, ph, pw)


def _has_argmax(op, mode):
    return op == "roi_pool" or mode == "max"


def _fwd(prefix, op, mode, x, rois, attrs):
    """(output, argmax or None) from target `prefix + stem + "_fwd"`."""
    shape = _pooled_shape(rois.shape[0], attrs)
    out = jax.ShapeDtypeStruct(shape, x.dtype)
    name = f"{prefix}{OPS[op, mode]}_fwd"
    if _has_argmax(op, mode):
        return jax.ffi.ffi_call(name, (out, jax.ShapeDtypeStruct(shape, np.int32)))(
            x, rois, **attrs)
    return jax.ffi.ffi_call(name, out)(x, rois, **attrs), None


def _bwd(prefix, op, mode, g, rois, argmax, feature_shape, attrs, deterministic=None):
    """Feature gradient from target `prefix + stem + "_bwd"` (CPU: no `deterministic`)."""
    if deterministic is not None:
        attrs = {**attrs, "deterministic": bool(deterministic)}
    args = (g, rois) if argmax is None else (g, rois, argmax)
    out = jax.ShapeDtypeStruct(feature_shape, g.dtype)
    return jax.ffi.ffi_call(f"{prefix}{OPS[op, mode]}_bwd", out)(*args, **attrs)


def _bits(x):
    """Raw bits of an array (bitwise comparison, NaN payloads and signed zeros included)."""
    x = np.asarray(x)
    return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


def _case(key, dtype, layout, rows=None, k=10):
    """Features, rois (random boxes + `rows`) and an incoming gradient for one call."""
    rng = rng_for("emu", key)
    x = jnp.asarray(random_features(rng, (N, C, H, W), dtype, layout))
    rois = random_rois(rng, k, N, H, W)
    if rows:
        rois = np.concatenate([rois, np.asarray(rows, np.float64)])
    return x, rois.astype(compute_dtype(dtype)), rng


def _oracle_kw(op, mode, attrs, layout):
    kw = dict(output_size=(int(attrs["pooled_h"]), int(attrs["pooled_w"])),
              spatial_scale=float(attrs["spatial_scale"]), layout=layout)
    if op == "roi_align":
        kw.update(sampling_ratio=int(attrs["sampling_ratio"]), aligned=bool(attrs["aligned"]),
                  mode=mode)
    return kw


# ---------------------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("op,mode,aligned,sr", CASES)
def test_forward(op, mode, aligned, sr, dtype, layout):
    attrs = _attrs(op, output_size=(2, 3), layout=layout, aligned=aligned, sampling_ratio=sr)
    x, rois, _ = _case(("fwd", op, mode, aligned, sr, layout), dtype, layout, EDGE_ROWS)
    out, argmax = _fwd(EMU_PREFIX, op, mode, x, rois, attrs)
    assert out.dtype == x.dtype and out.shape == _pooled_shape(rois.shape[0], attrs)

    want = oracle_fwd(op, x, rois, **_oracle_kw(op, mode, attrs, layout))
    assert_close(out, want, dtype, what="emulation vs oracle")
    valid = valid_rows(rois, N)
    assert not np.any(as_f64(out)[~valid]), "invalid rows must be exactly zero"

    cpu_out, cpu_argmax = _fwd(CPU_PREFIX, op, mode, x, rois, attrs)
    if argmax is None:
        assert_close(out, as_f64(cpu_out), dtype, what="emulation vs CPU kernel")
    else:
        # Max-type ops: same expression, same order, no FMA: identical values and winners.
        np.testing.assert_array_equal(_bits(out), _bits(cpu_out))
        np.testing.assert_array_equal(np.asarray(argmax), np.asarray(cpu_argmax))
        assert np.all(np.asarray(argmax)[~valid] == -1)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("op,mode", [p for p in OP_PARAMS if p.id != "align_avg"])
def test_forward_ties(op, mode, dtype, layout):
    """Max-type ops on features full of ties (small integers, zeros among them, so that
    out-of-map samples tie too): the first maximum wins, the same one as on the CPU."""
    rng = rng_for("ties", op, mode, layout)
    x = jnp.asarray(nchw_to(layout, rng.integers(-1, 2, (N, C, H, W)).astype(np.float64))
                    .astype(np.dtype(jnp.dtype(dtype))))
    rois = np.concatenate([random_rois(rng, 12, N, H, W), np.asarray(EDGE_ROWS)])
    rois = rois.astype(compute_dtype(dtype))
    for aligned, sr in ((False, -1), (True, 2)):
        attrs = _attrs(op, output_size=(3, 2), layout=layout, aligned=aligned, sampling_ratio=sr)
        out, argmax = _fwd(EMU_PREFIX, op, mode, x, rois, attrs)
        cpu_out, cpu_argmax = _fwd(CPU_PREFIX, op, mode, x, rois, attrs)
        np.testing.assert_array_equal(_bits(out), _bits(cpu_out))
        np.testing.assert_array_equal(np.asarray(argmax), np.asarray(cpu_argmax))
        assert_close(out, oracle_fwd(op, x, rois, **_oracle_kw(op, mode, attrs, layout)), dtype)
        if op == "roi_pool":
            want = oracle.roi_pool(as_f64(x), as_f64(rois), (3, 2), 1.0, layout)[1]
            np.testing.assert_array_equal(np.asarray(argmax), want)
            break


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_forward_huge_boxes(op, mode, dtype, layout):
    """Huge boxes (adaptive grids capped at 32768 per axis) stay cheap and match the CPU."""
    attrs = _attrs(op, output_size=(2, 3), layout=layout)
    x, rois, _ = _case(("huge", op, mode, layout), dtype, layout, HUGE_ROWS, k=0)
    out, argmax = _fwd(EMU_PREFIX, op, mode, x, rois, attrs)
    cpu_out, cpu_argmax = _fwd(CPU_PREFIX, op, mode, x, rois, attrs)
    assert np.all(np.isfinite(as_f64(out)))
    if argmax is None:
        assert_close(out, as_f64(cpu_out), dtype)
    else:
        np.testing.assert_array_equal(_bits(out), _bits(cpu_out))
        np.testing.assert_array_equal(np.asarray(argmax), np.asarray(cpu_argmax))


# ---------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("op,mode,aligned,sr", CASES)
def test_backward(op, mode, aligned, sr, dtype, layout, deterministic):
    attrs = _attrs(op, output_size=(2, 3), layout=layout, aligned=aligned, sampling_ratio=sr)
    x, rois, rng = _case(("bwd", op, mode, aligned, sr, layout), dtype, layout, EDGE_ROWS)
    shape = _pooled_shape(rois.shape[0], attrs)
    g = jnp.asarray(rng.standard_normal(shape).astype(np.dtype(x.dtype)))
    _, argmax = _fwd(EMU_PREFIX, op, mode, x, rois, attrs)

    grad = _bwd(EMU_PREFIX, op, mode, g, rois, argmax, x.shape, attrs, deterministic)
    assert grad.dtype == x.dtype and grad.shape == x.shape
    want = oracle_grad(op, x, rois, g, **_oracle_kw(op, mode, attrs, layout))
    assert_close(grad, want, dtype, what="emulation vs oracle")
    cpu = _bwd(CPU_PREFIX, op, mode, g, rois, argmax, x.shape, attrs)
    assert_close(grad, as_f64(cpu), dtype, what="emulation vs CPU kernel")

    # Gradient arriving only at invalid rows reaches nothing.
    valid = valid_rows(rois, N).reshape((-1, 1, 1, 1))
    g_invalid = jnp.where(valid, 0, g).astype(g.dtype)
    grad_invalid = _bwd(EMU_PREFIX, op, mode, g_invalid, rois, argmax, x.shape, attrs,
                        deterministic)
    assert not np.any(as_f64(grad_invalid))

    if deterministic:
        again = _bwd(EMU_PREFIX, op, mode, g, rois, argmax, x.shape, attrs, True)
        np.testing.assert_array_equal(_bits(grad), _bits(again))


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_k0(op, mode, dtype, deterministic):
    """No rois: an empty forward, and a backward that still writes zeros everywhere."""
    for layout in LAYOUTS:
        attrs = _attrs(op, output_size=(2, 3), layout=layout)
        x = jnp.asarray(random_features(rng_for("k0"), (N, C, H, W), dtype, layout))
        rois = np.zeros((0, 5), compute_dtype(dtype))
        out, argmax = _fwd(EMU_PREFIX, op, mode, x, rois, attrs)
        assert out.shape == _pooled_shape(0, attrs)
        g = jnp.zeros(out.shape, x.dtype)
        grad = _bwd(EMU_PREFIX, op, mode, g, rois, argmax, x.shape, attrs, deterministic)
        assert grad.shape == x.shape and not np.any(as_f64(grad))


# ---------------------------------------------------------------------------------------
# the deterministic gather against the atomic scatter, on geometry chosen to stress it
# ---------------------------------------------------------------------------------------

def _stress_rois(rng, k):
    """Boxes of every kind the gather's bin and sample searches must get right."""
    rows = []
    for i in range(k):
        kind = i % 6
        b = i % N + 0.5
        if kind == 0:  # sub-pixel boxes: many bins per pixel
            x1, y1 = rng.uniform(-1.5, W + 0.5), rng.uniform(-1.5, H + 0.5)
            x2, y2 = x1 + rng.uniform(0, 0.8), y1 + rng.uniform(0, 0.8)
        elif kind == 1:  # reversed boxes (aligned geometry gives negative bins)
            x2, y2 = rng.uniform(-1, W), rng.uniform(-1, H)
            x1, y1 = x2 + rng.uniform(0.1, 5), y2 + rng.uniform(0.1, 5)
        elif kind == 2:  # zero size
            x1 = x2 = rng.uniform(-1.5, W + 0.5)
            y1 = y2 = rng.uniform(-1.5, H + 0.5)
        elif kind == 3:  # on pixel-grid values, hitting taps and edges exactly
            x1, y1 = float(rng.integers(-2, W)), float(rng.integers(-2, H))
            x2, y2 = x1 + float(rng.integers(0, W)), y1 + float(rng.integers(0, H))
        elif kind == 4:  # larger than the map
            x1, y1 = rng.uniform(-9, 0), rng.uniform(-9, 0)
            x2, y2 = rng.uniform(W, W + 9), rng.uniform(H, H + 9)
        else:  # ordinary
            x1, y1 = rng.uniform(0, W - 1), rng.uniform(0, H - 1)
            x2, y2 = x1 + rng.uniform(0.5, W), y1 + rng.uniform(0.5, H)
        rows.append((b, x1, y1, x2, y2))
    return np.asarray(rows, np.float64)


# (output_size, aligned, sampling_ratio)
_ALIGN_STRESS = [((7, 5), True, -1, "7x5-aligned-adaptive"), ((7, 5), True, 3, "7x5-aligned-sr3"),
                 ((3, 4), False, 1, "3x4-legacy-sr1"), ((1, 1), False, -1, "1x1-legacy-adaptive"),
                 ((9, 11), True, 2, "9x11-aligned-sr2")]
STRESS = ([pytest.param("roi_align", m, size, al, sr, id=f"align_{m}-{i}")
           for m in ("avg", "max") for size, al, sr, i in _ALIGN_STRESS]
          + [pytest.param("roi_pool", None, size, False, -1, id=f"pool-{size[0]}x{size[1]}")
             for size in ((7, 5), (1, 1), (9, 11))])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode,size,aligned,sr", STRESS)
def test_gather_equals_scatter(op, mode, size, aligned, sr, layout):
    """float64: the gather sums the scatter's terms in another order, nothing more."""
    rng = rng_for("stress", op, mode, size, aligned, sr, layout)
    attrs = _attrs(op, output_size=size, layout=layout, aligned=aligned, sampling_ratio=sr,
                   spatial_scale=1.0)
    x = jnp.asarray(random_features(rng, (N, C, H, W), jnp.float64, layout))
    rois = _stress_rois(rng, 36)
    shape = _pooled_shape(rois.shape[0], attrs)
    g = jnp.asarray(rng.standard_normal(shape))
    _, argmax = _fwd(EMU_PREFIX, op, mode, x, rois, attrs)
    scatter = as_f64(_bwd(EMU_PREFIX, op, mode, g, rois, argmax, x.shape, attrs, False))
    gather = as_f64(_bwd(EMU_PREFIX, op, mode, g, rois, argmax, x.shape, attrs, True))
    assert np.any(scatter), "the case must send some gradient"
    np.testing.assert_allclose(gather, scatter, rtol=0, atol=1e-12 * max(1, np.abs(scatter).max()))
    want = oracle_grad(op, x, rois, g, **_oracle_kw(op, mode, attrs, layout))
    assert_close(gather, want, jnp.float64, what="gather vs oracle")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_gather_any_winner(layout):
    """roi_align max: every in-range grid index is a sample of its own bin, so the gather
    must send its gradient exactly where the scatter does, whatever the recorded winner
    (including -1, out-of-range indices and samples off the map, which send nothing)."""
    rng = rng_for("winners", layout)
    attrs = _attrs("roi_align", output_size=(4, 3), layout=layout, aligned=True,
                   sampling_ratio=3)
    rois = _stress_rois(rng, 24)
    shape = _pooled_shape(rois.shape[0], attrs)
    argmax = jnp.asarray(rng.integers(-2, 11, shape).astype(np.int32))  # grid has 9 samples
    g = jnp.asarray(rng.standard_normal(shape))
    fshape = nchw_to(layout, np.zeros((N, C, H, W))).shape
    scatter = as_f64(_bwd(EMU_PREFIX, "roi_align", "max", g, rois, argmax, fshape, attrs, False))
    gather = as_f64(_bwd(EMU_PREFIX, "roi_align", "max", g, rois, argmax, fshape, attrs, True))
    assert np.any(scatter)
    np.testing.assert_allclose(gather, scatter, rtol=0, atol=1e-12 * np.abs(scatter).max())


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_16bit_backward_rounds_once(op, mode, dtype):
    """16-bit gradients accumulate in float32 and round once: the deterministic gather gives
    exactly its float32 result rounded; the atomic scatter (float32 scratch, then one
    rounding pass) the same up to the order of its float32 additions."""
    layout = "NHWC"
    attrs = _attrs(op, output_size=(3, 3), layout=layout)
    x, rois, rng = _case(("16bit", op, mode), dtype, layout, k=24)
    shape = _pooled_shape(rois.shape[0], attrs)
    g = jnp.asarray(rng.standard_normal(shape).astype(np.dtype(dtype)))
    _, argmax = _fwd(EMU_PREFIX, op, mode, x, rois, attrs)
    f32 = np.asarray(_bwd(EMU_PREFIX, op, mode, g.astype(jnp.float32), rois, argmax, x.shape,
                          attrs, True))
    rounded = f32.astype(np.dtype(dtype))
    gather = _bwd(EMU_PREFIX, op, mode, g, rois, argmax, x.shape, attrs, True)
    np.testing.assert_array_equal(_bits(gather), _bits(rounded))
    scatter = _bwd(EMU_PREFIX, op, mode, g, rois, argmax, x.shape, attrs, False)
    assert_close(scatter, as_f64(rounded), dtype, what="atomic 16-bit")


def test_handler_checks_are_shared():
    """The emulation handlers run the CPU handlers' checks: same messages."""
    attrs = _attrs("roi_align", output_size=(2, 2), layout="NCHW")
    x = np.zeros((1, 2, 4, 4), np.float32)
    bad = np.zeros((3, 4), np.float32)
    out = jax.ShapeDtypeStruct((3, 2, 2, 2), np.float32)
    with pytest.raises(Exception, match=r"roi_align_avg_fwd: rois must have shape \[K, 5\]"):
        jax.block_until_ready(jax.ffi.ffi_call("jax_roi_emu_roi_align_avg_fwd", out)(
            x, bad, **attrs))
    with pytest.raises(Exception, match="features must be float16, bfloat16, float32 or float64"):
        xi = np.zeros((1, 2, 4, 4), np.int32)
        jax.block_until_ready(jax.ffi.ffi_call(
            "jax_roi_emu_roi_align_avg_bwd", jax.ShapeDtypeStruct(xi.shape, np.int32))(
                np.zeros((3, 2, 2, 2), np.int32), np.zeros((3, 5), np.float32), **attrs,
                deterministic=True))


def test_emulation_marker_registered(pytestconfig):
    assert any(line.startswith("emulation:") for line in pytestconfig.getini("markers"))

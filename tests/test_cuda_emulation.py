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
and zero-size boxes, clamped edges, arbitrary max-mode winners). The deterministic
backward's roi lists: every roi footprint against a brute-force walk over all its samples
(or bins), the tiled gather bit for bit against a gather that walks every roi (test-only
targets `jax_roi_emu_<op>_bwd_whole_map`), and the tile plan's sizes.

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
    a["deterministic"] = False  # every target of a family takes the family's attributes
    return a


def _pooled_shape(k, attrs, c=C):
    ph, pw = int(attrs["pooled_h"]), int(attrs["pooled_w"])
    return (k, ph, pw, c) if attrs["channels_last"] else (k, c, ph, pw)


def _has_argmax(op, mode):
    return op == "roi_pool" or mode == "max"


def _fwd(prefix, op, mode, x, rois, attrs, suffix=""):
    """(output, argmax or None) from target `prefix + stem + "_fwd" + suffix`."""
    shape = _pooled_shape(rois.shape[0], attrs, x.shape[3 if attrs["channels_last"] else 1])
    out = jax.ShapeDtypeStruct(shape, x.dtype)
    name = f"{prefix}{OPS[op, mode]}_fwd{suffix}"
    if _has_argmax(op, mode):
        return jax.ffi.ffi_call(name, (out, jax.ShapeDtypeStruct(shape, np.int32)))(
            x, rois, **attrs)
    return jax.ffi.ffi_call(name, out)(x, rois, **attrs), None


def _bwd(prefix, op, mode, g, rois, argmax, feature_shape, attrs, deterministic=None,
         suffix=""):
    """Feature gradient from target `prefix + stem + "_bwd" + suffix` (the CPU ignores
    `deterministic`)."""
    if deterministic is not None:
        attrs = {**attrs, "deterministic": bool(deterministic)}
    args = (g, rois) if argmax is None else (g, rois, argmax)
    out = jax.ShapeDtypeStruct(feature_shape, g.dtype)
    return jax.ffi.ffi_call(f"{prefix}{OPS[op, mode]}_bwd{suffix}", out)(*args, **attrs)


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

def _stress_rois(rng, k, h=H, w=W):
    """Boxes of every kind the gather's bin and sample searches must get right, for an
    `h` x `w` map (scale 1)."""
    rows = []
    for i in range(k):
        kind = i % 6
        b = i % N + 0.5
        if kind == 0:  # sub-pixel boxes: many bins per pixel
            x1, y1 = rng.uniform(-1.5, w + 0.5), rng.uniform(-1.5, h + 0.5)
            x2, y2 = x1 + rng.uniform(0, 0.8), y1 + rng.uniform(0, 0.8)
        elif kind == 1:  # reversed boxes (aligned geometry gives negative bins)
            x2, y2 = rng.uniform(-1, w), rng.uniform(-1, h)
            x1, y1 = x2 + rng.uniform(0.1, 5), y2 + rng.uniform(0.1, 5)
        elif kind == 2:  # zero size
            x1 = x2 = rng.uniform(-1.5, w + 0.5)
            y1 = y2 = rng.uniform(-1.5, h + 0.5)
        elif kind == 3:  # on pixel-grid values, hitting taps and edges exactly
            x1, y1 = float(rng.integers(-2, w)), float(rng.integers(-2, h))
            x2, y2 = x1 + float(rng.integers(0, w)), y1 + float(rng.integers(0, h))
        elif kind == 4:  # larger than the map
            x1, y1 = rng.uniform(-9, 0), rng.uniform(-9, 0)
            x2, y2 = rng.uniform(w, w + 9), rng.uniform(h, h + 9)
        else:  # ordinary
            x1, y1 = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
            x2, y2 = x1 + rng.uniform(0.5, w), y1 + rng.uniform(0.5, h)
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


# ---------------------------------------------------------------------------------------
# the deterministic backward's roi lists: footprints and pixel tiles
# ---------------------------------------------------------------------------------------

BIG_H, BIG_W = 37, 50  # 16 x 16 tiles: 3 x 4 per image, ragged on both axes


def _tile_border_rows(n_images, scale=1.0):
    """Boxes whose edges, samples or taps fall exactly on the 16-pixel tile borders."""
    rows = [[0, 15.5, 15.5, 16.5, 16.5], [1, 16.0, 16.0, 32.0, 32.0], [0, 0.0, 0.0, 16.0, 16.0],
            [1, 15.999, 31.999, 16.001, 32.001], [0, 32.0, 16.0, 48.0, 32.0],
            [1, 31.5, 15.5, 32.5, 16.5], [0, 14.0, 30.0, 15.0, 31.0], [1, 16.0, 0.0, 16.0, 36.0],
            [0, 47.5, 31.5, 50.0, 37.0], [1, 15.0, 15.0, 17.0, 17.0]]
    rows = np.asarray(rows, np.float64)
    rows[:, 0] = np.minimum(rows[:, 0], n_images - 1)
    rows[:, 1:] /= scale
    return rows


def _list_rois(rng, k, h, w, scale=1.0):
    """Every kind of box for the roi-list tests on an `h` x `w` map, in image coordinates:
    stress boxes, tile-border boxes, invalid rows, boxes off or around the map, huge ones."""
    stress = _stress_rois(rng, k, h, w)
    stress[:, 1:] /= scale
    edges = np.asarray(EDGE_ROWS, np.float64)
    edges[:, 1:] *= np.array([w / W, h / H, w / W, h / H]) / scale  # the same places on this map
    return np.concatenate([stress, _tile_border_rows(N, scale), edges,
                           np.asarray(HUGE_ROWS, np.float64)])


def _footprints(op, rois, h, w, *, output_size, spatial_scale, aligned=False, sampling_ratio=-1):
    """[K, 5] rows (n, y0, y1, x0, x1) from the emulation's footprint op."""
    out = jax.ShapeDtypeStruct((rois.shape[0], 5), np.int64)
    return np.asarray(jax.ffi.ffi_call("jax_roi_emu_roi_footprints", out)(
        rois, pool=op == "roi_pool", images=np.int64(N), height=np.int64(h), width=np.int64(w),
        pooled_h=np.int64(output_size[0]), pooled_w=np.int64(output_size[1]),
        spatial_scale=np.float64(spatial_scale), sampling_ratio=np.int64(sampling_ratio),
        aligned=bool(aligned)))


def _brute_align_axis(lo, hi, size, pooled, scale, aligned, ratio, dt):
    """One axis of a roi_align roi, every sample of every bin evaluated the kernels' way in
    `dt`: (axis ok, [first, last + 1) of the taps of the inside samples or None, whether the
    two extreme samples are inside)."""
    with np.errstate(all="ignore"):
        off = dt(0.5) if aligned else dt(0)
        start = dt(lo) * dt(scale) - off
        extent = (dt(hi) * dt(scale) - off) - start
        if not aligned and not extent >= 1:
            extent = dt(1)
        bin_ = extent / dt(pooled)
        if ratio > 0:
            grid = min(ratio, 32768)
        else:
            g = np.ceil(extent / dt(pooled))
            grid = 32768 if g >= 32768 else (int(g) if g > 0 else 0)
        ok = bool(np.isfinite(start) and np.isfinite(bin_))
        if not ok or grid == 0:
            return ok, None, False
        p = np.arange(pooled, dtype=dt)[:, None]
        i = np.arange(grid, dtype=dt)[None, :]
        v = (start + p * bin_) + ((i + dt(0.5)) * bin_) / dt(grid)
        inside = (v >= -1) & (v <= size)
        corners = bool(inside[0, 0] and inside[-1, -1])
        if not inside.any():
            return ok, None, corners
        taps_lo = np.floor(np.maximum(v[inside], 0)).astype(np.int64)
        taps_hi = np.where(taps_lo >= size - 1, size - 1, taps_lo + 1)
        taps_lo = np.minimum(taps_lo, size - 1)
        return ok, (int(taps_lo.min()), int(taps_hi.max()) + 1), corners


def _round_half_away(v):
    t = np.trunc(v)
    return t + np.sign(v) * (np.abs(v - t) >= 0.5)


def _brute_pool_axis(lo, hi, size, pooled, scale, dt):
    """One axis of a roi_pool roi, every bin: (axis ok, union of the bins' pixels or None)."""
    with np.errstate(all="ignore"):
        s = _round_half_away(dt(lo) * dt(scale))
        extent = _round_half_away(dt(hi) * dt(scale)) - s + dt(1)
        if not extent >= 1:
            extent = dt(1)
        bin_ = extent / dt(pooled)
        ok = bool(np.isfinite(s) and np.isfinite(bin_))
        if not ok:
            return ok, None

        def clip(v):
            return np.where(~(v > 0), 0, np.where(v >= size, size, np.nan_to_num(v))).astype(
                np.int64)

        p = np.arange(pooled, dtype=dt)
        begin = clip(np.floor(p * bin_) + s)
        end = clip(np.ceil((p + dt(1)) * bin_) + s)
        full = begin < end
        if not full.any():
            return ok, None
        return ok, (int(begin[full].min()), int(end[full].max()))


# (op, aligned, sampling_ratio, output_size)
_FOOTPRINT_CASES = [("roi_align", False, -1, (7, 7)), ("roi_align", True, -1, (7, 7)),
                    ("roi_align", True, 1, (3, 5)), ("roi_align", False, 2, (2, 2)),
                    ("roi_align", True, 3, (1, 1)), ("roi_pool", False, -1, (7, 7)),
                    ("roi_pool", False, -1, (2, 3))]


@pytest.mark.parametrize("h,w", [(BIG_H, BIG_W), (5, 3), (1, 17)], ids=["37x50", "5x3", "1x17"])
@pytest.mark.parametrize("op,aligned,sr,size", [
    pytest.param(*c, id=f"{c[0]}-{'aligned' if c[1] else 'legacy'}-sr{c[2]}-{c[3][0]}x{c[3][1]}")
    for c in _FOOTPRINT_CASES])
def test_footprints_hold_every_sample(op, aligned, sr, size, h, w):
    """Property: a roi's footprint holds every pixel that any of its inside samples (roi_align)
    or bins (roi_pool) reaches, found here by brute force in the kernels' own arithmetic, so
    the gather never skips a roi that sends something (not even a zero-weight tap); it is
    exact when the extreme samples are inside (roi_pool: always); invalid rows have none."""
    rng = rng_for("footprints", op, aligned, sr, size, h, w)
    for dt, scale in ((np.float32, 1.0), (np.float64, 0.25), (np.float32, 0.0625)):
        rois = _list_rois(rng, 60, h, w, scale).astype(dt)
        fp = _footprints(op, rois, h, w, output_size=size, spatial_scale=scale, aligned=aligned,
                         sampling_ratio=sr)
        valid = valid_rows(rois, N)
        exact = 0
        for k, (row, f) in enumerate(zip(rois, fp)):
            n, y0, y1, x0, x1 = (int(v) for v in f)
            what = f"roi {k} {row.tolist()} ({dt.__name__}, scale {scale}): footprint {f.tolist()}"
            assert n == -1 or (n == int(row[0]) and 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w), what
            if not valid[k]:
                assert n == -1, what
                continue
            if op == "roi_pool":
                oky, ry = _brute_pool_axis(row[2], row[4], h, size[0], scale, dt)
                okx, rx = _brute_pool_axis(row[1], row[3], w, size[1], scale, dt)
                if not (oky and okx) or ry is None or rx is None:
                    assert n == -1, what
                else:
                    assert (y0, y1, x0, x1) == (*ry, *rx), what
                    exact += 1
                continue
            oky, ry, cy = _brute_align_axis(row[2], row[4], h, size[0], scale, aligned, sr, dt)
            okx, rx, cx = _brute_align_axis(row[1], row[3], w, size[1], scale, aligned, sr, dt)
            if not (oky and okx):
                assert n == -1, what
                continue
            if ry is None or rx is None:  # reaches nothing; a footprint may still be given
                continue
            assert n >= 0 and y0 <= ry[0] and ry[1] <= y1 and x0 <= rx[0] and rx[1] <= x1, (
                what + f" misses the taps rows {ry}, columns {rx}")
            if cy:
                assert (y0, y1) == ry, what + f": rows not exact, want {ry}"
            if cx:
                assert (x0, x1) == rx, what + f": columns not exact, want {rx}"
            exact += cy and cx
        assert exact > (10 if h > 5 else 0), "the case must hold ordinary boxes"


def _bwd_whole_map(op, mode, g, rois, argmax, feature_shape, attrs):
    """The deterministic backward with every roi listed everywhere: the walk over all rois."""
    attrs = {**attrs, "deterministic": True}
    args = (g, rois) if argmax is None else (g, rois, argmax)
    out = jax.ShapeDtypeStruct(feature_shape, g.dtype)
    return jax.ffi.ffi_call(f"{EMU_PREFIX}{OPS[op, mode]}_bwd_whole_map", out)(*args, **attrs)


# (op, mode, output_size, aligned, sampling_ratio)
_LIST_CASES = [("roi_align", "avg", (7, 7), True, -1), ("roi_align", "avg", (2, 3), False, 2),
               ("roi_align", "max", (7, 7), True, 2), ("roi_align", "max", (3, 2), False, -1),
               ("roi_pool", None, (7, 7), False, -1), ("roi_pool", None, (2, 3), False, -1)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode,size,aligned,sr", [
    pytest.param(*c, id=f"{OPS[c[0], c[1]]}-{c[2][0]}x{c[2][1]}-"
                        f"{'aligned' if c[3] else 'legacy'}-sr{c[4]}") for c in _LIST_CASES])
def test_tiled_gather_is_the_full_walk(op, mode, size, aligned, sr, layout):
    """The deterministic backward visits, for each pixel, only the rois listed for its tile
    whose footprint holds it: bit for bit what walking every roi gives (whole-map lists), on
    a map of ragged 16 x 16 tiles. Incoming gradients with inf and NaN entries make a missed
    zero-weight tap show (0 * inf); finite ones are also checked against the atomic scatter."""
    rng = rng_for("lists", op, mode, size, aligned, sr, layout)
    c = 3
    rois = _list_rois(rng, 48, BIG_H, BIG_W)
    for dtype in (jnp.float32, jnp.float64):
        attrs = _attrs(op, output_size=size, layout=layout, aligned=aligned, sampling_ratio=sr)
        x = jnp.asarray(random_features(rng, (N, c, BIG_H, BIG_W), dtype, layout))
        r = rois.astype(compute_dtype(dtype))
        shape = _pooled_shape(r.shape[0], attrs, c)
        g = rng.standard_normal(shape)
        _, argmax = _fwd(EMU_PREFIX, op, mode, x, r, attrs)
        scatter = as_f64(_bwd(EMU_PREFIX, op, mode, jnp.asarray(g.astype(x.dtype)), r, argmax,
                              x.shape, attrs, False))
        tiled = _bwd(EMU_PREFIX, op, mode, jnp.asarray(g.astype(x.dtype)), r, argmax, x.shape,
                     attrs, True)
        # avg reaches most pixels; max-type ops only their winners
        assert np.count_nonzero(scatter) > (x.size // 4 if mode == "avg" else 100)
        assert_close(tiled, scatter, dtype, what="tiled gather vs atomic scatter")
        g.reshape(-1)[rng.choice(g.size, 40, replace=False)] = np.inf
        g.reshape(-1)[rng.choice(g.size, 10, replace=False)] = np.nan
        g = jnp.asarray(g.astype(x.dtype))
        tiled = _bwd(EMU_PREFIX, op, mode, g, r, argmax, x.shape, attrs, True)
        full = _bwd_whole_map(op, mode, g, r, argmax, x.shape, attrs)
        np.testing.assert_array_equal(_bits(tiled), _bits(full))
        assert not np.all(np.isfinite(as_f64(tiled)))


@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_long_roi_lists(op, mode):
    """Many rois per tile (K = 700 on one 23 x 40 image: 22 mask words, most of them set in
    every tile), against the atomic scatter (float64) and the walk over all rois (bits)."""
    layout = "NHWC"
    h, w, c = 23, 40, 2
    rng = rng_for("long", op, mode)
    attrs = _attrs(op, output_size=(4, 4), layout=layout, aligned=True, sampling_ratio=2)
    x = jnp.asarray(random_features(rng, (1, c, h, w), jnp.float64, layout))
    x1, y1 = rng.uniform(-2, w, 700), rng.uniform(-2, h, 700)
    rois = np.stack([np.zeros(700), x1, y1, x1 + rng.uniform(0, 12, 700),
                     y1 + rng.uniform(0, 12, 700)], axis=1)
    g = jnp.asarray(rng.standard_normal((700, 4, 4, c)))
    _, argmax = _fwd(EMU_PREFIX, op, mode, x, rois, attrs)
    tiled = as_f64(_bwd(EMU_PREFIX, op, mode, g, rois, argmax, x.shape, attrs, True))
    scatter = as_f64(_bwd(EMU_PREFIX, op, mode, g, rois, argmax, x.shape, attrs, False))
    np.testing.assert_allclose(tiled, scatter, rtol=0, atol=1e-12 * np.abs(scatter).max())
    full = _bwd_whole_map(op, mode, g, rois, argmax, x.shape, attrs)
    np.testing.assert_array_equal(_bits(tiled), _bits(full))


def test_tile_plan():
    """Tiles of 16 x 16 pixels (ragged at the edges, one for a map smaller than that), a
    32-roi mask word per tile; larger tiles when the masks would pass the budget; sizes that
    cannot fit saturate (the allocation then fails) rather than wrap; no scratch at K = 0."""
    plan = EMU.tile_plan
    # Mask R-CNN's largest FPN level at batch 2 with 512 rois per image.
    p = plan(2, 200, 336, 1024)
    assert (p["tile"], p["tiles_y"], p["tiles_x"], p["tiles"], p["words"]) == (16, 13, 21, 546, 32)
    assert p["mask_offset"] == -(-1024 * p["footprint_bytes"] // 256) * 256
    assert p["bytes"] == p["mask_offset"] + 546 * 32 * 4 < 200_000
    assert plan(2, BIG_H, BIG_W, 100)["tiles"] == 2 * 3 * 4
    assert plan(3, 5, 3, 33)["tiles"] == 3 and plan(3, 5, 3, 33)["words"] == 2
    assert plan(2, 200, 336, 0)["bytes"] == 0
    big = plan(2, 200, 336, 10**7)  # masks kept within the budget by larger tiles
    assert big["tile"] > 16 and big["tiles"] * big["words"] * 4 <= big["mask_budget"]
    whole = plan(10**6, 1000, 1000, 10**8)  # one tile per image, over the budget
    assert whole["tile"] == 1024 and whole["tiles"] == 10**6
    assert whole["bytes"] > whole["mask_budget"]
    assert plan(2**40, 2**15, 2**15, 2**62)["bytes"] == 2**63 - 1


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
                np.zeros((3, 2, 2, 2), np.int32), np.zeros((3, 5), np.float32),
                **{**attrs, "deterministic": True}))


def test_emulation_marker_registered(pytestconfig):
    assert any(line.startswith("emulation:") for line in pytestconfig.getini("markers"))


# ---------------------------------------------------------------------------------------
# the CPU's generic executor: the same plans on XLA's thread pool
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_generic_cpu_executor_is_the_serial_plan(op, mode, dtype, layout):
    """Targets `jax_roi_emu_<op>_on_pool` run each op's device plan through the executor that
    serves ops without a hand-tuned CPU kernel (cpu_executor.h): phases of 256-thread chunks
    on XLA's pool, on a call big enough to be split across its threads. Forward: the serial
    run's bits (argmax included). Backward: always the deterministic gather, the serial
    deterministic run's bits, whatever `deterministic` says."""
    rng = rng_for("on_pool", op, mode, layout)
    n, c, h, w = 2, 8, 40, 36
    attrs = _attrs(op, output_size=(3, 2), layout=layout, aligned=True, sampling_ratio=-1)
    x = jnp.asarray(random_features(rng, (n, c, h, w), dtype, layout))
    rois = np.concatenate([random_rois(rng, 60, n, h, w), np.asarray(EDGE_ROWS)])
    rois = rois.astype(compute_dtype(dtype))
    out, argmax = _fwd(EMU_PREFIX, op, mode, x, rois, attrs)
    pool_out, pool_argmax = _fwd(EMU_PREFIX, op, mode, x, rois, attrs, "_on_pool")
    np.testing.assert_array_equal(_bits(pool_out), _bits(out))
    if argmax is not None:
        np.testing.assert_array_equal(np.asarray(pool_argmax), np.asarray(argmax))
    g = jnp.asarray(rng.standard_normal(out.shape).astype(np.dtype(x.dtype)))
    serial = _bwd(EMU_PREFIX, op, mode, g, rois, argmax, x.shape, attrs, True)
    assert np.count_nonzero(as_f64(serial)) > 50
    for deterministic in (False, True):
        pooled = _bwd(EMU_PREFIX, op, mode, g, rois, argmax, x.shape, attrs, deterministic,
                      "_on_pool")
        np.testing.assert_array_equal(_bits(pooled), _bits(serial))

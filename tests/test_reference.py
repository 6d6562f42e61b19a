"""Tests of jax_roi/_reference/, the pure-JAX implementation of every roi kernel.

It is loaded by path (it needs nothing compiled), and checked against
* tests/oracle.py, the naive float64 NumPy transcription of shared/SEMANTICS.md;
* the NumPy models below, which evaluate the same formulas in the compute type (float32 for
  16/32-bit features, float64 for float64) in the kernels' evaluation order, with IEEE
  division and no fused multiply-add. max mode and roi_pool must match them bit for bit
  (values and argmax): that is what catches XLA rewriting ``x / n`` into ``x * (1/n)`` or
  contracting ``a * b + c`` into an FMA, which move grid counts, bin edges and winners.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
import sys
import time

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax import lax

jax.config.update("jax_enable_x64", True)

import oracle  # noqa: E402  (tests/ is on pythonpath)

# These pin the pure-JAX code to an IEEE float32 NumPy model bit for bit, which is what
# XLA:CPU compiles it to. XLA:GPU keeps neither IEEE division (an H100 gave a / 3 off by
# 1-2 ulps) nor separate roundings of multiply-adds; on a GPU the CUDA kernels run instead,
# so the model is checked on the CPU device.
pytestmark = pytest.mark.usefixtures("on_cpu")

_PATH = pathlib.Path(__file__).resolve().parent.parent / "jax_roi" / "_reference"


def _load_reference():
    """The package jax_roi/_reference from its folder, without importing jax_roi."""
    name = "jax_roi_reference_under_test"
    spec = importlib.util.spec_from_file_location(
        name, _PATH / "__init__.py", submodule_search_locations=[str(_PATH)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its modules import each other relatively
    spec.loader.exec_module(module)
    return module


ref = _load_reference()
common = ref.common  # exact arithmetic and chunk helpers

F16, BF16, F32, F64 = np.float16, jnp.bfloat16, np.float32, np.float64
NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def _compute(dtype):
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def _layout(channels_last):
    return "NHWC" if channels_last else "NCHW"


def _to_layout(x_nchw, channels_last):
    return np.ascontiguousarray(np.transpose(x_nchw, (0, 2, 3, 1))) if channels_last else x_nchw


def _from_layout(x, channels_last):
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))) if channels_last else x


@functools.lru_cache(maxsize=None)
def _jitted(name, **params):
    """jax.jit of a reference function with its static parameters bound (cached)."""
    fn = getattr(ref, name)
    if "feature_shape" in params:
        params["feature_shape"] = tuple(params["feature_shape"])
    return jax.jit(functools.partial(fn, **params))


def call(name, *args, **params):
    return _jitted(name, **params)(*args)


def align_params(output_size, spatial_scale, sampling_ratio, aligned, channels_last):
    ph, pw = output_size
    return dict(pooled_h=ph, pooled_w=pw, spatial_scale=spatial_scale,
                sampling_ratio=sampling_ratio, aligned=aligned, channels_last=channels_last)


def pool_params(output_size, spatial_scale, channels_last):
    ph, pw = output_size
    return dict(pooled_h=ph, pooled_w=pw, spatial_scale=spatial_scale,
                channels_last=channels_last)


def f64(x):
    return np.asarray(x).astype(np.float64)


def random_rois(rng, k, n_images, height, width, scale, dtype=np.float64):
    """Boxes in image coordinates: inside, partly off the map, sub-pixel, larger than the map;
    fractional batch indices (truncated by the op)."""
    hx, hy = width / scale, height / scale
    rows = []
    for i in range(k):
        kind = i % 4
        if kind == 0:
            x1, y1 = rng.uniform(0, 0.6) * hx, rng.uniform(0, 0.6) * hy
            x2, y2 = x1 + rng.uniform(0.1, 0.4) * hx, y1 + rng.uniform(0.1, 0.4) * hy
        elif kind == 1:
            x1, y1 = rng.uniform(-0.4, 0.8) * hx, rng.uniform(-0.4, 0.8) * hy
            x2, y2 = x1 + rng.uniform(0.2, 0.7) * hx, y1 + rng.uniform(0.2, 0.7) * hy
        elif kind == 2:
            x1, y1 = rng.uniform(0, 0.9) * hx, rng.uniform(0, 0.9) * hy
            x2, y2 = x1 + rng.uniform(-0.5, 2.0) / scale, y1 + rng.uniform(-0.5, 2.0) / scale
        else:
            x1, y1 = rng.uniform(-0.3, 0.1) * hx, rng.uniform(-0.3, 0.1) * hy
            x2, y2 = rng.uniform(0.9, 1.3) * hx, rng.uniform(0.9, 1.3) * hy
        rows.append((i % n_images + rng.uniform(0, 0.99), x1, y1, x2, y2))
    return np.asarray(rows, np.float64).reshape(-1, 5).astype(dtype)


INVALID_ROWS = [
    (NAN, 1, 1, 3, 3), (0, NAN, 1, 3, 3), (0, 1, NAN, 3, 3), (0, 1, 1, NAN, 3),
    (0, 1, 1, 3, NAN), (0, INF, 1, 3, 3), (0, 1, -INF, 3, 3), (INF, 1, 1, 3, 3),
    (-1, 1, 1, 3, 3), (-1.5, 1, 1, 3, 3), (2, 1, 1, 3, 3), (2.5, 1, 1, 3, 3),
    (1e30, 1, 1, 3, 3),
]


# ---------------------------------------------------------------------------------------
# NumPy models in the compute type (kernel evaluation order, IEEE division, no FMA)
# ---------------------------------------------------------------------------------------


def _np_valid(row, n_images):
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.isfinite(row)) and row[0] > -1 and row[0] < n_images)


def _np_align_axis(lo, hi, scale, aligned, pooled, sampling_ratio, A):
    off = A(0.5) if aligned else A(0)
    with np.errstate(over="ignore", invalid="ignore"):
        start = A(lo) * scale - off
        end = A(hi) * scale - off
        extent = end - start
        if not aligned and not extent >= A(1):
            extent = A(1)
        bin_ = extent / A(pooled)
    if sampling_ratio > 0:
        grid = min(int(sampling_ratio), 32768)
    else:
        g = np.ceil(bin_)
        grid = 32768 if g >= 32768 else (int(g) if g > 0 else 0)
    return start, bin_, grid, bool(np.isfinite(start) and np.isfinite(bin_))


def _np_coords(start, bin_, grid, p, A):
    """Every sample coordinate of bin p: (start + p*bin) + ((i + 0.5)*bin)/grid."""
    i = np.arange(grid).astype(A)
    with np.errstate(over="ignore", invalid="ignore"):
        return (start + A(p) * bin_) + ((i + A(0.5)) * bin_) / A(grid)


def _np_lerp(y, size, A):
    if y <= 0:
        y = A(0)
    lo = int(y)
    if lo >= size - 1:
        lo = hi = size - 1
        y = A(lo)
    else:
        hi = lo + 1
    l = y - A(lo)
    return lo, hi, A(1) - l, l


def np_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned, mode,
                 channels_last=False):
    """(out, argmax) of roi_align in the compute type; argmax only meaningful for max.

    Visits every sample on the map in grid order (they are found with a vectorised test over
    the whole grid, so huge capped grids are fine) and, in max mode, the first sample off the
    map (value 0) at its place in that order: later off-map zeros can never win.
    """
    feats = _from_layout(np.asarray(features), channels_last)
    A = _compute(feats.dtype)
    f = feats.astype(A)
    n_img, chans, height, width = f.shape
    ph_n, pw_n = output_size
    r_all = np.asarray(rois).astype(A)
    k_n = r_all.shape[0]
    s = A(spatial_scale)
    out = np.zeros((k_n, chans, ph_n, pw_n), A)
    arg = np.full((k_n, chans, ph_n, pw_n), -1, np.int64)
    for k in range(k_n):
        r = r_all[k]
        if not _np_valid(r, n_img):
            continue
        img = f[int(r[0])]
        xs, xb, gw, xok = _np_align_axis(r[1], r[3], s, aligned, pw_n, sampling_ratio, A)
        ys, yb, gh, yok = _np_align_axis(r[2], r[4], s, aligned, ph_n, sampling_ratio, A)
        if not (xok and yok):
            continue
        for p in range(ph_n):
            yc = _np_coords(ys, yb, gh, p, A)
            in_y = (yc >= -1) & (yc <= height)
            for q in range(pw_n):
                xc = _np_coords(xs, xb, gw, q, A)
                in_x = (xc >= -1) & (xc <= width)
                rows, cols = np.nonzero(in_y)[0], np.nonzero(in_x)[0]
                # grid index of the first sample off the map, if any
                first_out = None
                if gh * gw > 0:
                    cands = []
                    bad_rows = np.nonzero(~in_y)[0]
                    if bad_rows.size:
                        cands.append(int(bad_rows[0]) * gw)
                    bad_cols = np.nonzero(~in_x)[0]
                    if bad_cols.size and rows.size:
                        cands.append(int(rows[0]) * gw + int(bad_cols[0]))
                    first_out = min(cands) if cands else None
                events = []
                for iy in rows:
                    ty = _np_lerp(yc[iy], height, A)
                    for ix in cols:
                        tx = _np_lerp(xc[ix], width, A)
                        events.append((int(iy) * gw + int(ix), ty, tx))
                if mode == "avg":
                    acc = np.zeros(chans, A)
                    for _, (yl, yh, hy, ly), (xl, xh, hx, lx) in events:
                        acc = acc + ((((hy * hx) * img[:, yl, xl] + (hy * lx) * img[:, yl, xh])
                                      + (ly * hx) * img[:, yh, xl]) + (ly * lx) * img[:, yh, xh])
                    out[k, :, p, q] = acc / A(max(gh * gw, 1))
                    continue
                if first_out is not None:
                    events.append((first_out, None, None))
                    events.sort(key=lambda e: e[0])
                best = np.zeros(chans, A)
                idx = np.full(chans, -1, np.int64)
                on_map = np.zeros(chans, bool)
                for j, (index, ty, tx) in enumerate(events):
                    if ty is None:
                        val = np.zeros(chans, A)
                    else:
                        (yl, yh, hy, ly), (xl, xh, hx, lx) = ty, tx
                        val = ((((hy * hx) * img[:, yl, xl] + (hy * lx) * img[:, yl, xh])
                                + (ly * hx) * img[:, yh, xl]) + (ly * lx) * img[:, yh, xh])
                    take = (j == 0) | (val > best)
                    best = np.where(take, val, best)
                    idx = np.where(take, index, idx)
                    on_map = np.where(take, ty is not None, on_map)
                out[k, :, p, q] = best
                arg[k, :, p, q] = np.where(on_map, idx, -1)
    out = out.astype(feats.dtype)
    return _to_layout(out, channels_last), _to_layout(arg, channels_last)


def _np_round_away(v, A):
    a = abs(v)
    fl = np.floor(a)
    r = fl + A(1) if a - fl >= A(0.5) else fl
    return -r if v < 0 else r


def _np_pixel(v, size):
    if not v > 0:
        return 0
    if v >= size:
        return size
    return int(v)


def np_roi_pool(features, rois, output_size, spatial_scale, channels_last=False):
    """(out, argmax) of roi_pool with the geometry in the compute type."""
    feats = _from_layout(np.asarray(features), channels_last)
    A = _compute(feats.dtype)
    f = feats.astype(A)
    n_img, chans, height, width = f.shape
    ph_n, pw_n = output_size
    r_all = np.asarray(rois).astype(A)
    s = A(spatial_scale)
    out = np.zeros((r_all.shape[0], chans, ph_n, pw_n), A)
    arg = np.full(out.shape, -1, np.int64)

    def axis(lo, hi, pooled, size):
        with np.errstate(over="ignore", invalid="ignore"):
            st = _np_round_away(A(lo) * s, A)
            en = _np_round_away(A(hi) * s, A)
            ext = en - st + A(1)
            if not ext >= A(1):
                ext = A(1)
            b = ext / A(pooled)
            ok = bool(np.isfinite(st) and np.isfinite(b))
            edges = [(_np_pixel(np.floor(A(p) * b) + st, size),
                      _np_pixel(np.ceil(A(p + 1) * b) + st, size)) for p in range(pooled)]
        return edges, ok

    for k in range(r_all.shape[0]):
        r = r_all[k]
        if not _np_valid(r, n_img):
            continue
        ex, xok = axis(r[1], r[3], pw_n, width)
        ey, yok = axis(r[2], r[4], ph_n, height)
        if not (xok and yok):
            continue
        img = f[int(r[0])]
        for p, (h0, h1) in enumerate(ey):
            for q, (w0, w1) in enumerate(ex):
                first = True
                best = np.zeros(chans, A)
                idx = np.full(chans, -1, np.int64)
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        v = img[:, h, w]
                        take = first | (v > best)
                        best = np.where(take, v, best)
                        idx = np.where(take, h * width + w, idx)
                        first = False
                out[k, :, p, q] = best
                arg[k, :, p, q] = idx
    return _to_layout(out.astype(feats.dtype), channels_last), _to_layout(arg, channels_last)


def assert_same(actual, expected, what=""):
    """Bit-for-bit equality (NaN == NaN, -0 == +0)."""
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    np.testing.assert_array_equal(a, e, err_msg=what)


def assert_close(actual, expected, dtype, what="", factor=1.0):
    dt = np.dtype(dtype)
    t = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 5e-6, np.dtype(np.float16): 4e-3}
    tol = t.get(dt, 2e-2) * factor  # bfloat16 otherwise
    a, e = f64(actual), f64(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    scale = max(1.0, float(np.max(np.abs(e), initial=0.0)))
    np.testing.assert_allclose(a, e, rtol=0, atol=tol * scale, err_msg=what)


# ---------------------------------------------------------------------------------------
# 1. exact arithmetic under XLA
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_div_is_ieee_division(dtype):
    """_div(a, n) == a / n bit for bit, where XLA would rewrite a plain a / n."""
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(20000) * 10.0 ** rng.integers(-3, 6, 20000)).astype(dtype)
    m = np.arange(1, 20001).astype(dtype)
    for d in (3, 5, 7, 49, 1000):
        got = jax.jit(lambda v: common.exact_div(v, dtype(d)))(a)
        assert_same(got, a / dtype(d), f"random / {d}")
        got = jax.jit(lambda v: jnp.ceil(common.exact_div(v, dtype(d))))(m * dtype(d))
        assert_same(got, m, f"ceil(m*{d} / {d})")
    # inside a loop and under vmap too
    loop = jax.jit(lambda v: lax.fori_loop(
        0, 3, lambda i, x: common.exact_div(x * dtype(7), dtype(7)), v))
    expect = a
    for _ in range(3):
        expect = (expect * dtype(7)) / dtype(7)
    assert_same(loop(a), expect, "in fori_loop")
    vm = jax.jit(jax.vmap(lambda v, d: common.exact_div(v, d)))(a.reshape(100, -1), m[:100])
    assert_same(vm, a.reshape(100, -1) / m[:100, None], "vmap")


def test_the_division_trap_is_real():
    """Guard on the test above: plain jnp division by a constant is NOT exact under jit here
    (if XLA ever stops rewriting, this documents it; the library does not rely on it)."""
    m = np.arange(1, 5000, dtype=np.float32)
    plain = np.asarray(jax.jit(lambda v: jnp.ceil(v / np.float32(7)))(m * np.float32(7)))
    exact = np.asarray(jax.jit(lambda v: jnp.ceil(common.exact_div(v, np.float32(7))))(
        m * np.float32(7)))
    assert np.array_equal(exact, m)
    if np.array_equal(plain, m):
        pytest.skip("XLA no longer rewrites x / 7 into x * (1/7) on this platform")


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_unfused_product_is_rounded_alone(dtype):
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(50000).astype(dtype) for _ in range(3))
    got = jax.jit(lambda a, b, c: common.unfused(a * b) + c)(a, b, c)
    assert_same(got, a * b + c, "a*b + c")
    special = np.array([NAN, INF, -INF, 0.0, -0.0, 1.0], dtype)
    assert_same(jax.jit(common.unfused)(special), special, "values pass unchanged")


def test_round_half_away_from_zero():
    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -0.49999997, 2.4999998,
                  1e30, -3.0, 0.0], np.float32)
    expect = np.array([1, 2, 3, -1, -2, -3, 0, 0, 2, 1e30, -3, 0], np.float32)
    assert_same(jax.jit(common.round_half_away)(v), expect)


def _geometry(rois, n_img, height, width, out, scale, sr, aligned):
    A = _compute(rois.dtype)
    fn = jax.jit(lambda r: ref.roi_align._align_geometry(r, n_img, height, width, out[0], out[1], scale,
                                                sr, aligned, A))
    return jax.tree_util.tree_map(np.asarray, fn(jnp.asarray(rois)))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sr", [-1, 2])
def test_align_geometry_matches_numpy_float32(aligned, sr):
    """Bin sizes, grid counts and on-map runs equal the float32 NumPy evaluation exactly,
    including extents that are exact multiples of the bin count (where x * (1/7) rounds up
    and would add a sample)."""
    rng = np.random.default_rng(2)
    height, width, out, scale = 40, 56, (7, 7), 0.25
    k = 400
    rois = random_rois(rng, k, 1, height, width, scale, np.float32)
    # extent == 7*m exactly (in feature pixels): adaptive grid must be m.
    m = rng.integers(1, 40, k // 2).astype(np.float32)
    x1 = rng.integers(-20, 200, k // 2).astype(np.float32)
    off = np.float32(2.0) if aligned else np.float32(0)  # 0.5 / scale
    rois[: k // 2, 1] = x1 + off
    rois[: k // 2, 3] = x1 + off + m * np.float32(7) / np.float32(scale)
    n, ok, ay, ax = _geometry(rois, 1, height, width, out, scale, sr, aligned)
    s = np.float32(scale)
    for i in range(k):
        for axis, lo, hi, pooled, size in ((ax, 1, 3, out[1], width), (ay, 2, 4, out[0], height)):
            st, b, g, aok = _np_align_axis(rois[i, lo], rois[i, hi], s, aligned, pooled, sr,
                                           np.float32)
            assert ok[i] == aok
            assert axis.bin[i] == b and axis.grid[i] == g, (i, axis.bin[i], b, axis.grid[i], g)
            for p in range(pooled):
                c = _np_coords(st, b, g, p, np.float32)
                assert axis.base[i, p] == st + np.float32(p) * b
                inside = np.nonzero((c >= -1) & (c <= size))[0]
                lo_i, hi_i = (inside[0], inside[-1] + 1) if inside.size else (None, None)
                if inside.size:
                    assert hi_i - lo_i == inside.size  # one contiguous run
                    assert (axis.lo[i, p], axis.hi[i, p]) == (lo_i, hi_i), (i, p)
                else:
                    assert axis.lo[i, p] >= axis.hi[i, p]
    if sr < 0:
        assert np.array_equal(ax.grid[: k // 2], m.astype(np.int32))


# ---------------------------------------------------------------------------------------
# 2. bit-exact max mode / roi_pool and tight avg against the compute-type NumPy models
# ---------------------------------------------------------------------------------------

MODEL_CASES = [
    # output_size, spatial_scale, sampling_ratio, aligned, channels_last
    ((3, 4), 0.25, -1, True, False),
    ((7, 7), 0.25, 2, False, True),
    ((2, 5), 1.0, 0, False, False),
    ((4, 3), 0.0625, 4, True, True),
    ((7, 3), 0.5, 1, True, False),
]


def _model_data(rng, dtype, channels_last, scale, n_img=2, chans=4, height=13, width=17, k=20):
    feats = rng.standard_normal((n_img, chans, height, width))
    feats = _to_layout(feats, channels_last).astype(dtype)
    rois = random_rois(rng, k, n_img, height, width, scale, _compute(dtype))
    # a few extents that are exact multiples of the bin counts
    rois[:4, 3] = rois[:4, 1] + np.float32(21.0) / np.float32(scale)
    rois[:4, 4] = rois[:4, 2] + np.float32(12.0) / np.float32(scale)
    return feats, rois


MAX_MODEL = [(c, F32) for c in MODEL_CASES] + [(MODEL_CASES[0], F64), (MODEL_CASES[3], F64),
                                                 (MODEL_CASES[1], F16), (MODEL_CASES[4], BF16)]


@pytest.mark.parametrize("case,dtype", MAX_MODEL,
                         ids=[f"{i}-{np.dtype(d).name}" for i, (_, d) in enumerate(MAX_MODEL)])
def test_align_max_bit_exact(case, dtype):
    out_size, scale, sr, aligned, cl = case
    feats, rois = _model_data(np.random.default_rng(3), dtype, cl, scale)
    prm = align_params(out_size, scale, sr, aligned, cl)
    out, arg = call("roi_align_max_fwd", jnp.asarray(feats), jnp.asarray(rois), **prm)
    e_out, e_arg = np_roi_align(feats, rois, out_size, scale, sr, aligned, "max", cl)
    assert out.dtype == feats.dtype and arg.dtype == np.int32
    assert_same(out, e_out, "values")
    assert_same(arg, e_arg, "argmax")
    # gather at the recorded winners reproduces the output exactly
    got = call("roi_align_max_gather", jnp.asarray(feats), jnp.asarray(rois), arg, **prm)
    assert_same(got, np.where(np.asarray(arg) >= 0, out, 0), "gather")


AVG_MODEL = [(c, F32) for c in MODEL_CASES] + [(MODEL_CASES[1], BF16), (MODEL_CASES[4], BF16)]


@pytest.mark.parametrize("case,dtype", AVG_MODEL,
                         ids=[f"{i}-{np.dtype(d).name}" for i, (_, d) in enumerate(AVG_MODEL)])
def test_align_avg_matches_model(case, dtype):
    """Grid counts and sample positions are exact, so only summation order differs."""
    out_size, scale, sr, aligned, cl = case
    feats, rois = _model_data(np.random.default_rng(4), dtype, cl, scale)
    prm = align_params(out_size, scale, sr, aligned, cl)
    out = call("roi_align_avg_fwd", jnp.asarray(feats), jnp.asarray(rois), **prm)
    e_out, _ = np_roi_align(feats, rois, out_size, scale, sr, aligned, "avg", cl)
    assert out.dtype == feats.dtype
    if np.dtype(dtype) == np.float32:
        assert_close(out, e_out, F32, "avg f32", factor=0.1)
    else:  # one rounding to bfloat16 each: at most one bf16 ulp apart
        a, e = f64(out), f64(e_out)
        assert np.all(np.abs(a - e) <= 2.0**-7 * np.maximum(np.abs(e), 1e-30) + 1e-30)


POOL_MODEL = [((7, 7), 0.25, False, F32), ((3, 5), 1.0, True, F32), ((2, 6), 0.0625, False, F32),
              ((7, 7), 0.25, True, F16), ((3, 5), 0.5, False, F64)]


@pytest.mark.parametrize("out_size,scale,cl,dtype", POOL_MODEL,
                         ids=[str(i) for i in range(len(POOL_MODEL))])
def test_pool_bit_exact(out_size, scale, cl, dtype):
    rng = np.random.default_rng(5)
    feats, rois = _model_data(rng, dtype, cl, scale)
    # widths that are exact multiples of the bin count: x * (1/7) would move bin edges
    w = rng.integers(1, 6, rois.shape[0]).astype(rois.dtype)
    rois[::2, 3] = rois[::2, 1] + (w[::2] * out_size[1] - 1) / rois.dtype.type(scale)
    prm = pool_params(out_size, scale, cl)
    out, arg = call("roi_pool_fwd", jnp.asarray(feats), jnp.asarray(rois), **prm)
    e_out, e_arg = np_roi_pool(feats, rois, out_size, scale, cl)
    assert out.dtype == feats.dtype and arg.dtype == np.int32
    assert_same(out, e_out, "values")
    assert_same(arg, e_arg, "argmax")
    got = call("roi_pool_gather", jnp.asarray(feats), jnp.asarray(rois), arg, **prm)
    assert_same(got, out, "gather")


def test_max_modes_with_nan_and_inf_features():
    """A NaN first candidate sticks, later NaNs never win; +-inf compete normally."""
    rng = np.random.default_rng(6)
    feats = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    feats[0, 0, 2:4, 2:4] = NAN
    feats[0, 1, 5, 5] = INF
    feats[0, 2, ::2, ::3] = -INF
    rois = np.array([[0, 1, 1, 6, 6], [0, 2, 2, 3, 3], [0, 0, 0, 8, 8], [0, 2.2, 1.7, 5.1, 7]],
                    np.float32)
    prm = align_params((2, 3), 1.0, 2, False, False)
    with np.errstate(invalid="ignore"):
        e_out, e_arg = np_roi_align(feats, rois, (2, 3), 1.0, 2, False, "max")
    out, arg = call("roi_align_max_fwd", feats, rois, **prm)
    assert_same(out, e_out)
    assert_same(arg, e_arg)
    e_out, e_arg = np_roi_pool(feats, rois, (2, 3), 1.0)
    out, arg = call("roi_pool_fwd", feats, rois, **pool_params((2, 3), 1.0, False))
    assert_same(out, e_out)
    assert_same(arg, e_arg)


# ---------------------------------------------------------------------------------------
# 3. against the float64 oracle: forward and gradients
# ---------------------------------------------------------------------------------------

ORACLE_CASES = [
    # output_size, spatial_scale, sampling_ratio, aligned (layouts alternate)
    ((3, 4), 1.0, -1, False),
    ((3, 4), 0.25, 0, True),
    ((2, 5), 0.0625, 1, False),
    ((2, 5), 1.0, 2, True),
    ((4, 2), 0.25, 4, False),
    ((5, 3), 0.0625, -1, True),
]


def _oracle_data(rng, scale, channels_last, n_img=2, chans=3, height=9, width=11, k=10):
    feats = _to_layout(rng.standard_normal((n_img, chans, height, width)), channels_last)
    rois = random_rois(rng, k, n_img, height, width, scale)
    rois = np.concatenate([rois, np.asarray(INVALID_ROWS[:4] + INVALID_ROWS[8:11], float)])
    rng.shuffle(rois)
    return feats, rois


@pytest.mark.parametrize("case", ORACLE_CASES, ids=[str(i) for i in range(len(ORACLE_CASES))])
def test_roi_align_vs_oracle_f64(case):
    out_size, scale, sr, aligned = case
    cl = ORACLE_CASES.index(case) % 2 == 1  # both layouts, alternately
    rng = np.random.default_rng(7)
    feats, rois = _oracle_data(rng, scale, cl)
    layout = _layout(cl)
    prm = align_params(out_size, scale, sr, aligned, cl)
    k, c = rois.shape[0], 3
    gshape = (k, out_size[0], out_size[1], c) if cl else (k, c) + out_size
    g = rng.standard_normal(gshape)
    f, r = jnp.asarray(feats), jnp.asarray(rois)

    out = call("roi_align_avg_fwd", f, r, **prm)
    e = oracle.roi_align(feats, rois, out_size, scale, sr, aligned, "avg", layout)
    assert_close(out, e, F64, "avg fwd")
    grad = call("roi_align_avg_bwd", jnp.asarray(g), r, feature_shape=feats.shape, **prm)
    e = oracle.roi_align_grad(feats, rois, g, out_size, scale, sr, aligned, "avg", layout)
    assert_close(grad, e, F64, "avg bwd")

    out, arg = call("roi_align_max_fwd", f, r, **prm)
    e = oracle.roi_align(feats, rois, out_size, scale, sr, aligned, "max", layout)
    assert_close(out, e, F64, "max fwd")
    grad = call("roi_align_max_bwd", jnp.asarray(g), r, arg, feature_shape=feats.shape, **prm)
    e = oracle.roi_align_grad(feats, rois, g, out_size, scale, sr, aligned, "max", layout)
    assert_close(grad, e, F64, "max bwd")
    assert np.all(np.asarray(out)[np.asarray(arg) < 0] == 0)


@pytest.mark.parametrize("out_size,scale,cl", [((3, 4), 1.0, False), ((2, 5), 0.25, True),
                                               ((7, 7), 0.0625, False), ((1, 2), 0.5, True)])
def test_roi_pool_vs_oracle_f64(out_size, scale, cl):
    rng = np.random.default_rng(8)
    feats, rois = _oracle_data(rng, scale, cl)
    layout = _layout(cl)
    prm = pool_params(out_size, scale, cl)
    out, arg = call("roi_pool_fwd", jnp.asarray(feats), jnp.asarray(rois), **prm)
    e_out, e_arg = oracle.roi_pool(feats, rois, out_size, scale, layout)
    assert_same(out, e_out, "pool values")
    assert_same(arg, e_arg, "pool argmax")
    g = rng.standard_normal(out.shape)
    grad = call("roi_pool_bwd", jnp.asarray(g), jnp.asarray(rois), arg,
                feature_shape=feats.shape, **prm)
    assert_close(grad, oracle.roi_pool_grad(feats, rois, g, out_size, scale, layout), F64)


@pytest.mark.parametrize("dtype", [F32, F16, BF16], ids=["f32", "f16", "bf16"])
def test_low_precision_vs_oracle(dtype):
    """16/32-bit features: computed in float32, rounded once; grads in the grad's dtype."""
    rng = np.random.default_rng(9)
    cl = np.dtype(dtype) != np.float32
    feats, rois = _oracle_data(rng, 0.5, cl)
    feats = feats.astype(dtype)
    rois32 = rois.astype(np.float32)
    layout = _layout(cl)
    fo = f64(feats)
    for sr, aligned, mode in ((2, True, "avg"), (-1, False, "avg"), (1, False, "max")):
        prm = align_params((3, 4), 0.5, sr, aligned, cl)
        if mode == "avg":
            out = call("roi_align_avg_fwd", jnp.asarray(feats), rois32, **prm)
        else:
            out, _ = call("roi_align_max_fwd", jnp.asarray(feats), rois32, **prm)
        assert out.dtype == feats.dtype
        e = oracle.roi_align(fo, f64(rois32), (3, 4), 0.5, sr, aligned, mode, layout)
        assert_close(out, e, dtype, f"{mode} sr={sr}", factor=4.0)
    prm = align_params((3, 4), 0.5, 2, True, cl)
    g = rng.standard_normal((rois.shape[0], 3, 4, 3) if cl else (rois.shape[0], 3, 3, 4))
    g = g.astype(dtype)
    grad = call("roi_align_avg_bwd", jnp.asarray(g), rois32, feature_shape=feats.shape, **prm)
    assert grad.dtype == g.dtype
    e = oracle.roi_align_grad(fo, f64(rois32), f64(g), (3, 4), 0.5, 2, True, "avg", layout)
    assert_close(grad, e, dtype, "avg bwd", factor=4.0)


def test_golden_cases():
    import golden_cases

    for case in golden_cases.GOLDEN:
        kw = dict(case["kwargs"])
        size = kw.pop("output_size")
        size = (size, size) if isinstance(size, int) else tuple(size)
        feats = np.asarray(case["features"], np.float64)
        rois = np.asarray(case["rois"], np.float64).reshape(-1, 5)
        f, r = jnp.asarray(feats), jnp.asarray(rois)
        g = case.get("grad_out")
        if case["op"] == "roi_pool":
            prm = pool_params(size, kw["spatial_scale"], False)
            out, arg = call("roi_pool_fwd", f, r, **prm)
            assert_same(arg, case["expected_argmax"], case["name"])
            if g is not None:
                grad = call("roi_pool_bwd", jnp.asarray(g, jnp.float64), r, arg,
                            feature_shape=feats.shape, **prm)
        else:
            mode = kw.pop("mode")
            prm = align_params(size, kw["spatial_scale"], kw["sampling_ratio"], kw["aligned"],
                               False)
            if mode == "avg":
                out = call("roi_align_avg_fwd", f, r, **prm)
                if g is not None:
                    grad = call("roi_align_avg_bwd", jnp.asarray(g, jnp.float64), r,
                                feature_shape=feats.shape, **prm)
            else:
                out, arg = call("roi_align_max_fwd", f, r, **prm)
                if g is not None:
                    grad = call("roi_align_max_bwd", jnp.asarray(g, jnp.float64), r, arg,
                                feature_shape=feats.shape, **prm)
        assert_close(out, case["expected"], F64, case["name"])
        if g is not None:
            assert_close(grad, case["expected_grad"], F64, case["name"] + " grad")


# ---------------------------------------------------------------------------------------
# 4. invalid rows, huge boxes, K = 0
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,aligned", [(F32, False), (F64, True)], ids=["f32", "f64"])
def test_invalid_rows_give_zeros_and_no_gradient(dtype, aligned):
    """Invalid rows (and rows whose geometry overflows) output 0 / argmax -1 and scatter
    nothing; the valid rows around them are unaffected."""
    rng = np.random.default_rng(10)
    feats = rng.standard_normal((2, 3, 6, 7)).astype(dtype)
    A = _compute(dtype)
    big = np.finfo(A).max
    bad = np.concatenate([np.asarray(INVALID_ROWS, A),
                          np.array([[0, -big, 0, big, 3], [0, 0, -big, 3, big]], A)])
    good = np.array([[0, 0.5, 0.5, 4.5, 5.0], [1.7, 1, 2, 6, 5], [-0.5, 2, 1, 5, 5]], A)
    rois = np.concatenate([bad[:5], good[:1], bad[5:10], good[1:], bad[10:]])
    is_good = np.zeros(rois.shape[0], bool)
    is_good[[5, 11, 12]] = True
    # the same rows with every invalid one replaced by a valid box: same shapes, same compiles
    fixed = rois.copy()
    fixed[~is_good] = good[0]
    prm = align_params((2, 3), 1.0, -1, aligned, False)
    pp = pool_params((2, 3), 1.0, False)
    g = rng.standard_normal((rois.shape[0], 3, 2, 3)).astype(dtype)
    g_good = np.where(is_good[:, None, None, None], g, 0).astype(dtype)
    fs = feats.shape

    out = np.asarray(call("roi_align_avg_fwd", feats, rois, **prm))
    assert np.all(out[~is_good] == 0) and np.all(np.isfinite(out))
    assert_same(out[is_good], np.asarray(call("roi_align_avg_fwd", feats, fixed, **prm))[is_good])
    assert_close(call("roi_align_avg_bwd", g, rois, feature_shape=fs, **prm),
                 call("roi_align_avg_bwd", g_good, fixed, feature_shape=fs, **prm), dtype)

    for name, p in (("roi_align_max_fwd", prm), ("roi_pool_fwd", pp)):
        bwd = name.replace("fwd", "bwd")
        out, arg = (np.asarray(x) for x in call(name, feats, rois, **p))
        assert np.all(out[~is_good] == 0) and np.all(arg[~is_good] == -1)
        f_out, f_arg = (np.asarray(x) for x in call(name, feats, fixed, **p))
        assert_same(out[is_good], f_out[is_good])
        assert_same(arg[is_good], f_arg[is_good])
        assert_close(call(bwd, g, rois, arg, feature_shape=fs, **p),
                     call(bwd, g_good, fixed, f_arg, feature_shape=fs, **p), dtype)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("sr,aligned", [(-1, False), (-1, True), (2, True), (32768, False)])
def test_huge_boxes_are_fast_and_exact(sr, aligned, dtype):
    """Boxes of 1e9 (and 1e30) pixels: capped grids of up to 32768^2 samples per bin cost only
    their samples on the map, and agree with the NumPy model over the whole grid."""
    rng = np.random.default_rng(11)
    feats = rng.standard_normal((1, 2, 12, 10)).astype(dtype)
    rois = np.array([
        [0, -1e9, -1e9, 1e9, 1e9],
        [0, -1e9, 2.0, 1e9, 7.5],
        [0, 3.0, -5e8, 6.0, 5e8],
        [0, -1e30, -1e30, 1e30, 1e30],
        [0, 1.0, 1.0, 1e9, 1e9],
        [0, -1e9, -1e9, 8.0, 9.0],
    ], dtype)
    if sr > 1000:  # a fixed huge grid: narrow axes would really have 32768 samples on the map
        rois = rois[[0, 3, 4, 5]]
    out_size = (3, 2)
    prm = align_params(out_size, 1.0, sr, aligned, False)
    fns = [("roi_align_avg_fwd", "avg"), ("roi_align_max_fwd", "max")]
    for name, mode in fns:
        call(name, feats, rois, **prm)  # compile
        t0 = time.perf_counter()
        res = jax.block_until_ready(call(name, feats, rois, **prm))
        assert time.perf_counter() - t0 < 2.0, "huge boxes must not iterate over their grids"
        e_out, e_arg = np_roi_align(feats, rois, out_size, 1.0, sr, aligned, mode)
        if mode == "max":
            assert_same(res[0], e_out, "max values")
            assert_same(res[1], e_arg, "max argmax")
        else:
            assert_close(res, e_out, dtype, "avg", factor=0.1)
    out, arg = call("roi_pool_fwd", feats, rois, **pool_params(out_size, 1.0, False))
    e_out, e_arg = np_roi_pool(feats, rois, out_size, 1.0)
    assert_same(out, e_out)
    assert_same(arg, e_arg)


@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
def test_k0(cl):
    feats = np.ones(_to_layout(np.ones((2, 3, 5, 6)), cl).shape, np.float32)
    rois = np.zeros((0, 5), np.float32)
    prm = align_params((2, 3), 0.5, 2, True, cl)
    shape = (0, 2, 3, 3) if cl else (0, 3, 2, 3)
    out = call("roi_align_avg_fwd", feats, rois, **prm)
    assert out.shape == shape and out.dtype == np.float32
    out, arg = call("roi_align_max_fwd", feats, rois, **prm)
    assert out.shape == shape and arg.shape == shape and arg.dtype == np.int32
    g = np.zeros(shape, np.float32)
    a = np.zeros(shape, np.int32)
    for grad in (call("roi_align_avg_bwd", g, rois, feature_shape=feats.shape, **prm),
                 call("roi_align_max_bwd", g, rois, a, feature_shape=feats.shape, **prm),
                 call("roi_pool_bwd", g, rois, a, feature_shape=feats.shape,
                      **pool_params((2, 3), 0.5, cl))):
        assert grad.shape == feats.shape and not np.any(np.asarray(grad))
    assert call("roi_align_max_gather", feats, rois, a, **prm).shape == shape
    out, arg = call("roi_pool_fwd", feats, rois, **pool_params((2, 3), 0.5, cl))
    assert out.shape == shape and arg.shape == shape
    assert call("roi_pool_gather", feats, rois, a, **pool_params((2, 3), 0.5, cl)).shape == shape


# ---------------------------------------------------------------------------------------
# 5. linear algebra: transposes
# ---------------------------------------------------------------------------------------


def test_backwards_are_transposes():
    """<fwd(F), G> == <F, bwd(G)> for avg; <bwd(G; argmax), F> == <G, gather(F; argmax)>."""
    rng = np.random.default_rng(12)
    for cl in (True,):  # (layouts are compared elsewhere; compiles are the cost here)
        feats, rois = _oracle_data(rng, 0.5, cl)
        prm = align_params((3, 2), 0.5, -1, True, cl)
        out = np.asarray(call("roi_align_avg_fwd", feats, rois, **prm))
        g = rng.standard_normal(out.shape)
        back = np.asarray(call("roi_align_avg_bwd", g, rois, feature_shape=feats.shape, **prm))
        np.testing.assert_allclose(np.vdot(out, g), np.vdot(feats, back), rtol=1e-12)

        out, arg = call("roi_align_max_fwd", feats, rois, **prm)
        other = rng.standard_normal(feats.shape)
        back = np.asarray(call("roi_align_max_bwd", g, rois, arg, feature_shape=feats.shape,
                               **prm))
        gath = np.asarray(call("roi_align_max_gather", other, rois, arg, **prm))
        np.testing.assert_allclose(np.vdot(back, other), np.vdot(g, gath), rtol=1e-12)

        pp = pool_params((3, 2), 0.5, cl)
        out, arg = call("roi_pool_fwd", feats, rois, **pp)
        back = np.asarray(call("roi_pool_bwd", g, rois, arg, feature_shape=feats.shape, **pp))
        gath = np.asarray(call("roi_pool_gather", other, rois, arg, **pp))
        np.testing.assert_allclose(np.vdot(back, other), np.vdot(g, gath), rtol=1e-12)


def test_arbitrary_argmax_is_safe():
    """Out-of-range recorded indices are ignored, never read or written out of bounds."""
    rng = np.random.default_rng(13)
    feats = rng.standard_normal((1, 2, 5, 5))
    rois = np.array([[0, 0, 0, 4, 4], [0, 1, 1, 3, 3]], float)
    arg = np.array([-7, -1, 0, 3, 4, 24, 25, 10**6, 2**31 - 1] * 2, np.int32)[:16]
    arg = arg.reshape(2, 2, 2, 2)
    g = np.ones(arg.shape)
    prm = align_params((2, 2), 1.0, 2, False, False)
    back = np.asarray(call("roi_align_max_bwd", g, rois, arg, feature_shape=feats.shape, **prm))
    gath = np.asarray(call("roi_align_max_gather", feats, rois, arg, **prm))
    ok = (arg >= 0) & (arg < 4)
    assert np.all(gath[~ok] == 0) and np.isfinite(back).all()
    pp = pool_params((2, 2), 1.0, False)
    back = np.asarray(call("roi_pool_bwd", g, rois, arg, feature_shape=feats.shape, **pp))
    gath = np.asarray(call("roi_pool_gather", feats, rois, arg, **pp))
    ok = (arg >= 0) & (arg < 25)
    assert np.all(gath[~ok] == 0) and np.all(gath[ok] != 0)
    assert back.sum() == ok.sum()


# ---------------------------------------------------------------------------------------
# 6. tracing: jit with abstract shapes, vmap, chunking
# ---------------------------------------------------------------------------------------


def _all_calls(n_img, height, width, chans, k, cl, dtype=np.float32):
    fshape = (n_img, height, width, chans) if cl else (n_img, chans, height, width)
    pshape = (k, 2, 3, chans) if cl else (k, chans, 2, 3)
    A = _compute(dtype)
    a_prm = align_params((2, 3), 0.25, -1, True, cl)
    p_prm = pool_params((2, 3), 0.25, cl)
    F = jax.ShapeDtypeStruct(fshape, dtype)
    R = jax.ShapeDtypeStruct((k, 5), A)
    G = jax.ShapeDtypeStruct(pshape, dtype)
    I = jax.ShapeDtypeStruct(pshape, np.int32)
    return [
        ("roi_align_avg_fwd", (F, R), a_prm),
        ("roi_align_avg_bwd", (G, R), dict(a_prm, feature_shape=fshape)),
        ("roi_align_max_fwd", (F, R), a_prm),
        ("roi_align_max_bwd", (G, R, I), dict(a_prm, feature_shape=fshape)),
        ("roi_align_max_gather", (F, R, I), a_prm),
        ("roi_pool_fwd", (F, R), p_prm),
        ("roi_pool_bwd", (G, R, I), dict(p_prm, feature_shape=fshape)),
        ("roi_pool_gather", (F, R, I), p_prm),
    ]


@pytest.mark.parametrize("dtype", [F32, F64, F16, BF16], ids=["f32", "f64", "f16", "bf16"])
def test_traces_with_abstract_shapes(dtype):
    """Every function traces from shapes alone (as mlir.lower_fun does) with the right avals."""
    for cl in (False, True):
        for name, args, prm in _all_calls(2, 16, 12, 5, 7, cl, dtype):
            fn = functools.partial(getattr(ref, name), **prm)
            out = jax.eval_shape(fn, *args)
            jax.make_jaxpr(fn)(*args)
            out = out if isinstance(out, tuple) else (out,)
            first = args[0]
            if name.endswith("_bwd"):
                assert out[0].shape == tuple(prm["feature_shape"]) and out[0].dtype == first.dtype
            elif name.endswith("_gather"):
                assert out[0].shape == args[2].shape and out[0].dtype == first.dtype
            else:
                assert out[0].dtype == first.dtype
                if len(out) == 2:
                    assert out[1].dtype == np.int32 and out[1].shape == out[0].shape


def test_lowers_without_concrete_values():
    for name, args, prm in _all_calls(1, 8, 8, 4, 3, False):
        text = jax.jit(functools.partial(getattr(ref, name), **prm)).lower(*args).as_text()
        assert "custom_call" not in text  # pure JAX: nothing for XLA to look up


def test_vmap_matches_loop():
    rng = np.random.default_rng(14)
    v, n_img = 3, 2
    feats = rng.standard_normal((v, n_img, 3, 7, 8)).astype(np.float32)
    rois = np.stack([random_rois(rng, 5, n_img, 7, 8, 1.0, np.float32) for _ in range(v)])
    prm = align_params((2, 3), 1.0, 2, True, False)
    pp = pool_params((2, 3), 1.0, False)
    results = {}
    for name, p, axes in (("roi_align_avg_fwd", prm, (0, 0)), ("roi_align_max_fwd", prm, (0, 0)),
                          ("roi_pool_fwd", pp, (0, None)), ("roi_align_avg_fwd", prm, (None, 0))):
        fn = functools.partial(getattr(ref, name), **p)
        batched = jax.jit(jax.vmap(fn, in_axes=axes))(feats if axes[0] == 0 else feats[0],
                                                       rois if axes[1] == 0 else rois[0])
        results[(name, axes)] = batched
        for i in range(v):
            one = call(name, feats[i if axes[0] == 0 else 0], rois[i if axes[1] == 0 else 0], **p)
            for got, exp in zip(jax.tree_util.tree_leaves(batched),
                                jax.tree_util.tree_leaves(one)):
                assert_same(np.asarray(got)[i], exp, f"{name} {axes}")
    # backward and gather under vmap
    out, arg = results[("roi_align_max_fwd", (0, 0))]
    g = rng.standard_normal(out.shape).astype(np.float32)
    fshape = feats.shape[1:]
    for name, args, p in (
            ("roi_align_avg_bwd", (g, rois), dict(prm, feature_shape=fshape)),
            ("roi_align_max_gather", (feats, rois, arg), prm)):
        fn = functools.partial(getattr(ref, name), **p)
        batched = np.asarray(jax.jit(jax.vmap(fn))(*args))
        for i in range(v):
            assert_close(batched[i], call(name, *(np.asarray(x)[i] for x in args), **p), F32,
                         name, factor=0.1)


def test_chunked_equals_unchunked(monkeypatch):
    """Many small roi chunks (with padding) give exactly the single-chunk results."""
    rng = np.random.default_rng(15)
    feats = rng.standard_normal((2, 4, 9, 10)).astype(np.float32)
    rois = random_rois(rng, 11, 2, 9, 10, 1.0, np.float32)
    prm = align_params((2, 3), 1.0, -1, False, False)
    pp = pool_params((2, 3), 1.0, False)
    g = rng.standard_normal((11, 4, 2, 3)).astype(np.float32)

    def run():
        out = {}
        for name, args, p in (
                ("roi_align_avg_fwd", (feats, rois), prm),
                ("roi_align_max_fwd", (feats, rois), prm),
                ("roi_pool_fwd", (feats, rois), pp),
                ("roi_align_avg_bwd", (g, rois), dict(prm, feature_shape=feats.shape))):
            out[name] = jax.tree_util.tree_map(
                np.asarray, jax.jit(functools.partial(getattr(ref, name), **p))(*args))
        return out

    whole = run()
    monkeypatch.setattr(common, "CHUNK_ELEMENTS", 4 * 6 * 3)  # 3 rois per chunk, 4 chunks
    assert common.chunk_rois(11, 24) == (3, 4)
    chunked = run()
    for name in whole:
        for a, b in zip(jax.tree_util.tree_leaves(whole[name]),
                        jax.tree_util.tree_leaves(chunked[name])):
            if name.endswith("bwd"):
                assert_close(a, b, F32, name, factor=0.1)
            else:
                assert_same(a, b, name)


def test_empty_maps_and_outputs():
    """H = 0 / W = 0 (nothing to read) and empty channel axes are handled, not crashed on."""
    rois = np.array([[0, 0, 0, 2, 2]], np.float32)
    for shape in ((1, 2, 0, 4), (1, 2, 4, 0), (1, 0, 4, 4)):
        feats = np.zeros(shape, np.float32)
        out = ref.roi_align_avg_fwd(feats, rois, **align_params((2, 2), 1.0, 2, False, False))
        assert out.shape == (1, shape[1], 2, 2) and not np.any(np.asarray(out))
        out, arg = ref.roi_pool_fwd(feats, rois, **pool_params((2, 2), 1.0, False))
        assert np.all(np.asarray(arg) == -1)

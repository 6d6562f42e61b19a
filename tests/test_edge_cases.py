"""Edge cases of the box values, for every op, mode and layout (marked `edge`).

Zero-size and reversed boxes, boxes partly and wholly off the map, NaN/inf coordinates,
batch indices -1, N, NaN, huge boxes (1e6, 1e30, -1e30, FLT_MAX) with adaptive sampling,
K = 0, 1-pixel-wide maps. Everything must run without a crash, give finite numbers, the
oracle's numbers where the oracle can compute them, exact zeros (and exactly zero gradient)
for invalid rows, and zeros where a box misses the map.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import (INF, LAYOUTS, NAN, OP_IDS, OPS, as_f64, assert_close, lib_op, lib_vjp,
                      nchw_to, op_kwargs, oracle_fwd, oracle_grad, random_features, rng_for,
                      valid_rows)

pytestmark = pytest.mark.edge

N, C, H, W = 2, 3, 6, 7
# (aligned, sampling_ratio) combinations for roi_align; roi_pool ignores them.
ALIGN_GRID = [(False, -1), (True, -1), (False, 2), (True, 1)]
ALIGN_IDS = ["legacy-adaptive", "aligned-adaptive", "legacy-sr2", "aligned-sr1"]


def _cases(with_align=True):
    """(op, mode, aligned, sampling_ratio) params: roi_pool once, roi_align per grid row."""
    out = []
    for (op, mode), oid in zip(OPS, OP_IDS):
        if op == "roi_pool" or not with_align:
            out.append(pytest.param(op, mode, False, -1, id=oid))
        else:
            for (al, sr), aid in zip(ALIGN_GRID, ALIGN_IDS):
                out.append(pytest.param(op, mode, al, sr, id=f"{oid}-{aid}"))
    return out


CASES = _cases()
OP_CASES = _cases(with_align=False)


def _features(layout, dtype=jnp.float64, shape=(N, C, H, W), key="edge"):
    return random_features(rng_for(key, shape), shape, dtype, layout)


def _check(op, mode, x, rois, layout, *, output_size=(2, 3), spatial_scale=1.0, aligned=False,
           sampling_ratio=-1, dtype=jnp.float64, compare=True):
    """Run forward + VJP; check finiteness, invalid rows, and (if `compare`) the oracle."""
    kw = op_kwargs(op, mode, output_size=output_size, spatial_scale=spatial_scale,
                   aligned=aligned, sampling_ratio=sampling_ratio, layout=layout)
    rois = np.asarray(rois, dtype=np.float64 if dtype == jnp.float64 else np.float32)
    rois = rois.reshape(-1, 5)
    n = x.shape[0]
    rng = rng_for("g", op, mode, rois.shape)
    out0 = jax.eval_shape(lambda v, r: lib_op(op, v, r, **kw), x, rois)
    g = rng.standard_normal(out0.shape).astype(np.dtype(out0.dtype))
    out, grad = lib_vjp(op, x, rois, g, **kw)
    out, grad = as_f64(out), as_f64(grad)

    assert np.all(np.isfinite(out)), "output must be finite"
    assert np.all(np.isfinite(grad)), "gradient must be finite"
    valid = valid_rows(rois, n)
    assert not np.any(out[~valid]), "invalid rows must be exactly zero"
    # Gradient flowing only from invalid rows is exactly zero.
    g_invalid = np.where(valid.reshape((-1,) + (1,) * (g.ndim - 1)), 0, g).astype(g.dtype)
    _, grad_invalid = lib_vjp(op, x, rois, g_invalid, **kw)
    assert not np.any(as_f64(grad_invalid)), "invalid rows must receive zero gradient"
    if compare:
        assert_close(out, oracle_fwd(op, x, rois, **kw), dtype, what="forward")
        assert_close(grad, oracle_grad(op, x, rois, g, **kw), dtype, what="gradient")
    return out, grad


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode,aligned,sr", CASES)
def test_zero_size_boxes(op, mode, aligned, sr, layout):
    rois = [
        [0, 2.0, 3.0, 2.0, 3.0],      # a point on a pixel centre
        [1, 2.3, 1.7, 2.3, 1.7],      # a point between pixels
        [0, 1.0, 1.0, 5.0, 1.0],      # zero height
        [1, 4.5, 0.5, 4.5, 5.5],      # zero width
        [0, 0.0, 0.0, 0.0, 0.0],      # the corner
        [1, 7.0, 6.0, 7.0, 6.0],      # the far corner (x = W, y = H)
        [0, -1.0, -1.0, -1.0, -1.0],  # on the -1 boundary
    ]
    _check(op, mode, _features(layout), rois, layout, aligned=aligned, sampling_ratio=sr)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode,aligned,sr", CASES)
def test_reversed_corners(op, mode, aligned, sr, layout):
    rois = [
        [0, 5.0, 4.0, 1.0, 1.0],   # both axes reversed
        [1, 5.0, 1.0, 1.0, 4.0],   # x reversed
        [0, 1.0, 4.0, 5.0, 1.0],   # y reversed
        [1, 6.5, 5.5, 6.2, 5.3],   # slightly reversed near the far corner
        [0, 0.2, 0.1, -0.3, -0.9],  # reversed across the near corner
    ]
    _check(op, mode, _features(layout), rois, layout, aligned=aligned, sampling_ratio=sr)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode,aligned,sr", CASES)
def test_partly_outside(op, mode, aligned, sr, layout):
    rois = [
        [0, -3.0, -2.0, 3.0, 2.5],     # over the top-left corner
        [1, 4.0, 3.0, 11.0, 9.0],      # over the bottom-right corner
        [0, -5.0, 2.0, 12.0, 3.0],     # wider than the map
        [1, 2.0, -4.0, 3.0, 10.0],     # taller than the map
        [0, -1.5, -1.5, 0.5, 0.5],     # around the -1 boundary
        [1, 6.5, 5.5, 8.0, 7.0],       # around the far boundary
    ]
    _check(op, mode, _features(layout), rois, layout, aligned=aligned, sampling_ratio=sr)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode,aligned,sr", CASES)
def test_wholly_outside(op, mode, aligned, sr, layout):
    far = [
        [0, -20.0, -20.0, -10.0, -10.0],
        [1, 20.0, 1.0, 30.0, 4.0],
        [0, 1.0, 30.0, 5.0, 40.0],
        [1, -9.0, 1.0, -3.0, 5.0],
    ]
    out, grad = _check(op, mode, _features(layout), far, layout, aligned=aligned,
                       sampling_ratio=sr)
    assert not np.any(out), "a box far off the map gives zeros"
    assert not np.any(grad), "and no gradient"
    near = [  # just off the map: roi_align still interpolates clamped edge values
        [0, -1.8, -1.8, -1.05, -1.05],
        [1, 7.05, 6.05, 7.9, 6.9],
        [0, -0.9, 2.0, -0.2, 3.0],
    ]
    _check(op, mode, _features(layout), near, layout, aligned=aligned, sampling_ratio=sr)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode", [p.values[:2] for p in OP_CASES], ids=OP_IDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_nonfinite_coordinates(op, mode, layout, dtype):
    good = [1, 1.0, 1.0, 5.0, 4.0]
    rois = [good]
    for col in range(1, 5):
        for v in (NAN, INF, -INF):
            r = list(good)
            r[col] = v
            rois.append(r)
    rois += [[0, NAN, NAN, NAN, NAN], [0, -INF, -INF, INF, INF], good]
    out, _ = _check(op, mode, _features(layout, dtype), rois, layout, dtype=dtype)
    assert np.any(out[0]) and np.any(out[-1])
    assert not np.any(out[1:-1])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode,aligned,sr", CASES)
def test_batch_index(op, mode, aligned, sr, layout):
    box = [1.0, 0.5, 5.5, 4.0]
    invalid = [-1.0, -1.5, float(N), N + 0.5, 1e30, -1e30, NAN, INF, -INF, 3.4e38]
    valid = [0.0, -0.0, -0.5, -0.999, 0.999, 1.0, N - 0.5, N - 1e-6]
    rois = [[b] + box for b in invalid + valid]
    out, _ = _check(op, mode, _features(layout), rois, layout, aligned=aligned,
                    sampling_ratio=sr)
    assert not np.any(out[: len(invalid)])
    # Truncation toward zero: -0.5 and 0.999 read image 0; N - 0.5 reads image N - 1.
    out_valid = out[len(invalid):]
    for i in range(1, len(valid)):
        want_img = int(np.trunc(valid[i]))
        ref = 0 if want_img == 0 else len(valid) - 1
        assert np.array_equal(out_valid[i], out_valid[ref]), valid[i]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode", [p.values[:2] for p in OP_CASES], ids=OP_IDS)
def test_eager_invalid_rows(op, mode, layout):
    """The un-jitted path: invalid rows are zeros, the rest as the oracle."""
    x = _features(layout)
    rois = np.array([[-1, 1, 1, 4, 4], [N, 1, 1, 4, 4], [NAN, 1, 1, 4, 4],
                     [0, 1, NAN, 4, 4], [1, 1, 1, 4, 4]], np.float64)
    kw = op_kwargs(op, mode, output_size=2, layout=layout)
    out = as_f64(lib_op(op, x, rois, **kw))
    assert not np.any(out[:4])
    assert_close(out, oracle_fwd(op, x, rois, **kw), jnp.float64)


HUGE = [
    [0, 0.0, 0.0, 1e6, 1e6],
    [1, -1e6, -1e6, 1e6, 1e6],
    [0, 0.0, 0.0, 1e30, 1e30],
    [1, -1e30, -1e30, 1e30, 1e30],
    [0, -1e30, 0.0, 1e30, 5.0],
    [1, 3.0, -1e30, 5.0, 1e30],
    [0, 1e30, 1e30, -1e30, -1e30],   # huge and reversed
    [1, 2.0, 2.0, 3.0e38, 3.0e38],
    [0, -3.0e38, -3.0e38, 3.0e38, 3.0e38],
]
HUGE_MISS = [  # huge boxes entirely off the map
    [0, -1e30, -1e30, -1e29, -1e29],
    [1, 1e29, 1e29, 1e30, 1e30],
    [0, -1e30, 1e6, 1e30, 1e30],
    [1, 1e6, -1e30, 1e30, 1e30],
    [0, -1e6, -1e6, -1e5, 3.0],
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("op,mode,aligned,sr", CASES)
def test_huge_boxes(op, mode, aligned, sr, dtype, layout):
    x = _features(layout, dtype)
    bound = float(np.max(np.abs(as_f64(x))))
    t0 = time.perf_counter()
    out, grad = _check(op, mode, x, HUGE + HUGE_MISS, layout, aligned=aligned,
                       sampling_ratio=sr, dtype=dtype, compare=False)
    assert time.perf_counter() - t0 < 20.0, "huge boxes must stay cheap"
    assert np.all(np.abs(out) <= bound * (1 + 1e-6)), "outputs are (weighted) feature values"
    assert not np.any(out[len(HUGE):]), "a huge box off the map gives zeros"
    if op == "roi_pool" or sr > 0:
        # The oracle can compute these (no giant adaptive grid); FLT_MAX-sized roi_pool boxes
        # overflow float32 box arithmetic, so compare float64 there.
        rows = HUGE + HUGE_MISS
        if op == "roi_pool" and dtype == jnp.float32:
            rows = [r for r in rows if max(abs(v) for v in r[1:]) < 1e38]
        _check(op, mode, x, rows, layout, aligned=aligned, sampling_ratio=sr, dtype=dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_huge_symmetric_box_samples_centre(mode, dtype, layout):
    """A +-huge box with one sample per bin samples exactly the map origin."""
    x = _features(layout, dtype)
    rois = [[0, -1e6, -1e6, 1e6, 1e6], [1, -1e30, -1e30, 1e30, 1e30]]
    out, _ = _check("roi_align", mode, x, rois, layout, output_size=1, sampling_ratio=1,
                    dtype=dtype)
    xn = as_f64(x) if layout == "NCHW" else np.transpose(as_f64(x), (0, 3, 1, 2))
    got = out.reshape(2, -1)
    np.testing.assert_array_equal(got[0], xn[0, :, 0, 0])
    np.testing.assert_array_equal(got[1], xn[1, :, 0, 0])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode,aligned,sr", CASES)
def test_large_adaptive_grid(op, mode, aligned, sr, layout):
    """Boxes much larger than the map with the adaptive grid (100 samples per bin axis)."""
    rois = [[0, -60.0, -45.0, 40.0, 55.0], [1, -97.0, 2.0, 3.0, 4.5]]
    _check(op, mode, _features(layout), rois, layout, output_size=1, aligned=aligned,
           sampling_ratio=sr)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode,aligned,sr", CASES)
@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (4, 1)], ids=["1x1", "1x5", "4x1"])
def test_one_pixel_maps(op, mode, aligned, sr, layout, hw):
    shape = (N, 2) + hw
    x = _features(layout, shape=shape)
    rois = [[0, -0.5, -0.5, 1.5, 1.0], [1, 0.0, 0.0, 5.0, 4.0], [0, 0.3, 0.2, 0.3, 0.2],
            [1, -2.0, -2.0, 0.1, 0.1], [0, 1.0, 1.0, 1.5, 1.5]]
    _check(op, mode, x, rois, layout, output_size=(2, 2), aligned=aligned, sampling_ratio=sr)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode", [p.values[:2] for p in OP_CASES], ids=OP_IDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.float16, jnp.bfloat16],
                         ids=["f32", "f64", "f16", "bf16"])
def test_k0(op, mode, dtype, layout):
    x = _features(layout, dtype)
    rois = np.zeros((0, 5), np.float32)
    kw = op_kwargs(op, mode, output_size=(2, 3), layout=layout)
    want_shape = (0, C, 2, 3) if layout == "NCHW" else (0, 2, 3, C)
    out = lib_op(op, x, rois, **kw)  # eager
    assert out.shape == want_shape and out.dtype == jnp.dtype(dtype)
    out, grad = lib_vjp(op, x, rois, np.zeros(want_shape, np.float32), **kw)  # jit
    assert out.shape == want_shape and out.dtype == jnp.dtype(dtype)
    assert grad.shape == x.shape and grad.dtype == jnp.dtype(dtype)
    assert not np.any(as_f64(grad))
    # Gradient of a scalar that uses the empty result, eagerly.
    gx = jax.grad(lambda v: jnp.sum(lib_op(op, v, rois, **kw)).astype(jnp.float32))(x)
    assert gx.shape == x.shape and not np.any(as_f64(gx))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode", [p.values[:2] for p in OP_CASES], ids=OP_IDS)
def test_all_rows_invalid(op, mode, layout):
    rois = [[-1, 0, 0, 3, 3], [N, 0, 0, 3, 3], [NAN, NAN, NAN, NAN, NAN], [0, INF, 0, 1, 1]]
    out, grad = _check(op, mode, _features(layout), rois, layout)
    assert not np.any(out) and not np.any(grad)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode", [p.values[:2] for p in OP_CASES], ids=OP_IDS)
def test_nonfinite_features_stay_in_their_rows(op, mode, layout):
    """A NaN in one image does not leak into rois of another image."""
    x = np.array(_features(layout))
    if layout == "NCHW":
        x[1, :, 2, 3] = NAN
    else:
        x[1, 2, 3, :] = NAN
    rois = np.array([[0, 0, 0, 6, 5], [1, 0, 0, 1, 1], [0, 2, 1, 4, 4]], np.float64)
    kw = op_kwargs(op, mode, output_size=2, layout=layout)
    out = as_f64(lib_op(op, x, rois, **kw))
    assert np.all(np.isfinite(out[[0, 2]]))
    assert_close(out[[0, 2]], oracle_fwd(op, x, rois[[0, 2]], **kw), jnp.float64)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode", [p.values[:2] for p in OP_CASES], ids=OP_IDS)
def test_many_rois_one_pixel_output(op, mode, layout):
    """Many rows (mixed valid/invalid) with a 1x1 output and one channel."""
    rng = rng_for("many", op, mode, layout)
    k = 64
    rois = np.column_stack([
        rng.integers(-1, N + 1, k) + rng.uniform(0, 0.99, k),
        rng.uniform(-8, 14, (k, 4)),
    ])
    rois[::7, 2] = NAN
    x = _features(layout, shape=(N, 1, H, W))
    _check(op, mode, x, rois, layout, output_size=1)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode", [p.values[:2] for p in OP_CASES], ids=OP_IDS)
def test_roi_order_changes_no_row(op, mode, layout):
    """The forwards visit rois in a locality order of their own; every row must still come
    out bit for bit the same wherever the roi sits in the list, NaN/inf/huge and bad batch
    indices (whose order keys clamp) among them. Big enough to run on the thread pool."""
    rng = rng_for("order", op, mode, layout)
    k = 300
    rois = np.column_stack([rng.integers(-1, N + 1, k).astype(np.float64),
                            rng.uniform(-4, 40, (k, 4))])
    rois[::11, 1] = NAN
    rois[::13, 3] = INF
    rois[::17, 2] = -1e30
    rois[::19, 0] = NAN
    x = _features(layout, jnp.float32, shape=(N, 16, 36, 40))
    kw = op_kwargs(op, mode, output_size=(4, 5), spatial_scale=0.5, aligned=True,
                   sampling_ratio=2, layout=layout)
    perm = rng.permutation(k)
    rois = rois.astype(np.float32)
    out = np.asarray(jax.jit(lambda v, r: lib_op(op, v, r, **kw))(x, rois))
    out_perm = np.asarray(jax.jit(lambda v, r: lib_op(op, v, r, **kw))(x, rois[perm]))
    np.testing.assert_array_equal(out_perm, out[perm])
    assert np.any(out) and np.all(np.isfinite(out))


def test_edge_marker_registered(pytestconfig):
    assert any(line.startswith("edge:") for line in pytestconfig.getini("markers"))



@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_16bit_value_round_trips(dtype, layout):
    """All 65536 bit patterns through the kernels' 16-bit load and store: roi_pool with
    one-pixel bins returns its input exactly (infinities, subnormals and -0 included; NaNs
    stay NaN)."""
    import jax_roi

    bits = np.arange(65536, dtype=np.uint16).reshape(1, 1, 256, 256)
    feats = jnp.asarray(bits.view(np.float16) if dtype == "float16" else
                        jax.lax.bitcast_convert_type(jnp.asarray(bits), jnp.bfloat16))
    if layout == "NHWC":
        feats = feats.transpose(0, 2, 3, 1)
    rois = jnp.asarray([[0.0, 0.0, 0.0, 255.0, 255.0]], jnp.float32)
    out = jax_roi.roi_pool(feats, rois, 256, 1.0, layout=layout)[0]
    got = np.asarray(jax.lax.bitcast_convert_type(out, jnp.uint16)).reshape(-1)
    want = np.asarray(jax.lax.bitcast_convert_type(feats[0], jnp.uint16)).reshape(-1)
    as_float = np.asarray(feats[0].astype(jnp.float32)).reshape(-1)
    nan = np.isnan(as_float)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert np.isnan(np.asarray(out.astype(jnp.float32)).reshape(-1)[nan]).all()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_finite_half_through_align_lanes(layout):
    """Every finite float16 value through roi_align avg's 16-bit loads and stores, which the
    CPU kernels do eight lanes at a time (19 channels: vector chunks plus a ragged tail): a
    1x1 bin whose one sample sits on pixel (0, x) returns that pixel, and its backward with
    those values as the cotangent gives them back (weights 1 and 0 only, so every step is
    exact)."""
    import jax_roi

    finite = np.arange(65536, dtype=np.uint16).view(np.float16)
    finite = finite[np.isfinite(finite)]
    c = 19
    w = -(-finite.size // c)
    vals = np.zeros(c * w, np.float16)
    vals[:finite.size] = finite
    feats = vals.reshape(1, c, 1, w)  # NCHW: feats[0, :, 0, x] is column x
    x = np.arange(w, dtype=np.float32)
    rois = np.stack([np.zeros(w), x, np.zeros(w), x + 1, np.ones(w)], 1).astype(np.float32)
    inp = nchw_to(layout, feats)
    f = lambda v: jax_roi.roi_align(v, rois, 1, 1.0, 1, True, layout=layout)
    out, back = jax.vjp(f, jnp.asarray(inp))
    want = feats[0, :, 0, :].T  # [K = w, C]
    got = np.asarray(out, np.float32).reshape(w, c)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    (grad,) = back(out)
    np.testing.assert_array_equal(np.asarray(grad, np.float32), inp.astype(np.float32))

"""The pure-JAX roi_align: geometry, avg and max modes, forward, backward and the winner
gather (docs/semantics.md, "roi_align")."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

from .common import (
    MAX_GRID,
    PooledLayout,
    batch_index,
    chunk_rois,
    compute_dtype,
    empty_max_result,
    exact_div,
    first_max,
    from_nhwc,
    is_empty,
    map_chunks,
    nhwc_dims,
    pad_pooled,
    pad_rois,
    scan_chunks,
    sort_key,
    to_nhwc,
    unfused,
)


# ---------------------------------------------------------------------------------------
# roi_align geometry
# ---------------------------------------------------------------------------------------


class _Axis(NamedTuple):
    """One axis of roi_align geometry for a set of rois (all arrays lead with K)."""

    bin: jnp.ndarray  # [K] A, 0 for invalid rows
    grid: jnp.ndarray  # [K] int32, 0 for invalid rows
    base: jnp.ndarray  # [K, P] A: start + p * bin
    grid_div: jnp.ndarray  # [K, P] A: max(grid, 1), the divisor of sample coordinates
    lo: jnp.ndarray  # [K, P] int32: first sample on the map
    hi: jnp.ndarray  # [K, P] int32: one past the last sample on the map


def _grid_cap(sampling_ratio):
    return min(int(sampling_ratio), MAX_GRID) if sampling_ratio > 0 else MAX_GRID


def _axis_geometry(lo_coord, hi_coord, scale, aligned, pooled, sampling_ratio, A):
    """RoiAlignAxis for all rois: (start, bin, grid, ok)."""
    start = unfused(lo_coord * scale)
    end = unfused(hi_coord * scale)
    if aligned:
        start = start - A(0.5)
        end = end - A(0.5)
    extent = end - start
    if not aligned:
        extent = jnp.where(extent >= A(1), extent, A(1))
    bin_ = exact_div(extent, A(pooled))
    if sampling_ratio > 0:
        grid = jnp.full(bin_.shape, _grid_cap(sampling_ratio), jnp.int32)
    else:
        g = jnp.ceil(bin_)  # == ceil(extent / pooled): the same division
        g = jnp.where(g >= A(MAX_GRID), A(MAX_GRID), jnp.where(g > A(0), g, A(0)))
        grid = g.astype(jnp.int32)
    ok = jnp.isfinite(start) & jnp.isfinite(bin_)
    return start, bin_, grid, ok


def _coord(base, bin_, grid, i, A):
    """SampleCoord: (start + p*bin) + ((i + 0.5) * bin) / grid, in exactly that order."""
    return base + exact_div((i.astype(A) + A(0.5)) * bin_, grid)


def _search(pred, a, b, n_iter):
    """First i in [a, b) with pred(i) (monotone false -> true), else b; n_iter >= bits."""

    def body(_, ab):
        a, b = ab
        active = a < b
        m = a + (b - a) // 2
        p = pred(m)
        return jnp.where(active & ~p, m + 1, a), jnp.where(active & p, m, b)

    a, _ = lax.fori_loop(0, n_iter, body, (a, b))
    return a


def _finish_axis(start, bin_, grid, ok, pooled, size, cap, A):
    start = jnp.where(ok, start, A(0))
    bin_ = jnp.where(ok, bin_, A(0))
    grid = jnp.where(ok, grid, 0)
    k = start.shape[0]
    p = lax.broadcasted_iota(A, (k, pooled), 1)
    base = start[:, None] + unfused(p * bin_[:, None])
    bin_kp = jnp.broadcast_to(bin_[:, None], (k, pooled))
    grid_kp = jnp.broadcast_to(grid[:, None], (k, pooled))
    grid_div = jnp.maximum(grid_kp, 1).astype(A)
    up = bin_kp >= A(0)
    near, far = A(-1), A(size)

    def past(i):  # has passed the near edge of [-1, size]
        y = _coord(base, bin_kp, grid_div, i, A)
        return jnp.where(up, y >= near, y <= far)

    def beyond(i):  # lies beyond the far edge
        y = _coord(base, bin_kp, grid_div, i, A)
        return jnp.where(up, ~(y <= far), ~(y >= near))

    n_iter = max(int(cap).bit_length(), 1)
    lo = _search(past, jnp.zeros((k, pooled), jnp.int32), grid_kp, n_iter)
    hi = _search(beyond, lo, grid_kp, n_iter)
    return _Axis(bin_, grid, base, grid_div, lo, hi)


def _align_geometry(rois, n_images, height, width, pooled_h, pooled_w, spatial_scale,
                    sampling_ratio, aligned, A):
    """(n, ok, y axis, x axis) of rois [K, 5] (already in A)."""
    scale = A(spatial_scale)
    n, valid = batch_index(rois, n_images, A)
    xs, xb, xg, xok = _axis_geometry(rois[:, 1], rois[:, 3], scale, aligned, pooled_w,
                                     sampling_ratio, A)
    ys, yb, yg, yok = _axis_geometry(rois[:, 2], rois[:, 4], scale, aligned, pooled_h,
                                     sampling_ratio, A)
    ok = valid & xok & yok
    cap = _grid_cap(sampling_ratio)
    ax_y = _finish_axis(ys, yb, yg, ok, pooled_h, height, cap, A)
    ax_x = _finish_axis(xs, xb, xg, ok, pooled_w, width, cap, A)
    return n, ok, ax_y, ax_x


def _lerp(y, size, A):
    """LerpAt, vectorised: (inside, lo, hi, w_lo, w_hi); indices always within [0, size)."""
    inside = (y >= A(-1)) & (y <= A(size))
    y = jnp.where(y <= A(0), A(0), y)
    y = jnp.where(inside, y, A(0))  # keeps the integer conversion defined
    lo_f = jnp.floor(y)
    edge = lo_f >= A(size - 1)
    lo_f = jnp.where(edge, A(size - 1), lo_f)
    l = jnp.where(edge, A(0), y - lo_f)
    lo = lo_f.astype(jnp.int32)
    hi = jnp.where(edge, lo, lo + 1)
    return inside, lo, hi, A(1) - l, l


def _axis_taps(ax, size, cap, A):
    """Per bin, the distinct pixel rows its samples on the map touch, with summed weights.

    Returns rows [K, P, D] int32, weights [K, P, D] A and count [K, P] int32 (entries past
    count are padding). A row's weights add up in sample order, as AxisBands in the kernels.
    Samples are visited only over their run; memory is [K, P, size] for the row table.
    """
    k, pooled = ax.base.shape
    n_run = ax.hi - ax.lo
    bin_kp = jnp.broadcast_to(ax.bin[:, None], (k, pooled))
    kk = lax.broadcasted_iota(jnp.int32, (k, pooled), 0)
    pp = lax.broadcasted_iota(jnp.int32, (k, pooled), 1)

    def body(i, state):
        dense, touched = state
        active = i < n_run
        y = _coord(ax.base, bin_kp, ax.grid_div, ax.lo + i, A)
        _, lo, hi, wlo, whi = _lerp(y, size, A)
        lo = jnp.where(active, lo, size)  # out of bounds: dropped
        hi = jnp.where(active, hi, size)
        dense = dense.at[kk, pp, lo].add(wlo, mode="drop")
        dense = dense.at[kk, pp, hi].add(whi, mode="drop")
        touched = touched.at[kk, pp, lo].set(True, mode="drop")
        touched = touched.at[kk, pp, hi].set(True, mode="drop")
        return dense, touched

    dense = jnp.zeros((k, pooled, size), A)
    touched = jnp.zeros((k, pooled, size), bool)
    dense, touched = lax.fori_loop(0, jnp.max(n_run, initial=0), body, (dense, touched))

    d_cap = min(size, 2 * cap)
    pos = jnp.cumsum(touched, axis=2, dtype=jnp.int32) - 1
    pos = jnp.where(touched, pos, d_cap)  # untouched rows: dropped
    count = jnp.sum(touched, axis=2, dtype=jnp.int32)
    shape3 = (k, pooled, size)
    k3 = lax.broadcasted_iota(jnp.int32, shape3, 0)
    p3 = lax.broadcasted_iota(jnp.int32, shape3, 1)
    h3 = lax.broadcasted_iota(jnp.int32, shape3, 2)
    rows = jnp.zeros((k, pooled, d_cap), jnp.int32).at[k3, p3, pos].set(h3, mode="drop")
    weights = jnp.zeros((k, pooled, d_cap), A).at[k3, p3, pos].set(dense, mode="drop")
    return rows, weights, count


def _first_outside(ax_y, ax_x):
    """FirstOutsideSample of every bin: [K, PH, PW] int32, -1 when none."""
    gh = ax_y.grid[:, None, None]
    gw = ax_x.grid[:, None, None]
    ylo, yhi = ax_y.lo[:, :, None], ax_y.hi[:, :, None]
    xlo, xhi = ax_x.lo[:, None, :], ax_x.hi[:, None, :]
    some = (gh > 0) & (gw > 0)
    first = (ylo >= yhi) | (xlo >= xhi) | (ylo > 0) | (xlo > 0)
    f = jnp.where(xhi < gw, xhi, jnp.where(yhi < gh, yhi * gw, -1))
    f = jnp.where(first, 0, f)
    return jnp.where(some, f, -1)


def _run_key(ax_y, ax_x):
    """Sort key for the max-mode search: its loop covers the longest runs, y by x."""
    ny = jnp.max(ax_y.hi - ax_y.lo, axis=1, initial=0)
    nx = jnp.max(ax_x.hi - ax_x.lo, axis=1, initial=0)
    return sort_key(ny, nx, MAX_GRID)


def _band_estimate(ax, size, A):
    """Per roi, an upper bound on the distinct pixel rows (or columns) a bin's taps touch."""
    n_run = ax.hi - ax.lo
    bin_kp = jnp.broadcast_to(ax.bin[:, None], ax.base.shape)
    first = _coord(ax.base, bin_kp, ax.grid_div, ax.lo, A)
    last = _coord(ax.base, bin_kp, ax.grid_div, jnp.maximum(ax.hi - 1, ax.lo), A)

    def row(y):
        return jnp.floor(jnp.clip(jnp.nan_to_num(y), A(0), A(size - 1))).astype(jnp.int32)

    band = jnp.abs(row(last) - row(first)) + 2
    return jnp.max(jnp.where(n_run > 0, jnp.minimum(2 * n_run, band), 0), axis=1, initial=0)


# ---------------------------------------------------------------------------------------
# roi_align avg
# ---------------------------------------------------------------------------------------


def roi_align_avg_fwd(features, rois, *, pooled_h, pooled_w, spatial_scale, sampling_ratio,
                      aligned, channels_last):
    dtype = features.dtype
    A = compute_dtype(dtype)
    f = to_nhwc(features, channels_last)
    n_img, height, width, chans = f.shape
    k = rois.shape[0]
    if is_empty(n_img, height, width, chans, k, pooled_h, pooled_w):
        return from_nhwc(jnp.zeros((k, pooled_h, pooled_w, chans), dtype), channels_last)
    cap = _grid_cap(sampling_ratio)
    kc, nch = chunk_rois(k, pooled_h * pooled_w * chans)
    geo = _align_geometry(pad_rois(rois, kc * nch, A), n_img, height, width, pooled_h,
                          pooled_w, spatial_scale, sampling_ratio, aligned, A)

    def chunk(geo):
        n, _, ax_y, ax_x = geo
        rows_y, w_y, d_y = _axis_taps(ax_y, height, cap, A)
        rows_x, w_x, d_x = _axis_taps(ax_x, width, cap, A)
        dx_max = jnp.maximum(jnp.max(d_x, initial=0), 1)
        nn = n[:, None, None]

        def body(t, acc):
            j = t // dx_max
            l = t % dx_max
            ry = lax.dynamic_index_in_dim(rows_y, j, 2, keepdims=False)
            wy = lax.dynamic_index_in_dim(w_y, j, 2, keepdims=False)
            rx = lax.dynamic_index_in_dim(rows_x, l, 2, keepdims=False)
            wx = lax.dynamic_index_in_dim(w_x, l, 2, keepdims=False)
            active = (j < d_y)[:, :, None] & (l < d_x)[:, None, :]
            v = f[nn, ry[:, :, None], rx[:, None, :]].astype(A)  # [Kc, PH, PW, C]
            w = wy[:, :, None] * wx[:, None, :]
            return jnp.where(active[..., None], acc + w[..., None] * v, acc)

        acc = jnp.zeros((n.shape[0], pooled_h, pooled_w, chans), A)
        acc = lax.fori_loop(0, jnp.max(d_y, initial=0) * dx_max, body, acc)
        count = jnp.maximum(ax_y.grid * ax_x.grid, 1).astype(A)
        out = exact_div(acc, count[:, None, None, None]).astype(dtype)
        return from_nhwc(out, channels_last)

    key = sort_key(_band_estimate(geo[2], height, A), _band_estimate(geo[3], width, A),
                    width + 1)
    return map_chunks(chunk, geo, nch, kc, k, key)


def roi_align_avg_bwd(grad, rois, *, feature_shape, pooled_h, pooled_w, spatial_scale,
                      sampling_ratio, aligned, channels_last):
    dtype = grad.dtype
    A = compute_dtype(dtype)
    feature_shape = tuple(int(s) for s in feature_shape)
    n_img, height, width, chans = nhwc_dims(feature_shape, channels_last)
    k = rois.shape[0]
    if is_empty(n_img, height, width, chans, k, pooled_h, pooled_w):
        return jnp.zeros(feature_shape, dtype)
    cap = _grid_cap(sampling_ratio)
    kc, nch = chunk_rois(k, pooled_h * pooled_w * chans)
    k_pad = kc * nch
    geo = _align_geometry(pad_rois(rois, k_pad, A), n_img, height, width, pooled_h,
                          pooled_w, spatial_scale, sampling_ratio, aligned, A)

    def chunk(acc, xs):
        (n, _, ax_y, ax_x), g = xs
        g = to_nhwc(g, channels_last).astype(A)
        kk = n.shape[0]
        rows_y, w_y, d_y = _axis_taps(ax_y, height, cap, A)
        rows_x, w_x, d_x = _axis_taps(ax_x, width, cap, A)
        dx_max = jnp.maximum(jnp.max(d_x, initial=0), 1)
        count = jnp.maximum(ax_y.grid * ax_x.grid, 1).astype(A)
        nn = jnp.broadcast_to(n[:, None, None], (kk, pooled_h, pooled_w))

        def body(t, acc):
            j = t // dx_max
            l = t % dx_max
            ry = lax.dynamic_index_in_dim(rows_y, j, 2, keepdims=False)
            wy = lax.dynamic_index_in_dim(w_y, j, 2, keepdims=False)
            rx = lax.dynamic_index_in_dim(rows_x, l, 2, keepdims=False)
            wx = lax.dynamic_index_in_dim(w_x, l, 2, keepdims=False)
            active = (j < d_y)[:, :, None] & (l < d_x)[:, None, :]
            w = exact_div(wy[:, :, None] * wx[:, None, :], count[:, None, None])
            row = jnp.where(active, ry[:, :, None], height)  # inactive: dropped
            col = jnp.broadcast_to(rx[:, None, :], row.shape)
            return acc.at[nn, row, col].add(w[..., None] * g, mode="drop")

        return lax.fori_loop(0, jnp.max(d_y, initial=0) * dx_max, body, acc)

    acc = jnp.zeros((n_img, height, width, chans), A)
    key = sort_key(_band_estimate(geo[2], height, A), _band_estimate(geo[3], width, A),
                    width + 1)
    acc = scan_chunks(chunk, acc, (geo, pad_pooled(grad, k_pad)), nch, kc, key)
    return from_nhwc(acc, channels_last).astype(dtype)


# ---------------------------------------------------------------------------------------
# roi_align max
# ---------------------------------------------------------------------------------------


def _value4(w1, v1, w2, v2, w3, v3, w4, v4):
    """w1*v1 + w2*v2 + w3*v3 + w4*v4 left to right, every product rounded on its own."""
    return (((unfused(w1 * v1) + unfused(w2 * v2)) + unfused(w3 * v3)) + unfused(w4 * v4))


def roi_align_max_fwd(features, rois, *, pooled_h, pooled_w, spatial_scale, sampling_ratio,
                      aligned, channels_last):
    dtype = features.dtype
    A = compute_dtype(dtype)
    f = to_nhwc(features, channels_last)
    n_img, height, width, chans = f.shape
    k = rois.shape[0]
    if is_empty(n_img, height, width, chans, k, pooled_h, pooled_w):
        return empty_max_result(k, pooled_h, pooled_w, chans, dtype, channels_last)
    kc, nch = chunk_rois(k, pooled_h * pooled_w * chans)
    geo = _align_geometry(pad_rois(rois, kc * nch, A), n_img, height, width, pooled_h,
                          pooled_w, spatial_scale, sampling_ratio, aligned, A)

    def chunk(geo):
        n, _, ax_y, ax_x = geo
        kk = n.shape[0]
        ny = ax_y.hi - ax_y.lo
        nx = ax_x.hi - ax_x.lo
        rx_max = jnp.maximum(jnp.max(nx, initial=0), 1)
        steps = jnp.max(ny, initial=0) * rx_max
        bin_y = jnp.broadcast_to(ax_y.bin[:, None], ax_y.base.shape)
        bin_x = jnp.broadcast_to(ax_x.bin[:, None], ax_x.base.shape)
        gw = ax_x.grid[:, None, None]
        nn = n[:, None, None]

        def sample(t):
            """(active, grid index, value) of step t's sample of every bin and channel."""
            a = t // rx_max
            b = t % rx_max
            iy = ax_y.lo + a  # [Kc, PH]: grid row of this step's sample
            ix = ax_x.lo + b  # [Kc, PW]
            active = ((a < ny)[:, :, None] & (b < nx)[:, None, :])[..., None]
            _, yl, yh, hy, ly = _lerp(_coord(ax_y.base, bin_y, ax_y.grid_div, iy, A),
                                      height, A)
            _, xl, xh, hx, lx = _lerp(_coord(ax_x.base, bin_x, ax_x.grid_div, ix, A),
                                      width, A)
            yl, yh, hy, ly = (v[:, :, None] for v in (yl, yh, hy, ly))
            xl, xh, hx, lx = (v[:, None, :] for v in (xl, xh, hx, lx))
            w1, w2, w3, w4 = ((w[..., None]) for w in (hy * hx, hy * lx, ly * hx, ly * lx))
            val = _value4(w1, f[nn, yl, xl].astype(A), w2, f[nn, yl, xh].astype(A),
                          w3, f[nn, yh, xl].astype(A), w4, f[nn, yh, xh].astype(A))
            index = (iy[:, :, None] * gw + ix[:, None, :])[..., None]
            return active, index, val

        best, idx = first_max(sample, steps, (kk, pooled_h, pooled_w, chans), A)
        # The first sample off the map (value 0) competes in grid order (MergeOutside).
        outside = _first_outside(ax_y, ax_x)[..., None]
        inside_wins = (idx >= 0) & jnp.where(idx < outside, ~(A(0) > best), best > A(0))
        lose = (outside >= 0) & ~inside_wins
        best = jnp.where(lose, A(0), best).astype(dtype)
        idx = jnp.where(lose, -1, idx)
        return from_nhwc(best, channels_last), from_nhwc(idx, channels_last)

    return map_chunks(chunk, geo, nch, kc, k, _run_key(geo[2], geo[3]))


def _max_winner_taps(rois, argmax, n_img, height, width, pooled_h, pooled_w, spatial_scale,
                     sampling_ratio, aligned, lay, A):
    """Taps of the recorded winning sample of every element of argmax (pooled layout).

    Returns (use, n, yl, yh, xl, xh, w1, w2, w3, w4) shaped like argmax; use is false where
    nothing is read or written (argmax outside the grid, sample off the map, invalid row).
    """
    n, ok, ax_y, ax_x = _align_geometry(rois.astype(A), n_img, height, width, pooled_h,
                                        pooled_w, spatial_scale, sampling_ratio, aligned, A)
    gh = lay.k(ax_y.grid)
    gw = lay.k(ax_x.grid)
    am = argmax.astype(jnp.int32)
    use = lay.k(ok) & (am >= 0) & (am < gh * gw)
    am = jnp.where(use, am, 0)
    gw1 = jnp.maximum(gw, 1)
    iy, ix = am // gw1, am % gw1
    y = lay.p(ax_y.base) + exact_div((iy.astype(A) + A(0.5)) * lay.k(ax_y.bin),
                                jnp.maximum(gh, 1).astype(A))
    x = lay.q(ax_x.base) + exact_div((ix.astype(A) + A(0.5)) * lay.k(ax_x.bin), gw1.astype(A))
    in_y, yl, yh, hy, ly = _lerp(jnp.where(use, y, A(0)), height, A)
    in_x, xl, xh, hx, lx = _lerp(jnp.where(use, x, A(0)), width, A)
    use = use & in_y & in_x
    nn = jnp.broadcast_to(lay.k(n), am.shape)
    return use, nn, yl, yh, xl, xh, hy * hx, hy * lx, ly * hx, ly * lx


def roi_align_max_bwd(grad, rois, argmax, *, feature_shape, pooled_h, pooled_w,
                      spatial_scale, sampling_ratio, aligned, channels_last):
    dtype = grad.dtype
    A = compute_dtype(dtype)
    feature_shape = tuple(int(s) for s in feature_shape)
    n_img, height, width, chans = nhwc_dims(feature_shape, channels_last)
    if is_empty(n_img, height, width, chans, rois.shape[0], pooled_h, pooled_w):
        return jnp.zeros(feature_shape, dtype)
    lay = PooledLayout(argmax.shape, channels_last)
    use, nn, yl, yh, xl, xh, w1, w2, w3, w4 = _max_winner_taps(
        rois, argmax, n_img, height, width, pooled_h, pooled_w, spatial_scale,
        sampling_ratio, aligned, lay, A)
    cc = lay.channel()
    g = grad.astype(A)
    yl = jnp.where(use, yl, height)  # unused elements: out of bounds, dropped
    yh = jnp.where(use, yh, height)
    acc = jnp.zeros(feature_shape, A)
    for yy, xx, w in ((yl, xl, w1), (yl, xh, w2), (yh, xl, w3), (yh, xh, w4)):
        acc = acc.at[lay.feature_index(nn, cc, yy, xx)].add(g * w, mode="drop")
    return acc.astype(dtype)


def roi_align_max_gather(features, rois, argmax, *, pooled_h, pooled_w, spatial_scale,
                         sampling_ratio, aligned, channels_last):
    dtype = features.dtype
    A = compute_dtype(dtype)
    n_img, height, width, chans = nhwc_dims(features.shape, channels_last)
    if is_empty(n_img, height, width, chans, rois.shape[0], pooled_h, pooled_w):
        return jnp.zeros(argmax.shape, dtype)
    lay = PooledLayout(argmax.shape, channels_last)
    use, nn, yl, yh, xl, xh, w1, w2, w3, w4 = _max_winner_taps(
        rois, argmax, n_img, height, width, pooled_h, pooled_w, spatial_scale,
        sampling_ratio, aligned, lay, A)
    cc = lay.channel()

    def at(yy, xx):
        return features[lay.feature_index(nn, cc, yy, xx)].astype(A)

    # The forward's expression, so that the gathered value is the recorded maximum bit for bit.
    val = _value4(w1, at(yl, xl), w2, at(yl, xh), w3, at(yh, xl), w4, at(yh, xh))
    return jnp.where(use, val, A(0)).astype(dtype)

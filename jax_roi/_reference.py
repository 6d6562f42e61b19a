"""Pure-JAX implementations of the roi primitives.

Two jobs: the lowering of every primitive on platforms without a compiled kernel
(``mlir.lower_fun``), and the pure-JAX baseline of the benchmarks. Everything is traceable
with abstract shapes: static shapes, no Python branching on array values, jit and vmap safe.
Only public ``jax``, ``jax.numpy`` and ``jax.lax`` APIs are used.

The numbers are those of docs/semantics.md, computed in the compute type ``A`` (float32 for
16/32-bit features, float64 for float64) in the evaluation order of the kernels' shared header
(xla_kernels/include/jax_roi/roi_math.h), so that every discrete decision (which samples fall
on the map, adaptive grid counts, roi_pool bin edges, max-mode winners) is the kernels' own.
Two compiler rewrites would otherwise move them:

* XLA's algebraic simplifier turns a division by a constant or by a broadcast into a
  multiplication by the reciprocal (float32 ``x / 7`` differs from ``x * (1/7)`` for about
  half of all x, and ``ceil(7m / 7)`` would give m + 1 for over half of all m). Every division
  goes through ``_div``: its divisor is given the full result shape and every batch axis of
  the numerator (else vmap would broadcast it in plain sight), then hidden behind
  ``lax.optimization_barrier``; XLA sees a divide of two plain arrays and keeps it exact.
* XLA's CPU and GPU backends contract ``a * b + c`` into a fused multiply-add, which rounds
  once instead of twice. Products that feed an addition in the geometry (``x1 * s - 0.5``,
  ``start + p * bin``) or in a max-mode sample value go through ``_unfused``: a bit-level no-op
  (it swaps one NaN payload for another) that the compiler cannot see through, so the product
  is rounded on its own as in the C++ kernels. ``roi_align_max_gather`` uses the same guard:
  it is never differentiated through its operations, because the gathers are primitives of
  their own (`_primitives.py`) whose JVP and transpose rules declare their linearity.

Both are checked against NumPy arithmetic in the compute type in tests/test_reference.py
(max mode and roi_pool bit for bit, values and argmax).

Bounded cost for any box. A sample coordinate is monotone in the sample index, so the samples
of a bin that lie on the map (``[-1, size]``) form one contiguous run per axis; two vectorised
binary searches with the exact predicate find it (as ``InsideRun`` in the header), and the
loops visit only those runs: a 1e9-pixel box costs its samples on the map, not its grid. Loops
are ``lax.while_loop`` over the longest run, masked per roi. Every loop step gathers one
``[Kc, PH, PW, C]`` block of channel rows from channels-last features (NCHW input is
transposed once); nothing of size ``[K, C, H, W]`` is ever formed. The rois are processed in
chunks of ``Kc`` (``lax.map``, ``CHUNK_ELEMENTS``), which bounds the memory of a step and gives
each chunk its own trip count; the rois are sorted by their loop lengths first, so that
similar rois share a chunk, and the results put back in order.

roi_align avg uses separable interpolation weights (as the CPU kernel's ``AxisBands``): along
each axis, the taps of a bin's inside samples are merged per pixel row (column), so a bin costs
(distinct rows) x (distinct columns) gathers, never more than the 4 * gh * gw of a sample loop
and far fewer for adaptive grids on large boxes. Its values therefore agree with a naive sample
loop to rounding, not bit for bit (the kernels' avg does not either); max mode and roi_pool
reproduce the kernels' decisions and values exactly.

max mode and roi_pool make two passes over their samples (the running maximum, then the first
sample equal to it), each updating one array: XLA fuses such an update with its gathers into
one loop, whereas tracking value and index together materialises every gather.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "roi_align_avg_fwd",
    "roi_align_avg_bwd",
    "roi_align_max_fwd",
    "roi_align_max_bwd",
    "roi_align_max_gather",
    "roi_pool_fwd",
    "roi_pool_bwd",
    "roi_pool_gather",
]

# Cap on the sampling grid per axis and bin (kMaxGrid in roi_math.h).
MAX_GRID = 32768

# Elements of running state ([Kc, PH, PW, C]) per roi chunk. Chunks bound the memory of
# one loop step and give each chunk its own trip count; each costs a fixed overhead of a few
# hundred microseconds on CPU, so they should not be too small. Measured on a 2-core CPU
# (7x7 bins, 256 channels): 2**17 to 2**19 are all close.
CHUNK_ELEMENTS = 2**19


# ---------------------------------------------------------------------------------------
# exact arithmetic helpers
# ---------------------------------------------------------------------------------------


def _compute_dtype(dtype):
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def _opaque(x):
    """x as an array XLA cannot see into (neither constant nor broadcast)."""
    return lax.optimization_barrier(x)


def _div(a, b):
    """IEEE a / b, never rewritten into a * (1 / b).

    The divisor is materialised at the full result shape behind an optimization barrier, so
    XLA's algebraic simplifier sees neither a constant nor a broadcast divisor. The no-op
    select first gives the divisor every batch axis of the numerator: under vmap an unbatched
    divisor would otherwise be broadcast to the batch after the barrier, in plain sight.
    """
    a = jnp.asarray(a)
    b = jnp.asarray(b, a.dtype)
    shape = jnp.broadcast_shapes(a.shape, b.shape)
    a = jnp.broadcast_to(a, shape)
    b = lax.select(a == a, jnp.broadcast_to(b, shape), jnp.broadcast_to(b, shape))
    return a / _opaque(b)


_NAN_SWAP = {
    # (bits type, NaN payload that is swapped, payload it becomes): both quiet NaNs.
    np.dtype(np.float32): (np.uint32, 0x7FC00ABC, 0x7FC00000),
    np.dtype(np.float64): (np.uint64, 0x7FF8000000000ABC, 0x7FF8000000000000),
}


def _unfused(x):
    """x, rounded on its own: a product passed through here is never fused into an FMA.

    Replaces one particular NaN bit pattern by another (a no-op on values) with integer
    operations, which the compiler cannot prove to be the identity. Not differentiable (the
    bit casts have no transpose): only for geometry and the max-mode search.
    """
    utype, magic, repl = _NAN_SWAP[np.dtype(x.dtype)]
    bits = lax.bitcast_convert_type(x, utype)
    bits = jnp.where(bits == utype(magic), utype(repl), bits)
    return lax.bitcast_convert_type(bits, x.dtype)


def _round_half_away(x):
    """C round(): halves away from zero (jnp.round rounds them to even)."""
    return lax.round(x, lax.RoundingMethod.AWAY_FROM_ZERO)


def _batch_index(rois, n_images, A):
    """RoiBatchIndex: (n [K] int32, valid [K] bool) of rois [K, 5] in A."""
    finite = jnp.all(jnp.isfinite(rois), axis=1)
    b = rois[:, 0]
    valid = finite & (b > A(-1)) & (b < A(n_images))
    n = jnp.where(valid, jnp.trunc(b), A(0)).astype(jnp.int32)
    return n, valid


def _pixel_index(v, size, A):
    """ClipToIndex: integer-valued v clipped to [0, size] and converted; NaN -> 0."""
    v = jnp.where(v > A(0), v, A(0))
    v = jnp.where(v >= A(size), A(size), v)
    return v.astype(jnp.int32)


# ---------------------------------------------------------------------------------------
# roi chunks
# ---------------------------------------------------------------------------------------


def _chunk_rois(k, per_roi):
    """(chunk size, number of chunks) for k rois with per_roi state elements each."""
    kc = max(1, min(k, CHUNK_ELEMENTS // max(per_roi, 1)))
    return kc, -(-k // kc)


def _pad_rois(rois, k_pad, A):
    """rois [K, 5] in A, padded with invalid (NaN) rows to k_pad."""
    rois = rois.astype(A)
    k = rois.shape[0]
    if k_pad == k:
        return rois
    return jnp.concatenate([rois, jnp.full((k_pad - k, 5), jnp.nan, A)], axis=0)


def _split(tree, nch, kc):
    return jax.tree_util.tree_map(lambda a: a.reshape((nch, kc) + a.shape[1:]), tree)


def _merge(tree, k):
    return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:])[:k], tree)


def _take(tree, order):
    return jax.tree_util.tree_map(lambda a: a[order], tree)


def _sort_key(rows, cols, cols_bound):
    """Sort key of rois whose loops take rows x cols steps: rows major, cols minor.

    A chunk's loop runs max(rows) x max(cols) steps over the chunk, so rois are grouped by
    both counts, not by their product (on random boxes this roughly halves the masked steps).
    """
    return rows * (cols_bound + 1) + jnp.minimum(cols, cols_bound)


def _map_chunks(fn, tree, nch, kc, k, key=None):
    """fn over roi chunks of the [K_pad, ...] arrays of tree; results in roi order, cut to K.

    A loop inside fn runs as long as the costliest roi of its chunk needs, so with several
    chunks the rois are first sorted by `key` (see _sort_key): similar rois share chunks, and
    the results are put back in order at the end.
    """
    if nch == 1:
        return _merge(jax.tree_util.tree_map(lambda a: a[None], fn(tree)), k)
    order = jnp.argsort(key)
    out = _merge(lax.map(fn, _split(_take(tree, order), nch, kc)), nch * kc)
    inverse = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
    return jax.tree_util.tree_map(lambda a: a[inverse[:k]], out)


def _scan_chunks(fn, init, tree, nch, kc, key=None):
    """carry = fn(carry, chunk) over roi chunks (sorted by key, as in _map_chunks)."""
    if nch == 1:
        return fn(init, tree)
    tree = _take(tree, jnp.argsort(key))
    carry, _ = lax.scan(lambda c, x: (fn(c, x), None), init, _split(tree, nch, kc))
    return carry


def _pad_pooled(x, k_pad):
    k = x.shape[0]
    if k_pad == k:
        return x
    return jnp.concatenate([x, jnp.zeros((k_pad - k,) + x.shape[1:], x.dtype)], axis=0)


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
    start = _unfused(lo_coord * scale)
    end = _unfused(hi_coord * scale)
    if aligned:
        start = start - A(0.5)
        end = end - A(0.5)
    extent = end - start
    if not aligned:
        extent = jnp.where(extent >= A(1), extent, A(1))
    bin_ = _div(extent, A(pooled))
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
    return base + _div((i.astype(A) + A(0.5)) * bin_, grid)


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
    base = start[:, None] + _unfused(p * bin_[:, None])
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
    n, valid = _batch_index(rois, n_images, A)
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
    return _sort_key(ny, nx, MAX_GRID)


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
# layout helpers
# ---------------------------------------------------------------------------------------


def _to_nhwc(x, channels_last):
    return x if channels_last else jnp.transpose(x, (0, 2, 3, 1))


def _from_nhwc(x, channels_last):
    return x if channels_last else jnp.transpose(x, (0, 3, 1, 2))


def _nhwc_dims(shape, channels_last):
    """(N, H, W, C) of a features shape in the op's layout."""
    n, a, b, c = shape
    return (n, a, b, c) if channels_last else (n, b, c, a)


def _empty(n_img, height, width, chans, k, pooled_h, pooled_w):
    return 0 in (height, width, chans, k, pooled_h, pooled_w)


class _Layout:
    """Broadcasts per-roi / per-bin arrays against a tensor in the pooled layout."""

    def __init__(self, shape, channels_last):
        self.cl = channels_last
        self.shape = tuple(shape)

    def k(self, v):  # [K]
        return v[:, None, None, None]

    def p(self, v):  # [K, PH]
        return v[:, :, None, None] if self.cl else v[:, None, :, None]

    def q(self, v):  # [K, PW]
        return v[:, None, :, None] if self.cl else v[:, None, None, :]

    def channel(self):
        return lax.broadcasted_iota(jnp.int32, self.shape, 3 if self.cl else 1)

    def feature_index(self, n, c, y, x):
        return (n, y, x, c) if self.cl else (n, c, y, x)


# ---------------------------------------------------------------------------------------
# roi_align avg
# ---------------------------------------------------------------------------------------


def roi_align_avg_fwd(features, rois, *, pooled_h, pooled_w, spatial_scale, sampling_ratio,
                      aligned, channels_last):
    dtype = features.dtype
    A = _compute_dtype(dtype)
    f = _to_nhwc(features, channels_last)
    n_img, height, width, chans = f.shape
    k = rois.shape[0]
    if _empty(n_img, height, width, chans, k, pooled_h, pooled_w):
        return _from_nhwc(jnp.zeros((k, pooled_h, pooled_w, chans), dtype), channels_last)
    cap = _grid_cap(sampling_ratio)
    kc, nch = _chunk_rois(k, pooled_h * pooled_w * chans)
    geo = _align_geometry(_pad_rois(rois, kc * nch, A), n_img, height, width, pooled_h,
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
        out = _div(acc, count[:, None, None, None]).astype(dtype)
        return _from_nhwc(out, channels_last)

    key = _sort_key(_band_estimate(geo[2], height, A), _band_estimate(geo[3], width, A),
                    width + 1)
    return _map_chunks(chunk, geo, nch, kc, k, key)


def roi_align_avg_bwd(grad, rois, *, feature_shape, pooled_h, pooled_w, spatial_scale,
                      sampling_ratio, aligned, channels_last):
    dtype = grad.dtype
    A = _compute_dtype(dtype)
    feature_shape = tuple(int(s) for s in feature_shape)
    n_img, height, width, chans = _nhwc_dims(feature_shape, channels_last)
    k = rois.shape[0]
    if _empty(n_img, height, width, chans, k, pooled_h, pooled_w):
        return jnp.zeros(feature_shape, dtype)
    cap = _grid_cap(sampling_ratio)
    kc, nch = _chunk_rois(k, pooled_h * pooled_w * chans)
    k_pad = kc * nch
    geo = _align_geometry(_pad_rois(rois, k_pad, A), n_img, height, width, pooled_h,
                          pooled_w, spatial_scale, sampling_ratio, aligned, A)

    def chunk(acc, xs):
        (n, _, ax_y, ax_x), g = xs
        g = _to_nhwc(g, channels_last).astype(A)
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
            w = _div(wy[:, :, None] * wx[:, None, :], count[:, None, None])
            row = jnp.where(active, ry[:, :, None], height)  # inactive: dropped
            col = jnp.broadcast_to(rx[:, None, :], row.shape)
            return acc.at[nn, row, col].add(w[..., None] * g, mode="drop")

        return lax.fori_loop(0, jnp.max(d_y, initial=0) * dx_max, body, acc)

    acc = jnp.zeros((n_img, height, width, chans), A)
    key = _sort_key(_band_estimate(geo[2], height, A), _band_estimate(geo[3], width, A),
                    width + 1)
    acc = _scan_chunks(chunk, acc, (geo, _pad_pooled(grad, k_pad)), nch, kc, key)
    return _from_nhwc(acc, channels_last).astype(dtype)


# ---------------------------------------------------------------------------------------
# roi_align max
# ---------------------------------------------------------------------------------------


def _value4(w1, v1, w2, v2, w3, v3, w4, v4):
    """w1*v1 + w2*v2 + w3*v3 + w4*v4 left to right, every product rounded on its own."""
    return (((_unfused(w1 * v1) + _unfused(w2 * v2)) + _unfused(w3 * v3)) + _unfused(w4 * v4))


def _first_max(sample, steps, shape, dtype):
    """Running maximum over steps 0..steps-1 in order, the first maximum winning.

    sample(t) -> (active, index, value), broadcastable to shape. Returns (best, index of the
    winner); (0, -1) where no step is active. Every bin's first candidate is its step 0
    (the first sample of its run, the first pixel of its bin); later ones win only when
    strictly greater, as in the kernels (so a NaN first candidate sticks and later NaNs never
    win).

    Two passes: the maximum, then the first step whose value equals it (the winner of the
    sequential rule: an earlier equal value would have blocked the later update). Each pass
    updates a single array, which XLA fuses with its gathers into one loop; tracking value and
    index together would materialise every gather and double the memory traffic.
    """

    def best_body(t, best):
        active, _, val = sample(t)
        return jnp.where(active & ((t == 0) | (val > best)), val, best)

    best = lax.fori_loop(0, steps, best_body, jnp.zeros(shape, dtype))
    best_nan = jnp.isnan(best)

    def index_body(t, idx):
        active, index, val = sample(t)
        match = (val == best) | ((t == 0) & best_nan)
        return jnp.where(active & (idx < 0) & match, index, idx)

    idx = lax.fori_loop(0, steps, index_body, jnp.full(shape, -1, jnp.int32))
    return best, idx


def _empty_max_result(k, pooled_h, pooled_w, chans, dtype, channels_last):
    """(zeros, argmax -1) for a max-type forward with nothing to read."""
    shape = (k, pooled_h, pooled_w, chans)
    return (_from_nhwc(jnp.zeros(shape, dtype), channels_last),
            _from_nhwc(jnp.full(shape, -1, jnp.int32), channels_last))


def roi_align_max_fwd(features, rois, *, pooled_h, pooled_w, spatial_scale, sampling_ratio,
                      aligned, channels_last):
    dtype = features.dtype
    A = _compute_dtype(dtype)
    f = _to_nhwc(features, channels_last)
    n_img, height, width, chans = f.shape
    k = rois.shape[0]
    if _empty(n_img, height, width, chans, k, pooled_h, pooled_w):
        return _empty_max_result(k, pooled_h, pooled_w, chans, dtype, channels_last)
    kc, nch = _chunk_rois(k, pooled_h * pooled_w * chans)
    geo = _align_geometry(_pad_rois(rois, kc * nch, A), n_img, height, width, pooled_h,
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

        best, idx = _first_max(sample, steps, (kk, pooled_h, pooled_w, chans), A)
        # The first sample off the map (value 0) competes in grid order (MergeOutside).
        outside = _first_outside(ax_y, ax_x)[..., None]
        inside_wins = (idx >= 0) & jnp.where(idx < outside, ~(A(0) > best), best > A(0))
        lose = (outside >= 0) & ~inside_wins
        best = jnp.where(lose, A(0), best).astype(dtype)
        idx = jnp.where(lose, -1, idx)
        return _from_nhwc(best, channels_last), _from_nhwc(idx, channels_last)

    return _map_chunks(chunk, geo, nch, kc, k, _run_key(geo[2], geo[3]))


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
    y = lay.p(ax_y.base) + _div((iy.astype(A) + A(0.5)) * lay.k(ax_y.bin),
                                jnp.maximum(gh, 1).astype(A))
    x = lay.q(ax_x.base) + _div((ix.astype(A) + A(0.5)) * lay.k(ax_x.bin), gw1.astype(A))
    in_y, yl, yh, hy, ly = _lerp(jnp.where(use, y, A(0)), height, A)
    in_x, xl, xh, hx, lx = _lerp(jnp.where(use, x, A(0)), width, A)
    use = use & in_y & in_x
    nn = jnp.broadcast_to(lay.k(n), am.shape)
    return use, nn, yl, yh, xl, xh, hy * hx, hy * lx, ly * hx, ly * lx


def roi_align_max_bwd(grad, rois, argmax, *, feature_shape, pooled_h, pooled_w,
                      spatial_scale, sampling_ratio, aligned, channels_last):
    dtype = grad.dtype
    A = _compute_dtype(dtype)
    feature_shape = tuple(int(s) for s in feature_shape)
    n_img, height, width, chans = _nhwc_dims(feature_shape, channels_last)
    if _empty(n_img, height, width, chans, rois.shape[0], pooled_h, pooled_w):
        return jnp.zeros(feature_shape, dtype)
    lay = _Layout(argmax.shape, channels_last)
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
    A = _compute_dtype(dtype)
    n_img, height, width, chans = _nhwc_dims(features.shape, channels_last)
    if _empty(n_img, height, width, chans, rois.shape[0], pooled_h, pooled_w):
        return jnp.zeros(argmax.shape, dtype)
    lay = _Layout(argmax.shape, channels_last)
    use, nn, yl, yh, xl, xh, w1, w2, w3, w4 = _max_winner_taps(
        rois, argmax, n_img, height, width, pooled_h, pooled_w, spatial_scale,
        sampling_ratio, aligned, lay, A)
    cc = lay.channel()

    def at(yy, xx):
        return features[lay.feature_index(nn, cc, yy, xx)].astype(A)

    # The forward's expression, so that the gathered value is the recorded maximum bit for bit.
    val = _value4(w1, at(yl, xl), w2, at(yl, xh), w3, at(yh, xl), w4, at(yh, xh))
    return jnp.where(use, val, A(0)).astype(dtype)


# ---------------------------------------------------------------------------------------
# roi_pool
# ---------------------------------------------------------------------------------------


def _pool_axis(lo_coord, hi_coord, scale, pooled, size, A):
    """RoiPoolAxis + PoolBin for all rois: (begin [K, P], end [K, P], ok [K])."""
    s = _round_half_away(lo_coord * scale)
    e = _round_half_away(hi_coord * scale)
    extent = e - s + A(1)
    extent = jnp.where(extent >= A(1), extent, A(1))
    bin_ = _div(extent, A(pooled))
    ok = jnp.isfinite(s) & jnp.isfinite(bin_)
    p = lax.broadcasted_iota(A, (s.shape[0], pooled), 1)
    b = bin_[:, None]
    begin = _pixel_index(jnp.floor(p * b) + s[:, None], size, A)
    end = _pixel_index(jnp.ceil((p + A(1)) * b) + s[:, None], size, A)
    return begin, end, ok


def _pool_geometry(rois, n_img, height, width, pooled_h, pooled_w, spatial_scale, A):
    """(n, first row, rows, first column, columns) of every bin; 0 rows for invalid rois."""
    scale = A(spatial_scale)
    n, valid = _batch_index(rois, n_img, A)
    wb, we, xok = _pool_axis(rois[:, 1], rois[:, 3], scale, pooled_w, width, A)
    hb, he, yok = _pool_axis(rois[:, 2], rois[:, 4], scale, pooled_h, height, A)
    ok = (valid & xok & yok)[:, None]
    hlen = jnp.where(ok, jnp.maximum(he - hb, 0), 0)
    wlen = jnp.where(ok, jnp.maximum(we - wb, 0), 0)
    return n, hb, hlen, wb, wlen


def roi_pool_fwd(features, rois, *, pooled_h, pooled_w, spatial_scale, channels_last):
    dtype = features.dtype
    A = _compute_dtype(dtype)
    f = _to_nhwc(features, channels_last)
    n_img, height, width, chans = f.shape
    k = rois.shape[0]
    if _empty(n_img, height, width, chans, k, pooled_h, pooled_w):
        return _empty_max_result(k, pooled_h, pooled_w, chans, dtype, channels_last)
    kc, nch = _chunk_rois(k, pooled_h * pooled_w * chans)
    geo = _pool_geometry(_pad_rois(rois, kc * nch, A), n_img, height, width, pooled_h,
                         pooled_w, spatial_scale, A)

    def chunk(geo):
        n, hb, hlen, wb, wlen = geo
        w_max = jnp.maximum(jnp.max(wlen, initial=0), 1)
        nn = n[:, None, None]

        def sample(t):
            a = t // w_max
            b = t % w_max
            yy = jnp.minimum(hb + a, height - 1)[:, :, None]
            xx = jnp.minimum(wb + b, width - 1)[:, None, :]
            active = ((a < hlen)[:, :, None] & (b < wlen)[:, None, :])[..., None]
            # compared in the storage type: the same order as in A
            return active, (yy * width + xx)[..., None], f[nn, yy, xx]

        steps = jnp.max(hlen, initial=0) * w_max
        best, idx = _first_max(sample, steps, (n.shape[0], pooled_h, pooled_w, chans), dtype)
        return _from_nhwc(best, channels_last), _from_nhwc(idx, channels_last)

    key = _sort_key(jnp.max(geo[2], axis=1, initial=0), jnp.max(geo[4], axis=1, initial=0),
                    width)
    return _map_chunks(chunk, geo, nch, kc, k, key)


def _pool_winner(rois, argmax, n_img, height, width, lay, A):
    """(use, feature index) of the recorded argmax pixel of every element."""
    n, valid = _batch_index(rois.astype(A), n_img, A)
    am = argmax.astype(jnp.int32)
    use = lay.k(valid) & (am >= 0) & (am < height * width)
    am = jnp.where(use, am, 0)
    nn = jnp.broadcast_to(lay.k(n), am.shape)
    return use, nn, lay.channel(), am // width, am % width


def roi_pool_bwd(grad, rois, argmax, *, feature_shape, pooled_h, pooled_w, spatial_scale,
                 channels_last):
    dtype = grad.dtype
    A = _compute_dtype(dtype)
    feature_shape = tuple(int(s) for s in feature_shape)
    n_img, height, width, chans = _nhwc_dims(feature_shape, channels_last)
    if _empty(n_img, height, width, chans, rois.shape[0], pooled_h, pooled_w):
        return jnp.zeros(feature_shape, dtype)
    lay = _Layout(argmax.shape, channels_last)
    use, nn, cc, yy, xx = _pool_winner(rois, argmax, n_img, height, width, lay, A)
    yy = jnp.where(use, yy, height)  # unused elements: out of bounds, dropped
    acc = jnp.zeros(feature_shape, A)
    acc = acc.at[lay.feature_index(nn, cc, yy, xx)].add(grad.astype(A), mode="drop")
    return acc.astype(dtype)


def roi_pool_gather(features, rois, argmax, *, pooled_h, pooled_w, spatial_scale,
                    channels_last):
    dtype = features.dtype
    A = _compute_dtype(dtype)
    n_img, height, width, chans = _nhwc_dims(features.shape, channels_last)
    if _empty(n_img, height, width, chans, rois.shape[0], pooled_h, pooled_w):
        return jnp.zeros(argmax.shape, dtype)
    lay = _Layout(argmax.shape, channels_last)
    use, nn, cc, yy, xx = _pool_winner(rois, argmax, n_img, height, width, lay, A)
    return jnp.where(use, features[lay.feature_index(nn, cc, yy, xx)],
                     jnp.zeros((), dtype))

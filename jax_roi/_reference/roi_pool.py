"""The pure-JAX roi_pool: forward, backward and the winner gather (docs/semantics.md,
"roi_pool")."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from .common import (
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
    pad_rois,
    pixel_index,
    round_half_away,
    sort_key,
    to_nhwc,
)


# ---------------------------------------------------------------------------------------
# roi_pool
# ---------------------------------------------------------------------------------------


def _pool_axis(lo_coord, hi_coord, scale, pooled, size, A):
    """RoiPoolAxis + PoolBin for all rois: (begin [K, P], end [K, P], ok [K])."""
    s = round_half_away(lo_coord * scale)
    e = round_half_away(hi_coord * scale)
    extent = e - s + A(1)
    extent = jnp.where(extent >= A(1), extent, A(1))
    bin_ = exact_div(extent, A(pooled))
    ok = jnp.isfinite(s) & jnp.isfinite(bin_)
    p = lax.broadcasted_iota(A, (s.shape[0], pooled), 1)
    b = bin_[:, None]
    begin = pixel_index(jnp.floor(p * b) + s[:, None], size, A)
    end = pixel_index(jnp.ceil((p + A(1)) * b) + s[:, None], size, A)
    return begin, end, ok


def _pool_geometry(rois, n_img, height, width, pooled_h, pooled_w, spatial_scale, A):
    """(n, first row, rows, first column, columns) of every bin; 0 rows for invalid rois."""
    scale = A(spatial_scale)
    n, valid = batch_index(rois, n_img, A)
    wb, we, xok = _pool_axis(rois[:, 1], rois[:, 3], scale, pooled_w, width, A)
    hb, he, yok = _pool_axis(rois[:, 2], rois[:, 4], scale, pooled_h, height, A)
    ok = (valid & xok & yok)[:, None]
    hlen = jnp.where(ok, jnp.maximum(he - hb, 0), 0)
    wlen = jnp.where(ok, jnp.maximum(we - wb, 0), 0)
    return n, hb, hlen, wb, wlen


def roi_pool_fwd(features, rois, *, pooled_h, pooled_w, spatial_scale, channels_last):
    dtype = features.dtype
    A = compute_dtype(dtype)
    f = to_nhwc(features, channels_last)
    n_img, height, width, chans = f.shape
    k = rois.shape[0]
    if is_empty(n_img, height, width, chans, k, pooled_h, pooled_w):
        return empty_max_result(k, pooled_h, pooled_w, chans, dtype, channels_last)
    kc, nch = chunk_rois(k, pooled_h * pooled_w * chans)
    geo = _pool_geometry(pad_rois(rois, kc * nch, A), n_img, height, width, pooled_h,
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
        best, idx = first_max(sample, steps, (n.shape[0], pooled_h, pooled_w, chans), dtype)
        return from_nhwc(best, channels_last), from_nhwc(idx, channels_last)

    key = sort_key(jnp.max(geo[2], axis=1, initial=0), jnp.max(geo[4], axis=1, initial=0),
                    width)
    return map_chunks(chunk, geo, nch, kc, k, key)


def _pool_winner(rois, argmax, n_img, height, width, lay, A):
    """(use, feature index) of the recorded argmax pixel of every element."""
    n, valid = batch_index(rois.astype(A), n_img, A)
    am = argmax.astype(jnp.int32)
    use = lay.k(valid) & (am >= 0) & (am < height * width)
    am = jnp.where(use, am, 0)
    nn = jnp.broadcast_to(lay.k(n), am.shape)
    return use, nn, lay.channel(), am // width, am % width


def roi_pool_bwd(grad, rois, argmax, *, feature_shape, pooled_h, pooled_w, spatial_scale,
                 channels_last):
    dtype = grad.dtype
    A = compute_dtype(dtype)
    feature_shape = tuple(int(s) for s in feature_shape)
    n_img, height, width, chans = nhwc_dims(feature_shape, channels_last)
    if is_empty(n_img, height, width, chans, rois.shape[0], pooled_h, pooled_w):
        return jnp.zeros(feature_shape, dtype)
    lay = PooledLayout(argmax.shape, channels_last)
    use, nn, cc, yy, xx = _pool_winner(rois, argmax, n_img, height, width, lay, A)
    yy = jnp.where(use, yy, height)  # unused elements: out of bounds, dropped
    acc = jnp.zeros(feature_shape, A)
    acc = acc.at[lay.feature_index(nn, cc, yy, xx)].add(grad.astype(A), mode="drop")
    return acc.astype(dtype)


def roi_pool_gather(features, rois, argmax, *, pooled_h, pooled_w, spatial_scale,
                    channels_last):
    dtype = features.dtype
    A = compute_dtype(dtype)
    n_img, height, width, chans = nhwc_dims(features.shape, channels_last)
    if is_empty(n_img, height, width, chans, rois.shape[0], pooled_h, pooled_w):
        return jnp.zeros(argmax.shape, dtype)
    lay = PooledLayout(argmax.shape, channels_last)
    use, nn, cc, yy, xx = _pool_winner(rois, argmax, n_img, height, width, lay, A)
    return jnp.where(use, features[lay.feature_index(nn, cc, yy, xx)],
                     jnp.zeros((), dtype))

"""Naive float64 NumPy oracle for jax_roi's roi_align / roi_pool, for tests only.

A literal transcription of the specification, docs/semantics.md (sections "Common
conventions", "roi_align", "roi_pool"; written from the project's original specification),
from that page alone:
it imports nothing from jax_roi and copies no other library's code. Plain Python loops over
rois, bins and samples (vectorised over channels only), everything in float64. Clarity over
speed: it is meant for tiny shapes (N<=3, C<=4, H,W<=16, K<=8, 7x7 outputs).

Readings of the spec where it is silent (kept in one place so tests can rely on them):
- A "max" (roi_align mode="max", roi_pool) starts from the first candidate (first sample /
  first pixel of the bin in row-major order) and then takes later ones only on strict '>'.
- A feature map with H == 0 or W == 0 has nothing to read: roi_align samples give 0 and
  roi_pool bins are empty.
- With sampling_ratio > 0 the grid is sampling_ratio x sampling_ratio whatever the box size,
  so a reversed box with aligned=True and sampling_ratio > 0 does get samples (at positions
  given by its negative bin size); only the adaptive grid (ceil of a size <= 0) is empty.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["roi_align", "roi_align_grad", "roi_pool", "roi_pool_grad"]


# ----------------------------------------------------------------------------- helpers


def _output_size(output_size):
    if isinstance(output_size, (int, np.integer)):
        ph = pw = int(output_size)
    else:
        ph, pw = (int(v) for v in output_size)
    if ph < 0 or pw < 0:
        raise ValueError(f"output_size must be non-negative, got {output_size!r}")
    return ph, pw


def _features_nchw(features, layout):
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 4:
        raise ValueError(f"features must be 4-D, got shape {f.shape}")
    if layout == "NCHW":
        return f
    if layout == "NHWC":
        return np.transpose(f, (0, 3, 1, 2))
    raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")


def _out_to_layout(out_kcpp, layout):
    # out [K, C, PH, PW] -> requested layout
    if layout == "NHWC":
        return np.ascontiguousarray(np.transpose(out_kcpp, (0, 2, 3, 1)))
    return out_kcpp


def _grad_out_nchw(grad_out, layout):
    g = np.asarray(grad_out, dtype=np.float64)
    if layout == "NHWC":
        g = np.transpose(g, (0, 3, 1, 2))
    return g


def _grad_to_layout(grad_nchw, layout):
    if layout == "NHWC":
        return np.ascontiguousarray(np.transpose(grad_nchw, (0, 2, 3, 1)))
    return grad_nchw


def _rois(rois):
    r = np.asarray(rois, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != 5:
        raise ValueError(f"rois must have shape [K, 5], got {r.shape}")
    return r


def _batch_index(row, n):
    """Image index of a roi row, or None if the row is invalid ("Box formats").

    Invalid: any of the 5 numbers NaN/inf, or the batch index, truncated toward zero,
    outside [0, N) (equivalently: valid iff -1 < b < N).
    """
    if not all(math.isfinite(float(v)) for v in row):
        return None
    b = math.trunc(float(row[0]))
    if b < 0 or b >= n:
        return None
    return b


def _round_half_away(v):
    """C round(): nearest integer, halves away from zero (NOT Python/NumPy round-half-even)."""
    a = abs(v)
    f = math.floor(a)
    r = f + 1 if a - f >= 0.5 else f  # a - floor(a) is exact in binary floating point
    return -r if v < 0 else r


def _clip(v, lo, hi):
    return min(max(v, lo), hi)


def _bilinear_terms(h, w, y, x):
    """SEMANTICS bilinear(y, x) as a list of (y_index, x_index, weight); [] means value 0.

    The value is sum(weight * v[y_index, x_index]); the same terms are the scatter targets
    of the backward pass. Corners may repeat (clamped edge); repeats add up.
    """
    if y < -1 or y > h or x < -1 or x > w:
        return []  # outside: contributes 0 (still counted in the average)
    if h <= 0 or w <= 0:
        return []  # empty map: nothing to read (spec silent)
    y = max(y, 0.0)
    x = max(x, 0.0)
    yl = math.floor(y)
    if yl >= h - 1:
        yl = yh = h - 1
        y = float(yl)
    else:
        yh = yl + 1
    xl = math.floor(x)
    if xl >= w - 1:
        xl = xh = w - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly = y - yl
    lx = x - xl
    hy = 1.0 - ly
    hx = 1.0 - lx
    return [
        (yl, xl, hy * hx),
        (yl, xh, hy * lx),
        (yh, xl, ly * hx),
        (yh, xh, ly * lx),
    ]


def _align_geometry(row, ph_count, pw_count, spatial_scale, sampling_ratio, aligned):
    """Per-roi grid of roi_align: (y0, x0, bh, bw, gh, gw)."""
    s = float(spatial_scale)
    off = 0.5 if aligned else 0.0
    x0 = row[1] * s - off
    y0 = row[2] * s - off
    x1 = row[3] * s - off
    y1 = row[4] * s - off
    rw = x1 - x0
    rh = y1 - y0
    if not aligned:  # legacy: force >= 1x1
        rw = max(rw, 1.0)
        rh = max(rh, 1.0)
    bw = rw / pw_count
    bh = rh / ph_count
    gh = int(sampling_ratio) if sampling_ratio > 0 else math.ceil(rh / ph_count)
    gw = int(sampling_ratio) if sampling_ratio > 0 else math.ceil(rw / pw_count)
    return y0, x0, bh, bw, gh, gw


def _bin_samples(y0, x0, bh, bw, gh, gw, ph, pw):
    """Sample coordinates of bin (ph, pw), iy outer, ix inner; empty if gh or gw <= 0."""
    pts = []
    for iy in range(max(gh, 0)):
        y = y0 + ph * bh + (iy + 0.5) * bh / gh
        for ix in range(max(gw, 0)):
            x = x0 + pw * bw + (ix + 0.5) * bw / gw
            pts.append((y, x))
    return pts


def _sample_value(img, terms):
    """img [C, H, W]; returns the [C] vector sum(weight * img[:, yi, xi])."""
    val = np.zeros(img.shape[0], dtype=np.float64)
    for yi, xi, wt in terms:
        val = val + wt * img[:, yi, xi]
    return val


# ----------------------------------------------------------------------------- roi_align


def _roi_align_impl(features, rois, output_size, spatial_scale, sampling_ratio, aligned,
                    mode, layout, grad_out=None):
    if mode not in ("avg", "max"):
        raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
    f = _features_nchw(features, layout)
    r = _rois(rois)
    PH, PW = _output_size(output_size)
    N, C, H, W = f.shape
    K = r.shape[0]
    out = np.zeros((K, C, PH, PW), dtype=np.float64)
    grad = np.zeros_like(f) if grad_out is not None else None
    if grad_out is not None:
        g_all = _grad_out_nchw(grad_out, layout)
        if g_all.shape != (K, C, PH, PW):
            raise ValueError(f"grad_out has shape {g_all.shape}, expected {(K, C, PH, PW)} (NCHW)")
    if PH == 0 or PW == 0:
        return out, grad

    for k in range(K):
        b = _batch_index(r[k], N)
        if b is None:
            continue  # invalid row: zero output, zero gradient
        img = f[b]
        y0, x0, bh, bw, gh, gw = _align_geometry(r[k], PH, PW, spatial_scale,
                                                 sampling_ratio, aligned)
        count = max(gh * gw, 1)
        for ph in range(PH):
            for pw in range(PW):
                samples = _bin_samples(y0, x0, bh, bw, gh, gw, ph, pw)
                if not samples:
                    continue  # no samples: output 0, no gradient
                all_terms = [_bilinear_terms(H, W, y, x) for (y, x) in samples]
                if mode == "avg":
                    acc = np.zeros(C, dtype=np.float64)
                    for terms in all_terms:
                        acc = acc + _sample_value(img, terms)
                    out[k, :, ph, pw] = acc / count
                    if grad is not None:
                        g = g_all[k, :, ph, pw]
                        for terms in all_terms:
                            for yi, xi, wt in terms:
                                grad[b, :, yi, xi] += g * wt / count
                else:  # max
                    best = _sample_value(img, all_terms[0])
                    winner = np.zeros(C, dtype=np.int64)  # index into samples
                    for i in range(1, len(all_terms)):
                        val = _sample_value(img, all_terms[i])
                        for c in range(C):
                            if val[c] > best[c]:  # strict: first maximum wins
                                best[c] = val[c]
                                winner[c] = i
                    out[k, :, ph, pw] = best
                    if grad is not None:
                        for c in range(C):
                            g = g_all[k, c, ph, pw]
                            # an out-of-range winner has no terms: nothing is scattered
                            for yi, xi, wt in all_terms[winner[c]]:
                                grad[b, c, yi, xi] += g * wt
    return out, grad


def roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1,
              aligned=False, mode="avg", layout="NCHW"):
    """float64 [K, C, PH, PW] (NCHW) or [K, PH, PW, C] (NHWC)."""
    out, _ = _roi_align_impl(features, rois, output_size, spatial_scale, sampling_ratio,
                             aligned, mode, layout)
    return _out_to_layout(out, layout)


def roi_align_grad(features, rois, grad_out, output_size, spatial_scale=1.0,
                   sampling_ratio=-1, aligned=False, mode="avg", layout="NCHW"):
    """float64 VJP of roi_align w.r.t. features (same shape and layout as features).

    avg: each sample scatters g * weight / max(gh*gw, 1) to its four corners.
    max: g goes, undivided, to the four corners of the winning sample with its bilinear
    weights; an out-of-range winner scatters nothing.
    """
    _, grad = _roi_align_impl(features, rois, output_size, spatial_scale, sampling_ratio,
                              aligned, mode, layout, grad_out=grad_out)
    return _grad_to_layout(grad, layout)


# ----------------------------------------------------------------------------- roi_pool


def _roi_pool_impl(features, rois, output_size, spatial_scale, layout):
    f = _features_nchw(features, layout)
    r = _rois(rois)
    PH, PW = _output_size(output_size)
    N, C, H, W = f.shape
    K = r.shape[0]
    s = float(spatial_scale)
    out = np.zeros((K, C, PH, PW), dtype=np.float64)
    argmax = np.full((K, C, PH, PW), -1, dtype=np.int64)
    bidx = np.full(K, -1, dtype=np.int64)
    for k in range(K):
        b = _batch_index(r[k], N)
        if b is None:
            continue  # invalid row: zero output, argmax -1
        bidx[k] = b
        xs = _round_half_away(r[k, 1] * s)
        ys = _round_half_away(r[k, 2] * s)
        xe = _round_half_away(r[k, 3] * s)
        ye = _round_half_away(r[k, 4] * s)
        rw = max(xe - xs + 1, 1)
        rh = max(ye - ys + 1, 1)
        bw = rw / PW
        bh = rh / PH
        for ph in range(PH):
            hstart = _clip(math.floor(ph * bh) + ys, 0, H)
            hend = _clip(math.ceil((ph + 1) * bh) + ys, 0, H)
            for pw in range(PW):
                wstart = _clip(math.floor(pw * bw) + xs, 0, W)
                wend = _clip(math.ceil((pw + 1) * bw) + xs, 0, W)
                if hend <= hstart or wend <= wstart:
                    continue  # empty bin: 0 and argmax -1
                for c in range(C):
                    best = f[b, c, hstart, wstart]
                    best_idx = hstart * W + wstart
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            v = f[b, c, h, w]
                            if v > best:  # strict: first maximum in row-major order wins
                                best = v
                                best_idx = h * W + w
                    out[k, c, ph, pw] = best
                    argmax[k, c, ph, pw] = best_idx
    return out, argmax, bidx, f.shape


def roi_pool(features, rois, output_size, spatial_scale=1.0, layout="NCHW"):
    """(out float64, argmax int64): argmax is h*W + w in the image plane, -1 if empty/invalid.

    Both [K, C, PH, PW] (NCHW) or [K, PH, PW, C] (NHWC).
    """
    out, argmax, _, _ = _roi_pool_impl(features, rois, output_size, spatial_scale, layout)
    return _out_to_layout(out, layout), _out_to_layout(argmax, layout)


def roi_pool_grad(features, rois, grad_out, output_size, spatial_scale=1.0, layout="NCHW"):
    """float64 VJP of roi_pool w.r.t. features: g goes to the stored argmax position."""
    out, argmax, bidx, (N, C, H, W) = _roi_pool_impl(features, rois, output_size,
                                                      spatial_scale, layout)
    g_all = _grad_out_nchw(grad_out, layout)
    if g_all.shape != out.shape:
        raise ValueError(f"grad_out has shape {g_all.shape}, expected {out.shape} (NCHW)")
    grad = np.zeros((N, C, H, W), dtype=np.float64)
    K, _, PH, PW = out.shape
    for k in range(K):
        if bidx[k] < 0:
            continue
        for c in range(C):
            for ph in range(PH):
                for pw in range(PW):
                    a = argmax[k, c, ph, pw]
                    if a < 0:
                        continue
                    grad[bidx[k], c, a // W, a % W] += g_all[k, c, ph, pw]
    return _grad_to_layout(grad, layout)

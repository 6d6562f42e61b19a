"""Parity of the public ops with the float64 NumPy oracle (tests/oracle.py).

roi_align: dtype x layout x mode in full, crossed with a pairwise design over
(aligned, sampling_ratio, spatial_scale): every (sampling_ratio, spatial_scale) pair once,
`aligned` chosen so every (aligned, sampling_ratio) and (aligned, spatial_scale) pair occurs
too. Output sizes (non-square included), batch sizes 1-3 and map shapes rotate through the
configs (float32 and float64 run every config; float16 and bfloat16 a third each, every
sampling_ratio, scale and `aligned` value still covered by each). Forward and gradient
(jax.vjp vs oracle.roi_align_grad).

16-bit: the oracle runs on the 16-bit-rounded features (rois in float32, the compute type);
the comparison uses the dtype tolerance. In max mode a 16-bit near-tie can change the winning
sample, so only the forward values are compared there.

roi_pool: dtype x layout x configs; the forward must equal the oracle exactly (a max of the
inputs), the gradient within tolerance, and the one-hot VJP of every output bin must land on
the oracle's argmax (the library's argmax is internal).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import (DTYPE_IDS, DTYPES, LAYOUTS, as_f64, assert_close, compute_dtype,
                      lib_vjp, nchw_to, oracle_fwd, oracle_grad, random_features,
                      random_rois, rng_for, to_dtype)
import jax_roi
import oracle

# (aligned, sampling_ratio, spatial_scale)
_PAIRWISE = [
    (False, -1, 1.0), (True, -1, 0.25), (False, -1, 0.0625),
    (True, 0, 1.0), (False, 0, 0.25), (True, 0, 0.0625),
    (False, 1, 1.0), (True, 1, 0.25), (False, 1, 0.0625),
    (True, 2, 1.0), (False, 2, 0.25), (True, 2, 0.0625),
    (False, 4, 1.0), (True, 4, 0.25), (True, 4, 0.0625),
]
_OUTPUT_SIZES = [(2, 3), (3, 2), (1, 4), (4, 1), (2, 2), 1, (3, 3)]
_MAPS = [(16, 16), (9, 13), (12, 7), (5, 16), (16, 6)]  # (H, W)


def _align_configs():
    cfgs = []
    for i, (aligned, sr, scale) in enumerate(_PAIRWISE):
        cfgs.append(dict(
            aligned=aligned, sampling_ratio=sr, spatial_scale=scale,
            output_size=_OUTPUT_SIZES[i % len(_OUTPUT_SIZES)],
            n=1 + i % 3, c=1 + (i * 3) % 4, hw=_MAPS[i % len(_MAPS)], k=3 + i % 6,
        ))
    return cfgs


ALIGN_CONFIGS = _align_configs()
ALIGN_IDS = [f"al{int(c['aligned'])}-sr{c['sampling_ratio']}-s{c['spatial_scale']:g}"
             for c in ALIGN_CONFIGS]


def _dtype_cfg_params(configs, ids, subsets):
    """float32/float64 x every config; each 16-bit dtype x its subset of config indices."""
    params = []
    for dtype, did in zip(DTYPES, DTYPE_IDS):
        for i, (cfg, cid) in enumerate(zip(configs, ids)):
            if did in subsets and i not in subsets[did]:
                continue
            params.append(pytest.param(dtype, cfg, id=f"{did}-{cid}"))
    return params


# 16-bit subsets of _PAIRWISE: each covers every sampling_ratio, every scale, both aligned.
_ALIGN_16BIT = {"f16": (0, 4, 8, 9, 13), "bf16": (2, 3, 7, 11, 12)}
_POOL_16BIT = {"f16": (0, 1, 2), "bf16": (3, 4, 5)}


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype,cfg", _dtype_cfg_params(ALIGN_CONFIGS, ALIGN_IDS, _ALIGN_16BIT))
def test_roi_align_parity(dtype, cfg, layout, mode):
    rng = rng_for("align", DTYPE_IDS[DTYPES.index(dtype)], layout, mode, sorted(cfg.items()))
    h, w = cfg["hw"]
    x = random_features(rng, (cfg["n"], cfg["c"], h, w), dtype, layout)
    rois = random_rois(rng, cfg["k"], cfg["n"], h, w, cfg["spatial_scale"],
                       dtype=compute_dtype(dtype))
    kw = dict(output_size=cfg["output_size"], spatial_scale=cfg["spatial_scale"],
              sampling_ratio=cfg["sampling_ratio"], aligned=cfg["aligned"], mode=mode,
              layout=layout)

    want = oracle_fwd("roi_align", x, rois, **kw)
    g = to_dtype(rng.standard_normal(want.shape), dtype)
    out, grad = lib_vjp("roi_align", x, rois, g, **kw)

    assert out.dtype == jnp.dtype(dtype)
    assert grad.dtype == jnp.dtype(dtype)
    assert grad.shape == x.shape
    assert_close(out, want, dtype, what="forward")
    if mode == "max" and jnp.dtype(dtype).itemsize == 2:
        assert np.all(np.isfinite(as_f64(grad)))
        return  # a 16-bit near-tie can move the winner: values only
    want_grad = oracle_grad("roi_align", x, rois, g, **kw)
    assert_close(grad, want_grad, dtype, what="gradient")


def test_align_configs_are_pairwise():
    """The design above covers every pair of (aligned, sampling_ratio, spatial_scale)."""
    seen = {(a, sr, s) for a, sr, s in _PAIRWISE}
    srs, scales = {-1, 0, 1, 2, 4}, {1.0, 0.25, 0.0625}
    assert {(sr, s) for _, sr, s in seen} == {(sr, s) for sr in srs for s in scales}
    assert {(a, sr) for a, sr, _ in seen} == {(a, sr) for a in (False, True) for sr in srs}
    assert {(a, s) for a, _, s in seen} == {(a, s) for a in (False, True) for s in scales}
    for subset in _ALIGN_16BIT.values():
        rows = [_PAIRWISE[i] for i in subset]
        assert {sr for _, sr, _ in rows} == srs and {s for _, _, s in rows} == scales
        assert {a for a, _, _ in rows} == {False, True}


# ---------------------------------------------------------------------------------------
# roi_pool
# ---------------------------------------------------------------------------------------

POOL_CONFIGS = [
    dict(spatial_scale=1.0, output_size=(2, 3), n=1, c=2, hw=(16, 16), k=6),
    dict(spatial_scale=0.25, output_size=(3, 2), n=2, c=3, hw=(9, 13), k=5),
    dict(spatial_scale=0.0625, output_size=2, n=3, c=1, hw=(12, 7), k=8),
    dict(spatial_scale=1.0, output_size=(1, 4), n=3, c=4, hw=(5, 16), k=4),
    dict(spatial_scale=0.25, output_size=(4, 1), n=1, c=2, hw=(16, 6), k=7),
    dict(spatial_scale=0.0625, output_size=(3, 3), n=2, c=2, hw=(7, 7), k=3),
]
POOL_IDS = [f"s{c['spatial_scale']:g}-o{c['output_size']}-n{c['n']}".replace(" ", "")
            for c in POOL_CONFIGS]


def _pool_all(x, rois, g, output_size, spatial_scale, layout):
    """One jit: output, VJP of g, and the VJP of every output element's one-hot cotangent."""
    def f(x, r, g):
        out, vjp = jax.vjp(lambda v: jax_roi.roi_pool(v, r, output_size, spatial_scale,
                                                      layout=layout), x)
        m = out.size
        basis = jnp.eye(m, dtype=out.dtype).reshape((m,) + out.shape)
        (onehot,) = jax.vmap(vjp)(basis)
        return out, vjp(g)[0], onehot.reshape(out.shape + x.shape)

    return jax.jit(f)(x, rois, g)


def _check_argmax(grads, argmax, rois, x_nchw_shape, layout):
    """Each bin's one-hot VJP is 1 at the oracle's argmax of its image, 0 elsewhere."""
    if layout == "NHWC":  # to [K, C, PH, PW, N, C, H, W]
        grads = np.transpose(grads, (0, 3, 1, 2, 4, 7, 5, 6))
        argmax = np.transpose(argmax, (0, 3, 1, 2))
    n, c_, h, w = x_nchw_shape
    k, c, ph, pw = argmax.shape
    want = np.zeros_like(grads)
    for ki in range(k):
        b = int(np.trunc(rois[ki, 0]))
        for ci in range(c):
            for i in range(ph):
                for j in range(pw):
                    a = argmax[ki, ci, i, j]
                    if a >= 0:
                        want[ki, ci, i, j, b, ci, a // w, a % w] = 1.0
    np.testing.assert_array_equal(grads, want)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype,cfg", _dtype_cfg_params(POOL_CONFIGS, POOL_IDS, _POOL_16BIT))
def test_roi_pool_parity(dtype, cfg, layout):
    rng = rng_for("pool", DTYPE_IDS[DTYPES.index(dtype)], layout, sorted(cfg.items()))
    h, w = cfg["hw"]
    x = random_features(rng, (cfg["n"], cfg["c"], h, w), dtype, layout)
    rois = random_rois(rng, cfg["k"], cfg["n"], h, w, cfg["spatial_scale"],
                       dtype=compute_dtype(dtype))
    kw = dict(output_size=cfg["output_size"], spatial_scale=cfg["spatial_scale"],
              layout=layout)

    want, argmax = oracle.roi_pool(as_f64(x), as_f64(rois), **kw)
    g = to_dtype(rng.standard_normal(want.shape), dtype)
    out, grad, onehot = _pool_all(x, rois, g, **kw)

    assert out.dtype == jnp.dtype(dtype) and grad.dtype == jnp.dtype(dtype)
    assert grad.shape == x.shape
    # The forward is a max of input values (or 0): exact in every dtype.
    np.testing.assert_array_equal(as_f64(out), want)
    assert_close(grad, oracle_grad("roi_pool", x, rois, g, **kw), dtype, what="gradient")
    _check_argmax(as_f64(onehot), argmax, as_f64(rois), (cfg["n"], cfg["c"], h, w), layout)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_nhwc_is_transposed_nchw(mode):
    """The two layouts give the same numbers up to the transpose."""
    rng = rng_for("layout", mode)
    x = random_features(rng, (2, 3, 11, 9), jnp.float32)
    rois = random_rois(rng, 6, 2, 11, 9, 0.5, dtype=np.float32)

    a = jax_roi.roi_align(x, rois, (3, 2), 0.5, 2, True, mode=mode, layout="NCHW")
    b = jax_roi.roi_align(nchw_to("NHWC", x), rois, (3, 2), 0.5, 2, True, mode=mode,
                          layout="NHWC")
    assert_close(np.transpose(as_f64(b), (0, 3, 1, 2)), as_f64(a), jnp.float32)


# The configurations above have at most 4 channels; the CPU kernels work on channels in
# vector chunks (8 float lanes, 4 double) and groups of 4 planes, so 19 channels exercise the
# chunks and their ragged tails in both layouts. The 80x90 map with adaptive sampling gives
# bins of about 40 samples a side.
WIDE_CONFIGS = [
    dict(spatial_scale=0.25, output_size=(3, 2), aligned=True, sampling_ratio=2, hw=(13, 11)),
    dict(spatial_scale=1.0, output_size=(2, 3), aligned=False, sampling_ratio=-1, hw=(9, 12)),
    dict(spatial_scale=0.5, output_size=7, aligned=True, sampling_ratio=0, hw=(10, 8)),
    dict(spatial_scale=1.0, output_size=2, aligned=True, sampling_ratio=-1, hw=(80, 90)),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cfg", WIDE_CONFIGS, ids=["sr2", "adaptive", "sr0", "big-grid"])
def test_roi_align_avg_parity_many_channels(cfg, dtype, layout):
    rng = rng_for("align-wide", DTYPE_IDS[DTYPES.index(dtype)], layout, sorted(cfg.items()))
    h, w = cfg["hw"]
    x = random_features(rng, (2, 19, h, w), dtype, layout)
    rois = random_rois(rng, 9, 2, h, w, cfg["spatial_scale"], dtype=compute_dtype(dtype))
    if cfg["hw"] == (80, 90):
        rois[:3] = [[0, -5, -5, 95, 85], [1, 0, 0, 89, 79], [1, 10, 3, 70, 77]]
    kw = {k: v for k, v in cfg.items() if k != "hw"}
    kw.update(mode="avg", layout=layout)
    want = oracle_fwd("roi_align", x, rois, **kw)
    g = to_dtype(rng.standard_normal(want.shape), dtype)
    out, grad = lib_vjp("roi_align", x, rois, g, **kw)
    assert_close(out, want, dtype, what="forward")
    assert_close(grad, oracle_grad("roi_align", x, rois, g, **kw), dtype, what="backward")


# The NCHW avg forward takes one of three CPU paths by how many bytes the output has against
# one channel of the maps (xla_kernels/cpu/roi_align_avg_fwd_cpu.cc, TileChannels): the whole map copied
# channels-last at once, the copy in blocks of channels, or (too few output bytes for 16
# channels of the copy, which holds float32 for 16-bit maps) the plane loop.
# (K, C, H, W, output) for each:
_NCHW_PATHS = {
    "one-block": (9, 19, 12, 14, (7, 7)),
    "blocks": (20, 40, 20, 20, (4, 4)),  # 32 + 8 channels (16-bit: 16 + 16 + 8)
    "planes": (1, 40, 20, 20, (4, 4)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("path", list(_NCHW_PATHS))
def test_roi_align_avg_nchw_paths_match_nhwc(path, dtype):
    """Every NCHW path does the NHWC loop's operations in its order: the same bits, and the
    oracle's numbers."""
    k, c, h, w, size = _NCHW_PATHS[path]
    rng = rng_for("nchw-path", path, DTYPE_IDS[DTYPES.index(dtype)])
    x = random_features(rng, (1, c, h, w), dtype, "NCHW")
    rois = random_rois(rng, k, 1, h, w, 1.0, dtype=compute_dtype(dtype))
    rois[0, 0] = -1  # an invalid row: zeros through every path
    kw = dict(output_size=size, sampling_ratio=2, aligned=True)
    nchw = jax.jit(lambda v, r: jax_roi.roi_align(v, r, **kw))(x, rois)
    nhwc = jax.jit(lambda v, r: jax_roi.roi_align(v, r, layout="NHWC", **kw))(
        jnp.transpose(x, (0, 2, 3, 1)), rois)
    np.testing.assert_array_equal(as_f64(nchw), as_f64(jnp.transpose(nhwc, (0, 3, 1, 2))))
    assert not np.any(as_f64(nchw)[0])
    assert_close(nchw, oracle_fwd("roi_align", x, rois, **kw), dtype, what="forward")

"""Public RoI ops: validation -> custom_vjp -> primitives."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp

from . import _primitives as P
from . import _validation as V

OutputSize = Union[int, Sequence[int]]


class _AlignConfig(NamedTuple):
    pooled_h: int
    pooled_w: int
    spatial_scale: float
    sampling_ratio: int
    aligned: bool
    channels_last: bool
    deterministic: bool


class _PoolConfig(NamedTuple):
    pooled_h: int
    pooled_w: int
    spatial_scale: float
    channels_last: bool
    deterministic: bool


# ---------------------------------------------------------------------------------------
# roi_align
# ---------------------------------------------------------------------------------------

@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _roi_align_avg(features, rois, feature_shape, cfg: _AlignConfig):
    return P.roi_align_avg_fwd_p.bind(features, rois, **cfg._asdict())


def _roi_align_avg_fwd(features, rois, feature_shape, cfg):
    return P.roi_align_avg_fwd_p.bind(features, rois, **cfg._asdict()), rois


def _roi_align_avg_bwd(feature_shape, cfg, rois, g):
    grad = P.roi_align_avg_bwd_p.bind(g, rois, feature_shape=feature_shape, **cfg._asdict())
    return grad, jnp.zeros_like(rois)


_roi_align_avg.defvjp(_roi_align_avg_fwd, _roi_align_avg_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _roi_align_max(features, rois, feature_shape, cfg: _AlignConfig):
    return P.roi_align_max_fwd_p.bind(features, rois, **cfg._asdict())[0]


def _roi_align_max_fwd(features, rois, feature_shape, cfg):
    out, argmax = P.roi_align_max_fwd_p.bind(features, rois, **cfg._asdict())
    return out, (rois, argmax)


def _roi_align_max_bwd(feature_shape, cfg, res, g):
    rois, argmax = res
    grad = P.roi_align_max_bwd_p.bind(g, rois, argmax, feature_shape=feature_shape,
                                      **cfg._asdict())
    return grad, jnp.zeros_like(rois)


_roi_align_max.defvjp(_roi_align_max_fwd, _roi_align_max_bwd)


def roi_align(
    features: jax.typing.ArrayLike,
    rois: jax.typing.ArrayLike,
    output_size: OutputSize,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    *,
    mode: str = "avg",
    layout: str = "NCHW",
    deterministic: bool = False,
) -> jax.Array:
    """RoI Align (Mask R-CNN): bilinear samples averaged (or maxed) over each output bin.

    Args:
      features: ``[N, C, H, W]`` (layout ``"NCHW"``) or ``[N, H, W, C]`` (``"NHWC"``);
        float16, bfloat16, float32 or float64 (16-bit inputs accumulate in float32).
      rois: ``[K, 5]`` float rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels.
        The batch index truncates toward zero; a row whose index is outside ``[0, N)`` or
        that holds NaN/inf gives an all-zero output row and zero gradient.
      output_size: ``PH`` or ``(PH, PW)``.
      spatial_scale: feature-map pixels per image pixel (1/stride), a static positive number.
      sampling_ratio: samples per bin along each axis; ``<= 0`` picks ``ceil(roi_size / P)``
        per roi and axis (adaptive).
      aligned: shift boxes by -0.5 pixel (the half-pixel-correct Detectron2 geometry);
        ``False`` is the original Mask R-CNN geometry, with boxes forced to at least 1x1.
      mode: ``"avg"`` (torchvision / detectron2) or ``"max"`` (mmcv's max over interpolated
        samples; an out-of-map sample counts as 0 and competes).
      layout: ``"NCHW"`` or ``"NHWC"`` for both ``features`` and the result.
      deterministic: on CUDA, compute the gradient w.r.t. ``features`` with a gather that
        gives bitwise-identical results on every run (slower) instead of atomic adds. Also
        on when ``XLA_FLAGS`` contains ``--xla_gpu_deterministic_ops=true`` at trace time.
        The CPU kernels are always deterministic; the result is the same either way up to
        rounding.

    Returns:
      ``[K, C, PH, PW]`` (NCHW) or ``[K, PH, PW, C]`` (NHWC), dtype of ``features``.

    Differentiable w.r.t. ``features`` (``jax.grad``, ``vmap``, grad of grad); the gradient
    w.r.t. ``rois`` is zero. Exact semantics: docs/semantics.md, "roi_align".
    """
    op = "roi_align"
    features, rois = V.features_and_rois(op, features, rois, layout)
    ph, pw = V.output_size(op, output_size)
    cfg = _AlignConfig(
        pooled_h=ph,
        pooled_w=pw,
        spatial_scale=V.spatial_scale(op, spatial_scale),
        sampling_ratio=V.sampling_ratio(op, sampling_ratio),
        aligned=V.flag(op, "aligned", aligned),
        channels_last=layout == "NHWC",
        deterministic=V.deterministic(op, deterministic),
    )
    mode = V.mode(op, mode)
    rois = rois.astype(V.compute_dtype(features.dtype))
    fn = _roi_align_avg if mode == "avg" else _roi_align_max
    return fn(features, rois, tuple(features.shape), cfg)


# ---------------------------------------------------------------------------------------
# roi_pool
# ---------------------------------------------------------------------------------------

@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _roi_pool(features, rois, feature_shape, cfg: _PoolConfig):
    return P.roi_pool_fwd_p.bind(features, rois, **cfg._asdict())[0]


def _roi_pool_fwd(features, rois, feature_shape, cfg):
    out, argmax = P.roi_pool_fwd_p.bind(features, rois, **cfg._asdict())
    return out, (rois, argmax)


def _roi_pool_bwd(feature_shape, cfg, res, g):
    rois, argmax = res
    grad = P.roi_pool_bwd_p.bind(g, rois, argmax, feature_shape=feature_shape, **cfg._asdict())
    return grad, jnp.zeros_like(rois)


_roi_pool.defvjp(_roi_pool_fwd, _roi_pool_bwd)


def roi_pool(
    features: jax.typing.ArrayLike,
    rois: jax.typing.ArrayLike,
    output_size: OutputSize,
    spatial_scale: float = 1.0,
    *,
    layout: str = "NCHW",
    deterministic: bool = False,
) -> jax.Array:
    """RoI Pool (Fast R-CNN): max over quantized bins of each box.

    Box corners round to the nearest feature pixel (halves away from zero), the box is split
    into ``PH x PW`` integer bins, and each bin takes its maximum; empty bins give 0.

    Args:
      features: ``[N, C, H, W]`` (``"NCHW"``) or ``[N, H, W, C]`` (``"NHWC"``), float16,
        bfloat16, float32 or float64.
      rois: ``[K, 5]`` float rows ``(batch_index, x1, y1, x2, y2)``; invalid rows (index
        outside ``[0, N)``, NaN/inf) give zeros and zero gradient.
      output_size: ``PH`` or ``(PH, PW)``.
      spatial_scale: feature-map pixels per image pixel, a static positive number.
      layout: ``"NCHW"`` or ``"NHWC"``.
      deterministic: bitwise-reproducible CUDA backward, as for :func:`roi_align`.

    Returns:
      ``[K, C, PH, PW]`` or ``[K, PH, PW, C]``, dtype of ``features``. The gradient goes to
      each bin's first maximum (row-major); the gradient w.r.t. ``rois`` is zero.
    """
    op = "roi_pool"
    features, rois = V.features_and_rois(op, features, rois, layout)
    ph, pw = V.output_size(op, output_size)
    cfg = _PoolConfig(
        pooled_h=ph,
        pooled_w=pw,
        spatial_scale=V.spatial_scale(op, spatial_scale),
        channels_last=layout == "NHWC",
        deterministic=V.deterministic(op, deterministic),
    )
    rois = rois.astype(V.compute_dtype(features.dtype))
    return _roi_pool(features, rois, tuple(features.shape), cfg)

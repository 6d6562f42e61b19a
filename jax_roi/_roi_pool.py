"""roi_pool: its kernels' specs (forward, backward, winner gather) and the public function.
Semantics: docs/semantics.md, "roi_pool"."""

from __future__ import annotations

import jax

from . import _kernels
from . import _reference as reference
from . import _validation as check
from ._kernels import Kernel, Role
from ._roi_align import OutputSize

# The family's FFI attributes (PoolAttrs in xla_kernels/include/jax_roi/roi_call.h).
ATTRS = ("pooled_h", "pooled_w", "spatial_scale", "channels_last", "deterministic")

roi_pool_fwd_p, roi_pool_bwd_p, roi_pool_gather_p = _kernels.define(
    Kernel("roi_pool_fwd", ATTRS, (Role.FEATURES, Role.ROIS), (Role.POOLED, Role.ARGMAX),
           reference.roi_pool_fwd, winner_gather="roi_pool_gather"),
    Kernel("roi_pool_bwd", ATTRS, (Role.POOLED, Role.ROIS, Role.ARGMAX), (Role.FEATURE_GRAD,),
           reference.roi_pool_bwd, transpose="roi_pool_gather"),
    # The features at the recorded winners (pure JAX everywhere, as roi_align_max_gather).
    Kernel("roi_pool_gather", ATTRS, (Role.FEATURES, Role.ROIS, Role.ARGMAX), (Role.POOLED,),
           reference.roi_pool_gather, transpose="roi_pool_bwd", has_target=False),
)

_pool = _kernels.differentiable(roi_pool_fwd_p, roi_pool_bwd_p)


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
      each bin's first maximum (row-major); the gradient w.r.t. ``rois`` is zero. Exact
      semantics: docs/semantics.md, "roi_pool".
    """
    features, rois, params = check.pooled_call("roi_pool", features, rois, output_size,
                                               spatial_scale, layout, deterministic)
    return _pool(features, rois, tuple(features.shape), params)

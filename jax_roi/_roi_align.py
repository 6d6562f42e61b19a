"""roi_align: its kernels' specs (avg and max modes, forward, backward, winner gather) and
the public function. Semantics: docs/semantics.md, "roi_align"."""

from __future__ import annotations

from typing import Sequence, Union

import jax

from . import _kernels
from . import _reference as reference
from . import _validation as check
from ._kernels import Kernel, Role

OutputSize = Union[int, Sequence[int]]

# The family's FFI attributes (AlignAttrs in xla_kernels/include/jax_roi/roi_call.h).
ATTRS = ("pooled_h", "pooled_w", "spatial_scale", "sampling_ratio", "aligned", "channels_last",
         "deterministic")

(roi_align_avg_fwd_p, roi_align_avg_bwd_p, roi_align_max_fwd_p, roi_align_max_bwd_p,
 roi_align_max_gather_p) = _kernels.define(
    Kernel("roi_align_avg_fwd", ATTRS, (Role.FEATURES, Role.ROIS), (Role.POOLED,),
           reference.roi_align_avg_fwd, transpose="roi_align_avg_bwd"),
    Kernel("roi_align_avg_bwd", ATTRS, (Role.POOLED, Role.ROIS), (Role.FEATURE_GRAD,),
           reference.roi_align_avg_bwd, transpose="roi_align_avg_fwd"),
    Kernel("roi_align_max_fwd", ATTRS, (Role.FEATURES, Role.ROIS), (Role.POOLED, Role.ARGMAX),
           reference.roi_align_max_fwd, winner_gather="roi_align_max_gather"),
    Kernel("roi_align_max_bwd", ATTRS, (Role.POOLED, Role.ROIS, Role.ARGMAX),
           (Role.FEATURE_GRAD,), reference.roi_align_max_bwd, transpose="roi_align_max_gather"),
    # The features at the recorded winners: the JVP of the max forward and the transpose of
    # its backward. Pure JAX on every platform (no kernel): only grad of grad and
    # forward-mode differentiation of the max mode run it.
    Kernel("roi_align_max_gather", ATTRS, (Role.FEATURES, Role.ROIS, Role.ARGMAX),
           (Role.POOLED,), reference.roi_align_max_gather, transpose="roi_align_max_bwd",
           has_target=False),
)

_avg = _kernels.differentiable(roi_align_avg_fwd_p, roi_align_avg_bwd_p)
_max = _kernels.differentiable(roi_align_max_fwd_p, roi_align_max_bwd_p)


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
    features, rois, params = check.pooled_call(op, features, rois, output_size, spatial_scale,
                                               layout, deterministic)
    params += (("sampling_ratio", check.sampling_ratio(op, sampling_ratio)),
               ("aligned", check.flag(op, "aligned", aligned)))
    fn = _avg if check.mode(op, mode) == "avg" else _max
    return fn(features, rois, tuple(features.shape), params)

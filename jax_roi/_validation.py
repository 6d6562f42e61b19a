"""Trace-time argument checks for the public ops: clear errors naming the argument."""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import jax.numpy as jnp
import numpy as np

# The kernels cap the sampling grid at this many samples per axis and bin (roi_math.h).
MAX_SAMPLING_RATIO = 32768

FEATURE_DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)
LAYOUTS = ("NCHW", "NHWC")


def features_and_rois(op: str, features: Any, rois: Any, layout: str):
    """Checks features [N, C, H, W] / [N, H, W, C] and rois [K, 5]; returns jnp arrays."""
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"{op}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    features = jnp.asarray(features)
    rois = jnp.asarray(rois)
    if features.dtype not in [jnp.dtype(d) for d in FEATURE_DTYPES]:
        raise TypeError(
            f"{op}: features must be float16, bfloat16, float32 or float64, got {features.dtype}")
    if features.ndim != 4:
        want = "[N, C, H, W]" if layout == "NCHW" else "[N, H, W, C]"
        raise ValueError(f"{op}: features must have rank 4 {want} for layout {layout!r}, "
                         f"got shape {tuple(features.shape)}")
    h, w = (features.shape[2], features.shape[3]) if layout == "NCHW" else features.shape[1:3]
    if h < 1 or w < 1:
        raise ValueError(f"{op}: features must have H, W >= 1, got shape {tuple(features.shape)}")
    if h * w > np.iinfo(np.int32).max:
        raise ValueError(f"{op}: features plane H*W must fit in int32, got shape "
                         f"{tuple(features.shape)}")
    if not jnp.issubdtype(rois.dtype, jnp.floating):
        raise TypeError(f"{op}: rois must be a floating array [K, 5], got dtype {rois.dtype}")
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"{op}: rois must have shape [K, 5] (batch_index, x1, y1, x2, y2), "
                         f"got {tuple(rois.shape)}")
    return features, rois


def compute_dtype(features_dtype) -> np.dtype:
    """Arithmetic type: float64 for float64 features, float32 otherwise (16-bit accumulate)."""
    return np.dtype(np.float64) if features_dtype == jnp.float64 else np.dtype(np.float32)


def output_size(op: str, size: Any) -> tuple[int, int]:
    if isinstance(size, (bool, np.bool_)):
        raise TypeError(f"{op}: output_size must be an int or a pair of ints, got {size!r}")
    if isinstance(size, numbers.Integral):
        size = (int(size), int(size))
    elif (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
                  for v in size)):
        size = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f"{op}: output_size must be an int or a pair of ints, got {size!r}")
    if size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"{op}: output_size must be positive, got {size}")
    return size


def spatial_scale(op: str, scale: Any) -> float:
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"{op}: spatial_scale must be a static Python number, got {scale!r}")
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{op}: spatial_scale must be positive and finite, got {scale}")
    return scale


def sampling_ratio(op: str, ratio: Any) -> int:
    if isinstance(ratio, (bool, np.bool_)) or not isinstance(ratio, numbers.Integral):
        raise TypeError(f"{op}: sampling_ratio must be an int (<= 0 for adaptive), got {ratio!r}")
    ratio = int(ratio)
    if ratio > MAX_SAMPLING_RATIO:
        raise ValueError(f"{op}: sampling_ratio must be <= {MAX_SAMPLING_RATIO}, got {ratio}")
    return ratio


def flag(op: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")
    return bool(value)


def mode(op: str, value: Any) -> str:
    if not isinstance(value, str) or value not in ("avg", "max"):
        raise ValueError(f"{op}: mode must be 'avg' or 'max', got {value!r}")
    return value


def xla_flags_deterministic() -> bool:
    """Whether XLA_FLAGS holds --xla_gpu_deterministic_ops=true (the last occurrence wins;
    a bare flag means true, as XLA parses it)."""
    value = None
    for token in os.environ.get("XLA_FLAGS", "").split():
        name, sep, v = token.partition("=")
        if name == "--xla_gpu_deterministic_ops":
            value = v if sep else "true"
    return value is not None and value.lower() in ("true", "1")


def deterministic(op: str, value: Any) -> bool:
    """The `deterministic` flag (a bool), forced on by XLA_FLAGS' deterministic-ops switch.

    Read at trace time: a function traced before XLA_FLAGS changed keeps what it had.
    """
    return flag(op, "deterministic", value) or xla_flags_deterministic()



def pooled_call(op: str, features: Any, rois: Any, size: Any, scale: Any, layout: Any,
                det: Any):
    """The checks every pooled op makes: (features, rois in the compute type, params), where
    params are the family attributes they share, as (name, value) pairs: pooled_h, pooled_w,
    spatial_scale, channels_last, deterministic."""
    features, rois = features_and_rois(op, features, rois, layout)
    ph, pw = output_size(op, size)
    params = (("pooled_h", ph), ("pooled_w", pw), ("spatial_scale", spatial_scale(op, scale)),
              ("channels_last", layout == "NHWC"), ("deterministic", deterministic(op, det)))
    return features, rois.astype(compute_dtype(features.dtype)), params

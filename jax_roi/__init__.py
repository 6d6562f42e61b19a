"""jax_roi: region-of-interest feature extraction for JAX, as XLA FFI kernels.

Public API: :func:`roi_align`, :func:`roi_pool`, :func:`export_disabled_checks`,
:func:`cuda_available`.
"""

from ._export import export_disabled_checks
from ._native import cuda_available
from .ops import roi_align, roi_pool

__version__ = "0.1.0"

__all__ = ["cuda_available", "export_disabled_checks", "roi_align", "roi_pool"]

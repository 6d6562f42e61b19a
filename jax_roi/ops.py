"""Public RoI ops. Each op lives in its own module (`_roi_align.py`, `_roi_pool.py`): its
kernels' specs (`_kernels.Kernel`), from which its primitives derive, and its public
function (validation -> custom_vjp -> primitives)."""

from ._roi_align import roi_align
from ._roi_pool import roi_pool

__all__ = ["roi_align", "roi_pool"]

"""Pure-JAX implementations of the roi kernels, one module per op.

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
  goes through ``exact_div``: its divisor is given the full result shape and every batch axis of
  the numerator (else vmap would broadcast it in plain sight), then hidden behind
  ``lax.optimization_barrier``; XLA sees a divide of two plain arrays and keeps it exact.
* XLA's CPU and GPU backends contract ``a * b + c`` into a fused multiply-add, which rounds
  once instead of twice. Products that feed an addition in the geometry (``x1 * s - 0.5``,
  ``start + p * bin``) or in a max-mode sample value go through ``unfused``: a bit-level no-op
  (it swaps one NaN payload for another) that the compiler cannot see through, so the product
  is rounded on its own as in the C++ kernels. ``roi_align_max_gather`` uses the same guard:
  it is never differentiated through its operations, because the gathers are primitives of
  their own (`jax_roi/_kernels.py`) whose JVP and transpose rules declare their linearity.

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

from .roi_align import (roi_align_avg_bwd, roi_align_avg_fwd, roi_align_max_bwd,
                        roi_align_max_fwd, roi_align_max_gather)
from .roi_pool import roi_pool_bwd, roi_pool_fwd, roi_pool_gather

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

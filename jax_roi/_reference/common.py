"""Shared pieces of the pure-JAX implementations: exact arithmetic (divisions XLA may not
rewrite, products it may not fuse), roi chunks, layouts and the max-type search. The
reasons are in the package docstring (`jax_roi/_reference/__init__.py`)."""

from __future__ import annotations

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax

# Cap on the sampling grid per axis and bin (kMaxGrid in roi_math.h).
MAX_GRID = 32768

# Elements of running state ([Kc, PH, PW, C]) per roi chunk. Chunks bound the memory of
# one loop step and give each chunk its own trip count; each costs a fixed overhead of a few
# hundred microseconds on CPU, so they should not be too small
# (benchmarks/results/cpu_design.md).
CHUNK_ELEMENTS = 2**19


# ---------------------------------------------------------------------------------------
# exact arithmetic helpers
# ---------------------------------------------------------------------------------------


def compute_dtype(dtype):
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def opaque(x):
    """x as an array XLA cannot see into (neither constant nor broadcast)."""
    return lax.optimization_barrier(x)


def exact_div(a, b):
    """IEEE a / b, never rewritten into a * (1 / b).

    The divisor is materialised at the full result shape behind an optimization barrier, so
    XLA's algebraic simplifier sees neither a constant nor a broadcast divisor. The no-op
    select first gives the divisor every batch axis of the numerator: under vmap an unbatched
    divisor would otherwise be broadcast to the batch after the barrier, in plain sight.
    """
    a = jnp.asarray(a)
    b = jnp.asarray(b, a.dtype)
    shape = jnp.broadcast_shapes(a.shape, b.shape)
    a = jnp.broadcast_to(a, shape)
    b = lax.select(a == a, jnp.broadcast_to(b, shape), jnp.broadcast_to(b, shape))
    return a / opaque(b)


_NAN_SWAP = {
    # (bits type, NaN payload that is swapped, payload it becomes): both quiet NaNs.
    np.dtype(np.float32): (np.uint32, 0x7FC00ABC, 0x7FC00000),
    np.dtype(np.float64): (np.uint64, 0x7FF8000000000ABC, 0x7FF8000000000000),
}


def unfused(x):
    """x, rounded on its own: a product passed through here is never fused into an FMA.

    Replaces one particular NaN bit pattern by another (a no-op on values) with integer
    operations, which the compiler cannot prove to be the identity. Not differentiable (the
    bit casts have no transpose): only for geometry and the max-mode search.
    """
    utype, magic, repl = _NAN_SWAP[np.dtype(x.dtype)]
    bits = lax.bitcast_convert_type(x, utype)
    bits = jnp.where(bits == utype(magic), utype(repl), bits)
    return lax.bitcast_convert_type(bits, x.dtype)


def round_half_away(x):
    """C round(): halves away from zero (jnp.round rounds them to even)."""
    return lax.round(x, lax.RoundingMethod.AWAY_FROM_ZERO)


def batch_index(rois, n_images, A):
    """RoiBatchIndex: (n [K] int32, valid [K] bool) of rois [K, 5] in A."""
    finite = jnp.all(jnp.isfinite(rois), axis=1)
    b = rois[:, 0]
    valid = finite & (b > A(-1)) & (b < A(n_images))
    n = jnp.where(valid, jnp.trunc(b), A(0)).astype(jnp.int32)
    return n, valid


def pixel_index(v, size, A):
    """ClipToIndex: integer-valued v clipped to [0, size] and converted; NaN -> 0."""
    v = jnp.where(v > A(0), v, A(0))
    v = jnp.where(v >= A(size), A(size), v)
    return v.astype(jnp.int32)


# ---------------------------------------------------------------------------------------
# roi chunks
# ---------------------------------------------------------------------------------------


def chunk_rois(k, per_roi):
    """(chunk size, number of chunks) for k rois with per_roi state elements each."""
    kc = max(1, min(k, CHUNK_ELEMENTS // max(per_roi, 1)))
    return kc, -(-k // kc)


def pad_rois(rois, k_pad, A):
    """rois [K, 5] in A, padded with invalid (NaN) rows to k_pad."""
    rois = rois.astype(A)
    k = rois.shape[0]
    if k_pad == k:
        return rois
    return jnp.concatenate([rois, jnp.full((k_pad - k, 5), jnp.nan, A)], axis=0)


def _split(tree, nch, kc):
    return jax.tree_util.tree_map(lambda a: a.reshape((nch, kc) + a.shape[1:]), tree)


def _merge(tree, k):
    return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:])[:k], tree)


def _take(tree, order):
    return jax.tree_util.tree_map(lambda a: a[order], tree)


def sort_key(rows, cols, cols_bound):
    """Sort key of rois whose loops take rows x cols steps: rows major, cols minor.

    A chunk's loop runs max(rows) x max(cols) steps over the chunk, so rois are grouped by
    both counts, not by their product (on random boxes this roughly halves the masked steps).
    """
    return rows * (cols_bound + 1) + jnp.minimum(cols, cols_bound)


def map_chunks(fn, tree, nch, kc, k, key=None):
    """fn over roi chunks of the [K_pad, ...] arrays of tree; results in roi order, cut to K.

    A loop inside fn runs as long as the costliest roi of its chunk needs, so with several
    chunks the rois are first sorted by `key` (see sort_key): similar rois share chunks, and
    the results are put back in order at the end.
    """
    if nch == 1:
        return _merge(jax.tree_util.tree_map(lambda a: a[None], fn(tree)), k)
    order = jnp.argsort(key)
    out = _merge(lax.map(fn, _split(_take(tree, order), nch, kc)), nch * kc)
    inverse = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
    return jax.tree_util.tree_map(lambda a: a[inverse[:k]], out)


def scan_chunks(fn, init, tree, nch, kc, key=None):
    """carry = fn(carry, chunk) over roi chunks (sorted by key, as in map_chunks)."""
    if nch == 1:
        return fn(init, tree)
    tree = _take(tree, jnp.argsort(key))
    carry, _ = lax.scan(lambda c, x: (fn(c, x), None), init, _split(tree, nch, kc))
    return carry


def pad_pooled(x, k_pad):
    k = x.shape[0]
    if k_pad == k:
        return x
    return jnp.concatenate([x, jnp.zeros((k_pad - k,) + x.shape[1:], x.dtype)], axis=0)


# ---------------------------------------------------------------------------------------
# layout helpers
# ---------------------------------------------------------------------------------------


def to_nhwc(x, channels_last):
    return x if channels_last else jnp.transpose(x, (0, 2, 3, 1))


def from_nhwc(x, channels_last):
    return x if channels_last else jnp.transpose(x, (0, 3, 1, 2))


def nhwc_dims(shape, channels_last):
    """(N, H, W, C) of a features shape in the op's layout."""
    n, a, b, c = shape
    return (n, a, b, c) if channels_last else (n, b, c, a)


def is_empty(n_img, height, width, chans, k, pooled_h, pooled_w):
    return 0 in (height, width, chans, k, pooled_h, pooled_w)


class PooledLayout:
    """Broadcasts per-roi / per-bin arrays against a tensor in the pooled layout."""

    def __init__(self, shape, channels_last):
        self.cl = channels_last
        self.shape = tuple(shape)

    def k(self, v):  # [K]
        return v[:, None, None, None]

    def p(self, v):  # [K, PH]
        return v[:, :, None, None] if self.cl else v[:, None, :, None]

    def q(self, v):  # [K, PW]
        return v[:, None, :, None] if self.cl else v[:, None, None, :]

    def channel(self):
        return lax.broadcasted_iota(jnp.int32, self.shape, 3 if self.cl else 1)

    def feature_index(self, n, c, y, x):
        return (n, y, x, c) if self.cl else (n, c, y, x)



# ---------------------------------------------------------------------------------------
# max-type searches
# ---------------------------------------------------------------------------------------


def first_max(sample, steps, shape, dtype):
    """Running maximum over steps 0..steps-1 in order, the first maximum winning.

    sample(t) -> (active, index, value), broadcastable to shape. Returns (best, index of the
    winner); (0, -1) where no step is active. Every bin's first candidate is its step 0
    (the first sample of its run, the first pixel of its bin); later ones win only when
    strictly greater, as in the kernels (so a NaN first candidate sticks and later NaNs never
    win).

    Two passes: the maximum, then the first step whose value equals it (the winner of the
    sequential rule: an earlier equal value would have blocked the later update). Each pass
    updates a single array, which XLA fuses with its gathers into one loop; tracking value and
    index together would materialise every gather and double the memory traffic.
    """

    def best_body(t, best):
        active, _, val = sample(t)
        return jnp.where(active & ((t == 0) | (val > best)), val, best)

    best = lax.fori_loop(0, steps, best_body, jnp.zeros(shape, dtype))
    best_nan = jnp.isnan(best)

    def index_body(t, idx):
        active, index, val = sample(t)
        match = (val == best) | ((t == 0) & best_nan)
        return jnp.where(active & (idx < 0) & match, index, idx)

    idx = lax.fori_loop(0, steps, index_body, jnp.full(shape, -1, jnp.int32))
    return best, idx


def empty_max_result(k, pooled_h, pooled_w, chans, dtype, channels_last):
    """(zeros, argmax -1) for a max-type forward with nothing to read."""
    shape = (k, pooled_h, pooled_w, chans)
    return (from_nhwc(jnp.zeros(shape, dtype), channels_last),
            from_nhwc(jnp.full(shape, -1, jnp.int32), channels_last))

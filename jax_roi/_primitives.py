"""One JAX primitive per kernel: abstract eval, batching rule, and lowerings.

Names mirror all the way down: `roi_align_avg_fwd_p` -> FFI target
`jax_roi_roi_align_avg_fwd` (a row of xla_kernels/include/jax_roi/op_list.h) -> policy
`ops::RoiAlignAvgFwd` -> handlers `RoiAlignAvgFwdCpu` and `RoiAlignAvgFwdCuda`.

Each primitive lowers to its C++ kernel on CPU, to its CUDA kernel on "cuda" when the CUDA
extension was built (whether or not this process has a GPU: lowering for CUDA works
anywhere), and to the pure-JAX implementation in `_reference.py` on every other platform.
Batching rules fold a vmapped axis into the kernel's own image axis (features [V, N, ...] ->
[V*N, ...], roi batch index b -> b + v*N), so vmap costs one kernel call. The backward
primitives are linear in the incoming gradient and carry JVP and transpose rules, so
gradients of gradients work.

Every primitive carries the `deterministic` parameter, and every kernel lowering passes it
as an FFI attribute: the attributes of a family are one struct, the same for every target
on every platform. Only the CUDA backward kernels read it (gather or atomic scatter); the
CPU kernels are always deterministic.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _compat, _native

# Static parameters passed to the kernels as FFI attributes, per op family: every target of
# a family takes all of them on every platform (AlignAttrs / PoolAttrs in
# xla_kernels/include/jax_roi/roi_call.h). Their names are the ABI of exported programs.
_ALIGN_ATTRS = ("pooled_h", "pooled_w", "spatial_scale", "sampling_ratio", "aligned",
                "channels_last", "deterministic")
_POOL_ATTRS = ("pooled_h", "pooled_w", "spatial_scale", "channels_last", "deterministic")


def pooled_shape(num_rois: int, channels: int, params: dict[str, Any]) -> tuple[int, ...]:
    ph, pw = params["pooled_h"], params["pooled_w"]
    if params["channels_last"]:
        return (num_rois, ph, pw, channels)
    return (num_rois, channels, ph, pw)


def _channels(feature_shape: tuple[int, ...], channels_last: bool) -> int:
    return feature_shape[3] if channels_last else feature_shape[1]


def _ffi_attr(value: Any) -> Any:
    # FFI attributes are typed exactly: ints are i64, floats f64, bools pred.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return np.int64(value)
    if isinstance(value, float):
        return np.float64(value)
    raise TypeError(f"unsupported FFI attribute {value!r}")


def _kernel_lowering(target: str, attrs: tuple[str, ...]) -> Callable[..., Any]:
    """Lowering to FFI target `target` with the primitive parameters `attrs` as attributes."""
    lower = _compat.ffi_lowering(target)

    def rule(ctx, *args, **params):
        return lower(ctx, *args, **{k: _ffi_attr(params[k]) for k in attrs})

    return rule


def _reference_impl(name: str) -> Callable[..., Any]:
    # Imported on first lowering: most processes only ever lower to a kernel. The pure-JAX
    # implementation has one behaviour, so it takes no `deterministic`.
    def impl(*args, deterministic=False, **params):
        from . import _reference

        return getattr(_reference, name)(*args, **params)

    return impl


def _define(name: str, *, multiple_results: bool, abstract_eval, batcher, attrs):
    prim = _compat.Primitive(name)
    reference = _reference_impl(name)
    prim.multiple_results = multiple_results
    prim.def_impl(lambda *args, **params: jax.jit(prim.bind, static_argnames=tuple(params))(*args, **params))
    prim.def_abstract_eval(abstract_eval)
    _compat.register_lowering(prim, _compat.lower_fun(reference, multiple_results=multiple_results))
    target = f"jax_roi_{name}"
    if target in _native.CPU_TARGETS:
        _compat.register_lowering(prim, _kernel_lowering(target, attrs), platform="cpu")
    if target in _native.CUDA_TARGETS:
        _compat.register_lowering(prim, _kernel_lowering(target, attrs), platform="cuda")
    _compat.primitive_batchers[prim] = lambda args, dims, **params: batcher(prim, args, dims, **params)
    return prim


# ---------------------------------------------------------------------------------------
# Abstract evaluation
# ---------------------------------------------------------------------------------------

def _fwd_abstract(features, rois, **params):
    shape = pooled_shape(rois.shape[0], _channels(features.shape, params["channels_last"]), params)
    return jax.core.ShapedArray(shape, features.dtype)


def _fwd_argmax_abstract(features, rois, **params):
    out = _fwd_abstract(features, rois, **params)
    return [out, jax.core.ShapedArray(out.shape, np.dtype(np.int32))]


def _bwd_abstract(grad, rois, *argmax, feature_shape, **params):
    return jax.core.ShapedArray(tuple(feature_shape), grad.dtype)


def _gather_abstract(features, rois, argmax, **params):
    return jax.core.ShapedArray(argmax.shape, features.dtype)


# ---------------------------------------------------------------------------------------
# Batching: fold the vmapped axis into the image axis
# ---------------------------------------------------------------------------------------

def _fold_rois(rois, rois_dim, size: int, images: int):
    """rois [K, 5] or batched [.., V, ..] -> [V*K, 5] with batch indices offset by v*images.

    Invalid indices stay invalid (-1) instead of landing in a neighbouring image.
    """
    if rois_dim is None:
        rois = jnp.broadcast_to(rois, (size,) + rois.shape)
    else:
        rois = jnp.moveaxis(rois, rois_dim, 0)
    b = rois[..., 0]
    valid = (b > -1) & (b < images)
    offset = (jnp.arange(size, dtype=rois.dtype) * images)[:, None]
    b = jnp.where(valid, jnp.trunc(b) + offset, -1)
    rois = rois.at[..., 0].set(b)
    return rois.reshape((-1, 5))


def _fold(x, dim, size: int):
    """[.., V, ..] (or unbatched, then broadcast) -> [V*X0, X1, ...]."""
    if dim is None:
        x = jnp.broadcast_to(x, (size,) + x.shape)
    else:
        x = jnp.moveaxis(x, dim, 0)
    return x.reshape((-1,) + x.shape[2:])


def _batch_size(args, dims) -> int:
    return next(a.shape[d] for a, d in zip(args, dims) if d is not None)


def _fwd_batcher(prim, args, dims, **params):
    """features, rois (and, for the gathers, a pooled-shaped argmax) folded into one call."""
    features, rois, *pooled = args
    f_dim, r_dim, *p_dims = dims
    size = _batch_size(args, dims)
    if f_dim is None:
        # Shared map, per-v boxes: only the rois fold, indices unchanged.
        images = features.shape[0]
        rois_f = _fold(rois, r_dim, size)
        features_f = features
    else:
        images = tuple(d for i, d in enumerate(features.shape) if i != f_dim)[0]
        features_f = _fold(features, f_dim, size)
        rois_f = _fold_rois(rois, r_dim, size, images)
    pooled_f = [_fold(a, d, size) for a, d in zip(pooled, p_dims)]
    out = prim.bind(features_f, rois_f, *pooled_f, **params)
    unfold = lambda y: y.reshape((size, -1) + y.shape[1:])
    if prim.multiple_results:
        return [unfold(y) for y in out], [0] * len(out)
    return unfold(out), 0


def _bwd_batcher(prim, args, dims, *, feature_shape, **params):
    grad, rois, *rest = args
    size = _batch_size(args, dims)
    images = feature_shape[0]
    grad_f = _fold(grad, dims[0], size)
    rois_f = _fold_rois(rois, dims[1], size, images)
    rest_f = [_fold(a, d, size) for a, d in zip(rest, dims[2:])]
    shape = (size * images,) + tuple(feature_shape[1:])
    out = prim.bind(grad_f, rois_f, *rest_f, feature_shape=shape, **params)
    return out.reshape((size,) + tuple(feature_shape)), 0


# ---------------------------------------------------------------------------------------
# The primitives
# ---------------------------------------------------------------------------------------

roi_align_avg_fwd_p = _define(
    "roi_align_avg_fwd", multiple_results=False, abstract_eval=_fwd_abstract,
    batcher=_fwd_batcher, attrs=_ALIGN_ATTRS)
roi_align_avg_bwd_p = _define(
    "roi_align_avg_bwd", multiple_results=False, abstract_eval=_bwd_abstract,
    batcher=_bwd_batcher, attrs=_ALIGN_ATTRS)
roi_align_max_fwd_p = _define(
    "roi_align_max_fwd", multiple_results=True, abstract_eval=_fwd_argmax_abstract,
    batcher=_fwd_batcher, attrs=_ALIGN_ATTRS)
roi_align_max_bwd_p = _define(
    "roi_align_max_bwd", multiple_results=False, abstract_eval=_bwd_abstract,
    batcher=_bwd_batcher, attrs=_ALIGN_ATTRS)
roi_pool_fwd_p = _define(
    "roi_pool_fwd", multiple_results=True, abstract_eval=_fwd_argmax_abstract,
    batcher=_fwd_batcher, attrs=_POOL_ATTRS)
roi_pool_bwd_p = _define(
    "roi_pool_bwd", multiple_results=False, abstract_eval=_bwd_abstract,
    batcher=_bwd_batcher, attrs=_POOL_ATTRS)
# The features read at recorded winners: the JVP of a max-type forward and the transpose of
# its backward. Pure JAX on every platform (no kernel): only grad of grad and forward-mode
# differentiation of the max modes run it.
roi_align_max_gather_p = _define(
    "roi_align_max_gather", multiple_results=False, abstract_eval=_gather_abstract,
    batcher=_fwd_batcher, attrs=_ALIGN_ATTRS)
roi_pool_gather_p = _define(
    "roi_pool_gather", multiple_results=False, abstract_eval=_gather_abstract,
    batcher=_fwd_batcher, attrs=_POOL_ATTRS)


# ---------------------------------------------------------------------------------------
# Linearity: JVP and transpose rules
#
# roi_align avg is linear in the features and its backward is its transpose; each max-type
# backward is linear in the gradient (argmax fixed) and its transpose is the gather of the
# recorded winners, and the other way round. The rois and argmax are constants of these maps
# and get no tangent. Declaring the linearity here, on the primitives, lets their pure-JAX
# implementations use operations that autodiff cannot transpose (the bit-level guards that
# keep their rounding exact).
# ---------------------------------------------------------------------------------------

def _linear_in_first(prim):
    def jvp(primals, tangents, **params):
        out = prim.bind(*primals, **params)
        t = tangents[0]
        if type(t) is _compat.Zero:
            return out, jnp.zeros_like(out)
        return out, prim.bind(_compat.instantiate_zeros(t), *primals[1:], **params)

    _compat.primitive_jvps[prim] = jvp


def _transpose_rule(transpose: Callable[..., Any]):
    def rule(ct, x, *consts, **params):
        assert _compat.is_undefined_primal(x) and not any(
            _compat.is_undefined_primal(c) for c in consts)
        if type(ct) is _compat.Zero:
            return [_compat.Zero(x.aval)] + [None] * len(consts)
        return [transpose(_compat.instantiate_zeros(ct), x.aval, *consts, **params)] + [None] * len(consts)

    return rule


def _to_backward(bwd_prim):
    """Transpose of a forward-like map (features -> pooled): its backward primitive."""
    def transpose(ct, features_aval, *consts, **params):
        return bwd_prim.bind(ct, *consts, feature_shape=tuple(features_aval.shape), **params)

    return transpose


def _to_forward(fwd_prim):
    """Transpose of a backward (pooled -> features): its forward-like primitive."""
    def transpose(ct, grad_aval, *consts, feature_shape, **params):
        return fwd_prim.bind(ct, *consts, **params).astype(grad_aval.dtype)

    return transpose


def _argmax_fwd_jvp(prim, gather_prim):
    """Max-type forwards are linear in the features once the winners are fixed: the tangent
    is the tangent map read at the recorded winners (needed when a custom_vjp's forward is
    itself differentiated, as in grad of grad)."""

    def jvp(primals, tangents, **params):
        out, argmax = prim.bind(*primals, **params)
        t = tangents[0]
        if type(t) is _compat.Zero:
            t_out = jnp.zeros_like(out)
        else:
            t_out = gather_prim.bind(_compat.instantiate_zeros(t), primals[1], argmax, **params)
        return (out, argmax), (t_out, _compat.Zero(argmax.aval.to_tangent_aval()))

    _compat.primitive_jvps[prim] = jvp


_argmax_fwd_jvp(roi_align_max_fwd_p, roi_align_max_gather_p)
_argmax_fwd_jvp(roi_pool_fwd_p, roi_pool_gather_p)


for _prim, _transpose in (
    (roi_align_avg_fwd_p, _to_backward(roi_align_avg_bwd_p)),
    (roi_align_avg_bwd_p, _to_forward(roi_align_avg_fwd_p)),
    (roi_align_max_gather_p, _to_backward(roi_align_max_bwd_p)),
    (roi_align_max_bwd_p, _to_forward(roi_align_max_gather_p)),
    (roi_pool_gather_p, _to_backward(roi_pool_bwd_p)),
    (roi_pool_bwd_p, _to_forward(roi_pool_gather_p)),
):
    _linear_in_first(_prim)
    _compat.primitive_transposes[_prim] = _transpose_rule(_transpose)

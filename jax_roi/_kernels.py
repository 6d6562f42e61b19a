"""One JAX primitive per kernel, derived from the kernel's spec.

A `Kernel` names a kernel once, as the C++ op list does (xla_kernels/include/jax_roi/op_list.h):
`Kernel("roi_align_avg_fwd", ...)` -> primitive `roi_align_avg_fwd_p` -> FFI target
`jax_roi_roi_align_avg_fwd` -> policy `ops::RoiAlignAvgFwd` -> handlers `RoiAlignAvgFwdCpu`,
`RoiAlignAvgFwdCuda`. From the spec's operand and result roles follow:

* abstract evaluation: pooled results `[K, C_out, PH, PW]` / `[K, PH, PW, C_out]` of the
  first operand's dtype (argmax: int32), feature-shaped results from `feature_shape`;
* lowering: to the FFI target on CPU, and on "cuda" when the CUDA extension was built
  (lowering for CUDA works anywhere), with the family's attributes; to the pure-JAX
  reference implementation on every other platform, and for kernels without a target;
* batching: the vmapped axis is folded into the kernel's own axes, so vmap costs one
  kernel call: feature maps `[V, N, ...] -> [V*N, ...]`, roi batch indices `b -> b + v*N`
  (invalid ones stay invalid), pooled operands `[V, K, ...] -> [V*K, ...]`; a map shared by
  every v (unbatched features) keeps its indices;
* linearity: a kernel linear in its first operand gets a JVP rule and the transpose rule
  that binds its partner (`transpose`), so gradients of gradients work; a max-type forward
  gets the JVP that reads the tangent at the recorded winners (`winner_gather`).

`differentiable(fwd, bwd)` gives the custom_vjp function of an op from its two kernels.
"""

from __future__ import annotations

import dataclasses
import enum
from functools import partial
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import _compat, _native


class Role(enum.Enum):
    """What an operand or result is; mirrors `Role` in xla_kernels/include/jax_roi/roi_call.h."""

    FEATURES = "features"  # [N, C, H, W] / [N, H, W, C]
    FEATURE_GRAD = "grad_features"  # a result shaped like the features (`feature_shape`)
    ROIS = "rois"  # [K, 5] rows (batch_index, x1, y1, x2, y2)
    POOLED = "pooled"  # [K, C, PH, PW] / [K, PH, PW, C]
    ARGMAX = "argmax"  # pooled-shaped int32


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A kernel: its name, the family's attribute names (the FFI ABI), its roles, its
    pure-JAX implementation (`reference(*operands, **params)`, without `deterministic`),
    and its linear structure."""

    name: str
    attrs: tuple[str, ...]
    args: tuple[Role, ...]
    results: tuple[Role, ...]
    reference: Callable[..., Any]
    # C_out from C_in and the parameters (position-sensitive ops divide by PH * PW).
    out_channels: Callable[[int, dict], int] = lambda c, params: c
    # The kernel whose primitive is this one's transpose (linear in the first operand).
    transpose: Optional[str] = None
    # For a forward with an argmax: the kernel reading its first operand at the winners.
    winner_gather: Optional[str] = None
    # Whether the op list has an FFI target for it (False: pure JAX on every platform).
    has_target: bool = True

    @property
    def target(self) -> str:
        return f"jax_roi_{self.name}"


PRIMITIVES: dict[str, Any] = {}
KERNELS: dict[str, Kernel] = {}


# ---------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------

def pooled_shape(num_rois: int, channels: int, params: dict[str, Any]) -> tuple[int, ...]:
    ph, pw = params["pooled_h"], params["pooled_w"]
    if params["channels_last"]:
        return (num_rois, ph, pw, channels)
    return (num_rois, channels, ph, pw)


def _channels(feature_shape, channels_last: bool) -> int:
    return feature_shape[3] if channels_last else feature_shape[1]


def _abstract_eval(kernel: Kernel, *avals, **params):
    roles = dict(zip(kernel.args, avals))
    dtype = avals[0].dtype
    k = roles[Role.ROIS].shape[0]
    if Role.FEATURES in roles:
        c_in = _channels(roles[Role.FEATURES].shape, params["channels_last"])
    else:
        c_in = _channels(params["feature_shape"], params["channels_last"])
    out = []
    for role in kernel.results:
        if role is Role.FEATURE_GRAD:
            out.append(_compat.ShapedArray(tuple(params["feature_shape"]), dtype))
        else:
            shape = pooled_shape(k, kernel.out_channels(c_in, params), params)
            out.append(_compat.ShapedArray(
                shape, np.dtype(np.int32) if role is Role.ARGMAX else dtype))
    return out if len(out) > 1 else out[0]


# ---------------------------------------------------------------------------------------
# lowering
# ---------------------------------------------------------------------------------------

def _ffi_attr(value: Any) -> Any:
    # FFI attributes are typed exactly: ints are i64, floats f64, bools pred.
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, int):
        return np.int64(value)
    if isinstance(value, float):
        return np.float64(value)
    raise TypeError(f"unsupported FFI attribute {value!r}")


def _kernel_lowering(kernel: Kernel) -> Callable[..., Any]:
    lower = _compat.ffi_lowering(kernel.target)

    def rule(ctx, *args, **params):
        return lower(ctx, *args, **{k: _ffi_attr(params[k]) for k in kernel.attrs})

    return rule


def _reference_impl(kernel: Kernel) -> Callable[..., Any]:
    # The pure-JAX implementation has one behaviour: it takes no `deterministic`.
    def impl(*args, deterministic=False, **params):
        return kernel.reference(*args, **params)

    return impl


# ---------------------------------------------------------------------------------------
# batching: fold the vmapped axis into the kernel's own axes
# ---------------------------------------------------------------------------------------

def _fold(x, dim, size: int):
    """[.., V, ..] (or unbatched, then broadcast) -> [V*X0, X1, ...]."""
    if dim is None:
        x = jnp.broadcast_to(x, (size,) + x.shape)
    else:
        x = jnp.moveaxis(x, dim, 0)
    return x.reshape((-1,) + x.shape[2:])


def _fold_rois(rois, rois_dim, size: int, images: int):
    """rois [K, R] or batched [.., V, ..] -> [V*K, R] with batch indices (column 0) offset by
    v*images.

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
    return rois.reshape((-1, rois.shape[-1]))


def _batcher(kernel: Kernel, prim, args, dims, **params):
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    roles = list(kernel.args)
    if Role.FEATURES in roles:
        i = roles.index(Role.FEATURES)
        shared_map = dims[i] is None
        images = args[i].shape[0] if shared_map else np.delete(args[i].shape, dims[i])[0]
    else:
        shared_map = False
        images = params["feature_shape"][0]
    folded = []
    for role, x, d in zip(roles, args, dims):
        if role is Role.FEATURES and shared_map:
            folded.append(x)  # one map for every v: the rois keep their indices
        elif role is Role.ROIS and not shared_map:
            folded.append(_fold_rois(x, d, size, images))
        else:
            folded.append(_fold(x, d, size))
    if "feature_shape" in params:
        feature_shape = tuple(params["feature_shape"])
        params = dict(params, feature_shape=(size * images,) + feature_shape[1:])
    out = prim.bind(*folded, **params)
    outs = out if prim.multiple_results else [out]
    unfolded = [y.reshape((size, -1) + y.shape[1:]) for y in outs]
    if prim.multiple_results:
        return unfolded, [0] * len(unfolded)
    return unfolded[0], 0


# ---------------------------------------------------------------------------------------
# linearity: JVP and transpose rules
# ---------------------------------------------------------------------------------------

def _linear_jvp(prim):
    def jvp(primals, tangents, **params):
        out = prim.bind(*primals, **params)
        t = tangents[0]
        if type(t) is _compat.Zero:
            return out, jnp.zeros_like(out)
        return out, prim.bind(_compat.instantiate_zeros(t), *primals[1:], **params)

    return jvp


def _transpose_rule(kernel: Kernel):
    """x -> kernel(x, consts) is linear; its transpose binds the partner on the cotangent.
    A partner with a feature-shaped result gets the feature shape; one without drops it."""
    partner = KERNELS[kernel.transpose]

    def rule(ct, x, *consts, **params):
        assert _compat.is_undefined_primal(x) and not any(
            _compat.is_undefined_primal(c) for c in consts)
        if type(ct) is _compat.Zero:
            return [_compat.Zero(x.aval)] + [None] * len(consts)
        params = {k: v for k, v in params.items() if k != "feature_shape"}
        if Role.FEATURE_GRAD in partner.results:
            params["feature_shape"] = tuple(x.aval.shape)
        y = PRIMITIVES[partner.name].bind(_compat.instantiate_zeros(ct), *consts, **params)
        return [y.astype(x.aval.dtype)] + [None] * len(consts)

    return rule


def _winner_jvp(prim, gather_name: str):
    """A max-type forward is linear in the features once the winners are fixed: the tangent
    is the tangent map read at the recorded winners (needed when a custom_vjp's forward is
    itself differentiated, as in grad of grad)."""

    def jvp(primals, tangents, **params):
        out, argmax = prim.bind(*primals, **params)
        t = tangents[0]
        if type(t) is _compat.Zero:
            t_out = jnp.zeros_like(out)
        else:
            t_out = PRIMITIVES[gather_name].bind(_compat.instantiate_zeros(t), primals[1],
                                                 argmax, **params)
        return (out, argmax), (t_out, _compat.Zero(argmax.aval.to_tangent_aval()))

    return jvp


# ---------------------------------------------------------------------------------------
# definition
# ---------------------------------------------------------------------------------------

def define(*kernels: Kernel) -> list:
    """The primitives of `kernels` (one family; transposes refer to each other), registered
    with their abstract evaluation, lowerings, batching and linearity rules."""
    prims = []
    for kernel in kernels:
        prim = _compat.Primitive(kernel.name)
        prim.multiple_results = len(kernel.results) > 1
        prim.def_impl(lambda *a, _p=prim, **params: jax.jit(
            _p.bind, static_argnames=tuple(params))(*a, **params))
        prim.def_abstract_eval(partial(_abstract_eval, kernel))
        _compat.register_lowering(prim, _compat.lower_fun(
            _reference_impl(kernel), multiple_results=prim.multiple_results))
        if kernel.has_target and kernel.target in _native.CPU_TARGETS:
            _compat.register_lowering(prim, _kernel_lowering(kernel), platform="cpu")
        if kernel.has_target and kernel.target in _native.CUDA_TARGETS:
            _compat.register_lowering(prim, _kernel_lowering(kernel), platform="cuda")
        _compat.primitive_batchers[prim] = partial(_batcher, kernel, prim)
        PRIMITIVES[kernel.name] = prim
        KERNELS[kernel.name] = kernel
        prims.append(prim)
    for kernel, prim in zip(kernels, prims):
        if kernel.transpose:
            _compat.primitive_jvps[prim] = _linear_jvp(prim)
            _compat.primitive_transposes[prim] = _transpose_rule(kernel)
        if kernel.winner_gather:
            _compat.primitive_jvps[prim] = _winner_jvp(prim, kernel.winner_gather)
    return prims


def differentiable(fwd, bwd) -> Callable[..., Any]:
    """f(features, rois, feature_shape, params) of an op whose forward kernel is `fwd`
    (results: pooled, and maybe argmax) and backward `bwd` (operands: the pooled gradient,
    rois, and the argmax when there is one): a custom_vjp giving the features' gradient from
    `bwd` and the rois zero gradient. `params` is a hashable tuple of (name, value) pairs."""
    with_argmax = fwd.multiple_results

    @partial(jax.custom_vjp, nondiff_argnums=(2, 3))
    def f(features, rois, feature_shape, params):
        out = fwd.bind(features, rois, **dict(params))
        return out[0] if with_argmax else out

    def f_fwd(features, rois, feature_shape, params):
        out = fwd.bind(features, rois, **dict(params))
        if with_argmax:
            return out[0], (rois, out[1])
        return out, (rois,)

    def f_bwd(feature_shape, params, residuals, g):
        rois = residuals[0]
        grad = bwd.bind(g, *residuals, feature_shape=feature_shape, **dict(params))
        return grad, jnp.zeros_like(rois)

    f.defvjp(f_fwd, f_bwd)
    return f

"""jit, vmap (every in_axes pattern, nested), compile, and the non-CPU (pure-JAX) lowering.

vmap results must equal the per-example loop, keep invalid batch indices invalid (a roi with
index -1 or N in a vmapped example gives zeros and never reads a neighbouring image), and
cost ONE custom call (the batching rules fold the vmapped axis into the kernel's image axis),
forward and vmap(grad) backward.

The pure-JAX lowering (used on every platform without a compiled kernel) is checked twice:
lowering for "tpu" on this CPU machine gives a module with no jax_roi custom call, and that
module, exported for "tpu" and then run on the CPU (the StableHLO is platform-neutral), gives
the kernels' numbers.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_roi
from conftest import (INF, LAYOUTS, NAN, OP_IDS, OPS, as_f64, assert_close, assert_same_run,
                      lib_op, op_kwargs, oracle_fwd, oracle_grad, random_features, random_rois, rng_for)

N, C, H, W = 2, 3, 7, 6
V = 3  # vmapped size
OP_PARAMS = [pytest.param(op, mode, id=i) for (op, mode), i in zip(OPS, OP_IDS)]
KW = dict(output_size=(2, 3), spatial_scale=0.5, sampling_ratio=2, aligned=True)


def _kw(op, mode, layout):
    return op_kwargs(op, mode, layout=layout, **KW)


def _rois(rng, k=5, n=N):
    """Random boxes plus rows with invalid (-1, N, NaN, inf) and edge-valid indices."""
    r = random_rois(rng, k, n, H, W, KW["spatial_scale"])
    extra = np.array([
        [-1.0, 1.0, 1.0, 9.0, 9.0],
        [float(n), 1.0, 1.0, 9.0, 9.0],
        [n + 0.5, 1.0, 1.0, 9.0, 9.0],
        [NAN, 1.0, 1.0, 9.0, 9.0],
        [INF, 1.0, 1.0, 9.0, 9.0],
        [-0.5, 2.0, 1.0, 8.0, 11.0],     # valid: image 0
        [n - 0.5, 2.0, 1.0, 8.0, 11.0],  # valid: image n - 1
    ])
    return np.concatenate([r, extra])


def _invalid_rows(rois, n):
    b = rois[:, 0]
    with np.errstate(invalid="ignore"):
        return ~(np.isfinite(b) & (b > -1) & (b < n))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode", OP_PARAMS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_jit_matches_eager(op, mode, layout, dtype):
    rng = rng_for("jit", op, mode, layout)
    x = random_features(rng, (N, C, H, W), dtype, layout)
    rois = _rois(rng).astype(np.float64 if dtype == jnp.float64 else np.float32)
    kw = _kw(op, mode, layout)
    eager = lib_op(op, x, rois, **kw)
    jitted = jax.jit(lambda a, b: lib_op(op, a, b, **kw))(x, rois)
    np.testing.assert_array_equal(as_f64(eager), as_f64(jitted))
    assert_close(jitted, oracle_fwd(op, x, rois, **kw), dtype)


def _vmap_case(op, mode, layout, f_axis, r_axis, key=""):
    rng = rng_for("vmap", op, mode, layout, f_axis, r_axis, key)
    x = np.stack([random_features(rng, (N, C, H, W), jnp.float64, layout) for _ in range(V)])
    rois = np.stack([_rois(rng) for _ in range(V)])
    xs = x if f_axis is None else np.moveaxis(x, 0, f_axis)
    rs = rois if r_axis is None else np.moveaxis(rois, 0, r_axis)
    if f_axis is None:
        xs, x = x[0], np.stack([x[0]] * V)
    if r_axis is None:
        rs, rois = rois[0], np.stack([rois[0]] * V)
    return x, rois, xs, rs


AXES = [(0, None), (1, None), (None, 0), (None, 1), (0, 0), (1, 1), (0, 1), (1, 0)]
AXES_IDS = [f"f{a}-r{b}" for a, b in AXES]


@pytest.mark.parametrize("layout,axes",
                         [("NCHW", a) for a in AXES] + [("NHWC", (0, 0)), ("NHWC", (1, 1))],
                         ids=[f"NCHW-{i}" for i in AXES_IDS] + ["NHWC-f0-r0", "NHWC-f1-r1"])
@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_vmap_matches_loop(op, mode, layout, axes):
    f_axis, r_axis = axes
    x, rois, xs, rs = _vmap_case(op, mode, layout, f_axis, r_axis)
    kw = _kw(op, mode, layout)
    f = lambda a, b: lib_op(op, a, b, **kw)
    loop = np.stack([as_f64(f(x[i], rois[i])) for i in range(V)])
    got = as_f64(jax.vmap(f, in_axes=(f_axis, r_axis))(xs, rs))
    np.testing.assert_array_equal(got, loop)
    got_jit = as_f64(jax.jit(jax.vmap(f, in_axes=(f_axis, r_axis)))(xs, rs))
    np.testing.assert_array_equal(got_jit, loop)
    for i in range(V):
        inv = _invalid_rows(rois[i], N)
        assert inv.sum() == 5
        assert not np.any(got[i][inv]), "an invalid index must not read a neighbouring image"
        assert_close(got[i], oracle_fwd(op, x[i], rois[i], **kw), jnp.float64)


@pytest.mark.parametrize("axes", [(0, None), (None, 0), (0, 0), (1, 1)],
                         ids=["f0-rNone", "fNone-r0", "f0-r0", "f1-r1"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_vmap_of_grad_matches_loop(op, mode, layout, axes):
    f_axis, r_axis = axes
    x, rois, xs, rs = _vmap_case(op, mode, layout, f_axis, r_axis, key="grad")
    kw = _kw(op, mode, layout)
    out_shape = jax.eval_shape(lambda a: lib_op(op, a, rois[0], **kw), x[0]).shape
    wts = rng_for("w", op, mode).standard_normal(out_shape)
    f = lambda a, b: jnp.sum(wts * lib_op(op, a, b, **kw))
    g = jax.grad(f)
    loop = np.stack([as_f64(jax.jit(g)(x[i], rois[i])) for i in range(V)])
    got = as_f64(jax.jit(jax.vmap(g, in_axes=(f_axis, r_axis)))(xs, rs))
    np.testing.assert_allclose(got, loop, rtol=0, atol=1e-12)
    for i in range(V):
        want = oracle_grad(op, x[i], rois[i], np.broadcast_to(wts, out_shape), **kw)
        np.testing.assert_allclose(loop[i], want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_vmap_invalid_rows_get_no_gradient(op, mode):
    """Gradient flowing only from invalid rows of vmapped examples is exactly zero."""
    layout = "NCHW"
    x, rois, xs, rs = _vmap_case(op, mode, layout, 0, 0, key="inv")
    kw = _kw(op, mode, layout)
    inv = np.stack([_invalid_rows(r, N) for r in rois])  # [V, K]
    out_shape = jax.eval_shape(lambda a: lib_op(op, a, rois[0], **kw), x[0]).shape
    mask = inv.reshape(inv.shape + (1,) * (len(out_shape) - 1))
    g = np.where(mask, 1.0, 0.0) * np.ones((V,) + out_shape)

    def vjp_one(a, b, gg):
        _, vjp = jax.vjp(lambda u: lib_op(op, u, b, **kw), a)
        return vjp(gg)[0]

    got = as_f64(jax.jit(jax.vmap(vjp_one))(xs, rs, g))
    assert not np.any(got)
    # ... while the valid rows' cotangent does reach the features.
    got_valid = as_f64(jax.jit(jax.vmap(vjp_one))(xs, rs, 1.0 - g))
    assert np.all(np.any(got_valid.reshape(V, -1), axis=1))


@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_nested_vmap(op, mode):
    layout = "NHWC"
    kw = _kw(op, mode, layout)
    rng = rng_for("nested", op, mode)
    v1, v2 = 2, 3
    x = np.stack([[random_features(rng, (N, C, H, W), jnp.float64, layout) for _ in range(v2)]
                  for _ in range(v1)])  # [v1, v2, N, H, W, C]
    rois = np.stack([[_rois(rng, k=3) for _ in range(v2)] for _ in range(v1)])  # [v1, v2, K, 5]
    f = lambda a, b: lib_op(op, a, b, **kw)
    loop = np.stack([np.stack([as_f64(f(x[i, j], rois[i, j])) for j in range(v2)])
                     for i in range(v1)])
    both = as_f64(jax.jit(jax.vmap(jax.vmap(f)))(x, rois))
    np.testing.assert_array_equal(both, loop)
    # Outer over rois only (features shared by the outer level), inner over both.
    inner = jax.vmap(f)
    got = as_f64(jax.jit(jax.vmap(inner, in_axes=(None, 0)))(x[0], rois))
    want = np.stack([np.stack([as_f64(f(x[0, j], rois[i, j])) for j in range(v2)])
                     for i in range(v1)])
    np.testing.assert_array_equal(got, want)
    # Outer over features on axis 1, inner over rois only.
    got = as_f64(jax.jit(jax.vmap(jax.vmap(f, in_axes=(None, 0)), in_axes=(1, None)))(
        np.moveaxis(x[:, 0], 0, 1), rois[0]))
    want = np.stack([np.stack([as_f64(f(x[i, 0], rois[0, j])) for j in range(v2)])
                     for i in range(v1)])
    np.testing.assert_array_equal(got, want)
    # Nested vmap of grad.
    g = jax.grad(lambda a, b: jnp.sum(f(a, b) ** 2))
    got = as_f64(jax.jit(jax.vmap(jax.vmap(g)))(x, rois))
    want = np.stack([np.stack([as_f64(jax.jit(g)(x[i, j], rois[i, j])) for j in range(v2)])
                     for i in range(v1)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def _custom_calls(text):
    return re.findall(r"custom_call @(jax_roi_\w+)", text)


FWD_TARGET = {"align_avg": "jax_roi_roi_align_avg_fwd", "align_max": "jax_roi_roi_align_max_fwd",
              "pool": "jax_roi_roi_pool_fwd"}


@pytest.mark.parametrize("axes", [(0, None), (None, 0), (0, 0), (1, 1)],
                         ids=["f0-rNone", "fNone-r0", "f0-r0", "f1-r1"])
@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_vmap_is_one_custom_call(op, mode, axes):
    oid = OP_IDS[OPS.index((op, mode))]
    fwd_t = FWD_TARGET[oid]
    bwd_t = fwd_t[: -len("fwd")] + "bwd"
    x, rois, xs, rs = _vmap_case(op, mode, "NCHW", *axes, key="hlo")
    kw = _kw(op, mode, "NCHW")
    f = lambda a, b: lib_op(op, a, b, **kw)

    calls = _custom_calls(jax.jit(jax.vmap(f, in_axes=axes)).lower(xs, rs).as_text())
    assert calls == [fwd_t], calls

    g = jax.grad(lambda a, b: jnp.sum(f(a, b) ** 2))
    calls = _custom_calls(jax.jit(jax.vmap(g, in_axes=axes)).lower(xs, rs).as_text())
    assert calls.count(bwd_t) == 1, calls
    assert calls.count(fwd_t) == 1, calls  # the forward output is needed (squared loss)
    assert len(calls) == 2, calls


@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_lower_and_compile(op, mode):
    rng = rng_for("compile", op, mode)
    x = random_features(rng, (N, C, H, W), jnp.float32, "NCHW")
    rois = _rois(rng).astype(np.float32)
    kw = _kw(op, mode, "NCHW")
    f = lambda a, b: lib_op(op, a, b, **kw)
    compiled = jax.jit(f).lower(x, rois).compile()
    np.testing.assert_array_equal(as_f64(compiled(x, rois)), as_f64(f(x, rois)))
    g = jax.grad(lambda a, b: jnp.sum(f(a, b)))
    compiled_g = jax.jit(g).lower(x, rois).compile()
    assert_same_run(compiled_g(x, rois), jax.jit(g)(x, rois))
    text = jax.jit(f).lower(x, rois).as_text()
    assert _custom_calls(text) == [FWD_TARGET[OP_IDS[OPS.index((op, mode))]]]


# ---------------------------------------------------------------------------------------
# The pure-JAX lowering (every platform without a kernel)
# ---------------------------------------------------------------------------------------

def _fns(op, mode, layout):
    kw = _kw(op, mode, layout)
    f = lambda a, b: lib_op(op, a, b, **kw)
    g = jax.grad(lambda a, b: jnp.sum(jnp.sin(f(a, b).astype(jnp.float32))))
    return {"fwd": f, "grad": g, "vmap": jax.vmap(f, in_axes=(None, 0)),
            "vmap_grad": jax.vmap(g, in_axes=(0, None))}


@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_tpu_lowering_has_no_custom_call(op, mode):
    """Lowering for a platform without a kernel works here and uses no jax_roi target."""
    rng = rng_for("tpu", op, mode)
    x = random_features(rng, (N, C, H, W), jnp.float32, "NCHW")
    rois = _rois(rng).astype(np.float32)
    for name, fn in _fns(op, mode, "NCHW").items():
        args = (x, np.stack([rois] * 2)) if name == "vmap" else (
            (np.stack([x] * 2), rois) if name == "vmap_grad" else (x, rois))
        traced = jax.jit(fn).trace(*args)
        text = traced.lower(lowering_platforms=("tpu",)).as_text()
        assert not _custom_calls(text), (name, _custom_calls(text))
        assert "jax_roi_" not in text
        cpu_text = traced.lower(lowering_platforms=("cpu",)).as_text()
        assert _custom_calls(cpu_text), name


def _run_tpu_lowering_on_cpu(fn, *args):
    """Export `fn` lowered for TPU, then run that (platform-neutral) StableHLO on the CPU."""
    exp = jax.export.export(jax.jit(fn), platforms=("tpu",))(*args)
    assert "jax_roi_" not in exp.mlir_module()
    return dataclasses.replace(exp, platforms=("cpu",)).call(*args)


# Compiling the pure-JAX lowering takes seconds per function on CPU: a few cases only.
# (op, mode, layout, dtype, which functions)
REF_CASES = [
    pytest.param("roi_align", "avg", "NCHW", jnp.float32, ("fwd", "vmap_grad"), id="avg-f32"),
    pytest.param("roi_align", "max", "NCHW", jnp.float32, ("fwd", "grad"), id="max-f32"),
    pytest.param("roi_pool", None, "NCHW", jnp.float32, ("fwd", "vmap_grad"), id="pool-f32"),
    pytest.param("roi_align", "avg", "NHWC", jnp.float64, ("fwd",), id="avg-f64-nhwc"),
    pytest.param("roi_pool", None, "NHWC", jnp.bfloat16, ("fwd", "vmap"), id="pool-bf16-nhwc"),
]


@pytest.mark.usefixtures("on_cpu")  # runs the exported TPU lowering on the CPU
@pytest.mark.parametrize("op,mode,layout,dtype,names", REF_CASES)
def test_pure_jax_lowering_matches_kernels(op, mode, layout, dtype, names):
    rng = rng_for("ref", op, mode, layout)
    x = random_features(rng, (N, C, H, W), dtype, layout)
    rois = _rois(rng).astype(np.float64 if dtype == jnp.float64 else np.float32)
    kw = _kw(op, mode, layout)
    fns = _fns(op, mode, layout)
    for name in names:
        fn = fns[name]
        args = (x, np.stack([rois] * 2)) if name == "vmap" else (
            (np.stack([x] * 2), rois) if name == "vmap_grad" else (x, rois))
        ref = _run_tpu_lowering_on_cpu(fn, *args)
        kern = jax.jit(fn)(*args)
        assert ref.dtype == kern.dtype and ref.shape == kern.shape
        assert_close(ref, as_f64(kern), dtype, what=name)
        if name == "fwd":
            assert_close(ref, oracle_fwd(op, x, rois, **kw), dtype, what="oracle")


def test_reference_module_function():
    """jax_roi._reference's functions take the primitives' parameters (one, the cheapest)."""
    from jax_roi import _reference as R

    rng = rng_for("refmod")
    x = random_features(rng, (N, C, H, W), jnp.float64, "NHWC")
    rois = _rois(rng)
    params = dict(pooled_h=2, pooled_w=3, spatial_scale=0.5, channels_last=True)
    out, argmax = jax.jit(lambda a, b: R.roi_pool_fwd(a, b, **params))(x, rois)
    assert argmax.shape == out.shape and argmax.dtype == jnp.int32
    want = jax_roi.roi_pool(x, rois, (2, 3), 0.5, layout="NHWC")
    np.testing.assert_array_equal(as_f64(out), as_f64(want))

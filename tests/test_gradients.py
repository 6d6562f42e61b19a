"""Gradients of the public ops (float64).

* jax.test_util.check_grads, reverse mode, order 1 and 2: roi_align avg, roi_align max and
  roi_pool (max-type ops on well-separated features with a perturbation far too small to
  change a winner).
* The library's Jacobian w.r.t. the features is the oracle's: every op is linear in the
  features once the winners are fixed, so the oracle's VJPs of one-hot cotangents give the
  matrix A with op(x) = A x, and jax.jacrev of the public op must equal it.
* Gradient w.r.t. rois is zero.
* Grad of grad: for f(x) = |op(x)|^2 / 2, grad f = A^T A x and, with h(x) = |grad f(x)|^2,
  grad h = 2 (A^T A)^2 x; also the Hessian-vector product A^T A v (forward over reverse).
* jit(grad) and vmap(grad) agree with the eager / per-example results.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from conftest import (LAYOUTS, OP_IDS, OPS, as_f64, lib_op, op_kwargs, oracle_fwd,
                      oracle_grad, random_features, random_rois, rng_for, separated_features)

NS, CS, HS, WS = 2, 2, 7, 6
CONFIGS = [  # (aligned, sampling_ratio, spatial_scale, output_size)
    (False, -1, 1.0, (2, 3)),
    (True, 2, 0.5, (3, 2)),
    (False, 0, 0.25, 2),
    (True, 1, 1.0, (1, 2)),
]
CFG_IDS = ["legacy-adaptive", "aligned-sr2-s0.5", "legacy-sr0-s0.25", "aligned-sr1"]


def _setup(op, mode, layout, cfg, key=""):
    aligned, sr, scale, osize = cfg
    rng = rng_for("grad", op, mode, layout, cfg, key)
    if op == "roi_align" and mode == "avg":
        x = random_features(rng, (NS, CS, HS, WS), jnp.float64, layout)
    else:
        x = separated_features(rng, (NS, CS, HS, WS), jnp.float64, layout)
    rois = random_rois(rng, 5, NS, HS, WS, scale, dtype=np.float64)
    kw = op_kwargs(op, mode, output_size=osize, spatial_scale=scale, sampling_ratio=sr,
                   aligned=aligned, layout=layout)
    return x, rois, kw


def _oracle_matrix(op, x, rois, kw):
    """A [M, P] with op(x).ravel() = A @ x.ravel(), from the oracle's one-hot VJPs."""
    out = oracle_fwd(op, x, rois, **kw)
    m = out.size
    rows = []
    for i in range(m):
        e = np.zeros(m)
        e[i] = 1.0
        rows.append(oracle_grad(op, x, rois, e.reshape(out.shape), **kw).ravel())
    return np.asarray(rows).reshape(m, x.size), out


OP_PARAMS = [pytest.param(op, mode, id=i) for (op, mode), i in zip(OPS, OP_IDS)]


# order 1: every config in both layouts; order 2 (slower): one config per layout.
CHECK_GRADS = ([(1, layout, c, f"o1-{layout}-{i}") for layout in LAYOUTS
                for c, i in zip(CONFIGS, CFG_IDS)]
               + [(2, "NCHW", CONFIGS[0], f"o2-NCHW-{CFG_IDS[0]}"),
                  (2, "NHWC", CONFIGS[1], f"o2-NHWC-{CFG_IDS[1]}")])


@pytest.mark.parametrize("order,layout,cfg", [c[:3] for c in CHECK_GRADS],
                         ids=[c[3] for c in CHECK_GRADS])
@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_check_grads(op, mode, layout, cfg, order):
    x, rois, kw = _setup(op, mode, layout, cfg)
    f = jax.jit(lambda v: lib_op(op, v, rois, **kw))
    # eps far below the gap between competing samples (features are 1, 2, 3, ...).
    check_grads(f, (jnp.asarray(x),), order=order, modes=["rev"], eps=1e-4)


@pytest.mark.parametrize("cfg", CONFIGS, ids=CFG_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_jacobian_is_oracle_transpose(op, mode, layout, cfg):
    x, rois, kw = _setup(op, mode, layout, cfg)
    a, out_o = _oracle_matrix(op, x, rois, kw)
    np.testing.assert_allclose(a @ x.ravel(), out_o.ravel(), rtol=0, atol=1e-12)  # sanity
    jac = jax.jit(jax.jacrev(lambda v: lib_op(op, v, rois, **kw)))(x)
    np.testing.assert_allclose(as_f64(jac).reshape(a.shape), a, rtol=0, atol=1e-12)
    # <g, op(x)> = <op^T(g), x> with the library's own forward and backward.
    g = rng_for("dot", op, mode).standard_normal(out_o.shape)
    out, vjp = jax.vjp(lambda v: lib_op(op, v, rois, **kw), x)
    (gx,) = vjp(jnp.asarray(g))
    np.testing.assert_allclose(np.vdot(g, as_f64(out)), np.vdot(as_f64(gx), x), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_grad_wrt_rois_is_zero(op, mode, layout):
    x, rois, kw = _setup(op, mode, layout, CONFIGS[0])
    f = lambda v, r: jnp.sum(lib_op(op, v, r, **kw) ** 2)
    gx, gr = jax.grad(f, argnums=(0, 1))(x, rois)
    assert gr.shape == rois.shape and gr.dtype == rois.dtype
    assert not np.any(as_f64(gr))
    assert np.any(as_f64(gx))
    gr_jit = jax.jit(jax.grad(f, argnums=1))(x, rois)
    assert not np.any(as_f64(gr_jit))
    # Also through vjp with a stop_gradient-free, rois-only closure.
    _, vjp = jax.vjp(lambda r: lib_op(op, x, r, **kw), rois)
    (gr2,) = vjp(jnp.ones(jax.eval_shape(lambda r: lib_op(op, x, r, **kw), rois).shape))
    assert not np.any(as_f64(gr2))


@pytest.mark.parametrize("layout,cfg", [("NCHW", CONFIGS[0]), ("NHWC", CONFIGS[1])],
                         ids=[f"NCHW-{CFG_IDS[0]}", f"NHWC-{CFG_IDS[1]}"])
@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_grad_of_grad(op, mode, layout, cfg):
    x, rois, kw = _setup(op, mode, layout, cfg)
    a, _ = _oracle_matrix(op, x, rois, kw)
    ata = a.T @ a
    xv = x.ravel()
    v = rng_for("hvp", op, mode).standard_normal(x.shape)

    f = lambda u: 0.5 * jnp.sum(lib_op(op, u, rois, **kw) ** 2)
    gf = jax.grad(f)
    h = lambda u: jnp.sum(gf(u) ** 2)

    @jax.jit
    def all_derivatives(u, w):
        return (gf(u),                                   # A^T A x
                jax.grad(h)(u),                          # 2 (A^T A)^2 x
                jax.jvp(gf, (u,), (w,))[1],              # A^T A v, forward over reverse
                jax.grad(lambda z: jnp.vdot(gf(z), w))(u))  # A^T A v, reverse over reverse

    g1, gh, hvp, hvp_rr = (as_f64(t).ravel() for t in all_derivatives(x, v))
    np.testing.assert_allclose(g1, ata @ xv, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(gh, 2.0 * ata @ (ata @ xv), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(hvp, ata @ v.ravel(), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(hvp_rr, ata @ v.ravel(), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_grad_of_grad_finite_difference(op, mode):
    """grad h against central differences of h (h is quadratic: differences are exact)."""
    x, rois, kw = _setup(op, mode, "NCHW", CONFIGS[1], key="fd")
    f = lambda v: 0.5 * jnp.sum(lib_op(op, v, rois, **kw) ** 2)
    h = jax.jit(lambda v: jnp.sum(jax.grad(f)(v) ** 2))
    gh = as_f64(jax.jit(jax.grad(h))(x))
    d = rng_for("fd-dir", op).standard_normal(x.shape)
    delta = 1e-3  # winners cannot move: samples differ by >= O(1) on 1, 2, 3, ... features
    fd = (float(h(x + delta * d)) - float(h(x - delta * d))) / (2 * delta)
    np.testing.assert_allclose(np.vdot(gh, d), fd, rtol=1e-7)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,mode", OP_PARAMS)
def test_jit_and_vmap_of_grad(op, mode, layout):
    aligned, sr, scale, osize = CONFIGS[1]
    rng = rng_for("vg", op, mode, layout)
    v = 3
    xs = np.stack([separated_features(rng, (NS, CS, HS, WS), jnp.float64, layout)
                   for _ in range(v)])
    rois = random_rois(rng, 4, NS, HS, WS, scale, dtype=np.float64)
    kw = op_kwargs(op, mode, output_size=osize, spatial_scale=scale, sampling_ratio=sr,
                   aligned=aligned, layout=layout)
    wts = rng.standard_normal(jax.eval_shape(lambda u: lib_op(op, u, rois, **kw), xs[0]).shape)
    f = lambda u: jnp.sum(wts * lib_op(op, u, rois, **kw) ** 2)
    g = jax.grad(f)
    loop = np.stack([as_f64(g(xs[i])) for i in range(v)])
    np.testing.assert_allclose(as_f64(jax.jit(g)(xs[0])), loop[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(as_f64(jax.vmap(g)(xs)), loop, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(as_f64(jax.jit(jax.vmap(g))(xs)), loop, rtol=1e-12, atol=1e-12)
    # Against the oracle: d/dx sum(w * y^2) = A^T (2 w y).
    for i in range(v):
        y = oracle_fwd(op, xs[i], rois, **kw)
        want = oracle_grad(op, xs[i], rois, 2 * wts * y, **kw)
        np.testing.assert_allclose(loop[i], want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gathers_are_transposes_of_the_backwards(layout):
    """The winner gathers (JVPs of the max forwards) and the max backwards are primitives
    declared transposes of each other: jax.linear_transpose and grad through a gather give
    the backward, and through a backward give the gather, to float64 rounding."""
    from jax_roi import _roi_align, _roi_pool

    rng = np.random.default_rng(16)
    cl = layout == "NHWC"
    feats = rng.standard_normal((1, 6, 7, 2) if cl else (1, 2, 6, 7))
    rois = np.array([[0, 0.5, 0.5, 5, 5], [0, 1, 1, 3, 4.5], [0, -2, -2, 9, 9]])
    align = dict(pooled_h=2, pooled_w=2, spatial_scale=1.0, sampling_ratio=2, aligned=False,
                 channels_last=cl, deterministic=False)
    pool = dict(pooled_h=2, pooled_w=2, spatial_scale=1.0, channels_last=cl,
                deterministic=False)
    a, r = _roi_align, _roi_pool
    for fwd, gather_p, bwd_p, p in (
            (a.roi_align_max_fwd_p, a.roi_align_max_gather_p, a.roi_align_max_bwd_p, align),
            (r.roi_pool_fwd_p, r.roi_pool_gather_p, r.roi_pool_bwd_p, pool)):
        _, arg = fwd.bind(feats, rois, **p)
        c = rng.standard_normal(arg.shape)
        bwd = bwd_p.bind(c, rois, arg, feature_shape=feats.shape, **p)
        gathered = gather_p.bind(feats, rois, arg, **p)
        assert np.any(np.asarray(gathered)) and np.any(np.asarray(bwd))
        gather = lambda f: gather_p.bind(f, rois, arg, **p)
        (lt,) = jax.linear_transpose(gather, feats)(c)
        np.testing.assert_allclose(lt, bwd, rtol=1e-13, atol=1e-13)
        gr = jax.jit(jax.grad(lambda f: jnp.vdot(gather(f), c)))(feats)
        np.testing.assert_allclose(gr, bwd, rtol=1e-13, atol=1e-13)
        backward = lambda g: bwd_p.bind(g, rois, arg, feature_shape=feats.shape, **p)
        (lt,) = jax.linear_transpose(backward, c)(feats)
        np.testing.assert_allclose(lt, gathered, rtol=1e-13, atol=1e-13)
        # <bwd(c), x> == <c, gather(x)>
        np.testing.assert_allclose(np.vdot(bwd, feats), np.vdot(c, gathered), rtol=1e-12)


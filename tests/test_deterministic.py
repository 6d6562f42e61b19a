"""The public `deterministic` flag: validation, the XLA_FLAGS switch, and how it travels.

The CPU kernels are deterministic whatever the flag, so on CPU it changes no result; on CUDA
it picks the gather backward (tests/test_cuda_lowering.py checks the attribute it becomes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_roi
from conftest import as_f64, random_features, random_rois, rng_for
from jax_roi import _validation as V

OPS = [pytest.param("roi_align", "avg", id="align_avg"),
       pytest.param("roi_align", "max", id="align_max"),
       pytest.param("roi_pool", None, id="pool")]


def _op(op, mode, **kw):
    if op == "roi_pool":
        return lambda x, r: jax_roi.roi_pool(x, r, (2, 3), 0.5, **kw)
    return lambda x, r: jax_roi.roi_align(x, r, (2, 3), 0.5, 2, True, mode=mode, **kw)


def _args():
    rng = rng_for("det")
    x = random_features(rng, (2, 3, 8, 9), jnp.float32)
    return jnp.asarray(x), jnp.asarray(random_rois(rng, 6, 2, 8, 9, 0.5).astype(np.float32))


def _loss(f):
    return lambda x, r: jnp.sum(jnp.sin(f(x, r)))


def _roi_eqns(jaxpr):
    """Every jax_roi primitive equation in a jaxpr, nested jaxprs (pjit, custom_vjp) included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name.startswith("roi_"):
            found.append(eqn)
        for value in eqn.params.values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(item, "jaxpr", item)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    found += _roi_eqns(inner)
    return found


@pytest.mark.parametrize("op,mode", OPS)
@pytest.mark.parametrize("bad", [1, 0, "yes", None, np.array([True])])
def test_must_be_bool(op, mode, bad):
    x, r = _args()
    with pytest.raises(TypeError, match="deterministic must be a bool"):
        _op(op, mode, deterministic=bad)(x, r)


@pytest.mark.parametrize("op,mode", OPS)
def test_keyword_only(op, mode):
    x, r = _args()
    with pytest.raises(TypeError):
        if op == "roi_pool":
            jax_roi.roi_pool(x, r, 2, 1.0, "NCHW", True)
        else:
            jax_roi.roi_align(x, r, 2, 1.0, -1, False, "avg", "NCHW", True)


@pytest.mark.usefixtures("on_cpu")
@pytest.mark.parametrize("op,mode", OPS)
def test_cpu_results_do_not_depend_on_it(op, mode):
    x, r = _args()
    outs = []
    for det in (False, True):
        f = _op(op, mode, deterministic=det)
        outs.append((as_f64(f(x, r)), as_f64(jax.jit(jax.grad(_loss(f)))(x, r))))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("op,mode", OPS)
@pytest.mark.parametrize("det", [False, True])
def test_primitives_carry_it(op, mode, det):
    """grad, vmap(grad) and grad of grad: every roi primitive has the flag as given."""
    x, r = _args()
    f = _op(op, mode, deterministic=det)
    g = jax.grad(_loss(f))
    for fn, args in ((g, (x, r)), (jax.vmap(g), (jnp.stack([x] * 2), jnp.stack([r] * 2))),
                     (jax.grad(lambda a, b: jnp.sum(g(a, b) ** 2)), (x, r))):
        eqns = _roi_eqns(jax.make_jaxpr(fn)(*args).jaxpr)
        assert any(e.primitive.name.endswith("_bwd") for e in eqns)
        assert all(e.params["deterministic"] is det for e in eqns), [
            (e.primitive.name, e.params["deterministic"]) for e in eqns]


@pytest.mark.parametrize("flags,want", [
    ("", False),
    ("--xla_gpu_deterministic_ops=true", True),
    ("--xla_gpu_deterministic_ops", True),
    ("--xla_gpu_deterministic_ops=1", True),
    ("--xla_gpu_deterministic_ops=false", False),
    ("--xla_gpu_deterministic_ops=true --xla_gpu_deterministic_ops=false", False),
    ("--xla_force_host_platform_device_count=2 --xla_gpu_deterministic_ops=TRUE", True),
    ("--xla_gpu_deterministic_ops_extra=true", False),
])
def test_xla_flags_switch(flags, want, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", flags)
    assert V.xla_flags_deterministic() is want
    assert V.deterministic("roi_align", False) is want
    assert V.deterministic("roi_align", True) is True


@pytest.mark.parametrize("op,mode", OPS)
def test_xla_flags_read_at_trace_time(op, mode, monkeypatch):
    x, r = _args()
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")
    eqns = _roi_eqns(jax.make_jaxpr(jax.grad(_loss(_op(op, mode))))(x, r).jaxpr)
    assert eqns and all(e.params["deterministic"] is True for e in eqns)
    monkeypatch.delenv("XLA_FLAGS")
    eqns = _roi_eqns(jax.make_jaxpr(jax.grad(_loss(_op(op, mode))))(x, r).jaxpr)
    assert eqns and all(e.params["deterministic"] is False for e in eqns)


def test_cpu_kernels_take_it_and_ignore_it():
    """The CPU targets take the family's whole attribute struct (the custom-call ABI is the
    same on every platform), `deterministic` included, and are deterministic either way."""
    x, r = _args()
    grads = []
    for det in (False, True):
        f = jax.jit(jax.grad(_loss(_op("roi_align", "max", deterministic=det))))
        text = f.trace(x, r).lower(lowering_platforms=("cpu",)).as_text()
        assert "jax_roi_roi_align_max_bwd" in text
        assert f"deterministic = {str(det).lower()}" in text
        grads.append(np.asarray(f(x, r)))
    np.testing.assert_array_equal(grads[0], grads[1])

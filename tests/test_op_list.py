"""The op list (xla_kernels/include/jax_roi/op_list.h, compiled into every kernel module) and
the Python kernel specs (jax_roi/_kernels.py) name the same targets, with the same roles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_roi
from jax_roi import _kernels, _native


def test_every_target_has_a_spec_and_every_spec_with_a_target_is_listed():
    specs = {k.target for k in _kernels.KERNELS.values() if k.has_target}
    assert specs == set(_native.TARGETS)
    assert _native.CPU_TARGETS == frozenset(_native.TARGETS)
    assert len(set(_native.TARGETS)) == len(_native.TARGETS)


def test_export_disabled_checks_name_every_target():
    text = " ".join(str(d) for d in jax_roi.export_disabled_checks())
    for target in _native.TARGETS:
        assert target in text


@pytest.mark.parametrize("name", sorted(_kernels.KERNELS))
def test_spec_abstract_eval_matches_the_reference(name):
    """Each primitive's abstract evaluation (derived from its roles) is the shape and dtype
    its pure-JAX reference computes."""
    kernel = _kernels.KERNELS[name]
    prim = _kernels.PRIMITIVES[name]
    n, c, h, w, k = 2, 3, 9, 8, 4
    params = dict(pooled_h=2, pooled_w=3, spatial_scale=0.5, channels_last=False,
                  deterministic=False)
    if "sampling_ratio" in kernel.attrs:
        params.update(sampling_ratio=2, aligned=True)
    features = jax.ShapeDtypeStruct((n, c, h, w), jnp.float32)
    pooled = jax.ShapeDtypeStruct((k, c, 2, 3), jnp.float32)
    operand = {_kernels.Role.FEATURES: features, _kernels.Role.POOLED: pooled,
               _kernels.Role.ROIS: jax.ShapeDtypeStruct((k, 5), jnp.float32),
               _kernels.Role.ARGMAX: jax.ShapeDtypeStruct((k, c, 2, 3), jnp.int32)}
    args = [operand[r] for r in kernel.args]
    if _kernels.Role.FEATURE_GRAD in kernel.results:
        params["feature_shape"] = (n, c, h, w)
    got = jax.eval_shape(lambda *a: prim.bind(*a, **params), *args)
    ref_params = {p: v for p, v in params.items() if p != "deterministic"}
    want = jax.eval_shape(lambda *a: kernel.reference(*a, **ref_params), *args)
    got, want = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert [(g.shape, g.dtype) for g in got] == [(w_.shape, w_.dtype) for w_ in want]
    assert len(got) == len(kernel.results)
    for leaf, role in zip(got, kernel.results):
        if role is _kernels.Role.ARGMAX:
            assert leaf.dtype == np.int32

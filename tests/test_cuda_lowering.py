"""Lowering for CUDA on any machine: the CUDA custom calls and their attributes.

`jax.jit(f).trace(...).lower(lowering_platforms=("cuda",))` needs no GPU, only the CUDA
extension (whose presence registers the "cuda" lowerings). Skips when `_jax_roi_cuda` was not
built; ``JAX_ROI_REQUIRE_CUDA_BUILD=1`` (set by CI, which has nvcc) makes that a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import jax_roi
from jax_roi import _native

OPS = [pytest.param("roi_align", "avg", "jax_roi_roi_align_avg", id="align_avg"),
       pytest.param("roi_align", "max", "jax_roi_roi_align_max", id="align_max"),
       pytest.param("roi_pool", None, "jax_roi_roi_pool", id="pool")]


@pytest.fixture(autouse=True)
def _cuda_extension_built():
    if not _native.CUDA_TARGETS:
        msg = "the CUDA extension jax_roi._jax_roi_cuda was not built (no nvcc, or JAX_ROI_CUDA=OFF)"
        if os.environ.get("JAX_ROI_REQUIRE_CUDA_BUILD") == "1":
            pytest.fail(msg + " and JAX_ROI_REQUIRE_CUDA_BUILD=1")
        pytest.skip(msg)


def _op(op, mode, layout="NCHW", **kw):
    if op == "roi_pool":
        return lambda x, r: jax_roi.roi_pool(x, r, (2, 3), 0.5, layout=layout, **kw)
    return lambda x, r: jax_roi.roi_align(x, r, (2, 3), 0.5, 2, True, mode=mode, layout=layout,
                                          **kw)


def _args(dtype=jnp.float32, layout="NCHW"):
    shape = (2, 3, 8, 9) if layout == "NCHW" else (2, 8, 9, 3)
    x = jnp.zeros(shape, dtype)
    rois = jnp.asarray([[0, 1.0, 1.0, 6.0, 5.0], [1, 0.0, 2.0, 9.0, 7.0]],
                       jnp.float64 if dtype == jnp.float64 else jnp.float32)
    return x, rois


def _calls(fn, *args, platform="cuda"):
    """[(target, {attribute: value text})] of every jax_roi custom call, in program order."""
    text = jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()
    calls = []
    for m in re.finditer(r"custom_call @(jax_roi_\w+)\(.*", text):
        attrs = re.search(r"mhlo\.backend_config = \{([^}]*)\}", m.group(0))
        assert attrs, f"typed FFI attributes expected: {m.group(0)[:200]}"
        pairs = (a.split(" = ", 1) for a in attrs.group(1).split(", "))
        calls.append((m.group(1), {k.strip(): v.split(" :")[0].strip() for k, v in pairs}))
    return calls


def _loss(f):
    return lambda x, r: jnp.sum(jnp.sin(f(x, r).astype(jnp.float32)))


@pytest.mark.parametrize("op,mode,stem", OPS)
def test_forward_lowers_to_cuda_kernel(op, mode, stem):
    calls = _calls(_op(op, mode), *_args())
    assert [t for t, _ in calls] == [stem + "_fwd"]
    assert calls[0][1]["deterministic"] == "false"
    assert calls[0][1]["channels_last"] == "false"


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("op,mode,stem", OPS)
def test_backward_carries_deterministic(op, mode, stem, deterministic):
    f = _op(op, mode, deterministic=deterministic)
    calls = _calls(jax.grad(_loss(f)), *_args())
    assert [t for t, _ in calls] == [stem + "_fwd", stem + "_bwd"]
    assert calls[1][1]["deterministic"] == str(deterministic).lower()


@pytest.mark.parametrize("op,mode,stem", OPS)
def test_xla_flags_force_deterministic(op, mode, stem, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")
    calls = _calls(jax.grad(_loss(_op(op, mode))), *_args())
    assert calls[-1][0] == stem + "_bwd" and calls[-1][1]["deterministic"] == "true"


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float64],
                         ids=["f16", "bf16", "f64"])
@pytest.mark.parametrize("op,mode,stem", OPS)
def test_dtypes_and_nhwc(op, mode, stem, dtype):
    f = _op(op, mode, layout="NHWC", deterministic=True)
    calls = _calls(jax.grad(_loss(f)), *_args(dtype, "NHWC"))
    assert [t for t, _ in calls] == [stem + "_fwd", stem + "_bwd"]
    assert all(a["channels_last"] == "true" for _, a in calls)


@pytest.mark.parametrize("op,mode,stem", OPS)
def test_vmap_grad_is_one_call_each(op, mode, stem):
    f = _op(op, mode, deterministic=True)
    x, rois = _args()
    xs, rs = jnp.stack([x] * 3), jnp.stack([rois] * 3)
    calls = _calls(jax.vmap(jax.grad(_loss(f))), xs, rs)
    assert sorted(t for t, _ in calls) == [stem + "_bwd", stem + "_fwd"]


def test_grad_of_grad_keeps_deterministic():
    """The avg op's forward and backward transpose into each other: the flag survives."""
    f = _op("roi_align", "avg", deterministic=True)
    g = lambda x, r: jnp.sum(jax.grad(_loss(f))(x, r) ** 2)
    calls = _calls(jax.grad(g), *_args())
    bwd = [a for t, a in calls if t.endswith("_bwd")]
    assert len(bwd) >= 2 and all(a["deterministic"] == "true" for a in bwd)


# The attribute ABI (README, "Custom-call ABI"): one struct per op family, the same for every
# target of the family on every platform.
FAMILY_ATTRS = {
    "roi_align": {"pooled_h", "pooled_w", "spatial_scale", "sampling_ratio", "aligned",
                  "channels_last", "deterministic"},
    "roi_pool": {"pooled_h", "pooled_w", "spatial_scale", "channels_last", "deterministic"},
}


@pytest.mark.parametrize("platform", ["cpu", "cuda"])
@pytest.mark.parametrize("op,mode,stem", OPS)
def test_every_target_takes_its_family_attributes(op, mode, stem, platform):
    """Forward and backward, CPU and CUDA: exactly the family's attributes, `deterministic`
    included (the CPU handlers accept it and ignore it)."""
    f = _op(op, mode, deterministic=True)
    calls = _calls(jax.grad(_loss(f)), *_args(), platform=platform)
    assert [t for t, _ in calls] == [stem + "_fwd", stem + "_bwd"]
    for _, attrs in calls:
        assert set(attrs) == FAMILY_ATTRS[op]
        assert attrs["deterministic"] == "true"


def test_registered_for_cuda_only_pending_a_backend():
    """Every CUDA target was built; on a machine without a CUDA backend none is usable."""
    assert _native.CUDA_TARGETS == frozenset(_native.TARGETS)
    if not _native.cuda_available():
        with pytest.raises(RuntimeError):
            jax.devices("cuda")


def test_import_initialises_no_backend(tmp_path):
    """Importing jax_roi hands the CUDA targets to jax without starting any backend; jax
    registers them with XLA only if a CUDA backend sets itself up in the process. (Looks at
    jax internals: skips if they moved.)"""
    code = (
        "import jax_roi\n"
        "try:\n"
        "    from jax._src import xla_bridge\n"
        "    from jaxlib import xla_client\n"
        "    started = xla_bridge.backends_are_initialized()\n"
        "    pending = {n for n, *_ in xla_client._custom_callback.get('CUDA', [])}\n"
        "    handled = 'CUDA' in xla_client._custom_callback_handler\n"
        "except (ImportError, AttributeError) as e:\n"
        "    print('SKIP', e); raise SystemExit\n"
        "assert not started, 'import started a backend'\n"
        "assert handled or pending >= set(jax_roi._native.TARGETS), pending\n"
        "print('OK')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(tmp_path), env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if proc.stdout.startswith("SKIP"):
        pytest.skip(f"jax internals moved: {proc.stdout.strip()}")
    assert proc.stdout.strip() == "OK", proc.stdout

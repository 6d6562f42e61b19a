"""Loads the compiled kernels and registers them as XLA FFI targets.

`CPU_TARGETS` lists what the CPU extension provides; `cuda_available()` says whether the CUDA
extension was built and a CUDA backend exists in this process (jax_roi imports cleanly
without either).
"""

from __future__ import annotations

import importlib
import os

from . import _compat

# Every FFI target name, mirrored from the primitive names in _primitives.py.
TARGETS = (
    "jax_roi_roi_align_avg_fwd",
    "jax_roi_roi_align_avg_bwd",
    "jax_roi_roi_align_max_fwd",
    "jax_roi_roi_align_max_bwd",
    "jax_roi_roi_pool_fwd",
    "jax_roi_roi_pool_bwd",
)


def _register(module_name: str, platform: str) -> frozenset[str]:
    try:
        module = importlib.import_module(f"jax_roi.{module_name}")
    except ModuleNotFoundError as e:
        raise ImportError(
            f"jax_roi's compiled kernels ({module_name}) are missing from {os.path.dirname(__file__)}. "
            "This is a source folder shadowing the installed package (run from elsewhere, or "
            "install with `pip install -e .`), or an incomplete build.") from e
    registered = set()
    for name, capsule in module.registrations().items():
        _compat.register_ffi_target(name, capsule, platform=platform)
        registered.add(name)
    return frozenset(registered)


CPU_TARGETS: frozenset[str] = _register("_jax_roi_cpu", "cpu")

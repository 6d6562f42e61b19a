"""Loads the compiled kernels and registers them as XLA FFI targets.

`TARGETS` is every FFI target of the op list (xla_kernels/include/jax_roi/op_list.h, read
from the compiled CPU module), `CPU_TARGETS` what the CPU extension registered, `CUDA_TARGETS` what the CUDA extension
provides (empty when it was not built); `cuda_available()` says whether the CUDA extension
was built and a CUDA backend exists in this process (jax_roi imports cleanly without either).

The CUDA targets are handed to jax at import for platform "CUDA" without initialising any
backend: jax keeps them pending until a CUDA backend (the jax CUDA plugin) sets itself up in
this process, and only then registers them with XLA. In a process without one they are
never registered anywhere.
"""

from __future__ import annotations

import importlib
import os
import warnings

from . import _compat

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


def _register_optional(module_name: str, platform: str) -> frozenset[str]:
    """As _register, for an extension a build may lack: empty when it is absent."""
    try:
        return _register(module_name, platform)
    except ImportError as e:
        cause = e.__cause__ if isinstance(e.__cause__, ModuleNotFoundError) else e
        if isinstance(cause, ModuleNotFoundError) and cause.name == f"jax_roi.{module_name}":
            return frozenset()  # not built (JAX_ROI_CUDA=OFF, or no nvcc at build time)
        # Built but unloadable: the CPU kernels still work, say why the CUDA ones do not.
        warnings.warn(f"jax_roi: {module_name} failed to load, CUDA kernels disabled: {e}",
                      RuntimeWarning, stacklevel=2)
        return frozenset()


CPU_TARGETS: frozenset[str] = _register("_jax_roi_cpu", "cpu")
# Every FFI target, from the op list the kernels were compiled with
# (xla_kernels/include/jax_roi/op_list.h): "jax_roi_<op>", the primitive `<op>_p`'s target.
TARGETS: tuple[str, ...] = tuple(
    f"jax_roi_{op}" for op in importlib.import_module("jax_roi._jax_roi_cpu").ops())
# Upper-case "CUDA": the XLA platform name (lower case would be accepted and never used).
CUDA_TARGETS: frozenset[str] = _register_optional("_jax_roi_cuda", "CUDA")


def cuda_available() -> bool:
    """True when the CUDA kernels were built and this process has a CUDA backend.

    Asking initialises jax's backends (as `jax.devices()` does); importing jax_roi does not.
    """
    if not CUDA_TARGETS:
        return False
    try:
        return bool(_compat.cuda_devices())
    except RuntimeError:  # no CUDA plugin, no driver, or no GPU
        return False

"""Every version-dependent or private JAX import of jax_roi, and nowhere else.

Supported: jax/jaxlib 0.10.2 (the oldest; the kernels are built against its FFI headers)
through 0.12.1 (the newest tested).
"""

from __future__ import annotations

import jax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

ffi_lowering = jax.ffi.ffi_lowering
ShapedArray = jax.core.ShapedArray
register_ffi_target = jax.ffi.register_ffi_target

# Linear-primitive plumbing: JVP and transpose rules are registered in these tables.
primitive_jvps = ad.primitive_jvps
primitive_transposes = ad.primitive_transposes
is_undefined_primal = ad.is_undefined_primal
Zero = ad.Zero
instantiate_zeros = ad.instantiate_zeros

primitive_batchers = batching.primitive_batchers
register_lowering = mlir.register_lowering
lower_fun = mlir.lower_fun


def cuda_devices() -> list:
    """This process's CUDA devices; RuntimeError when it has no CUDA backend."""
    return jax.devices("cuda")

__all__ = [
    "Primitive",
    "ShapedArray",
    "Zero",
    "cuda_devices",
    "ffi_lowering",
    "instantiate_zeros",
    "is_undefined_primal",
    "lower_fun",
    "primitive_batchers",
    "primitive_jvps",
    "primitive_transposes",
    "register_ffi_target",
    "register_lowering",
]

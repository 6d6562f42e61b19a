"""Writes tests/data/export_<version>.npz: jax.export programs that call every FFI target
(forward and backward of every op, both layouts, float32 and float64), serialized with this
version of jax_roi, with their inputs and outputs. tests/test_export.py reloads every
artifact kept here and runs it: a later version that breaks programs users have already
exported (a renamed target or attribute, a changed operand order) fails CI.

Run once per release that changes nothing of the ABI it keeps (README, "Custom-call ABI"):
    python tests/data/make_export_artifact.py
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import jax_roi  # noqa: E402


def cases():
    """name -> (function, args), deterministic inputs."""
    rng = np.random.default_rng(2026)
    x32 = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)  # NCHW
    x64 = rng.standard_normal((2, 9, 8, 3))  # NHWC
    r = np.array([[0, 1.0, 1.5, 12.0, 14.0], [1, -3.0, 2.0, 9.5, 20.0],
                  [1, 4.0, 4.0, 4.5, 5.0], [-1, 1.0, 1.0, 5.0, 5.0]])

    def with_grad(f):
        return lambda a, b: (f(a, b), jax.grad(lambda u: jnp.sum(f(u, b) ** 2))(a))

    avg = lambda a, b: jax_roi.roi_align(a, b, (2, 3), 0.5, 2, True)
    mx = lambda a, b: jax_roi.roi_align(a, b, (3, 2), 0.5, -1, False, mode="max",
                                        layout="NHWC")
    pl = lambda a, b: jax_roi.roi_pool(a, b, (2, 2), 0.5)
    pl64 = lambda a, b: jax_roi.roi_pool(a, b, (3, 2), 0.5, layout="NHWC")
    return {
        "roi_align_avg_nchw_f32": (with_grad(avg), (x32, r.astype(np.float32))),
        "roi_align_max_nhwc_f64": (with_grad(mx), (x64, r)),
        "roi_pool_nchw_f32": (with_grad(pl), (x32, r.astype(np.float32))),
        "roi_pool_nhwc_f64": (with_grad(pl64), (x64, r)),
    }


def main():
    out = {}
    for name, (fn, args) in cases().items():
        exp = jax.export.export(jax.jit(fn), platforms=("cpu", "cuda"),
                                disabled_checks=jax_roi.export_disabled_checks())(*args)
        out[f"{name}/module"] = np.frombuffer(exp.serialize(), np.uint8)
        for i, a in enumerate(args):
            out[f"{name}/arg{i}"] = np.asarray(a)
        for i, y in enumerate(jax.jit(fn)(*args)):
            out[f"{name}/out{i}"] = np.asarray(y)
    path = pathlib.Path(__file__).with_name(f"export_{jax_roi.__version__}.npz")
    np.savez_compressed(path, **out)
    print(path, path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()

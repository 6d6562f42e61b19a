"""jax.export round trip of the ops and their gradients.

Exported with `disabled_checks=jax_roi.export_disabled_checks()`, serialized to bytes, then
deserialized and called in a FRESH Python process (which imports jax_roi first, registering
the FFI targets), and compared with the in-process results. Exporting without the disabled
checks must fail with a clear error naming the custom call, and a process that has not
imported jax_roi cannot run the module.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_roi
from conftest import as_f64, assert_same_run, random_features, random_rois, rng_for

N, C, H, W = 2, 3, 9, 8


def _cases():
    """name -> (function, args); the functions close over static parameters only."""
    rng = rng_for("export")
    x32 = random_features(rng, (N, C, H, W), jnp.float32, "NCHW")
    x64 = random_features(rng, (N, C, H, W), jnp.float64, "NHWC")
    r32 = random_rois(rng, 5, N, H, W, 0.5, dtype=np.float32)
    r64 = random_rois(rng, 4, N, H, W, 1.0, dtype=np.float64)
    r64[0, 0] = -1.0  # an invalid row survives the round trip as zeros

    def sq_grad(f):
        return jax.grad(lambda a, b: jnp.sum(f(a, b) ** 2))

    avg = lambda a, b: jax_roi.roi_align(a, b, (2, 3), 0.5, 2, True)
    mx = lambda a, b: jax_roi.roi_align(a, b, (3, 2), 0.5, -1, False, mode="max")
    pl = lambda a, b: jax_roi.roi_pool(a, b, (2, 2), 0.5)
    avg64 = lambda a, b: jax_roi.roi_align(a, b, 2, 1.0, 0, False, layout="NHWC")
    pl64 = lambda a, b: jax_roi.roi_pool(a, b, (3, 2), layout="NHWC")
    return {
        "align_avg": (avg, (x32, r32)),
        "align_max": (mx, (x32, r32)),
        "roi_pool": (pl, (x32, r32)),
        "align_avg_grad": (sq_grad(avg), (x32, r32)),
        "align_max_grad": (sq_grad(mx), (x32, r32)),
        "roi_pool_grad": (sq_grad(pl), (x32, r32)),
        "align_avg_f64_nhwc": (avg64, (x64, r64)),
        "roi_pool_f64_nhwc_grad": (sq_grad(pl64), (x64, r64)),
        "align_avg_vmap": (jax.vmap(avg, in_axes=(0, None)), (np.stack([x32, 2 * x32]), r32)),
    }


_SUBPROCESS = textwrap.dedent("""
    import sys
    import numpy as np
    import jax
    jax.config.update("jax_enable_x64", True)
    {import_line}
    d = sys.argv[1]
    for name in sys.argv[2:]:
        with open(f"{{d}}/{{name}}.bin", "rb") as fh:
            exp = jax.export.deserialize(bytearray(fh.read()))
        args = [np.load(f"{{d}}/{{name}}.arg{{i}}.npy") for i in range(len(exp.in_avals))]
        out = exp.call(*args)
        np.save(f"{{d}}/{{name}}.out.npy", np.asarray(out))
    print("OK")
""")


def _run_fresh(tmp, names, import_jax_roi=True):
    code = _SUBPROCESS.format(import_line="import jax_roi" if import_jax_roi else "")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the jax_roi imported here
    return subprocess.run([sys.executable, "-c", code, str(tmp)] + list(names),
                          capture_output=True, text=True, cwd=str(tmp), env=env, timeout=300)


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    expected, exported = {}, {}
    for name, (fn, args) in _cases().items():
        exp = jax.export.export(jax.jit(fn), disabled_checks=jax_roi.export_disabled_checks())(
            *args)
        blob = exp.serialize()
        assert isinstance(blob, (bytes, bytearray)) and len(blob) > 0
        (tmp / f"{name}.bin").write_bytes(bytes(blob))
        for i, a in enumerate(args):
            np.save(tmp / f"{name}.arg{i}.npy", np.asarray(a))
        expected[name] = as_f64(jax.jit(fn)(*args))
        exported[name] = exp
    proc = _run_fresh(tmp, list(expected))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("OK")
    return tmp, expected, exported


NAMES = list(_cases())


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_in_fresh_process(round_trip, name):
    tmp, expected, _ = round_trip
    got = np.load(tmp / f"{name}.out.npy")
    assert got.shape == expected[name].shape
    assert_same_run(got, expected[name])


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_in_process(round_trip, name):
    """Deserialize here too, and call: the same numbers; the module names our targets."""
    tmp, expected, exported = round_trip
    exp = jax.export.deserialize(bytearray((tmp / f"{name}.bin").read_bytes()))
    args = [np.load(tmp / f"{name}.arg{i}.npy") for i in range(len(exp.in_avals))]
    assert_same_run(exp.call(*args), expected[name])
    assert "jax_roi_roi_" in exported[name].mlir_module()


def test_round_trip_invalid_row_is_zero(round_trip):
    tmp, expected, _ = round_trip
    got = np.load(tmp / "align_avg_f64_nhwc.out.npy")
    assert got.dtype == np.float64
    assert not np.any(got[0]) and np.any(got[1:])


@pytest.mark.parametrize("name", ["align_avg", "align_max", "roi_pool", "roi_pool_grad"])
def test_export_without_disabled_checks_fails(name):
    fn, args = _cases()[name]
    with pytest.raises(ValueError, match=r"(?s)custom call.*jax_roi_roi_"):
        jax.export.export(jax.jit(fn))(*args)


def test_disabled_checks_cover_every_target():
    checks = jax_roi.export_disabled_checks()
    targets = ("jax_roi_roi_align_avg_fwd", "jax_roi_roi_align_avg_bwd",
               "jax_roi_roi_align_max_fwd", "jax_roi_roi_align_max_bwd",
               "jax_roi_roi_pool_fwd", "jax_roi_roi_pool_bwd")
    assert set(checks) == {jax.export.DisabledSafetyCheck.custom_call(t) for t in targets}


def test_fresh_process_without_import_cannot_run(round_trip):
    """The deserializing process must import jax_roi: without it the target is unknown."""
    tmp, _, _ = round_trip
    proc = _run_fresh(tmp, ["align_avg"], import_jax_roi=False)
    assert proc.returncode != 0
    assert "jax_roi_roi_align_avg_fwd" in proc.stderr


_ARTIFACTS = sorted((pathlib.Path(__file__).parent / "data").glob("export_*.npz"))


@pytest.mark.parametrize("path", _ARTIFACTS, ids=[p.stem for p in _ARTIFACTS])
def test_programs_exported_by_earlier_versions_still_run(path):
    """Programs serialized by a released version (tests/data/make_export_artifact.py) load
    and run here with their recorded results: the targets, attribute names and operand
    order they call are the ABI this version keeps."""
    data = np.load(path)
    names = sorted({k.split("/")[0] for k in data.files})
    assert names, path
    for name in names:
        exp = jax.export.deserialize(bytearray(data[f"{name}/module"].tobytes()))
        assert {"cpu", "cuda"} <= set(exp.platforms), exp.platforms
        args = [data[k] for k in sorted(data.files) if k.startswith(f"{name}/arg")]
        got = exp.call(*args)
        want = [data[k] for k in sorted(data.files) if k.startswith(f"{name}/out")]
        assert len(got) == len(want) == 2
        for g, w in zip(got, want):
            g = np.asarray(g)
            assert g.shape == w.shape and g.dtype == w.dtype, name
            np.testing.assert_allclose(g, w, rtol=1e-5 if w.dtype == np.float32 else 1e-12,
                                       atol=1e-6 if w.dtype == np.float32 else 1e-13,
                                       err_msg=name)
            assert np.any(w != 0), name

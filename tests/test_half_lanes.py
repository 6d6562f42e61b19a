"""The CPU kernels' eight-lane float16 <-> float32 conversions agree bit for bit with the
scalar ones over every half and every float (tests/half_lanes_check.cc, built here with the
kernels' flags, once for AVX2 and once for baseline x86-64 when the machine has AVX2)."""

from __future__ import annotations

import pathlib
import platform
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _has_avx2() -> bool:
    try:
        return " avx2 " in pathlib.Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False


ISAS = ["-march=x86-64"] + (["-mavx2"] if _has_avx2() else [])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                    reason="the CPU kernels' vector paths are written for x86-64")
@pytest.mark.parametrize("isa", ISAS)
def test_half_lanes_match_scalar(isa, tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.fail("no C++ compiler to build tests/half_lanes_check.cc")
    exe = tmp_path / "half_lanes_check"
    subprocess.run([cxx, "-O2", isa, "-std=c++17", "-ffp-contract=off", "-Wall",
                    f"-I{ROOT / 'xla_kernels' / 'include'}", "-o", str(exe),
                    str(ROOT / "tests" / "half_lanes_check.cc")], check=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout
    assert run.stdout.strip().endswith("0 mismatches")

"""Pins the NumPy oracle (tests/oracle.py) to hand-computed numbers.

The parametrised tests run every case of golden_cases.GOLDEN (the hand computation of each
is in the comment beside it there). The remaining tests check the oracle's own rules and
self-consistency: invalid rows, K = 0, NHWC = transposed NCHW, rounding, and the identity
<g, op(F)> = <op_grad(g), F> (all these ops are linear in F once the winners are fixed).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import golden_cases
import oracle

GOLDEN = golden_cases.GOLDEN
nan, inf = float("nan"), float("inf")


def _run(case, layout="NCHW"):
    kw = dict(case["kwargs"])
    if case["op"] == "roi_align":
        return oracle.roi_align(case["features"], case["rois"], layout=layout, **kw), None
    out, arg = oracle.roi_pool(case["features"], case["rois"], layout=layout, **kw)
    return out, arg


def _grad(case):
    kw = dict(case["kwargs"])
    if case["op"] == "roi_align":
        return oracle.roi_align_grad(case["features"], case["rois"], case["grad_out"], **kw)
    return oracle.roi_pool_grad(case["features"], case["rois"], case["grad_out"], **kw)


@pytest.mark.parametrize("case", GOLDEN, ids=[c["name"] for c in GOLDEN])
def test_golden_forward(case):
    out, arg = _run(case)
    assert out.dtype == np.float64
    assert out.shape == case["expected"].shape
    np.testing.assert_allclose(out, case["expected"], rtol=1e-12, atol=1e-12)
    if "expected_argmax" in case:
        assert arg.dtype == np.int64
        np.testing.assert_array_equal(arg, case["expected_argmax"])


GRAD_CASES = [c for c in GOLDEN if "grad_out" in c]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c["name"] for c in GRAD_CASES])
def test_golden_grad(case):
    g = _grad(case)
    assert g.dtype == np.float64
    assert g.shape == case["features"].shape
    np.testing.assert_allclose(g, case["expected_grad"], rtol=1e-12, atol=1e-12)


def test_golden_covers_the_brief():
    names = {c["name"] for c in GOLDEN}
    for needed in ["pool_mxnet_doc", "align_avg_sr1", "align_avg_aligned_sr1", "align_avg_sr2",
                   "align_avg_partly_outside", "align_avg_zero_size_clamped",
                   "align_avg_aligned_empty_and_reversed", "align_max_outside_wins",
                   "align_avg_invalid_rows", "pool_invalid_rows", "align_avg_k0", "pool_k0"]:
        assert needed in names
    for c in GOLDEN:
        assert c["op"] in ("roi_align", "roi_pool")
        assert c["features"].ndim == 4 and c["rois"].ndim == 2 and c["rois"].shape[1] == 5
        allowed = ({"output_size", "spatial_scale", "sampling_ratio", "aligned", "mode"}
                   if c["op"] == "roi_align" else {"output_size", "spatial_scale"})
        assert set(c["kwargs"]) <= allowed


# ------------------------------------------------------------------ MXNet doc, spelled out


def test_mxnet_roi_pool_doc_example():
    # x = arange(16) 4x4; roi (0,0,0,2,2): rw=rh=3, bins rows/cols [0,2) and [1,3)
    #   -> maxima 5, 6, 9, 10;  roi (0,0,1,3,3): cols [0,2),[2,4), rows [1,3),[2,4)
    #   -> 9, 11, 13, 15.
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    rois = np.array([[0, 0, 0, 2, 2], [0, 0, 1, 3, 3]], dtype=np.float32)
    out, arg = oracle.roi_pool(x, rois, (2, 2), spatial_scale=1.0)
    np.testing.assert_array_equal(out[0, 0], [[5, 6], [9, 10]])
    np.testing.assert_array_equal(out[1, 0], [[9, 11], [13, 15]])
    np.testing.assert_array_equal(arg[0, 0], [[5, 6], [9, 10]])
    np.testing.assert_array_equal(arg[1, 0], [[9, 11], [13, 15]])
    # int output_size and tuple agree
    out2, _ = oracle.roi_pool(x, rois, 2)
    np.testing.assert_array_equal(out, out2)


# ------------------------------------------------------------------ invalid rows, K = 0


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("aligned", [False, True])
def test_invalid_rows_align(mode, aligned):
    rng = np.random.default_rng(0)
    f = rng.standard_normal((2, 3, 6, 7)) + 5.0  # all positive -> a valid row is nonzero
    bad = np.array([
        [-1, 0, 0, 4, 4], [2, 0, 0, 4, 4], [-1.0001, 0, 0, 4, 4], [2.5, 0, 0, 4, 4],
        [nan, 0, 0, 4, 4], [0, nan, 0, 4, 4], [0, 0, nan, 4, 4], [0, 0, 0, nan, 4],
        [0, 0, 0, 4, nan], [inf, 0, 0, 4, 4], [-inf, 0, 0, 4, 4], [0, inf, 0, 4, 4],
        [0, 0, -inf, 4, 4], [0, 0, 0, inf, 4], [1, 0, 0, 4, -inf],
    ])
    out = oracle.roi_align(f, bad, 3, sampling_ratio=2, aligned=aligned, mode=mode)
    assert out.shape == (len(bad), 3, 3, 3)
    assert np.all(out == 0)
    g = oracle.roi_align_grad(f, bad, np.ones_like(out), 3, sampling_ratio=2,
                              aligned=aligned, mode=mode)
    assert g.shape == f.shape and np.all(g == 0)
    # batch index truncates toward zero: -0.5 -> 0, 0.99 -> 0, 1.9 -> 1
    good = np.array([[-0.5, 0, 0, 4, 4], [0.99, 0, 0, 4, 4], [1.9, 0, 0, 4, 4]])
    o = oracle.roi_align(f, good, 3, sampling_ratio=2, aligned=aligned, mode=mode)
    ref0 = oracle.roi_align(f, [[0, 0, 0, 4, 4]], 3, sampling_ratio=2, aligned=aligned,
                            mode=mode)[0]
    ref1 = oracle.roi_align(f, [[1, 0, 0, 4, 4]], 3, sampling_ratio=2, aligned=aligned,
                            mode=mode)[0]
    np.testing.assert_array_equal(o[0], ref0)
    np.testing.assert_array_equal(o[1], ref0)
    np.testing.assert_array_equal(o[2], ref1)
    assert np.all(ref0 != 0)


def test_invalid_rows_pool():
    f = np.random.default_rng(1).standard_normal((2, 2, 5, 5))
    bad = np.array([[-1, 0, 0, 3, 3], [2, 0, 0, 3, 3], [nan, 0, 0, 3, 3],
                    [0, 0, inf, 3, 3], [0, 0, 0, 3, -inf]])
    out, arg = oracle.roi_pool(f, bad, 2)
    assert np.all(out == 0) and np.all(arg == -1)
    g = oracle.roi_pool_grad(f, bad, np.ones_like(out), 2)
    assert np.all(g == 0)


def test_k0_shapes():
    f = np.ones((2, 3, 5, 5))
    r = np.zeros((0, 5))
    assert oracle.roi_align(f, r, (2, 4)).shape == (0, 3, 2, 4)
    assert oracle.roi_align(f, r, 2, layout="NCHW").shape == (0, 3, 2, 2)
    fh = np.ones((2, 5, 5, 3))
    assert oracle.roi_align(fh, r, (2, 4), layout="NHWC").shape == (0, 2, 4, 3)
    out, arg = oracle.roi_pool(f, r, (2, 4))
    assert out.shape == (0, 3, 2, 4) and arg.shape == (0, 3, 2, 4) and arg.dtype == np.int64
    g = oracle.roi_align_grad(f, r, np.zeros((0, 3, 2, 4)), (2, 4))
    assert g.shape == f.shape and np.all(g == 0)
    g = oracle.roi_pool_grad(f, r, np.zeros((0, 3, 2, 4)), (2, 4))
    assert g.shape == f.shape and np.all(g == 0)


# ------------------------------------------------------------------ rounding


def test_round_half_away_from_zero():
    r = oracle._round_half_away
    assert [r(v) for v in (0.5, 1.5, 2.5, -0.5, -1.5, -2.5)] == [1, 2, 3, -1, -2, -3]
    assert [r(v) for v in (0.49999999999999994, -0.49999999999999994, 2.4, -2.6)] == [0, 0, 2, -3]
    assert r(0.0) == 0 and r(-0.0) == 0 and r(7.0) == 7


# ------------------------------------------------------------------ NHWC == NCHW transposed


def _random_problem(seed, n=2, c=3, h=9, w=11, k=6):
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n, c, h, w))
    xy1 = rng.uniform(-3, 10, size=(k, 2))
    wh = rng.uniform(-1, 8, size=(k, 2))
    b = rng.integers(0, n, size=(k, 1)).astype(np.float64)
    rois = np.concatenate([b, xy1, xy1 + wh], axis=1)
    return f, rois


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_nhwc_matches_nchw_align(mode, aligned, sampling_ratio):
    f, rois = _random_problem(2)
    kw = dict(output_size=(3, 4), spatial_scale=0.75, sampling_ratio=sampling_ratio,
              aligned=aligned, mode=mode)
    a = oracle.roi_align(f, rois, **kw)
    fh = np.transpose(f, (0, 2, 3, 1))
    b = oracle.roi_align(fh, rois, layout="NHWC", **kw)
    np.testing.assert_array_equal(b, np.transpose(a, (0, 2, 3, 1)))
    g = np.random.default_rng(3).standard_normal(a.shape)
    ga = oracle.roi_align_grad(f, rois, g, **kw)
    gb = oracle.roi_align_grad(fh, rois, np.transpose(g, (0, 2, 3, 1)), layout="NHWC", **kw)
    np.testing.assert_allclose(gb, np.transpose(ga, (0, 2, 3, 1)), rtol=0, atol=1e-14)


def test_nhwc_matches_nchw_pool():
    f, rois = _random_problem(4)
    a, aa = oracle.roi_pool(f, rois, (3, 2), spatial_scale=0.5)
    fh = np.transpose(f, (0, 2, 3, 1))
    b, ba = oracle.roi_pool(fh, rois, (3, 2), spatial_scale=0.5, layout="NHWC")
    np.testing.assert_array_equal(b, np.transpose(a, (0, 2, 3, 1)))
    np.testing.assert_array_equal(ba, np.transpose(aa, (0, 2, 3, 1)))
    g = np.random.default_rng(5).standard_normal(a.shape)
    ga = oracle.roi_pool_grad(f, rois, g, (3, 2), spatial_scale=0.5)
    gb = oracle.roi_pool_grad(fh, rois, np.transpose(g, (0, 2, 3, 1)), (3, 2),
                              spatial_scale=0.5, layout="NHWC")
    np.testing.assert_allclose(gb, np.transpose(ga, (0, 2, 3, 1)), rtol=0, atol=1e-14)


# ------------------------------------------------------------------ forward/backward agree


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("aligned", [False, True])
def test_grad_is_transpose_of_forward_align(seed, mode, aligned):
    # avg is linear in F; max is linear in F with the winners fixed, and an out-of-range
    # winner contributes 0 both ways. So <g, out(F)> == <grad(g), F> exactly (up to rounding).
    f, rois = _random_problem(10 + seed)
    kw = dict(output_size=(2, 3), spatial_scale=1.0, sampling_ratio=-1 if seed % 2 else 2,
              aligned=aligned, mode=mode)
    out = oracle.roi_align(f, rois, **kw)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    grad = oracle.roi_align_grad(f, rois, g, **kw)
    np.testing.assert_allclose(np.sum(g * out), np.sum(grad * f), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_grad_is_transpose_of_forward_pool(seed):
    f, rois = _random_problem(20 + seed)
    out, arg = oracle.roi_pool(f, rois, (2, 3))
    g = np.random.default_rng(seed).standard_normal(out.shape)
    grad = oracle.roi_pool_grad(f, rois, g, (2, 3))
    np.testing.assert_allclose(np.sum(g * out), np.sum(grad * f), rtol=1e-12, atol=1e-12)
    # every non-empty bin's value is the feature at its argmax
    n, c, h, w = f.shape
    for k in range(out.shape[0]):
        b = int(rois[k, 0])
        for ch in range(c):
            for i in range(out.shape[2]):
                for j in range(out.shape[3]):
                    a = arg[k, ch, i, j]
                    if a >= 0:
                        assert out[k, ch, i, j] == f[b, ch, a // w, a % w]
                    else:
                        assert out[k, ch, i, j] == 0


def test_avg_grad_matches_finite_difference():
    # the avg forward is linear in F, so a central difference is exact up to rounding
    f, rois = _random_problem(30, n=1, c=1, h=5, w=6, k=3)
    kw = dict(output_size=2, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    g = np.random.default_rng(31).standard_normal((3, 1, 2, 2))
    grad = oracle.roi_align_grad(f, rois, g, **kw)
    eps = 1e-3
    fd = np.zeros_like(f)
    for idx in np.ndindex(f.shape):
        fp, fm = f.copy(), f.copy()
        fp[idx] += eps
        fm[idx] -= eps
        fd[idx] = (np.sum(g * oracle.roi_align(fp, rois, **kw))
                   - np.sum(g * oracle.roi_align(fm, rois, **kw))) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-8, atol=1e-9)


# ------------------------------------------------------------------ misc


def test_inputs_cast_to_float64():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    out = oracle.roi_align(x, np.array([[0, 0, 0, 2, 2]], np.float32), 2, sampling_ratio=1)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[0, 0], [[2.5, 3.5], [6.5, 7.5]])


def test_sampling_ratio_positive_ignores_box_size():
    # aligned=True reversed box with sampling_ratio=1: gh=gw=1 regardless of the negative
    # size, so it is sampled. Box (3,3,1,1) -> x0=y0=2.5, rw=rh=-2, 1x1 -> bw=bh=-2,
    # sample 2.5 + 0.5*(-2) = 1.5 per axis -> A at (1.5,1.5) = 7.5.
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    out = oracle.roi_align(x, [[0, 3, 3, 1, 1]], 1, sampling_ratio=1, aligned=True)
    assert out[0, 0, 0, 0] == 7.5


def test_speed_on_tiny_shapes():
    rng = np.random.default_rng(7)
    f = rng.standard_normal((3, 4, 16, 16))
    xy1 = rng.uniform(-2, 12, size=(8, 2))
    rois = np.concatenate([rng.integers(0, 3, (8, 1)), xy1, xy1 + rng.uniform(0, 10, (8, 2))],
                          axis=1)
    t = time.perf_counter()
    out = oracle.roi_align(f, rois, 7, sampling_ratio=-1, aligned=True)
    oracle.roi_align_grad(f, rois, np.ones_like(out), 7, mode="max")
    o, _ = oracle.roi_pool(f, rois, 7)
    oracle.roi_pool_grad(f, rois, np.ones_like(o), 7)
    assert time.perf_counter() - t < 5.0

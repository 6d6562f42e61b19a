"""Bad arguments raise at trace time, with a message that names the argument."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_roi

X = np.zeros((2, 3, 8, 8), np.float32)
X_NHWC = np.zeros((2, 8, 8, 3), np.float32)
R = np.array([[0, 1, 1, 5, 5], [1, 0, 0, 7, 7]], np.float32)


def align(*args, **kw):
    return jax_roi.roi_align(*args, **kw)


def pool(*args, **kw):
    return jax_roi.roi_pool(*args, **kw)


BOTH = [pytest.param(align, id="roi_align"), pytest.param(pool, id="roi_pool")]


def _raises_everywhere(exc, match, fn):
    """Eagerly, under jit, and under eval_shape (i.e. at trace time, before any kernel runs)."""
    with pytest.raises(exc, match=match):
        fn()
    with pytest.raises(exc, match=match):
        jax.jit(lambda: fn())()
    with pytest.raises(exc, match=match):
        jax.eval_shape(fn)


# ---------------------------------------------------------------------------- features / rois

@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("shape", [(3, 8, 8), (8, 8), (1, 2, 3, 8, 8), ()],
                         ids=["rank3", "rank2", "rank5", "scalar"])
def test_features_rank(op, shape):
    x = np.zeros(shape, np.float32)
    _raises_everywhere(ValueError, r"features must have rank 4", lambda: op(x, R, 2))


@pytest.mark.parametrize("layout,want", [("NCHW", r"\[N, C, H, W\]"), ("NHWC", r"\[N, H, W, C\]")])
def test_features_rank_message_names_layout(layout, want):
    with pytest.raises(ValueError, match=want):
        jax_roi.roi_align(np.zeros((8, 8, 3), np.float32), R, 2, layout=layout)


@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex64],
                         ids=["int32", "int64", "uint8", "bool", "complex64"])
def test_features_dtype(op, dtype):
    _raises_everywhere(TypeError, r"features must be float16, bfloat16, float32 or float64",
                       lambda: op(X.astype(dtype), R, 2))


@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("shape", [(2, 3, 0, 8), (2, 3, 8, 0)], ids=["H0", "W0"])
def test_features_empty_map(op, shape):
    _raises_everywhere(ValueError, r"features must have H, W >= 1",
                       lambda: op(np.zeros(shape, np.float32), R, 2))


@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("shape", [(2, 4), (2, 6), (5,), (1, 2, 5), (0, 4), ()],
                         ids=["K4", "K6", "rank1", "rank3", "empty-4", "scalar"])
def test_rois_shape(op, shape):
    _raises_everywhere(ValueError, r"rois must have shape \[K, 5\]",
                       lambda: op(X, np.zeros(shape, np.float32), 2))


@pytest.mark.parametrize("op", BOTH)
def test_rois_integer_dtype(op):
    _raises_everywhere(TypeError, r"rois must be a floating array",
                       lambda: op(X, R.astype(np.int32), 2))


@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("rdt", [np.float16, jnp.bfloat16, np.float32, np.float64])
def test_rois_any_float_dtype_is_accepted(op, rdt):
    out = op(X, R.astype(rdt), 2)
    assert out.shape == (2, 3, 2, 2) and out.dtype == np.float32


# ---------------------------------------------------------------------------- output_size

@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("size", [0, -1, (2, 0), (0, 2), (-3, 2)])
def test_output_size_not_positive(op, size):
    _raises_everywhere(ValueError, r"output_size must be positive", lambda: op(X, R, size))


@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("size", [2.0, (2.0, 2), (2,), (1, 2, 3), "2", True, (True, 2), None,
                                  np.array([2, 2]), (2, None)],
                         ids=["float", "float-pair", "len1", "len3", "str", "bool", "bool-pair",
                              "None", "ndarray", "pair-None"])
def test_output_size_wrong_type(op, size):
    _raises_everywhere(TypeError, r"output_size must be an int or a pair of ints",
                       lambda: op(X, R, size))


@pytest.mark.parametrize("op", BOTH)
def test_output_size_traced(op):
    with pytest.raises(TypeError, match=r"output_size"):
        jax.jit(lambda s: op(X, R, s))(2)


@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("size,want", [(3, (3, 3)), ((2, 5), (2, 5)), ([4, 1], (4, 1)),
                                       (np.int32(2), (2, 2)), ((np.int64(1), 3), (1, 3))])
def test_output_size_accepted_forms(op, size, want):
    assert op(X, R, size).shape == (2, 3) + want


# ---------------------------------------------------------------------------- mode / layout

@pytest.mark.parametrize("mode", ["mean", "AVG", "Max", "", None, 0])
def test_unknown_mode(mode):
    _raises_everywhere(ValueError, r"mode must be 'avg' or 'max'",
                       lambda: jax_roi.roi_align(X, R, 2, mode=mode))


@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("layout", ["nchw", "NHCW", "CHW", "", None, 1])
def test_unknown_layout(op, layout):
    _raises_everywhere(ValueError, r"layout must be 'NCHW' or 'NHWC'",
                       lambda: op(X, R, 2, layout=layout))


def test_roi_pool_has_no_mode():
    with pytest.raises(TypeError, match="mode"):
        jax_roi.roi_pool(X, R, 2, mode="max")


def test_keyword_only_arguments():
    with pytest.raises(TypeError):
        jax_roi.roi_align(X, R, 2, 1.0, -1, False, "max")
    with pytest.raises(TypeError):
        jax_roi.roi_pool(X, R, 2, 1.0, "NHWC")


# ---------------------------------------------------------------------------- spatial_scale

@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("scale", [0, 0.0, -0.25, float("inf"), float("-inf"), float("nan")],
                         ids=["0", "0.0", "neg", "inf", "-inf", "nan"])
def test_spatial_scale_bad_value(op, scale):
    _raises_everywhere(ValueError, r"spatial_scale must be positive and finite",
                       lambda: op(X, R, 2, scale))


@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("scale", ["1", None, True, (0.5,), jnp.float32(0.5)],
                         ids=["str", "None", "bool", "tuple", "jax-array"])
def test_spatial_scale_bad_type(op, scale):
    _raises_everywhere(TypeError, r"spatial_scale must be a static Python number",
                       lambda: op(X, R, 2, scale))


@pytest.mark.parametrize("op", BOTH)
def test_spatial_scale_traced(op):
    with pytest.raises(TypeError, match=r"spatial_scale must be a static Python number"):
        jax.jit(lambda s: op(X, R, 2, s))(0.5)


@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("scale", [1, 0.25, np.float32(0.5), np.float64(0.125)],
                         ids=["int", "float", "np.float32", "np.float64"])
def test_spatial_scale_accepted(op, scale):
    assert op(X, R, 2, scale).shape == (2, 3, 2, 2)


# ---------------------------------------------------------------------------- sampling_ratio

@pytest.mark.parametrize("ratio", [2.0, 0.5, True, False, np.bool_(True), "2", None],
                         ids=["2.0", "0.5", "True", "False", "np.bool_", "str", "None"])
def test_sampling_ratio_not_int(ratio):
    _raises_everywhere(TypeError, r"sampling_ratio must be an int",
                       lambda: jax_roi.roi_align(X, R, 2, 1.0, ratio))


def test_sampling_ratio_traced():
    with pytest.raises(TypeError, match=r"sampling_ratio must be an int"):
        jax.jit(lambda s: jax_roi.roi_align(X, R, 2, 1.0, s))(2)


@pytest.mark.parametrize("ratio", [32769, 10**6, 2**63 - 1, 10**30])
def test_sampling_ratio_too_large(ratio):
    _raises_everywhere(ValueError, r"sampling_ratio must be <= 32768",
                       lambda: jax_roi.roi_align(X, R, 2, 1.0, ratio))


@pytest.mark.parametrize("ratio", [-(10**9), -1, 0, 1, np.int64(3), np.int8(2), 32768])
def test_sampling_ratio_accepted(ratio):
    assert jax_roi.roi_align(X, R, 2, 1.0, ratio).shape == (2, 3, 2, 2)


# ---------------------------------------------------------------------------- aligned

@pytest.mark.parametrize("aligned", [1, 0, "True", None, 1.0, jnp.array(True)],
                         ids=["1", "0", "str", "None", "1.0", "jax-array"])
def test_aligned_not_bool(aligned):
    _raises_everywhere(TypeError, r"aligned must be a bool",
                       lambda: jax_roi.roi_align(X, R, 2, 1.0, -1, aligned))


def test_aligned_traced():
    with pytest.raises(TypeError, match=r"aligned must be a bool"):
        jax.jit(lambda a: jax_roi.roi_align(X, R, 2, 1.0, -1, a))(True)


@pytest.mark.parametrize("aligned", [True, False, np.bool_(True)])
def test_aligned_accepted(aligned):
    assert jax_roi.roi_align(X, R, 2, aligned=aligned).shape == (2, 3, 2, 2)


# ---------------------------------------------------------------------------- messages

@pytest.mark.parametrize("op,name", [(align, "roi_align"), (pool, "roi_pool")],
                         ids=["roi_align", "roi_pool"])
def test_messages_name_the_op(op, name):
    with pytest.raises(ValueError, match=rf"^{name}: "):
        op(X, R, 0)
    with pytest.raises(TypeError, match=rf"^{name}: "):
        op(X.astype(np.int32), R, 2)


def test_layout_shapes():
    """NHWC reads [N, H, W, C] and returns [K, PH, PW, C]."""
    assert jax_roi.roi_align(X_NHWC, R, (2, 3), layout="NHWC").shape == (2, 2, 3, 3)
    assert jax_roi.roi_pool(X_NHWC, R, (2, 3), layout="NHWC").shape == (2, 2, 3, 3)
    assert jax_roi.roi_align(X, R, (2, 3)).shape == (2, 3, 2, 3)

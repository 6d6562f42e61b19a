"""Hand-computed golden cases for roi_align / roi_pool (from /work/shared/SEMANTICS.md).

Every number below was worked out by hand; the working is in the comment beside each case.
tests/test_oracle_golden.py pins the NumPy oracle to them; other tests can run the real
library on the same cases.

Each entry of GOLDEN is a dict:
    name            str, unique
    op              "roi_align" | "roi_pool"
    features        np.ndarray float64, NCHW
    rois            np.ndarray float64, [K, 5]
    kwargs          public kwargs: output_size, spatial_scale, and for roi_align
                    sampling_ratio, aligned, mode (layout is always NCHW, not included)
    expected        np.ndarray float64, NCHW output [K, C, PH, PW]
    grad_out        optional np.ndarray [K, C, PH, PW]
    expected_grad   optional np.ndarray, d<grad_out, op(features)>/d features (NCHW)
    expected_argmax optional np.ndarray int64 (roi_pool only): h*W + w, -1 for empty/invalid

Notation in the comments: A = arange(16).reshape(4, 4), so A[y, x] = 4y + x. Bilinear
interpolation of a function linear in (y, x) is exact, so inside the map
bilinear(y, x) = 4*clamp(y, 0, 3) + clamp(x, 0, 3) for -1 <= y <= 4, -1 <= x <= 4
(SEMANTICS clamps y < 0 to 0 and y >= H-1 to H-1), and 0 outside that range.
"""

from __future__ import annotations

import numpy as np

nan = float("nan")
inf = float("inf")


def _img(a):
    """2-D array -> [1, 1, H, W] float64."""
    a = np.asarray(a, dtype=np.float64)
    return a.reshape((1, 1) + a.shape)


def _r(*rows):
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


A = np.arange(16, dtype=np.float64).reshape(4, 4)

GOLDEN: list[dict] = []


def _align(name, features, rois, expected, *, output_size, spatial_scale=1.0,
           sampling_ratio=-1, aligned=False, mode="avg", grad_out=None, expected_grad=None):
    case = {
        "name": name,
        "op": "roi_align",
        "features": np.asarray(features, dtype=np.float64),
        "rois": np.asarray(rois, dtype=np.float64),
        "kwargs": dict(output_size=output_size, spatial_scale=spatial_scale,
                       sampling_ratio=sampling_ratio, aligned=aligned, mode=mode),
        "expected": np.asarray(expected, dtype=np.float64),
    }
    if grad_out is not None:
        case["grad_out"] = np.asarray(grad_out, dtype=np.float64)
        case["expected_grad"] = np.asarray(expected_grad, dtype=np.float64)
    GOLDEN.append(case)


def _pool(name, features, rois, expected, expected_argmax, *, output_size,
          spatial_scale=1.0, grad_out=None, expected_grad=None):
    case = {
        "name": name,
        "op": "roi_pool",
        "features": np.asarray(features, dtype=np.float64),
        "rois": np.asarray(rois, dtype=np.float64),
        "kwargs": dict(output_size=output_size, spatial_scale=spatial_scale),
        "expected": np.asarray(expected, dtype=np.float64),
        "expected_argmax": np.asarray(expected_argmax, dtype=np.int64),
    }
    if grad_out is not None:
        case["grad_out"] = np.asarray(grad_out, dtype=np.float64)
        case["expected_grad"] = np.asarray(expected_grad, dtype=np.float64)
    GOLDEN.append(case)


# =============================================================================== roi_pool

# MXNet ROIPooling's documented example. x = A, scale 1, output 2x2.
# roi 1 (0,0,0,2,2): xs=ys=0, xe=ye=2 -> rw=rh=3, bw=bh=1.5.
#   ph=0: [floor(0)+0, ceil(1.5)+0) = [0,2) rows 0,1;  ph=1: [floor(1.5), ceil(3)) = [1,3) rows 1,2
#   (w alike) -> bins' maxima at their bottom-right: A[1,1]=5, A[1,2]=6, A[2,1]=9, A[2,2]=10.
# roi 2 (0,0,1,3,3): xs=0, xe=3 -> rw=4, bw=2: cols [0,2), [2,4);
#   ys=1, ye=3 -> rh=3, bh=1.5: rows [0+1, 2+1)=[1,3), [1+1, 3+1)=[2,4)
#   -> A[2,1]=9, A[2,3]=11, A[3,1]=13, A[3,3]=15.
# Since A[y,x] = 4y+x = flat index, argmax equals the value.
# Gradient with g1 = [[1,2],[3,4]] (roi 1) and g2 = [[10,20],[30,40]] (roi 2):
#   flat 5 <- 1, 6 <- 2, 9 <- 3 + 10 = 13, 10 <- 4, 11 <- 20, 13 <- 30, 15 <- 40.
_pool(
    "pool_mxnet_doc",
    _img(A),
    _r([0, 0, 0, 2, 2], [0, 0, 1, 3, 3]),
    [[[[5, 6], [9, 10]]], [[[9, 11], [13, 15]]]],
    [[[[5, 6], [9, 10]]], [[[9, 11], [13, 15]]]],
    output_size=(2, 2),
    grad_out=[[[[1, 2], [3, 4]]], [[[10, 20], [30, 40]]]],
    expected_grad=_img([[0, 0, 0, 0], [0, 1, 2, 0], [0, 13, 4, 20], [0, 30, 0, 40]]),
)

# Same first roi given in image coordinates with spatial_scale 0.5: (0,0,4,4)*0.5 = (0,0,2,2).
_pool(
    "pool_spatial_scale",
    _img(A),
    _r([0, 0, 0, 4, 4]),
    [[[[5, 6], [9, 10]]]],
    [[[[5, 6], [9, 10]]]],
    output_size=2,
    spatial_scale=0.5,
)

# Rounding is C round(), half away from zero. Box (0,-0.5,-0.5,0.5,0.5), output 2x2, scale 1.
# Channel 0 = A, channel 1 = 15 - A (largest at the top-left).
#   half away: xs=ys=round(-0.5)=-1, xe=ye=round(0.5)=1 -> rw=rh=3, bw=bh=1.5
#     bin 0: [clip(floor(0)-1), clip(ceil(1.5)-1)) = [0, 1)   -> row/col 0
#     bin 1: [clip(floor(1.5)-1), clip(ceil(3)-1)) = [0, 2)   -> rows/cols 0,1
#   ch0 (A): (0,0): A[0,0]=0 @0; (0,1): max A[0,0:2]=1 @1; (1,0): max A[0:2,0]=4 @4;
#            (1,1): max A[0:2,0:2]=5 @5.
#   ch1 (15-A): every bin contains (0,0), the maximum 15 -> 15 @0 everywhere.
#   (round-half-even gives xs=xe=0 -> ch0 [[0,0],[0,0]]; floor(x+0.5) gives xs=0, xe=1
#    -> ch1 [[15,14],[11,10]]: both differ.)
_pool(
    "pool_round_half_away_negative",
    np.stack([A, 15 - A])[None],
    _r([0, -0.5, -0.5, 0.5, 0.5]),
    [[[[0, 1], [4, 5]], [[15, 15], [15, 15]]]],
    [[[[0, 1], [4, 5]], [[0, 0], [0, 0]]]],
    output_size=2,
)

# Box (0,0.5,0.5,2.5,2.5), output 1x1, on 15-A. half away: xs=ys=1, xe=ye=3 -> rw=rh=3,
# bin [1, 4) x [1, 4), max (15-A) at its top-left (1,1): 15-5 = 10, argmax 5.
# (round-half-even: xs=0, xe=2 -> [0,3) -> 15 @0.)
_pool(
    "pool_round_half_away_positive",
    _img(15 - A),
    _r([0, 0.5, 0.5, 2.5, 2.5]),
    [[[[10]]]],
    [[[[5]]]],
    output_size=1,
)

# Empty bins. Box (0,3,3,5,5), output 2x2: xs=3, xe=5 -> rw=3, bw=1.5
#   bin 0: [clip(0+3), clip(ceil(1.5)+3=5 -> 4)) = [3,4); bin 1: [clip(1+3)=4, clip(6)=4) empty.
#   -> (0,0) = A[3,3] = 15 @15; the three other bins are empty: 0, argmax -1.
# Box (0,5,5,6,6) is wholly off the map: all bins [4,4) empty.
# g = ones: only A[3,3] receives 1.
_pool(
    "pool_empty_bins",
    _img(A),
    _r([0, 3, 3, 5, 5], [0, 5, 5, 6, 6]),
    [[[[15, 0], [0, 0]]], [[[0, 0], [0, 0]]]],
    [[[[15, -1], [-1, -1]]], [[[-1, -1], [-1, -1]]]],
    output_size=2,
    grad_out=np.ones((2, 1, 2, 2)),
    expected_grad=_img([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]),
)

# Ties and negatives. Box (0,1,1,2,2), 1x1: rw=rh=2, bin rows/cols [1,3).
#   ch0 constant 7: first maximum in row-major order wins -> (1,1), argmax 5.
#   ch1 -(A+1): all negative, the max is -(5+1) = -6 at (1,1), argmax 5 (not 0).
# g = [2, 3]: grad ch0 (1,1) = 2, ch1 (1,1) = 3.
_pool(
    "pool_tie_and_negative",
    np.stack([np.full((4, 4), 7.0), -(A + 1)])[None],
    _r([0, 1, 1, 2, 2]),
    [[[[7]], [[-6]]]],
    [[[[5]], [[5]]]],
    output_size=1,
    grad_out=[[[[2]], [[3]]]],
    expected_grad=np.stack([
        [[0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        [[0, 0, 0, 0], [0, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    ])[None],
)

# Invalid rows. N=2: image 0 = A, image 1 = 100 + A. Box (b,0,0,1,1), 1x1: rw=rh=2,
# bin [0,2)x[0,2), max at (1,1): 5 (image 0) or 105 (image 1), argmax 5.
#   b=1.9 -> trunc 1: 105;  b=-0.5 -> trunc 0 (valid, -1 < b): 5;
#   b=2 (=N), b=-1, NaN/inf anywhere in the row -> 0 and argmax -1.
# g = ones: image 1 (1,1) <- 1, image 0 (1,1) <- 1.
_INVALID_ROWS = _r(
    [1.9, 0, 0, 1, 1],
    [-0.5, 0, 0, 1, 1],
    [2, 0, 0, 1, 1],
    [-1, 0, 0, 1, 1],
    [0, nan, 0, 1, 1],
    [nan, 0, 0, 1, 1],
    [0, 0, 0, 1, inf],
    [0, -inf, 0, 1, 1],
    [inf, 0, 0, 1, 1],
)
_TWO_IMAGES = np.stack([_img(A)[0], _img(100 + A)[0]])
_pool(
    "pool_invalid_rows",
    _TWO_IMAGES,
    _INVALID_ROWS,
    np.array([105, 5, 0, 0, 0, 0, 0, 0, 0], dtype=np.float64).reshape(9, 1, 1, 1),
    np.array([5, 5, -1, -1, -1, -1, -1, -1, -1]).reshape(9, 1, 1, 1),
    output_size=1,
    grad_out=np.ones((9, 1, 1, 1)),
    expected_grad=np.stack([
        [[[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]],
        [[[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]],
    ]),
)

# K = 0: empty result of shape [0, C, PH, PW].
_pool(
    "pool_k0",
    _img(A),
    np.zeros((0, 5)),
    np.zeros((0, 1, 2, 3)),
    np.zeros((0, 1, 2, 3), dtype=np.int64),
    output_size=(2, 3),
)

# ============================================================================ roi_align avg

# Box (0,0,0,2,2), 2x2, sampling_ratio 1, aligned False: rw=rh=2, bw=bh=1, gh=gw=1.
# Sample of bin (ph,pw) at (ph+0.5, pw+0.5): A -> 4*0.5+0.5=2.5, 3.5, 6.5, 7.5.
# Gradient, g=[[1,2],[3,4]]: each sample sits in the middle of a pixel square, weight 1/4 to
# each of its 4 corners (count = 1):
#   bin(0,0) g=1 -> (0,0),(0,1),(1,0),(1,1) += .25
#   bin(0,1) g=2 -> (0,1),(0,2),(1,1),(1,2) += .5
#   bin(1,0) g=3 -> (1,0),(1,1),(2,0),(2,1) += .75
#   bin(1,1) g=4 -> (1,1),(1,2),(2,1),(2,2) += 1
#   -> row0 [.25, .75, .5, 0], row1 [1, 2.5, 1.5, 0], row2 [.75, 1.75, 1, 0]; sums to 10.
_align(
    "align_avg_sr1",
    _img(A),
    _r([0, 0, 0, 2, 2]),
    [[[[2.5, 3.5], [6.5, 7.5]]]],
    output_size=2,
    sampling_ratio=1,
    grad_out=[[[[1, 2], [3, 4]]]],
    expected_grad=_img([[.25, .75, .5, 0], [1, 2.5, 1.5, 0], [.75, 1.75, 1, 0], [0, 0, 0, 0]]),
)

# Same box with aligned=True: off 0.5 -> x0=y0=-0.5, x1=y1=1.5, rw=rh=2, bw=bh=1, gh=gw=1.
# Sample of bin (ph,pw) at (-0.5+ph+0.5, ...) = (ph, pw) exactly on pixels: A[0:2, 0:2].
_align(
    "align_avg_aligned_sr1",
    _img(A),
    _r([0, 0, 0, 2, 2]),
    [[[[0, 1], [4, 5]]]],
    output_size=2,
    sampling_ratio=1,
    aligned=True,
)

# spatial_scale: box (0,0,4,4) * 0.5 = (0,0,2,2): same numbers as align_avg_sr1.
_align(
    "align_avg_spatial_scale",
    _img(A),
    _r([0, 0, 0, 4, 4]),
    [[[[2.5, 3.5], [6.5, 7.5]]]],
    output_size=2,
    spatial_scale=0.5,
    sampling_ratio=1,
)

# Box (0,0,0,2,2), 1x1, sampling_ratio 2: bh=bw=2, gh=gw=2, samples at 0+(i+.5)*1 = .5, 1.5.
# (A) 2.5, 3.5, 6.5, 7.5 -> mean 5.
_align(
    "align_avg_sr2",
    _img(A),
    _r([0, 0, 0, 2, 2]),
    [[[[5.0]]]],
    output_size=1,
    sampling_ratio=2,
)

# Box (0,1,1,4,4), 1x1, sampling_ratio 2, aligned False: rh=rw=3, bh=3, gh=2,
# samples 1 + (i+.5)*1.5 = 1.75, 3.25 (3.25 in [H-1, H]: clamped to row/col 3).
#   (1.75,1.75) = 7+1.75 = 8.75;  (1.75,3.25) = 7+3 = 10;  (3.25,1.75) = 12+1.75 = 13.75;
#   (3.25,3.25) = 15.  mean = 47.5/4 = 11.875.
# Gradient, g=1, count 4:
#   (1.75,1.75): yl=xl=1, ly=lx=.75: (1,1) .0625, (1,2) .1875, (2,1) .1875, (2,2) .5625; /4
#   (1.75,3.25): x clamped: xl=xh=3, lx=0: (1,3) .25, (2,3) .75; /4
#   (3.25,1.75): (3,1) .25, (3,2) .75; /4
#   (3.25,3.25): (3,3) 1; /4
#   -> row1 [0, .015625, .046875, .0625], row2 [0, .046875, .140625, .1875],
#      row3 [0, .0625, .1875, .25]; sums to 1, and <grad, A> = 11.875.
_align(
    "align_avg_bottom_right_clamp",
    _img(A),
    _r([0, 1, 1, 4, 4]),
    [[[[11.875]]]],
    output_size=1,
    sampling_ratio=2,
    grad_out=[[[[1.0]]]],
    expected_grad=_img([
        [0, 0, 0, 0],
        [0, .015625, .046875, .0625],
        [0, .046875, .140625, .1875],
        [0, .0625, .1875, .25],
    ]),
)

# Partly outside the map, on G = A + 1. Box (x1,y1,x2,y2) = (-3,0,1,2), 1x1, sampling_ratio 2:
#   rw=4, bw=4, x = -3 + (i+.5)*2 = -2, 0;  rh=2, bh=2, y = (i+.5)*1 = .5, 1.5.
#   x=-2 < -1: 0 (still counted).  (.5, 0): 4*.5+0+1 = 3;  (1.5, 0): 4*1.5+1 = 7.
#   mean = (0 + 3 + 0 + 7)/4 = 2.5.
# Gradient, g=1: (.5,0): yl=0, ly=.5, lx=0 -> (0,0) .5, (1,0) .5; (1.5,0) -> (1,0) .5, (2,0) .5;
#   each /4 -> (0,0) .125, (1,0) .25, (2,0) .125; the out-of-range half is lost.
_align(
    "align_avg_partly_outside",
    _img(A + 1),
    _r([0, -3, 0, 1, 2]),
    [[[[2.5]]]],
    output_size=1,
    sampling_ratio=2,
    grad_out=[[[[1.0]]]],
    expected_grad=_img([[.125, 0, 0, 0], [.25, 0, 0, 0], [.125, 0, 0, 0], [0, 0, 0, 0]]),
)

# Boundary y = x = -1 is still inside (the rule is y < -1 -> 0). Box (-1.5,-1.5,.5,.5), 1x1,
# sampling_ratio 2: rw=rh=2, samples -1.5 + (i+.5) = -1, 0; all clamp to (0,0): (A+1)[0,0] = 1.
_align(
    "align_avg_minus_one_edge",
    _img(A + 1),
    _r([0, -1.5, -1.5, 0.5, 0.5]),
    [[[[1.0]]]],
    output_size=1,
    sampling_ratio=2,
)

# Adaptive grid is per axis. Box (0,0,4,2), 1x1, sampling_ratio -1, aligned False:
#   rw=4 -> gw=ceil(4/1)=4, x = .5, 1.5, 2.5, 3.5 (-> 3 clamped), mean x 7.5/4 = 1.875
#   rh=2 -> gh=2, y = .5, 1.5, mean y 1 -> value 4*1 + 1.875 = 5.875 (A is linear).
#   (a square grid of 2 would give 6, of 4 would give a different mean y.)
_align(
    "align_avg_adaptive_per_axis",
    _img(A),
    _r([0, 0, 0, 4, 2]),
    [[[[5.875]]]],
    output_size=1,
    sampling_ratio=-1,
)

# Adaptive grid with aligned=True near the edge. Box (2,2,5,5), 1x1: x0=y0=1.5, x1=y1=4.5,
#   rw=rh=3, gh=gw=ceil(3)=3, samples 1.5+(i+.5) = 2, 3, 4; 4 = W is in range, clamped to 3.
#   mean clamped coordinate (2+3+3)/3 = 8/3 per axis -> 4*8/3 + 8/3 = 40/3.
_align(
    "align_avg_aligned_adaptive_edge",
    _img(A),
    _r([0, 2, 2, 5, 5]),
    [[[[40.0 / 3.0]]]],
    output_size=1,
    sampling_ratio=-1,
    aligned=True,
)

# Zero-size box, aligned False: (1,1,1,1) -> rw=rh=max(0,1)=1, 2x2 -> bw=bh=.5,
#   gh=gw=ceil(1/2)=1, samples 1 + ph*.5 + .25 = 1.25, 1.75.
#   (1.25,1.25)=5+1.25=6.25, (1.25,1.75)=6.75, (1.75,1.25)=7+1.25=8.25, (1.75,1.75)=8.75.
_align(
    "align_avg_zero_size_clamped",
    _img(A),
    _r([0, 1, 1, 1, 1]),
    [[[[6.25, 6.75], [8.25, 8.75]]]],
    output_size=2,
    sampling_ratio=-1,
)

# Zero-size and reversed boxes, aligned True, adaptive grid: no clamp, so
#   (1,1,1,1): rw=rh=0 -> gh=gw=ceil(0)=0 -> no samples -> 0.
#   (3,3,1,1): x0=2.5, x1=0.5 -> rw=rh=-2 -> gh=gw=ceil(-1)=-1 -> no samples -> 0.
# g = ones -> zero gradient.
_align(
    "align_avg_aligned_empty_and_reversed",
    _img(A + 1),
    _r([0, 1, 1, 1, 1], [0, 3, 3, 1, 1]),
    np.zeros((2, 1, 2, 2)),
    output_size=2,
    sampling_ratio=-1,
    aligned=True,
    grad_out=np.ones((2, 1, 2, 2)),
    expected_grad=np.zeros((1, 1, 4, 4)),
)

# Reversed box, aligned False: (3,3,1,1) -> x0=3, rw=max(-2,1)=1, 1x1, gw=1,
#   sample 3 + .5 = 3.5 -> clamped to 3 on both axes: A[3,3] = 15.
_align(
    "align_avg_reversed_clamped",
    _img(A),
    _r([0, 3, 3, 1, 1]),
    [[[[15.0]]]],
    output_size=1,
    sampling_ratio=-1,
)

# Non-linear map pins which weight goes with which corner. 2x2 maps, C=2:
#   ch0 [[1,2],[3,10]], ch1 [[0,0],[0,16]]. Box (x1,y1,x2,y2) = (.25,-.25,1.25,.75), 1x1,
#   sampling_ratio 1, aligned False: rw=rh=1, sample (y, x) = (-.25+.5, .25+.5) = (.25, .75).
#   ly=.25, lx=.75: weights (0,0) .75*.25=.1875, (0,1) .75*.75=.5625, (1,0) .25*.25=.0625,
#   (1,1) .25*.75=.1875.
#   ch0: .1875*1 + .5625*2 + .0625*3 + .1875*10 = .1875+1.125+.1875+1.875 = 3.375
#   ch1: .1875*16 = 3.
# Gradient, g = [1, 2]: ch0 = the weights, ch1 = 2 * the weights.
_W = np.array([[.1875, .5625], [.0625, .1875]])
_align(
    "align_avg_bilinear_weights",
    np.array([[[[1, 2], [3, 10]], [[0, 0], [0, 16]]]], dtype=np.float64),
    _r([0, 0.25, -0.25, 1.25, 0.75]),
    [[[[3.375]], [[3.0]]]],
    output_size=1,
    sampling_ratio=1,
    grad_out=[[[[1.0]], [[2.0]]]],
    expected_grad=np.stack([_W, 2 * _W])[None],
)

# Invalid rows (see pool_invalid_rows), box (b,0,0,2,2), 1x1, sampling_ratio 1:
#   rw=rh=2, single sample at (1,1) exactly: 5 (image 0) or 105 (image 1).
# g = ones: the sample sits on a pixel (ly=lx=0): (1,1) of image 1 and of image 0 get 1.
_INVALID_ROWS_ALIGN = _INVALID_ROWS.copy()
_INVALID_ROWS_ALIGN[:, 3:5] = np.where(np.isfinite(_INVALID_ROWS[:, 3:5]), 2.0,
                                       _INVALID_ROWS[:, 3:5])
_align(
    "align_avg_invalid_rows",
    _TWO_IMAGES,
    _INVALID_ROWS_ALIGN,
    np.array([105, 5, 0, 0, 0, 0, 0, 0, 0], dtype=np.float64).reshape(9, 1, 1, 1),
    output_size=1,
    sampling_ratio=1,
    grad_out=np.ones((9, 1, 1, 1)),
    expected_grad=np.stack([
        [[[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]],
        [[[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]],
    ]),
)

# Same rows in max mode: one sample per bin, so max = avg here.
_align(
    "align_max_invalid_rows",
    _TWO_IMAGES,
    _INVALID_ROWS_ALIGN,
    np.array([105, 5, 0, 0, 0, 0, 0, 0, 0], dtype=np.float64).reshape(9, 1, 1, 1),
    output_size=1,
    sampling_ratio=1,
    mode="max",
    grad_out=np.ones((9, 1, 1, 1)),
    expected_grad=np.stack([
        [[[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]],
        [[[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]],
    ]),
)

# K = 0.
_align(
    "align_avg_k0",
    _img(A),
    np.zeros((0, 5)),
    np.zeros((0, 1, 2, 3)),
    output_size=(2, 3),
)

# ============================================================================ roi_align max

# Box (0,0,0,2,2), 1x1, sampling_ratio 2, on A: samples (iy outer, ix inner)
#   (.5,.5)=2.5, (.5,1.5)=3.5, (1.5,.5)=6.5, (1.5,1.5)=7.5 -> max 7.5 (the last sample).
# Gradient g=3: winner (1.5,1.5), yl=xl=1, ly=lx=.5 -> .25*3 = .75 to (1,1),(1,2),(2,1),(2,2),
# undivided by the sample count.
_align(
    "align_max_in_map",
    _img(A),
    _r([0, 0, 0, 2, 2]),
    [[[[7.5]]]],
    output_size=1,
    sampling_ratio=2,
    mode="max",
    grad_out=[[[[3.0]]]],
    expected_grad=_img([[0, 0, 0, 0], [0, .75, .75, 0], [0, .75, .75, 0], [0, 0, 0, 0]]),
)

# Out-of-range sample (value 0) beats negative in-map values. Map -(A+1), box (-3,0,1,2),
# 1x1, sampling_ratio 2 (geometry as align_avg_partly_outside): samples in order
#   (.5,-2) -> 0 (outside), (.5,0) -> -(2+0+1) = -3, (1.5,-2) -> 0, (1.5,0) -> -(6+1) = -7.
#   max = 0, won by the first (out-of-range) sample -> gradient nothing at all.
_align(
    "align_max_outside_wins",
    _img(-(A + 1)),
    _r([0, -3, 0, 1, 2]),
    [[[[0.0]]]],
    output_size=1,
    sampling_ratio=2,
    mode="max",
    grad_out=[[[[1.0]]]],
    expected_grad=np.zeros((1, 1, 4, 4)),
)

# Tie: constant map 5, box (0,0,0,2,2), 1x1, sampling_ratio 2: all four samples are 5; the
# first, (.5,.5), wins (strict >). g=1 -> .25 to (0,0),(0,1),(1,0),(1,1).
_align(
    "align_max_tie_first_wins",
    _img(np.full((4, 4), 5.0)),
    _r([0, 0, 0, 2, 2]),
    [[[[5.0]]]],
    output_size=1,
    sampling_ratio=2,
    mode="max",
    grad_out=[[[[1.0]]]],
    expected_grad=_img([[.25, .25, 0, 0], [.25, .25, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
)

# Max mode, 2x2 bins, sampling_ratio 2, box (0,0,0,4,4) on A: bw=bh=2, samples of bin
# (ph,pw) at 2ph+.5, 2ph+1.5 (and x alike; 3.5 clamps to 3). The max sits at the last sample:
#   (0,0): (1.5,1.5) = 7.5;  (0,1): (1.5, 3.5->3) = 6+3 = 9;  (1,0): (3.5->3, 1.5) = 13.5;
#   (1,1): (3,3) = 15.
# Gradient g = [[1,2],[3,4]]:
#   (0,0) winner (1.5,1.5): .25 to (1,1),(1,2),(2,1),(2,2)
#   (0,1) winner (1.5,3): x clamped, lx=0, ly=.5: 1 to (1,3) and (2,3) *.5 each -> 2*.5 = 1 each
#   (1,0) winner (3,1.5): 3*.5 = 1.5 to (3,1) and (3,2)
#   (1,1) winner (3,3): 4 to (3,3)
_align(
    "align_max_bins",
    _img(A),
    _r([0, 0, 0, 4, 4]),
    [[[[7.5, 9.0], [13.5, 15.0]]]],
    output_size=2,
    sampling_ratio=2,
    mode="max",
    grad_out=[[[[1.0, 2.0], [3.0, 4.0]]]],
    expected_grad=_img([[0, 0, 0, 0], [0, .25, .25, 1], [0, .25, .25, 1], [0, 1.5, 1.5, 4]]),
)

# Max mode with no samples (aligned True, reversed box, adaptive grid): 0, not -inf/-FLT_MAX.
_align(
    "align_max_no_samples",
    _img(-(A + 1)),
    _r([0, 3, 3, 1, 1]),
    np.zeros((1, 1, 2, 2)),
    output_size=2,
    sampling_ratio=-1,
    aligned=True,
    mode="max",
    grad_out=np.ones((1, 1, 2, 2)),
    expected_grad=np.zeros((1, 1, 4, 4)),
)

_names = [c["name"] for c in GOLDEN]
assert len(_names) == len(set(_names)), "duplicate golden case names"

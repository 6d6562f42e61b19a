// Scalar RoI geometry and bilinear weights, shared unchanged by the CPU and CUDA kernels.
//
// Everything here works on one roi, one bin or one sample: no loops over tensors and no
// XLA types, so that a CPU loop and a CUDA thread evaluate bit-identical expressions.
// The formulas are those of docs/semantics.md; the comments say why they look the way
// they do, not what they compute.
#ifndef JAX_ROI_ROI_MATH_H_
#define JAX_ROI_ROI_MATH_H_

#include <cmath>
#include <cstdint>

#include "jax_roi/roi_shape.h"

#if defined(__CUDACC__)
#define JAX_ROI_HD __host__ __device__ __forceinline__
#else
#define JAX_ROI_HD inline
#endif

namespace jax_roi {

// Cap on the sampling grid per axis and bin. Real boxes never come close (it is a 32768 pixel
// bin at adaptive sampling); the cap keeps `iy * gw + ix` inside int32 for the max-mode
// argmax and keeps the float conversion of the sample index exact.
constexpr int64_t kMaxGrid = 32768;

JAX_ROI_HD int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// True for finite values; NaN and +-inf give NaN under subtraction. Avoids std::isfinite,
// whose host/device overload sets differ between libstdc++ and CUDA.
template <typename A>
JAX_ROI_HD bool IsFinite(A v) {
  return (v - v) == A(0);
}

// First i in [lo, hi) with pred(i) true, for a predicate that is monotone over the range
// (false ... false true ... true); hi when it is never true.
template <typename Pred>
JAX_ROI_HD int64_t FirstTrue(int64_t lo, int64_t hi, const Pred& pred) {
  while (lo < hi) {
    const int64_t m = lo + (hi - lo) / 2;
    if (pred(m)) hi = m; else lo = m + 1;
  }
  return lo;
}

// Reads row k of rois [K, 5] = (batch_index, x1, y1, x2, y2). Returns the image index, or -1
// for a row that must produce zeros: a non-finite number or a batch index outside [0, n).
// The index truncates toward zero, so (-1, n) is the valid open interval.
template <typename A>
JAX_ROI_HD int64_t RoiBatchIndex(const A* roi, int64_t n) {
  for (int i = 0; i < 5; ++i) {
    if (!IsFinite(roi[i])) return -1;
  }
  const A b = roi[0];
  if (!(b > A(-1) && b < A(n))) return -1;
  return static_cast<int64_t>(b);
}

// ---------------------------------------------------------------------------------------
// roi_align
// ---------------------------------------------------------------------------------------

// One axis of one roi: where the bins start, how wide they are, how many samples each has.
template <typename A>
struct AlignAxis {
  A start;
  A bin;
  int64_t grid;
  bool ok;  // false when the geometry overflowed (start or bin not finite): a zero row
};

template <typename A>
JAX_ROI_HD AlignAxis<A> RoiAlignAxis(A lo, A hi, A scale, bool aligned, int64_t pooled,
                                     int64_t sampling_ratio) {
  const A off = aligned ? A(0.5) : A(0);
  const A start = lo * scale - off;
  const A end = hi * scale - off;
  A extent = end - start;
  // Legacy (aligned=False) boxes are forced to at least one pixel; aligned boxes may be empty
  // or reversed, which leaves no samples.
  if (!aligned && !(extent >= A(1))) extent = A(1);
  const A bin = extent / static_cast<A>(pooled);
  int64_t grid;
  if (sampling_ratio > 0) {
    grid = sampling_ratio < kMaxGrid ? sampling_ratio : kMaxGrid;
  } else {
    // Clamp in floating point before the conversion: a huge box must not overflow int64.
    const A g = std::ceil(extent / static_cast<A>(pooled));
    grid = g >= A(kMaxGrid) ? kMaxGrid : (g > A(0) ? static_cast<int64_t>(g) : 0);
  }
  AlignAxis<A> axis;
  axis.start = start;
  axis.bin = bin;
  axis.grid = grid;
  axis.ok = IsFinite(start) && IsFinite(bin);
  return axis;
}

// Sample i of bin p. The evaluation order is part of the semantics: torchvision's, so that
// sample positions (and thus which samples fall off the map) agree bit for bit.
template <typename A>
JAX_ROI_HD A SampleCoord(const AlignAxis<A>& axis, int64_t p, int64_t i) {
  return axis.start + static_cast<A>(p) * axis.bin +
         (static_cast<A>(i) + A(0.5)) * axis.bin / static_cast<A>(axis.grid);
}

// The two taps of linear interpolation along one axis of length `size`.
template <typename A>
struct Lerp {
  int64_t lo, hi;
  A wlo, whi;
};

// False when the sample lies outside [-1, size]: it contributes zero (and is still counted).
// The comparison is written so that NaN is outside too.
template <typename A>
JAX_ROI_HD bool LerpAt(A y, int64_t size, Lerp<A>* t) {
  if (!(y >= A(-1) && y <= static_cast<A>(size))) return false;
  if (y <= A(0)) y = A(0);
  int64_t lo = static_cast<int64_t>(y);
  int64_t hi;
  if (lo >= size - 1) {
    lo = hi = size - 1;
    y = static_cast<A>(lo);
  } else {
    hi = lo + 1;
  }
  const A l = y - static_cast<A>(lo);
  t->lo = lo;
  t->hi = hi;
  t->wlo = A(1) - l;
  t->whi = l;
  return true;
}

// Samples [lo, hi) of bin p lie inside [-1, size]; all others contribute zero.
struct SampleRun {
  int64_t lo, hi;
};

// SampleCoord is monotone in i (non-decreasing for bin >= 0, non-increasing for bin < 0,
// because every rounding step is monotone), so the inside samples form one run. Two binary
// searches find it exactly: the cost stays logarithmic for any box, however huge.
template <typename A>
JAX_ROI_HD SampleRun InsideRun(const AlignAxis<A>& axis, int64_t p, int64_t size) {
  const bool up = axis.bin >= A(0);
  // First i for which the coordinate has passed the near edge of [-1, size].
  int64_t a = 0, b = axis.grid;
  while (a < b) {
    const int64_t m = a + (b - a) / 2;
    const A y = SampleCoord(axis, p, m);
    const bool past = up ? (y >= A(-1)) : (y <= static_cast<A>(size));
    if (past) b = m; else a = m + 1;
  }
  SampleRun run;
  run.lo = a;
  // First i beyond the far edge.
  b = axis.grid;
  while (a < b) {
    const int64_t m = a + (b - a) / 2;
    const A y = SampleCoord(axis, p, m);
    const bool beyond = up ? !(y <= static_cast<A>(size)) : !(y >= A(-1));
    if (beyond) b = m; else a = m + 1;
  }
  run.hi = a;
  return run;
}

// Row-major index of the first sample of a gh x gw grid that lies outside the map, given the
// inside runs of both axes; -1 when every sample is inside. In max mode that sample is the
// only out-of-range one that matters: it has value 0, and later zeros cannot beat it.
JAX_ROI_HD int64_t FirstOutsideSample(SampleRun ry, int64_t gh, SampleRun rx, int64_t gw) {
  if (gh <= 0 || gw <= 0) return -1;
  if (ry.lo >= ry.hi || rx.lo >= rx.hi || ry.lo > 0 || rx.lo > 0) return 0;
  if (rx.hi < gw) return rx.hi;
  if (ry.hi < gh) return ry.hi * gw;
  return -1;
}

// Folds the first out-of-map sample (value 0, grid index `outside`, from FirstOutsideSample)
// into the running maximum of a bin's inside samples, as if all had been visited in grid
// order: the later of the two must be strictly greater. An out-of-map winner has index -1
// (it passes no gradient).
template <typename A>
JAX_ROI_HD void MergeOutsideSample(int64_t outside, A* best, int32_t* idx) {
  if (outside < 0) return;
  const bool inside_wins =
      *idx >= 0 && (*idx < outside ? !(A(0) > *best) : (*best > A(0)));
  if (!inside_wins) {
    *best = A(0);
    *idx = -1;
  }
}

// Both axes of one roi; ok is false for a row that outputs zeros and takes no gradient.
template <typename A>
struct AlignRoiGeometry {
  int64_t n;  // image, -1 for an invalid row
  AlignAxis<A> y, x;
  bool ok;
};

template <typename A>
JAX_ROI_HD AlignRoiGeometry<A> AlignRoiAt(const A* roi, int64_t images, int64_t pooled_h,
                                          int64_t pooled_w, A scale, bool aligned,
                                          int64_t sampling_ratio) {
  AlignRoiGeometry<A> g;
  g.n = RoiBatchIndex(roi, images);
  g.ok = false;
  if (g.n < 0) return g;
  g.x = RoiAlignAxis(roi[1], roi[3], scale, aligned, pooled_w, sampling_ratio);
  g.y = RoiAlignAxis(roi[2], roi[4], scale, aligned, pooled_h, sampling_ratio);
  g.ok = g.x.ok && g.y.ok;
  return g;
}

// Roi k of a call's rois [K, 5].
template <typename A>
JAX_ROI_HD AlignRoiGeometry<A> AlignRoiOf(const A* rois, int64_t k, const RoiShape& s,
                                          const RoiParams& params) {
  return AlignRoiAt(rois + 5 * k, s.n, s.ph, s.pw, static_cast<A>(params.scale),
                    params.aligned, params.ratio);
}

// Divisor of the avg mode: every grid sample counts, inside the map or not.
template <typename A>
JAX_ROI_HD A AlignSampleCount(const AlignRoiGeometry<A>& g) {
  const int64_t count = g.y.grid * g.x.grid;
  return static_cast<A>(count > 1 ? count : 1);
}

// ---------------------------------------------------------------------------------------
// roi_align, seen from one pixel (the gather form of the backward)
//
// A pixel receives gradient from the samples whose interpolation taps land on it. Sample
// positions are monotone in the sample index and in the bin index (SampleCoord's rounding
// steps are all monotone), and so is the lower tap of a sample, so the samples and bins
// that can reach a pixel are runs found by binary search, exactly, for any box.
// ---------------------------------------------------------------------------------------

// Monotone key of a sample at v along an axis of length `size`: its lower tap (LerpAt's
// `lo`) when it is inside [-1, size], -2 below that range and `size` above it. A sample
// reaches pixel y exactly when its key is y - 1 (upper tap y) or y.
template <typename A>
JAX_ROI_HD int64_t TapKey(A v, int64_t size) {
  if (!(v >= A(-1))) return -2;
  if (!(v <= static_cast<A>(size))) return size;
  Lerp<A> t;
  LerpAt(v, size, &t);
  return t.lo;
}

// Bins [begin, end); empty when begin >= end.
struct BinRange {
  int64_t begin, end;
};

// Bins of one axis that may have a sample reaching pixel y: every bin that has one is in
// the range (some in it may have none; TouchRun decides). The keys of bin p's samples lie
// between those of its first and last sample, and both are monotone in p.
template <typename A>
JAX_ROI_HD BinRange TouchBins(const AlignAxis<A>& axis, int64_t pooled, int64_t y,
                              int64_t size) {
  BinRange r{0, 0};
  if (axis.grid <= 0) return r;
  const int64_t last = axis.grid - 1;
  auto first_key = [&](int64_t p) { return TapKey(SampleCoord(axis, p, 0), size); };
  auto last_key = [&](int64_t p) { return TapKey(SampleCoord(axis, p, last), size); };
  if (axis.bin >= A(0)) {  // keys rise with the sample index: [first, last]
    r.begin = FirstTrue(0, pooled, [&](int64_t p) { return last_key(p) >= y - 1; });
    r.end = FirstTrue(r.begin, pooled, [&](int64_t p) { return first_key(p) > y; });
  } else {  // reversed box: keys fall, [last, first]
    r.begin = FirstTrue(0, pooled, [&](int64_t p) { return last_key(p) <= y; });
    r.end = FirstTrue(r.begin, pooled, [&](int64_t p) { return first_key(p) < y - 1; });
  }
  return r;
}

// Samples [lo, hi) of bin p whose taps reach pixel y (key y - 1 or y).
template <typename A>
JAX_ROI_HD SampleRun TouchRun(const AlignAxis<A>& axis, int64_t p, int64_t y, int64_t size) {
  auto key = [&](int64_t i) { return TapKey(SampleCoord(axis, p, i), size); };
  SampleRun r;
  if (axis.bin >= A(0)) {
    r.lo = FirstTrue(0, axis.grid, [&](int64_t i) { return key(i) >= y - 1; });
    r.hi = FirstTrue(r.lo, axis.grid, [&](int64_t i) { return key(i) > y; });
  } else {
    r.lo = FirstTrue(0, axis.grid, [&](int64_t i) { return key(i) <= y; });
    r.hi = FirstTrue(r.lo, axis.grid, [&](int64_t i) { return key(i) < y - 1; });
  }
  return r;
}

// Sum over bin p's samples of the interpolation weight each puts on pixel y (both taps of
// an edge-clamped sample may land there). False when no sample reaches y.
template <typename A>
JAX_ROI_HD bool BinWeightAt(const AlignAxis<A>& axis, int64_t p, int64_t y, int64_t size,
                            A* weight) {
  const SampleRun run = TouchRun(axis, p, y, size);
  A w = A(0);
  for (int64_t i = run.lo; i < run.hi; ++i) {
    Lerp<A> t;
    LerpAt(SampleCoord(axis, p, i), size, &t);
    if (t.lo == y) w += t.wlo;
    if (t.hi == y) w += t.whi;
  }
  *weight = w;
  return run.lo < run.hi;
}

// Pixel range [begin, end) along one axis; empty when begin >= end.
struct PixelRange {
  int64_t begin, end;
};

// The pixels of one axis that any inside sample of any bin can reach with either tap: its
// footprint, as used by the deterministic backward to skip the rois that cannot reach a
// pixel. Sample positions are monotone in the bin and in the sample index together (see
// above), so the extreme samples are those of (bin 0, sample 0) and (bin pooled-1, sample
// grid-1), and TapKey is monotone, so the taps of all inside samples lie between the lower
// tap of the lowest inside sample and the upper tap of the highest. Where an extreme sample
// is outside the map the range runs to the map's edge instead: never too small, and exact
// whenever both extreme samples are inside. Empty when the grid is empty or every sample
// lies on one side of the map.
template <typename A>
JAX_ROI_HD PixelRange AlignFootprint(const AlignAxis<A>& axis, int64_t pooled, int64_t size) {
  PixelRange r{0, 0};
  if (axis.grid <= 0 || pooled <= 0) return r;
  const A a = SampleCoord(axis, 0, 0);
  const A b = SampleCoord(axis, pooled - 1, axis.grid - 1);
  if (!(a == a) || !(b == b)) {  // unreachable for a finite axis; stay conservative
    r.end = size;
    return r;
  }
  const int64_t ka = TapKey(a, size), kb = TapKey(b, size);
  const int64_t lo = ka < kb ? ka : kb, hi = ka < kb ? kb : ka;
  if (hi == -2 || lo == size) return r;  // all below -1, or all beyond size
  r.begin = lo < 0 ? 0 : lo;
  // The upper tap of key hi is hi + 1, clamped to the last pixel (key size: an inside
  // sample may still reach it).
  r.end = hi >= size - 1 ? size : hi + 2;
  return r;
}

// ---------------------------------------------------------------------------------------
// roi_pool
// ---------------------------------------------------------------------------------------

// C's round(): halves away from zero (Caffe and torchvision), unlike rint or numpy.
template <typename A>
JAX_ROI_HD A RoundHalfAway(A v) {
  return std::round(v);
}

// One axis of one roi in roi_pool geometry, in the compute type: integers stay exact there,
// and a huge box never overflows an integer conversion.
template <typename A>
struct PoolAxis {
  A start;
  A bin;
  bool ok;
};

template <typename A>
JAX_ROI_HD PoolAxis<A> RoiPoolAxis(A lo, A hi, A scale, int64_t pooled) {
  const A s = RoundHalfAway(lo * scale);
  const A e = RoundHalfAway(hi * scale);
  A extent = e - s + A(1);
  if (!(extent >= A(1))) extent = A(1);
  PoolAxis<A> axis;
  axis.start = s;
  axis.bin = extent / static_cast<A>(pooled);
  axis.ok = IsFinite(s) && IsFinite(axis.bin);
  return axis;
}

// Pixel range [begin, end) of bin p, clipped to [0, size]; empty when begin >= end.
template <typename A>
JAX_ROI_HD int64_t ClipToIndex(A v, int64_t size) {
  if (!(v > A(0))) return 0;
  if (v >= static_cast<A>(size)) return size;
  return static_cast<int64_t>(v);
}

template <typename A>
JAX_ROI_HD PixelRange PoolBin(const PoolAxis<A>& axis, int64_t p, int64_t size) {
  PixelRange r;
  r.begin = ClipToIndex(std::floor(static_cast<A>(p) * axis.bin) + axis.start, size);
  r.end = ClipToIndex(std::ceil(static_cast<A>(p + 1) * axis.bin) + axis.start, size);
  return r;
}

// Both axes of one roi in roi_pool geometry; ok is false for a row that outputs zeros.
template <typename A>
struct PoolRoiGeometry {
  int64_t n;  // image, -1 for an invalid row
  PoolAxis<A> y, x;
  bool ok;
};

template <typename A>
JAX_ROI_HD PoolRoiGeometry<A> PoolRoiAt(const A* roi, int64_t images, int64_t pooled_h,
                                        int64_t pooled_w, A scale) {
  PoolRoiGeometry<A> g;
  g.n = RoiBatchIndex(roi, images);
  g.ok = false;
  if (g.n < 0) return g;
  g.x = RoiPoolAxis(roi[1], roi[3], scale, pooled_w);
  g.y = RoiPoolAxis(roi[2], roi[4], scale, pooled_h);
  g.ok = g.x.ok && g.y.ok;
  return g;
}

// Roi k of a call's rois [K, 5].
template <typename A>
JAX_ROI_HD PoolRoiGeometry<A> PoolRoiOf(const A* rois, int64_t k, const RoiShape& s,
                                        const RoiParams& params) {
  return PoolRoiAt(rois + 5 * k, s.n, s.ph, s.pw, static_cast<A>(params.scale));
}

// Bins of one axis whose pixel range contains pixel y, exactly: both ends of PoolBin are
// monotone in the bin index (the bin size is positive).
template <typename A>
JAX_ROI_HD BinRange PoolBinsContaining(const PoolAxis<A>& axis, int64_t pooled, int64_t y,
                                       int64_t size) {
  BinRange r;
  r.begin = FirstTrue(0, pooled, [&](int64_t p) { return PoolBin(axis, p, size).end > y; });
  r.end = FirstTrue(r.begin, pooled,
                    [&](int64_t p) { return PoolBin(axis, p, size).begin > y; });
  return r;
}

// The pixels of one axis that any bin of the roi covers (its footprint; see AlignFootprint):
// both ends of PoolBin rise with the bin index, so the bins lie between the start of the
// first and the end of the last. Empty when every bin is clipped away.
template <typename A>
JAX_ROI_HD PixelRange PoolFootprint(const PoolAxis<A>& axis, int64_t pooled, int64_t size) {
  PixelRange r{0, 0};
  if (pooled <= 0) return r;
  const int64_t begin = PoolBin(axis, 0, size).begin;
  const int64_t end = PoolBin(axis, pooled - 1, size).end;
  if (begin < end) {
    r.begin = begin;
    r.end = end;
  }
  return r;
}

}  // namespace jax_roi

#endif  // JAX_ROI_ROI_MATH_H_

// Scalar RoI geometry and bilinear weights, shared unchanged by the CPU and CUDA kernels.
//
// Everything here works on one roi, one bin or one sample: no loops over tensors and no
// XLA types, so that a CPU loop and a CUDA thread evaluate bit-identical expressions.
// The formulas are those of shared/SEMANTICS.md; the comments say why they look the way
// they do, not what they compute.
#ifndef JAX_ROI_ROI_MATH_H_
#define JAX_ROI_ROI_MATH_H_

#include <cmath>
#include <cstdint>

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

// True for finite values; NaN and +-inf give NaN under subtraction. Avoids std::isfinite,
// whose host/device overload sets differ between libstdc++ and CUDA.
template <typename A>
JAX_ROI_HD bool IsFinite(A v) {
  return (v - v) == A(0);
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

template <typename A>
JAX_ROI_HD bool SampleInside(const AlignAxis<A>& axis, int64_t p, int64_t i, int64_t size) {
  const A y = SampleCoord(axis, p, i);
  return y >= A(-1) && y <= static_cast<A>(size);
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
struct PixelRange {
  int64_t begin, end;
};

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

}  // namespace jax_roi

#endif  // JAX_ROI_ROI_MATH_H_

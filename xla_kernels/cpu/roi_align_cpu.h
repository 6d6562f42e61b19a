// Helpers shared by the roi_align CPU kernels (roi_align_*_cpu.cc): the avg taps of a roi,
// the fill of a roi that adds nothing, and the in-register transposes between channel planes
// and channels-last runs.
#ifndef JAX_ROI_CPU_ROI_ALIGN_CPU_H_
#define JAX_ROI_CPU_ROI_ALIGN_CPU_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_common.h"
#include "jax_roi/dtypes.h"
#include "jax_roi/roi_math.h"

namespace jax_roi {
namespace cpu {

// Roi k's pooled elements over channels [c0, c0 + cb) of `out` ([K, C, PH, PW] or
// [K, PH, PW, C]) set to `value`. Written as contiguous runs in memory order (a bin's
// channels in NHWC, a block of planes in NCHW): padding rows (batch index -1) are common in
// batched proposals, and channel-major NHWC stores 1 KiB apart write every cache line many
// times (benchmarks/results/cpu_design.md).
template <bool kChannelsLast, typename U>
void FillRoi(U* out, const RoiShape& s, int64_t k, int64_t c0, int64_t cb, U value) {
  const int64_t bins = s.ph * s.pw;
  if (kChannelsLast) {
    for (int64_t b = 0; b < bins; ++b) {
      U* bin = out + PooledIndex<true>(s, k, c0, b / s.pw, b % s.pw);
      std::fill(bin, bin + cb, value);
    }
  } else {
    U* first = out + PooledIndex<false>(s, k, c0, 0, 0);
    std::fill(first, first + cb * bins, value);
  }
}

// Roi k's output over channels [c0, c0 + cb) set to zero: the rule for a roi that adds
// nothing (docs/semantics.md).
template <typename T, bool kChannelsLast>
void ZeroRoiOutput(T* out, const RoiShape& s, int64_t k, int64_t c0, int64_t cb) {
  FillRoi<kChannelsLast>(out, s, k, c0, cb, Store<T>(typename Accum<T>::type(0)));
}

// The avg taps of one roi along both axes, with its image and the mean's divisor.
template <typename A>
struct AvgRoiTaps {
  AxisTaps<A> y, x;
  int64_t n;
  A count;
};

// Roi k's avg taps in per-thread tables, reused across tasks: a task is small (one roi, one
// channel block) and allocating the tables per task cost as much as a sixth of the forward.
// With `fold_count` the row weights carry the mean's 1/count (the backward). Null for a roi
// that adds nothing.
template <typename A>
const AvgRoiTaps<A>* BuildAvgRoiTaps(const A* rois, int64_t k, const RoiShape& s,
                                     const RoiParams& params, bool fold_count = false) {
  const AlignRoiGeometry<A> roi = AlignRoiOf(rois, k, s, params);
  if (!roi.ok) return nullptr;
  thread_local AvgRoiTaps<A> t;
  t.n = roi.n;
  t.count = AlignSampleCount(roi);
  t.y.Build(roi.y, s.ph, s.h, fold_count ? t.count : A(1));
  t.x.Build(roi.x, s.pw, s.w);
  return &t;
}

// 8 x 8 float transpose in registers: r[i][j] becomes r[j][i] (unpack, then 64-bit, then
// 128-bit interleaves).
typedef int32_t Int8 __attribute__((vector_size(32)));
__attribute__((always_inline)) inline void Transpose8x8(Float8* r) {
  const Int8 lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
  const Int8 lo2 = {0, 1, 8, 9, 4, 5, 12, 13}, hi2 = {2, 3, 10, 11, 6, 7, 14, 15};
  const Int8 lo4 = {0, 1, 2, 3, 8, 9, 10, 11}, hi4 = {4, 5, 6, 7, 12, 13, 14, 15};
  Float8 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shuffle(r[i], r[i + 1], lo);
    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], hi);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = __builtin_shuffle(t[i], t[i + 2], lo2);
    u[i + 1] = __builtin_shuffle(t[i], t[i + 2], hi2);
    u[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], lo2);
    u[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], hi2);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = __builtin_shuffle(u[i], u[i + 4], lo4);
    r[i + 4] = __builtin_shuffle(u[i], u[i + 4], hi4);
  }
}

// dst[c * plane + i] = src[i * cb + c] for i < n and c < cb (rounded into T where the source
// is an accumulator type): a channels-last run of n pixels (or bins) written out to cb planes.
template <typename T, typename S>
__attribute__((always_inline)) inline void ToPlanes(const S* src, int64_t n, int64_t cb,
                                                    T* dst, int64_t plane) {
  auto put = [](S v) {
    if constexpr (std::is_same<S, T>::value) return v;
    else return Store<T>(v);
  };
  int64_t i = 0, c = 0;
  if constexpr (std::is_same<T, float>::value && std::is_same<S, float>::value) {
    for (; i + 8 <= n; i += 8) {
      for (c = 0; c + 8 <= cb; c += 8) {
        Float8 r[8];
        for (int j = 0; j < 8; ++j) LoadLanes<float>(src + (i + j) * cb + c, &r[j]);
        Transpose8x8(r);
        for (int j = 0; j < 8; ++j) StoreLanes<float>(&r[j], dst + (c + j) * plane + i);
      }
      for (; c < cb; ++c)
        for (int64_t j = i; j < i + 8; ++j) dst[c * plane + j] = src[j * cb + c];
    }
  }
  for (c = 0; c < cb; ++c)
    for (int64_t j = i; j < n; ++j) dst[c * plane + j] = put(src[j * cb + c]);
}

// dst[i * cb + c] = src[c * plane + i] for i < n and c < cb, widened into D: the inverse of
// ToPlanes. Into float, eight lanes of eight planes at a time (16-bit through the lane
// conversions), transposed in registers. Eight planes at a time from start to end: eight
// sequential streams, which the prefetcher follows (all cb planes at once are more streams
// than it tracks).
template <typename D, typename S>
__attribute__((always_inline)) inline void FromPlanes(const S* src, int64_t plane, int64_t n,
                                                      int64_t cb, D* dst) {
  int64_t c = 0;
  if constexpr (std::is_same<D, float>::value) {
    const int64_t n8 = n - n % 8;
    for (; c + 8 <= cb; c += 8) {
      for (int64_t i = 0; i < n8; i += 8) {
        Float8 r[8];
        for (int j = 0; j < 8; ++j) LoadLanes<float>(src + (c + j) * plane + i, &r[j]);
        Transpose8x8(r);
        for (int j = 0; j < 8; ++j) StoreLanes<float>(&r[j], dst + (i + j) * cb + c);
      }
      for (int64_t i = n8; i < n; ++i)
        for (int64_t j = c; j < c + 8; ++j) dst[i * cb + j] = Load<D>(src[j * plane + i]);
    }
  }
  for (; c < cb; ++c)
    for (int64_t i = 0; i < n; ++i) dst[i * cb + c] = Load<D>(src[c * plane + i]);
}

}  // namespace cpu
}  // namespace jax_roi

#endif  // JAX_ROI_CPU_ROI_ALIGN_CPU_H_

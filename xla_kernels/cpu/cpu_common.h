// CPU helpers shared by the roi kernels: element offsets in either layout, the running
// maximum, the pooled-element walk and the backward's per-task gradient target. Includes
// the plumbing (cpu_parallel.h) and the banded weights (cpu_taps.h).
#ifndef JAX_ROI_CPU_COMMON_H_
#define JAX_ROI_CPU_COMMON_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#include "cpu_parallel.h"
#include "cpu_taps.h"
#include "jax_roi/dtypes.h"
#include "jax_roi/roi_call.h"
#include "jax_roi/roi_math.h"
#include "jax_roi/roi_shape.h"

namespace jax_roi {
namespace cpu {

// f(in, rois, out) with a call's first operand (features, or the pooled gradient), its rois
// and its first result (output, or the feature gradient) typed by the call's element type.
template <typename F>
ffi::Future VisitBuffers(const RoiCall& c, F&& f) {
  return VisitElementType(c.type, [&](auto tag) {
    using T = decltype(tag);
    return f(static_cast<const T*>(c.args[0]),
             static_cast<const typename Accum<T>::type*>(c.args[1]), static_cast<T*>(c.rets[0]));
  });
}

// Gradient accumulation target of one backward task (image n, channels [c0, c0 + cb)). For
// 32/64-bit NCHW features it is the output itself (the block's planes are contiguous). 16-bit
// gradients accumulate in float in a task-local buffer and are rounded once when the task
// ends; so do NHWC ones, whose block is a short segment of every pixel of the output (a
// stride of C elements): the compact [H, W, cb] buffer keeps the scattered updates in a few
// hundred KiB and a few TLB pages.
template <typename T, typename A, bool kChannelsLast>
struct GradTarget {
  T* out;        // features-shaped gradient buffer
  RoiShape s;
  int64_t n, c0, cb;
  std::vector<A> scratch;
  A* base;
  int64_t sc, sy, sx;  // strides of (channel, row, column) relative to base

  static constexpr bool kDirect = std::is_same<T, A>::value && !kChannelsLast;

  GradTarget(T* out_, const RoiShape& s_, int64_t n_, int64_t c0_, int64_t cb_)
      : out(out_), s(s_), n(n_), c0(c0_), cb(cb_) {
    if (kDirect) {
      A* o = reinterpret_cast<A*>(out);
      if (kChannelsLast) {
        base = o + n * s.h * s.w * s.c + c0;
        sc = 1, sx = s.c, sy = s.w * s.c;
      } else {
        base = o + (n * s.c + c0) * s.h * s.w;
        sc = s.h * s.w, sy = s.w, sx = 1;
      }
    } else {
      scratch.assign(static_cast<size_t>(cb * s.h * s.w), A(0));
      base = scratch.data();
      if (kChannelsLast) {
        sc = 1, sx = cb, sy = s.w * cb;
      } else {
        sc = s.h * s.w, sy = s.w, sx = 1;
      }
    }
    if (kDirect) Zero();
  }

  void Zero() {
    if (kChannelsLast) {
      for (int64_t p = 0; p < s.h * s.w; ++p) std::fill(base + p * sx, base + p * sx + cb, A(0));
    } else {
      std::fill(base, base + cb * s.h * s.w, A(0));
    }
  }

  A* At(int64_t c, int64_t y, int64_t x) { return base + c * sc + y * sy + x * sx; }

  // Rounds the float accumulator into 16-bit storage; nothing to do when direct.
  void Finish() {
    if (kDirect) return;
    if (kChannelsLast) {
      for (int64_t y = 0; y < s.h; ++y)
        for (int64_t x = 0; x < s.w; ++x) {
          T* o = out + ((n * s.h + y) * s.w + x) * s.c + c0;
          const A* b = base + y * sy + x * sx;
          StoreRun(b, cb, A(1), o);
        }
    } else {
      T* o = out + (n * s.c + c0) * s.h * s.w;
      StoreRun(base, cb * s.h * s.w, A(1), o);
    }
  }

};

// Offset of pooled element (k, c, p, q) in [K, C, PH, PW] or [K, PH, PW, C].
template <bool kChannelsLast>
inline int64_t PooledIndex(const RoiShape& s, int64_t k, int64_t c, int64_t p, int64_t q) {
  return kChannelsLast ? ((k * s.ph + p) * s.pw + q) * s.c + c
                       : ((k * s.c + c) * s.ph + p) * s.pw + q;
}

// Offset of feature element (n, c, y, x) in [N, C, H, W] or [N, H, W, C].
template <bool kChannelsLast>
inline int64_t FeatureIndex(const RoiShape& s, int64_t n, int64_t c, int64_t y, int64_t x) {
  return kChannelsLast ? ((n * s.h + y) * s.w + x) * s.c + c
                       : ((n * s.c + c) * s.h + y) * s.w + x;
}

// One step of a running maximum with its position: v wins only when strictly greater, so
// the first maximum stays (and a NaN already held stays). Written as a mask and a max so
// the compiler emits no branch (it turns a plain ?: into one): on random features a branch
// mispredicts about every other step.
template <typename A>
inline void MaxStep(A v, int32_t at, A* best, int32_t* idx) {
  const int32_t take = -static_cast<int32_t>(v > *best);  // all ones or zero
  *idx = (at & take) | (*idx & ~take);
  *best = *best < v ? v : *best;  // maxss/maxps
}

// Calls fn(c, p, q) for channels [0, cb) and every bin, in the memory order of the layout.
template <bool kChannelsLast, typename F>
inline void ForEachPooled(const RoiShape& s, int64_t cb, F&& fn) {
  if (kChannelsLast) {
    for (int64_t p = 0; p < s.ph; ++p)
      for (int64_t q = 0; q < s.pw; ++q)
        for (int64_t c = 0; c < cb; ++c) fn(c, p, q);
  } else {
    for (int64_t c = 0; c < cb; ++c)
      for (int64_t p = 0; p < s.ph; ++p)
        for (int64_t q = 0; q < s.pw; ++q) fn(c, p, q);
  }
}

}  // namespace cpu
}  // namespace jax_roi

#endif  // JAX_ROI_CPU_COMMON_H_

// CPU plumbing shared by the roi kernels: the parallel loop on XLA's intra-op pool, dtype
// dispatch, and the per-roi banded interpolation weights.
#ifndef JAX_ROI_CPU_COMMON_H_
#define JAX_ROI_CPU_COMMON_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "jax_roi/dtypes.h"
#include "jax_roi/ffi_checks.h"
#include "jax_roi/roi_math.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cpu {

inline ffi::Future ReadyFuture() {
  ffi::Promise promise;
  ffi::Future future(promise);
  promise.SetAvailable();
  return future;
}

inline ffi::Future ErrorFuture(ffi::Error error) {
  ffi::Promise promise;
  ffi::Future future(promise);
  promise.SetError(std::move(error));
  return future;
}

// Runs fn(t) for every t in [0, tasks) on XLA's intra-op pool and returns a future that
// completes after the last one. The handler returns that future instead of waiting: a
// handler blocking on tasks of the pool it runs on can deadlock. Tasks are taken from one
// atomic counter (load balance for uneven rois); every output element belongs to exactly one
// task, so the result does not depend on the number of threads or on scheduling.
// `work` estimates the whole call's cost in element operations; small calls run inline.
template <typename F>
ffi::Future ParallelFor(ffi::ThreadPool& pool, int64_t tasks, int64_t work, F fn) {
  constexpr int64_t kInlineWork = int64_t{1} << 15;
  const int64_t workers = std::min<int64_t>(pool.num_threads(), tasks);
  if (workers <= 1 || work < kInlineWork) {
    for (int64_t t = 0; t < tasks; ++t) fn(t);
    return ReadyFuture();
  }
  struct State {
    explicit State(F f) : fn(std::move(f)) {}
    std::atomic<int64_t> next{0};
    F fn;
  };
  auto state = std::make_shared<State>(std::move(fn));
  ffi::CountDownPromise done(workers);
  ffi::Future future(done);
  for (int64_t i = 0; i < workers; ++i) {
    pool.Schedule([state, done, tasks]() mutable {
      for (int64_t t; (t = state->next.fetch_add(1, std::memory_order_relaxed)) < tasks;) {
        state->fn(t);
      }
      done.CountDown();
    });
  }
  return future;
}

// Calls f with a value of the storage type matching `type` (float, double, Half, BFloat16).
template <typename F>
ffi::Future VisitFloatType(ffi::DataType type, const std::string& op, F&& f) {
  switch (type) {
    case ffi::DataType::F32:
      return f(float{});
    case ffi::DataType::F64:
      return f(double{});
    case ffi::DataType::F16:
      return f(Half{});
    case ffi::DataType::BF16:
      return f(BFloat16{});
    default:
      return ErrorFuture(InvalidArgument(op, "features must be float16, bfloat16, float32 or "
                                             "float64"));
  }
}

// Channel blocks: the unit of parallel work along C. Wide enough for the NHWC inner loop to
// vectorise, small enough for a few blocks per image so the backward has tasks to share.
inline int64_t ChannelBlock(int64_t c) { return std::max<int64_t>(1, std::min<int64_t>(c, 64)); }

// Backward tasks own (image, channel block) and walk every roi of their image: the block's
// gradient should stay in cache meanwhile. NCHW: about 512 KiB of planes (L2); NHWC: 16
// channels, one cache line per pixel.
inline int64_t BackwardChannelBlock(const RoiShape& s) {
  if (s.channels_last) return std::max<int64_t>(1, std::min<int64_t>(s.c, 16));
  const int64_t fit = (int64_t{1} << 17) / std::max<int64_t>(1, s.h * s.w);
  return std::max<int64_t>(1, std::min<int64_t>(s.c, std::min<int64_t>(fit, 64)));
}

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Forward tasks: every (roi, channel block) pair; `cost` is the work per output element.
template <typename Task>
ffi::Future RunPerRoi(ffi::ThreadPool& pool, const RoiShape& s, int64_t cost, Task task) {
  const int64_t cb = ChannelBlock(s.c);
  const int64_t blocks = CeilDiv(s.c, cb);
  return ParallelFor(pool, s.k * blocks, s.k * s.c * s.ph * s.pw * cost, [=](int64_t t) {
    const int64_t k = t / blocks, c0 = (t % blocks) * cb;
    task(k, c0, std::min(cb, s.c - c0));
  });
}

// Backward tasks: every (image, channel block) pair; `cost` is the work per pooled element.
template <typename Task>
ffi::Future RunPerImage(ffi::ThreadPool& pool, const RoiShape& s, int64_t cost, Task task) {
  const int64_t cb = BackwardChannelBlock(s);
  const int64_t blocks = CeilDiv(s.c, cb);
  return ParallelFor(pool, s.n * blocks, s.n * s.c * s.h * s.w + s.k * s.c * s.ph * s.pw * cost,
                     [=](int64_t t) {
                       const int64_t n = t / blocks, c0 = (t % blocks) * cb;
                       task(n, c0, std::min(cb, s.c - c0));
                     });
}

// The interpolation weights of one roi along one axis, per bin, as a band of consecutive
// pixels. Bilinear weights factor into a row part and a column part, and the out-of-map test
// does too, so the sum over a gh x gw grid of samples equals
//   sum_r sum_s Wy[r] * Wx[s] * v[r, s]
// with Wy the summed row weights of the bin's inside samples. A band is at most a few pixels
// wider than its bin, whatever the sampling grid: bins cost O(band area) per channel instead
// of O(4 * gh * gw), and huge boxes cost no more than the map they cover.
//
// All bins of one roi get the same band length (the longest, padded with zero weights and
// shifted to stay inside the map): the inner loops then have one trip count per roi, which
// the kernels specialise on (no data-dependent branches in the hot loop).
template <typename A>
struct AxisBands {
  std::vector<int64_t> first;  // [P] first pixel of bin p's band
  std::vector<A> weight;       // [P, len]
  int64_t len = 0;

  void Build(const AlignAxis<A>& axis, int64_t pooled, int64_t size) {
    first.assign(pooled, 0);
    lo_.assign(pooled, 0);
    hi_.assign(pooled, -1);
    runs_.resize(pooled);
    len = 0;
    Lerp<A> t;
    for (int64_t p = 0; p < pooled; ++p) {
      runs_[p] = InsideRun(axis, p, size);
      int64_t lo = size, hi = -1;
      for (int64_t i = runs_[p].lo; i < runs_[p].hi; ++i) {
        if (!LerpAt(SampleCoord(axis, p, i), size, &t)) continue;
        lo = std::min(lo, t.lo);
        hi = std::max(hi, t.hi);
      }
      lo_[p] = lo;
      hi_[p] = hi;
      if (hi >= lo) len = std::max(len, hi - lo + 1);
    }
    weight.assign(static_cast<size_t>(pooled * len), A(0));
    for (int64_t p = 0; p < pooled; ++p) {
      if (hi_[p] < lo_[p]) continue;  // no inside sample: zero weights at pixel 0
      first[p] = std::min(lo_[p], size - len);
      A* w = weight.data() + p * len - first[p];
      for (int64_t i = runs_[p].lo; i < runs_[p].hi; ++i) {
        if (!LerpAt(SampleCoord(axis, p, i), size, &t)) continue;
        w[t.lo] += t.wlo;
        w[t.hi] += t.whi;
      }
    }
  }
  const A* Weights(int64_t p) const { return weight.data() + p * len; }

 private:
  std::vector<int64_t> lo_, hi_;
  std::vector<SampleRun> runs_;
};

// Calls fn(std::integral_constant<int, L>) with L = n for the common short bands (2 to 5
// pixels: bins of up to 4 pixels) and L = 0 (length known only at run time) otherwise.
template <typename F>
inline void WithBandLength(int64_t n, F&& fn) {
  switch (n) {
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 5: return fn(std::integral_constant<int, 5>{});
    default: return fn(std::integral_constant<int, 0>{});
  }
}

// Per-roi roi_align geometry for both axes; ok is false for a row that outputs zeros.
template <typename A>
struct AlignRoi {
  int64_t n = -1;
  AlignAxis<A> y, x;
  bool ok = false;

  AlignRoi(const A* roi, const RoiShape& s, A scale, bool aligned, int64_t ratio) {
    n = RoiBatchIndex(roi, s.n);
    if (n < 0) return;
    x = RoiAlignAxis(roi[1], roi[3], scale, aligned, s.pw, ratio);
    y = RoiAlignAxis(roi[2], roi[4], scale, aligned, s.ph, ratio);
    ok = x.ok && y.ok;
  }
  // Divisor of the avg mode: every grid sample counts, inside the map or not.
  A Count() const { return static_cast<A>(std::max<int64_t>(y.grid * x.grid, 1)); }
};

// Gradient accumulation target of one backward task (image n, channels [c0, c0 + cb)). For
// 32/64-bit features it is the output itself; 16-bit gradients accumulate in float in a
// task-local buffer and are rounded once when the task ends.
template <typename T, typename A, bool kChannelsLast>
struct GradTarget {
  T* out;        // features-shaped gradient buffer
  RoiShape s;
  int64_t n, c0, cb;
  std::vector<A> scratch;
  A* base;
  int64_t sc, sy, sx;  // strides of (channel, row, column) relative to base

  static constexpr bool kDirect = std::is_same<T, A>::value;

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
    for (int64_t c = 0; c < cb; ++c)
      for (int64_t y = 0; y < s.h; ++y)
        for (int64_t x = 0; x < s.w; ++x) {
          const int64_t o = kChannelsLast ? ((n * s.h + y) * s.w + x) * s.c + c0 + c
                                          : ((n * s.c + c0 + c) * s.h + y) * s.w + x;
          out[o] = Store<T>(base[c * sc + y * sy + x * sx]);
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

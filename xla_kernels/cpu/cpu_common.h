// CPU plumbing shared by the roi kernels: the parallel loop on XLA's intra-op pool, dtype
// dispatch, and the per-roi banded interpolation weights.
#ifndef JAX_ROI_CPU_COMMON_H_
#define JAX_ROI_CPU_COMMON_H_

#include <algorithm>
#include <cstring>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "jax_roi/dtypes.h"
#include "jax_roi/ffi_checks.h"
#include "jax_roi/roi_call.h"
#include "jax_roi/roi_shape.h"
#include "jax_roi/roi_math.h"
#include "xla/ffi/api/ffi.h"
#include "half_lanes.h"

namespace jax_roi {
namespace cpu {

namespace ffi = xla::ffi;

// The hot loops are compiled twice, for baseline x86-64 (SSE2) and for AVX2, and the loader
// picks one per machine (GCC function multiversioning, an ifunc). Each lane of a vector does
// the scalar code's operations in the scalar code's order, and -ffp-contract=off holds in
// both clones, so both give the same bits; AVX2 only does twice the lanes per instruction.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(JAX_ROI_NO_MULTIVERSION)
#define JAX_ROI_CPU_KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define JAX_ROI_CPU_KERNEL
#endif

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

// ParallelFor over phases run one after another: fn(i, t) for t in [0, counts[i]) starts only
// once every task of the phases before i has returned (an earlier phase fills what a later
// one reads). Tasks are handed out in order, so a thread that takes a task of phase i waits
// at most for the tasks of earlier phases that other threads are still running. Nothing of
// phase i can finish before all earlier phases have, so one counter of finished tasks says
// when they have (an empty phase included).
template <typename F>
ffi::Future ParallelPhases(ffi::ThreadPool& pool, std::vector<int64_t> counts, int64_t work,
                           F fn) {
  std::vector<int64_t> first(counts.size() + 1, 0);
  for (size_t i = 0; i < counts.size(); ++i) first[i + 1] = first[i] + counts[i];
  auto finished = std::make_shared<std::atomic<int64_t>>(0);
  return ParallelFor(pool, first.back(), work, [=](int64_t t) {
    const int64_t i = std::upper_bound(first.begin(), first.end(), t) - first.begin() - 1;
    while (finished->load(std::memory_order_acquire) < first[i]) std::this_thread::yield();
    fn(i, t - first[i]);
    finished->fetch_add(1, std::memory_order_release);
  });
}

// ParallelPhases with two: `prep` preparation tasks, then `tasks` main tasks.
template <typename Prep, typename F>
ffi::Future ParallelForAfter(ffi::ThreadPool& pool, int64_t prep, Prep prep_fn, int64_t tasks,
                             int64_t work, F fn) {
  return ParallelPhases(pool, {prep, tasks}, work, [=](int64_t i, int64_t t) {
    if (i == 0) prep_fn(t);
    else fn(t);
  });
}

// Asks the kernel to back the whole 2 MiB pages inside [data, data + bytes) with huge pages
// when first touched. XLA's CPU allocator takes large buffers (a gradient of 2 x 256 x 200 x
// 304 floats is 124 MiB) straight from mmap on every call, so writing one faults in every 4
// KiB page afresh: measured, that was 40% of the time of the roi_align backward. A hint only:
// pages already present, or a kernel without transparent huge pages, are unaffected.
inline void PreferHugePages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (bytes < 4 * kHuge) return;
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#endif
}

// Bytes of a feature-map-shaped buffer of `elem_bytes` elements.
inline size_t FeatureBytes(const RoiShape& s, size_t elem_bytes) {
  return static_cast<size_t>(s.n * s.c * s.h * s.w) * elem_bytes;
}

// Most channels one task handles (the max kernels keep per-channel state on the stack).
constexpr int64_t kMaxChannelBlock = 64;

// Channels per task: as many as keep `bytes_per_channel * block` within `budget`, between
// a least (NHWC: 16 floats, a cache line per pixel and full vectors; NCHW: `least_nchw`) and
// kMaxChannelBlock.
inline int64_t CacheChannelBlock(const RoiShape& s, int64_t bytes_per_channel, int64_t budget,
                                 int64_t least_nchw) {
  const int64_t least = std::min<int64_t>(s.c, s.channels_last ? 16 : least_nchw);
  const int64_t fit = budget / std::max<int64_t>(1, bytes_per_channel);
  return std::max<int64_t>(1, std::max(least, std::min(std::min(s.c, kMaxChannelBlock), fit)));
}

// The order in which the forwards visit rois: by image, then along a Z-order curve of the
// box centres in map pixels. Proposals arrive in score order, scattered over the map; in this
// order the tasks running at the same time, and one after another, read overlapping pixels,
// which they then find in the shared L3 instead of memory (box head on a 200x304 map, NHWC,
// 2 cores: 1.1x to 1.4x faster by median, in runs alternated with the index order). Each roi
// writes only its own output, so the order changes no result. Keys are integers (non-finite
// or out-of-range coordinates clamp), so any box values sort.
template <typename A>
std::vector<int64_t> LocalityOrder(const A* rois, int64_t k, double scale) {
  auto cell = [](double v) -> uint64_t {
    return v > 0 ? static_cast<uint64_t>(std::min(v, 65535.0)) : 0;  // NaN: 0
  };
  // Bits of x at the even positions of a 32-bit word.
  auto spread = [](uint64_t x) {
    x = (x | (x << 8)) & 0x00FF00FFu;
    x = (x | (x << 4)) & 0x0F0F0F0Fu;
    x = (x | (x << 2)) & 0x33333333u;
    return (x | (x << 1)) & 0x55555555u;
  };
  const double half = 0.5 * scale;
  std::vector<std::pair<uint64_t, int64_t>> keys(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) {
    const A* b = rois + 5 * i;
    const uint64_t x = cell((static_cast<double>(b[1]) + static_cast<double>(b[3])) * half);
    const uint64_t y = cell((static_cast<double>(b[2]) + static_cast<double>(b[4])) * half);
    keys[i] = {(cell(static_cast<double>(b[0])) << 32) | (spread(y) << 1) | spread(x), i};
  }
  std::sort(keys.begin(), keys.end());
  std::vector<int64_t> order(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) order[i] = keys[i].second;
  return order;
}

// Forward tasks: every (roi, channel block) pair. `cost` is the work per output element.
// NCHW runs them block-major with blocks of about 4 MiB of maps (a share of L3): both
// threads work through all rois of one block, so the block is read from memory once rather
// than once per roi (with a 200x304 map and 256 channels the maps are 60 MiB per image, and
// roi-major order streamed each roi's window of every plane from DRAM: 2.1x slower).
// NHWC runs roi-major with blocks of `nhwc_block` channels (64 for the max kernels, whose
// per-channel state lives on the stack; 256 for avg): a pixel's channels are contiguous, so
// one roi's window is a few contiguous KiB per pixel row (block-major with narrow blocks read
// 64 bytes of every 1 KiB pixel: 1.7x slower; avg with 256-channel rather than 64-channel
// blocks reads each pixel as one run, which the prefetcher follows: 1.1x to 1.4x faster).
// Within either order the rois are visited in LocalityOrder.
template <typename A, typename Task>
ffi::Future RunPerRoi(ffi::ThreadPool& pool, const RoiShape& s, const A* rois, double scale,
                      int64_t elem_bytes, int64_t cost, Task task,
                      int64_t nhwc_block = kMaxChannelBlock) {
  const bool block_major = !s.channels_last;
  const int64_t cb = block_major
                         ? CacheChannelBlock(s, s.n * s.h * s.w * elem_bytes, int64_t{4} << 20, 4)
                         : std::max<int64_t>(1, std::min(s.c, nhwc_block));
  const int64_t blocks = CeilDiv(s.c, cb);
  auto order = std::make_shared<const std::vector<int64_t>>(LocalityOrder(rois, s.k, scale));
  return ParallelFor(pool, s.k * blocks, s.k * s.c * s.ph * s.pw * cost, [=](int64_t t) {
    const int64_t k = (*order)[block_major ? t % s.k : t / blocks];
    const int64_t c0 = (block_major ? t / s.k : t % blocks) * cb;
    task(k, c0, std::min(cb, s.c - c0));
  });
}

// Backward tasks: every (image, channel block) pair, each walking every roi of its image;
// the block's gradient (accumulated in `accum_bytes` elements, about 512 KiB: L2) stays in
// cache meanwhile. `cost` is the work per pooled element.
template <typename Task>
ffi::Future RunPerImage(ffi::ThreadPool& pool, const RoiShape& s, int64_t accum_bytes,
                        int64_t cost, Task task) {
  const int64_t cb = CacheChannelBlock(s, s.h * s.w * accum_bytes, int64_t{1} << 19, 16);
  const int64_t blocks = CeilDiv(s.c, cb);
  return ParallelFor(pool, s.n * blocks, s.n * s.c * s.h * s.w + s.k * s.c * s.ph * s.pw * cost,
                     [=](int64_t t) {
                       const int64_t n = t / blocks, c0 = (t % blocks) * cb;
                       task(n, c0, std::min(cb, s.c - c0));
                     });
}

// The interpolation taps of one roi along one axis, per bin: the distinct pixels that the
// bin's inside samples touch, ascending, each with its summed weight. Bilinear weights factor
// into a row part and a column part, and the out-of-map test does too, so the sum over a
// gh x gw grid of samples equals
//   sum_r sum_u Wy[r] * Wx[u] * v[pixel_y[r], pixel_x[u]]
// which costs (taps_y x taps_x) per bin and channel instead of 4 * gh * gw. A bin has at
// most min(2 * grid, bin width + 2) taps: small bins with many samples share pixels, large
// bins with few samples (a 20-pixel bin at sampling_ratio 2) keep only the 4 they touch.
//
// All bins of one roi get the same tap count (the largest, padded with zero weights on a
// valid pixel): the inner loops then have one trip count per roi, which the kernels
// specialise on (no data-dependent branches in the hot loop).
template <typename A>
struct AxisTaps {
  std::vector<int64_t> pixel;  // [P, len]
  std::vector<A> weight;       // [P, len]
  int64_t len = 0;
  bool band = false;           // pixel[p, j] == first[p] + j
  std::vector<int64_t> first;  // [P]

  // Every weight is divided by `divisor` (the backward folds the mean's count in once).
  void Build(const AlignAxis<A>& axis, int64_t pooled, int64_t size, A divisor = A(1)) {
    bin_start_.assign(pooled + 1, 0);
    px_.clear();
    w_.clear();
    len = 0;
    Lerp<A> t;
    for (int64_t p = 0; p < pooled; ++p) {
      const SampleRun run = InsideRun(axis, p, size);
      const size_t begin = px_.size();
      auto add = [&](int64_t at, A w) {
        // Samples move monotonically, so a pixel seen before is among the last three
        // entries. (Missing a repeat would only split its weight over two taps.)
        const size_t n = px_.size(), stop = std::max(begin, n >= 3 ? n - 3 : size_t{0});
        for (size_t j = n; j > stop; --j) {
          if (px_[j - 1] == at) {
            w_[j - 1] += w;
            return;
          }
        }
        px_.push_back(at);
        w_.push_back(w);
      };
      for (int64_t i = run.lo; i < run.hi; ++i) {
        if (!LerpAt(SampleCoord(axis, p, i), size, &t)) continue;
        add(t.lo, t.wlo);
        add(t.hi, t.whi);
      }
      bin_start_[p + 1] = static_cast<int64_t>(px_.size());
      len = std::max<int64_t>(len, bin_start_[p + 1] - bin_start_[p]);
    }
    // Dense bins (the usual case: bins of a few pixels) become bands of consecutive pixels,
    // which NCHW kernels read without the pixel table, as one short contiguous run.
    int64_t span = 0;
    for (int64_t p = 0; p < pooled; ++p) {
      const int64_t b = bin_start_[p], e = bin_start_[p + 1];
      if (e == b) continue;
      const auto mm = std::minmax_element(px_.begin() + b, px_.begin() + e);
      span = std::max<int64_t>(span, *mm.second - *mm.first + 1);
    }
    band = span <= len + 1;
    if (band) len = span;
    first.assign(pooled, 0);
    pixel.assign(static_cast<size_t>(pooled * len), 0);
    weight.assign(static_cast<size_t>(pooled * len), A(0));
    if (band) {
      for (int64_t p = 0; p < pooled; ++p) {
        const int64_t b = bin_start_[p], e = bin_start_[p + 1];
        // Shifted to stay inside the map; a bin with no inside sample keeps zero weights.
        first[p] = e > b ? std::min(*std::min_element(px_.begin() + b, px_.begin() + e),
                                    size - len)
                         : 0;
        for (int64_t j = 0; j < len; ++j) pixel[p * len + j] = first[p] + j;
        for (int64_t j = b; j < e; ++j) weight[p * len + px_[j] - first[p]] += w_[j] / divisor;
      }
      return;
    }
    for (int64_t p = 0; p < pooled; ++p) {
      const int64_t b = bin_start_[p], n = bin_start_[p + 1] - b;
      // Ascending pixels: a descending axis (reversed box) reads memory forwards too.
      order_.resize(n);
      for (int64_t j = 0; j < n; ++j) order_[j] = j;
      std::sort(order_.begin(), order_.end(),
                [&](int64_t a, int64_t c) { return px_[b + a] < px_[b + c]; });
      for (int64_t j = 0; j < len; ++j) {
        // Padding repeats a valid pixel (or pixel 0 for a bin with no inside sample).
        const int64_t src = j < n ? b + order_[j] : (n > 0 ? b + order_[n - 1] : -1);
        pixel[p * len + j] = src >= 0 ? px_[src] : 0;
        weight[p * len + j] = j < n ? w_[src] / divisor : A(0);
      }
    }
  }
  const int64_t* Pixels(int64_t p) const { return pixel.data() + p * len; }
  const A* Weights(int64_t p) const { return weight.data() + p * len; }

 private:
  std::vector<int64_t> bin_start_, px_, order_;
  std::vector<A> w_;
};

// The transpose of AxisTaps: the distinct pixels that any bin of the roi touches along one
// axis, ascending, and for each the (bin, weight) pairs that reach it, bins ascending. The
// backward sums a pixel's contributions through it before one update of the gradient,
// instead of one read-modify-write per (bin, tap): neighbouring bins share pixels.
template <typename A>
struct AxisFootprint {
  std::vector<int64_t> pixel;  // [n]
  std::vector<int64_t> start;  // [n + 1]: pixel i's pairs are [start[i], start[i + 1])
  std::vector<int64_t> bin;
  std::vector<A> weight;
  bool contiguous = false;     // pixel[i] == pixel[0] + i

  void Build(const AxisTaps<A>& taps, int64_t pooled) {
    entries_.clear();
    for (int64_t p = 0; p < pooled; ++p)
      for (int64_t j = 0; j < taps.len; ++j) {
        const A w = taps.Weights(p)[j];
        // Padding and untouched band pixels carry no weight.
        if (w != A(0)) entries_.push_back({taps.Pixels(p)[j], p, w});
      }
    std::stable_sort(entries_.begin(), entries_.end(),
                     [](const Entry& a, const Entry& b) { return a.pixel < b.pixel; });
    pixel.clear();
    start.assign(1, 0);
    bin.clear();
    weight.clear();
    for (const Entry& e : entries_) {
      if (pixel.empty() || pixel.back() != e.pixel) {
        if (!pixel.empty()) start.push_back(static_cast<int64_t>(bin.size()));
        pixel.push_back(e.pixel);
      }
      bin.push_back(e.bin);
      weight.push_back(e.w);
    }
    start.push_back(static_cast<int64_t>(bin.size()));
    if (pixel.empty()) start.assign(1, 0);
    contiguous = pixel.empty() || pixel.back() - pixel.front() + 1 == static_cast<int64_t>(pixel.size());
  }
  int64_t size() const { return static_cast<int64_t>(pixel.size()); }

 private:
  struct Entry {
    int64_t pixel, bin;
    A w;
  };
  std::vector<Entry> entries_;
};

// Calls fn(std::integral_constant<int, L>) with L = n for the common tap counts (2 to 5)
// and L = 0 (count known only at run time) otherwise.
template <typename F>
inline void WithTapCount(int64_t n, F&& fn) {
  switch (n) {
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 5: return fn(std::integral_constant<int, 5>{});
    default: return fn(std::integral_constant<int, 0>{});
  }
}

// 32 bytes of accumulators as one GCC vector-extension value: an AVX register in the AVX2
// clone, two SSE registers in the baseline one. Written out because the auto-vectoriser
// split a 16-float accumulator array into 8 + 4 + 2 + 1 + 1 lanes. Lane arithmetic is the
// scalar code's, in its order (no fusion: -ffp-contract=off), so results are the same bits.
template <typename A>
struct Lanes {
  typedef A type __attribute__((vector_size(32)));
  static constexpr int64_t kCount = 32 / sizeof(A);
};
static_assert(std::is_same<Lanes<float>::type, Float8>::value, "half_lanes.h works on Float8");

// Lanes<A> at any address of an A: a typed vector move (one 32-byte instruction) where a
// 32-byte memcpy is expanded into 16-byte halves through the stack.
template <typename A>
struct UnalignedLanes {
  typedef A type __attribute__((vector_size(32), aligned(alignof(A)), may_alias));
};

// kCount consecutive elements of T widened to A. Through a pointer, and always inlined: a
// 32-byte vector passed by value has a different ABI in the AVX2 and baseline clones.
template <typename A, typename T>
__attribute__((always_inline)) inline void LoadLanes(const T* p, typename Lanes<A>::type* v) {
  if constexpr (std::is_same<T, A>::value) {
    *v = *reinterpret_cast<const typename UnalignedLanes<A>::type*>(p);
  } else if constexpr (std::is_same<T, Half>::value && std::is_same<A, float>::value) {
    HalfLanesToFloat(&p->bits, v);
  } else {
    for (int64_t i = 0; i < Lanes<A>::kCount; ++i) (*v)[i] = Load<A>(p[i]);
  }
}

// kCount accumulators rounded once into consecutive elements of T.
template <typename A, typename T>
__attribute__((always_inline)) inline void StoreLanes(const typename Lanes<A>::type* v, T* p) {
  if constexpr (std::is_same<T, A>::value) {
    *reinterpret_cast<typename UnalignedLanes<A>::type*>(p) = *v;
  } else if constexpr (std::is_same<T, Half>::value && std::is_same<A, float>::value) {
    FloatLanesToHalf(v, &p->bits);
  } else {
    for (int64_t i = 0; i < Lanes<A>::kCount; ++i) p[i] = Store<T>((*v)[i]);
  }
}

// src[0..n) / divisor rounded once into dst[0..n), kCount lanes at a time (division by 1 is
// exact, so finishes that only round pass A(1)).
template <typename A, typename T>
__attribute__((always_inline)) inline void StoreRun(const A* src, int64_t n, A divisor, T* dst) {
  using V = typename Lanes<A>::type;
  constexpr int64_t kL = Lanes<A>::kCount;
  int64_t i = 0;
  for (; i + kL <= n; i += kL) {
    V v;
    LoadLanes<A>(src + i, &v);
    v /= divisor;
    StoreLanes<A>(&v, dst + i);
  }
  for (; i < n; ++i) dst[i] = Store<T>(src[i] / divisor);
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

// The CPU kernels' plumbing: futures, the parallel loops on XLA's intra-op pool, the task
// layouts of the forwards and backwards, the roi visiting order, the huge-page hint.
#ifndef JAX_ROI_CPU_PARALLEL_H_
#define JAX_ROI_CPU_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "jax_roi/ffi_checks.h"
#include "jax_roi/roi_math.h"
#include "jax_roi/roi_shape.h"
#include "xla/ffi/api/ffi.h"

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
// KiB page afresh, a large share of a backward's time. A hint only:
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
// which they then find in the shared L3 instead of memory. Each roi
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
// than once per roi (roi-major order streams each roi's window of every plane from DRAM).
// NHWC runs roi-major with blocks of `nhwc_block` channels (64 for the max kernels, whose
// per-channel state lives on the stack; 256 for avg): a pixel's channels are contiguous, so
// one roi's window is a few contiguous KiB per pixel row (block-major with narrow blocks
// reads a sliver of every pixel; avg's wide blocks read each pixel as one run, which the
// prefetcher follows).
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

}  // namespace cpu
}  // namespace jax_roi

#endif  // JAX_ROI_CPU_PARALLEL_H_

// roi_align on the CPU: avg and max modes, forward and backward, NCHW and NHWC.
//
// Forward tasks are (roi, channel block) pairs; backward tasks are (image, channel block)
// pairs that walk every roi of their image in order, so each gradient element has one writer
// and a fixed summation order: bitwise-deterministic results for any thread count.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "cpu_common.h"
#include "jax_roi/dtypes.h"
#include "cpu_kernels.h"
#include "jax_roi/roi_math.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cpu {
namespace {

// Roi k's pooled elements over channels [c0, c0 + cb) of `out` ([K, C, PH, PW] or
// [K, PH, PW, C]) set to `value`. Written as contiguous runs in memory order (a bin's
// channels in NHWC, a block of planes in NCHW): padding rows (batch index -1) are common in
// batched proposals, and channel-major NHWC stores, 1 KiB apart, made an all-padding
// forward 2x slower than a real one.
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
// sequential streams for the prefetcher (all cb planes at once, 32 streams and more, was
// 1.06-1.18x slower on 200x304 maps).
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

// ----------------------------------------------------------------------------------------
// avg
// ----------------------------------------------------------------------------------------

// One bin's avg over kN vectors of channels: kN independent accumulation chains. A chain
// adds its taps one after another (no reassociation: the scalar order's bits), so with two
// chains their add latency, not the loads, set the pace; four were 1.1-2x faster, eight no
// faster than four.
template <int kN, typename T, typename D, typename A>
__attribute__((always_inline)) inline void AvgBinChunk(const T* image, int64_t pixel,
                                                       int64_t row, const int64_t* py,
                                                       const A* wy, int64_t ly,
                                                       const int64_t* px, const A* wx,
                                                       int64_t lx, A count, D* o) {
  static_assert(kN == 2 || kN == 4, "two or four vectors");
  using V = typename Lanes<A>::type;
  constexpr int64_t kL = Lanes<A>::kCount;
  // Named registers, not an array: an array of vectors is zeroed and stored through the stack.
  V a0 = {}, a1 = {}, a2 = {}, a3 = {};
  for (int64_t r = 0; r < ly; ++r) {
    const T* line = image + py[r] * row;
    for (int64_t u = 0; u < lx; ++u) {
      const V w = V{} + wy[r] * wx[u];
      const T* v = line + px[u] * pixel;
      V x0, x1;
      LoadLanes<A>(v, &x0);
      LoadLanes<A>(v + kL, &x1);
      a0 += w * x0;
      a1 += w * x1;
      if constexpr (kN == 4) {
        V x2, x3;
        LoadLanes<A>(v + 2 * kL, &x2);
        LoadLanes<A>(v + 3 * kL, &x3);
        a2 += w * x2;
        a3 += w * x3;
      }
    }
  }
  a0 /= count;
  a1 /= count;
  StoreLanes<A>(&a0, o);
  StoreLanes<A>(&a1, o + kL);
  if constexpr (kN == 4) {
    a2 /= count;
    a3 /= count;
    StoreLanes<A>(&a2, o + 2 * kL);
    StoreLanes<A>(&a3, o + 3 * kL);
  }
}

// The avg of every bin of one roi over cb channels-last channels. `image` points at the first
// channel of pixel (0, 0), pixels `pixel` elements apart and rows `row` apart; bin (p, q)'s cb
// results go to dst + (p * pw + q) * bin_step. Vectors of channels in AvgBinChunk, the taps
// as its inner loops: each feature vector is loaded once per tap and the accumulators never
// touch memory.
template <typename T, typename D, typename A>
__attribute__((always_inline)) inline void AvgBinsChannelsLast(
    const T* image, int64_t pixel, int64_t row, int64_t cb, const AxisTaps<A>& ty,
    const AxisTaps<A>& tx, A count, int64_t ph, int64_t pw, D* dst, int64_t bin_step) {
  constexpr int64_t kL = Lanes<A>::kCount;
  for (int64_t p = 0; p < ph; ++p) {
    const int64_t* py = ty.Pixels(p);
    const A* wy = ty.Weights(p);
    for (int64_t q = 0; q < pw; ++q) {
      const int64_t* px = tx.Pixels(q);
      const A* wx = tx.Weights(q);
      D* o = dst + (p * pw + q) * bin_step;
      int64_t c = 0;
      for (; c + 4 * kL <= cb; c += 4 * kL)
        AvgBinChunk<4>(image + c, pixel, row, py, wy, ty.len, px, wx, tx.len, count, o + c);
      for (; c + 2 * kL <= cb; c += 2 * kL)
        AvgBinChunk<2>(image + c, pixel, row, py, wy, ty.len, px, wx, tx.len, count, o + c);
      for (; c < cb; ++c) {
        A acc = A(0);
        for (int64_t r = 0; r < ty.len; ++r)
          for (int64_t u = 0; u < tx.len; ++u)
            acc += wy[r] * wx[u] * Load<A>(image[py[r] * row + px[u] * pixel + c]);
        o[c] = Store<D>(acc / count);
      }
    }
  }
}

constexpr int64_t kAvgFwdNhwcBlock = 256;

template <typename T, bool kChannelsLast>
JAX_ROI_CPU_KERNEL void AlignAvgFwdTask(const T* feat, const typename Accum<T>::type* rois, T* out,
                     const RoiShape& s, const RoiParams& params, int64_t k, int64_t c0,
                     int64_t cb) {
  using A = typename Accum<T>::type;
  const AvgRoiTaps<A>* taps = BuildAvgRoiTaps<A>(rois, k, s, params);
  if (!taps) return ZeroRoiOutput<T, kChannelsLast>(out, s, k, c0, cb);
  const AxisTaps<A>& ty = taps->y;
  const AxisTaps<A>& tx = taps->x;
  const A count = taps->count;
  const T* image = feat + FeatureIndex<kChannelsLast>(s, taps->n, c0, 0, 0);
  if (kChannelsLast) {
    AvgBinsChannelsLast(image, s.c, s.w * s.c, cb, ty, tx, count, s.ph, s.pw,
                        out + PooledIndex<kChannelsLast>(s, k, c0, 0, 0), s.c);
  } else {
    // kG channel planes at once: kG independent accumulation chains per bin keep the FP
    // pipeline busy where one chain would wait on its own additions.
    const int64_t hw = s.h * s.w;
    thread_local std::vector<A> sums;
    sums.resize(static_cast<size_t>(cb * s.ph * s.pw));
    // A band of x taps is read as a contiguous run (no pixel table).
    auto planes = [&](auto lx, auto group, auto is_band, int64_t c) {
      constexpr int kL = decltype(lx)::value;
      constexpr int kG = decltype(group)::value;
      constexpr bool kBand = decltype(is_band)::value;
      const T* plane = image + c * hw;
      const int64_t lx_n = kL > 0 ? kL : tx.len;
      for (int64_t p = 0; p < s.ph; ++p) {
        const int64_t* py = ty.Pixels(p);
        const A* wy = ty.Weights(p);
        for (int64_t q = 0; q < s.pw; ++q) {
          const int64_t* px = tx.Pixels(q);
          const int64_t fx = tx.first[q];
          const A* wx = tx.Weights(q);
          A acc[kG] = {};
          for (int64_t r = 0; r < ty.len; ++r) {
            const T* row = plane + py[r] * s.w;
            for (int64_t u = 0; u < lx_n; ++u) {
              const A w = wy[r] * wx[u];
              const int64_t x = kBand ? fx + u : px[u];
              for (int j = 0; j < kG; ++j) acc[j] += w * Load<A>(row[j * hw + x]);
            }
          }
          for (int j = 0; j < kG; ++j) sums[(c + j) * s.ph * s.pw + p * s.pw + q] = acc[j];
        }
      }
    };
    auto run = [&](auto is_band) {
      WithTapCount(tx.len, [&](auto lx) {
        int64_t c = 0;
        for (; c + 4 <= cb; c += 4) planes(lx, std::integral_constant<int, 4>{}, is_band, c);
        for (; c < cb; ++c) planes(lx, std::integral_constant<int, 1>{}, is_band, c);
      });
    };
    if (tx.band) run(std::true_type{});
    else run(std::false_type{});
    // One vectorisable pass of divisions for the whole block: a divide per bin inside the
    // bin loop stalls on its latency.
    StoreRun(sums.data(), cb * s.ph * s.pw, count, out + PooledIndex<kChannelsLast>(s, k, c0, 0, 0));
  }
}

// The NCHW avg forward can run through a channels-last copy of a block of channels, for the
// NHWC loop above, which reads a pixel's channels as vectors where the plane loop reads them
// one scalar per plane. The copy holds the accumulator type (16-bit maps are widened once,
// not at every tap). It is a temporary: a block takes at most the output's bytes, and at
// most 16 MiB so that it stays in the L3 while every roi reads it; blocks are whole 16-lane
// chunks. A call whose output cannot hold 16 channels of the copy (a few rois on large maps)
// keeps the plane loop. Box head, N=2, C=256, float32, 2 cores: on 64x64 maps the copy is one
// block of all channels, on 200x304 maps 8 blocks of 32 (float16: 16 of 16).
constexpr int64_t kTileBytes = int64_t{16} << 20;

inline int64_t TileChannels(const RoiShape& s, int64_t tile_elem_bytes, int64_t out_elem_bytes) {
  if (s.n * s.h * s.w == 0) return 0;
  const int64_t per_channel = s.n * s.h * s.w * tile_elem_bytes;
  const int64_t budget = std::min(s.k * s.c * s.ph * s.pw * out_elem_bytes, kTileBytes);
  const int64_t fit = std::min(s.c, budget / per_channel);
  if (fit < std::min<int64_t>(s.c, 16)) return 0;
  return fit == s.c ? fit : fit - fit % 16;  // whole 16-lane chunks (the loop's vector width)
}

// Rows [y0, y1) of image n, channels [c0, c0 + cb), into the [N, H, W, cb] tile, widened to
// the accumulator type once here rather than at every tap.
template <typename T>
JAX_ROI_CPU_KERNEL void CopyToTile(const T* feat, const RoiShape& s, int64_t c0, int64_t cb,
                                   int64_t n, int64_t y0, int64_t y1,
                                   typename Accum<T>::type* tile) {
  for (int64_t y = y0; y < y1; ++y)
    FromPlanes(feat + FeatureIndex<false>(s, n, c0, y, 0), s.h * s.w, s.w, cb,
               tile + ((n * s.h + y) * s.w) * cb);
}

// One roi on the tile of channels [c0, c0 + cb): the bins channels-last in a per-thread
// buffer, then one transpose into the roi's cb output planes. The same operations in the
// same order as the NHWC forward, so the same bits.
template <typename T>
JAX_ROI_CPU_KERNEL void AlignAvgFwdTileTask(const typename Accum<T>::type* tile,
                                            const typename Accum<T>::type* rois,
                                            T* out, const RoiShape& s, const RoiParams& params,
                                            int64_t k, int64_t c0, int64_t cb) {
  using A = typename Accum<T>::type;
  const AvgRoiTaps<A>* taps = BuildAvgRoiTaps<A>(rois, k, s, params);
  if (!taps) return ZeroRoiOutput<T, false>(out, s, k, c0, cb);
  const int64_t bins = s.ph * s.pw;
  // Rounded into T as they leave the registers, eight lanes at a time (as the NHWC forward
  // does); the transpose then only moves them.
  thread_local std::vector<T> sums;
  sums.resize(static_cast<size_t>(bins * cb));
  AvgBinsChannelsLast(tile + taps->n * s.h * s.w * cb, cb, s.w * cb, cb, taps->y, taps->x,
                      taps->count, s.ph, s.pw, sums.data(), cb);
  ToPlanes(sums.data(), bins, cb, out + PooledIndex<false>(s, k, c0, 0, 0), bins);
}

// Phases per block of channels: copy the block to the tile (tasks of about 256 KiB), then
// every roi on it, in LocalityOrder; the next block's copy waits for the last roi.
template <typename T>
ffi::Future AlignAvgFwdThroughTiles(ffi::ThreadPool& pool, const T* feat,
                                    const typename Accum<T>::type* rois, T* out,
                                    const RoiShape& s, const RoiParams& params, int64_t cb) {
  using A = typename Accum<T>::type;
  const int64_t rows = std::max<int64_t>(
      1, (int64_t{1} << 18) / (s.w * cb * static_cast<int64_t>(sizeof(A))));
  const int64_t chunks = CeilDiv(s.h, rows);
  std::vector<int64_t> phases;
  for (int64_t c0 = 0; c0 < s.c; c0 += cb) {
    phases.push_back(s.n * chunks);
    phases.push_back(s.k);
  }
  const size_t tile_size = static_cast<size_t>(s.n * s.h * s.w * cb);
  std::shared_ptr<A[]> tile(new A[tile_size]);
  PreferHugePages(tile.get(), tile_size * sizeof(A));
  auto order = std::make_shared<const std::vector<int64_t>>(LocalityOrder(rois, s.k, params.scale));
  const int64_t work = s.n * s.c * s.h * s.w + s.k * s.c * s.ph * s.pw * 16;
  return ParallelPhases(pool, std::move(phases), work, [=](int64_t phase, int64_t t) {
    const int64_t c0 = phase / 2 * cb, block = std::min(cb, s.c - c0);
    if (phase % 2 == 0) {
      const int64_t n = t / chunks, y0 = t % chunks * rows;
      CopyToTile(feat, s, c0, block, n, y0, std::min(s.h, y0 + rows), tile.get());
    } else {
      AlignAvgFwdTileTask(tile.get(), rois, out, s, params, (*order)[t], c0, block);
    }
  });
}

// The avg backward's geometry of one roi, built once per call and read by every band task
// that the roi reaches: the rows and columns it touches, each with the (bin, weight) pairs
// that reach it; the row weights carry the mean's 1/count.
template <typename A>
struct AvgBwdRoi {
  AxisFootprint<A> fy, fx;
};

// Which rows of which image one roi reaches: the band tasks scan these (24 bytes per roi)
// rather than the footprints themselves.
struct RowSpan {
  int64_t n = -1;  // -1: the roi adds nothing
  int64_t lo = 0, hi = 0;
};

template <typename A>
struct AvgBwdTable {
  std::vector<AvgBwdRoi<A>> roi;
  std::vector<RowSpan> span;
  // NCHW only: the incoming gradient as [K, PH, PW, C] (rois that add nothing are left
  // unset), so that both layouts run the same channels-innermost loop.
  std::unique_ptr<A[]> grad_cl;
};

// A table for one backward call, from the tables of finished calls where one is idle: the
// footprints are a few small vectors per roi, and allocating them afresh (about 5000 mallocs
// and frees for the box head) was 8% of the backward on 64x64 maps. A reused table keeps its
// vectors' capacity; the channels-last copy of the gradient is freed with each call. The
// idle list lives on the heap, never destroyed, so a call that finishes during exit is safe.
template <typename A>
std::shared_ptr<AvgBwdTable<A>> AcquireAvgBwdTable() {
  struct Idle {
    std::mutex mu;
    std::vector<AvgBwdTable<A>*> tables;
  };
  static Idle* idle = new Idle;
  AvgBwdTable<A>* table = nullptr;
  {
    std::lock_guard<std::mutex> lock(idle->mu);
    if (!idle->tables.empty()) {
      table = idle->tables.back();
      idle->tables.pop_back();
    }
  }
  if (!table) table = new AvgBwdTable<A>;
  return std::shared_ptr<AvgBwdTable<A>>(table, [](AvgBwdTable<A>* t) {
    t->grad_cl.reset();
    std::lock_guard<std::mutex> lock(idle->mu);
    // As many as calls run at once, in practice one or two.
    if (idle->tables.size() < 8) idle->tables.push_back(t);
    else delete t;
  });
}

template <typename A>
void BuildAvgBwdRoi(const A* rois, int64_t k, const RoiShape& s, const RoiParams& params,
                    AvgBwdTable<A>* table) {
  RowSpan& span = table->span[k];
  span = RowSpan{};
  const AvgRoiTaps<A>* taps = BuildAvgRoiTaps<A>(rois, k, s, params, /*fold_count=*/true);
  if (!taps) return;
  AvgBwdRoi<A>& r = table->roi[k];
  r.fy.Build(taps->y, s.ph);
  r.fx.Build(taps->x, s.pw);
  if (r.fy.size() == 0 || r.fx.size() == 0) return;
  span = RowSpan{taps->n, r.fy.pixel.front(), r.fy.pixel.back() + 1};
}

// Copies roi k's gradient [C, PH, PW] to [PH, PW, C], widened to the accumulator type.
template <typename T, typename A>
JAX_ROI_CPU_KERNEL void TransposeRoiGrad(const T* grad, int64_t k, const RoiShape& s, A* out) {
  const int64_t bins = s.ph * s.pw;
  FromPlanes(grad + k * s.c * bins, bins, bins, s.c, out + k * s.c * bins);
}

// Backward tasks: (image, band of rows, channel block), each band's gradient about 512 KiB of
// accumulators (L2), so that the read-modify-writes of overlapping rois hit cache and the
// output is written to memory once. A band holds every channel when a row of them fits
// (NHWC: the band is then one contiguous piece of the output), else 64.
struct BandPlan {
  int64_t rows, bands, cb, blocks;
};

inline BandPlan PlanBands(const RoiShape& s, int64_t accum_bytes) {
  constexpr int64_t kBudget = int64_t{1} << 19;
  const int64_t pixel = std::max<int64_t>(1, s.w) * accum_bytes;
  const int64_t cb =
      std::max<int64_t>(1, s.c * pixel <= kBudget ? s.c : std::min<int64_t>(s.c, 64));
  const int64_t rows = std::max<int64_t>(1, std::min(s.h, kBudget / (pixel * cb)));
  return BandPlan{rows, CeilDiv(s.h, rows), cb, CeilDiv(s.c, cb)};
}

// The gradient of one band task (image n, rows [y0, y1), channels [c0, c0 + cb)), always
// channels-last so that a pixel's channels are one vector run whatever the layout. It is the
// output itself where that is one contiguous piece of it (NHWC with every channel, T its own
// accumulator); otherwise a [rows, W, cb] buffer that Finish rounds (16-bit) and, for NCHW,
// transposes into the output once.
template <typename T, typename A, bool kChannelsLast>
struct BandGradient {
  BandGradient(T* out, const RoiShape& s, int64_t n, int64_t y0, int64_t y1, int64_t c0,
               int64_t cb)
      : out_(out), s_(s), n_(n), y0_(y0), y1_(y1), c0_(c0), cb_(cb),
        direct_(kChannelsLast && std::is_same<T, A>::value && cb == s.c) {
    const size_t size = static_cast<size_t>((y1 - y0) * s.w * cb);
    if (direct_) {
      base_ = reinterpret_cast<A*>(out) + (n * s.h + y0) * s.w * s.c;
      std::fill(base_, base_ + size, A(0));
    } else {
      thread_local std::vector<A> scratch;
      scratch.assign(size, A(0));
      base_ = scratch.data();
    }
  }

  // The cb accumulators of pixel (y, x).
  A* At(int64_t y, int64_t x) const { return base_ + ((y - y0_) * s_.w + x) * cb_; }

  void Finish() const {
    if (direct_) return;
    if (kChannelsLast) {
      for (int64_t y = y0_; y < y1_; ++y)
        for (int64_t x = 0; x < s_.w; ++x) {
          T* o = out_ + ((n_ * s_.h + y) * s_.w + x) * s_.c + c0_;
          StoreRun(At(y, x), cb_, A(1), o);
        }
      return;
    }
    // The band's piece of every plane is cleared first: memset writes whole cache lines
    // without reading them from memory, and the transposed stores that follow then hit
    // cache instead of each fetching its line (measured: the transpose was stalled on
    // those fetches for most of its time).
    for (int64_t c = 0; c < cb_; ++c)
      std::memset(out_ + ((n_ * s_.c + c0_ + c) * s_.h + y0_) * s_.w, 0,
                  sizeof(T) * (y1_ - y0_) * s_.w);
    for (int64_t y = y0_; y < y1_; ++y)
      ToPlanes(At(y, 0), s_.w, cb_, out_ + ((n_ * s_.c + c0_) * s_.h + y) * s_.w, s_.h * s_.w);
  }

 private:
  T* out_;
  RoiShape s_;
  int64_t n_, y0_, y1_, c0_, cb_;
  bool direct_;
  A* base_;
};

// The avg backward is separable like its forward:
//   dF[y, x, c] += sum_(p, q) Wy[p](y) * Wx[q](x) * g[p, q, c]
// over the few (bin row, bin column) pairs that reach the pixel; a pixel's channels sum their
// pairs in registers before one update of the band (NCHW reads the channels-last copy of g
// and accumulates channels-last too; its band is transposed once at the end). Every gradient
// element is written by one task, the rois in index order: the same bits for any number of
// threads.
template <typename T, bool kChannelsLast>
JAX_ROI_CPU_KERNEL void AlignAvgBwdBandTask(const T* grad,
                                            const AvgBwdTable<typename Accum<T>::type>& table,
                                            T* dfeat, const RoiShape& s, int64_t n, int64_t y0,
                                            int64_t y1, int64_t c0, int64_t cb) {
  using A = typename Accum<T>::type;
  using V = typename Lanes<A>::type;
  constexpr int64_t kL = Lanes<A>::kCount, kV = 2 * kL;
  BandGradient<T, A, kChannelsLast> band(dfeat, s, n, y0, y1, c0, cb);
  thread_local std::vector<std::pair<int64_t, A>> pairs;  // (offset of g[p, q, 0], weight)
  // Sums sum_pairs w * g[pair + c] into d[c] for c in [0, cb); G is T (NHWC) or A (NCHW).
  auto accumulate = [&](const auto* g, A* d) {
    int64_t c = 0;
    for (; c + kV <= cb; c += kV) {
      V acc0 = {}, acc1 = {};
      for (const auto& pw : pairs) {
        const V w = V{} + pw.second;
        V x0, x1;
        LoadLanes<A>(g + pw.first + c, &x0);
        LoadLanes<A>(g + pw.first + c + kL, &x1);
        acc0 += w * x0;
        acc1 += w * x1;
      }
      V d0, d1;
      LoadLanes<A>(d + c, &d0);
      LoadLanes<A>(d + c + kL, &d1);
      d0 += acc0;
      d1 += acc1;
      StoreLanes<A>(&d0, d + c);
      StoreLanes<A>(&d1, d + c + kL);
    }
    for (; c < cb; ++c) {
      A acc = A(0);
      for (const auto& pw : pairs) acc += pw.second * Load<A>(g[pw.first + c]);
      d[c] += acc;
    }
  };
  for (int64_t k = 0; k < s.k; ++k) {
    const RowSpan span = table.span[k];
    if (span.n != n || span.hi <= y0 || span.lo >= y1) continue;
    const AxisFootprint<A>& fy = table.roi[k].fy;
    const AxisFootprint<A>& fx = table.roi[k].fx;
    const int64_t j0 = std::lower_bound(fy.pixel.begin(), fy.pixel.end(), y0) - fy.pixel.begin();
    const int64_t j1 = std::lower_bound(fy.pixel.begin(), fy.pixel.end(), y1) - fy.pixel.begin();
    for (int64_t j = j0; j < j1; ++j) {
      for (int64_t i = 0; i < fx.size(); ++i) {
        pairs.clear();
        for (int64_t e = fy.start[j]; e < fy.start[j + 1]; ++e)
          for (int64_t f = fx.start[i]; f < fx.start[i + 1]; ++f)
            pairs.emplace_back(PooledIndex<true>(s, k, c0, fy.bin[e], fx.bin[f]),
                               fy.weight[e] * fx.weight[f]);
        A* d = band.At(fy.pixel[j], fx.pixel[i]);
        if (kChannelsLast) accumulate(grad, d);
        else accumulate(table.grad_cl.get(), d);
      }
    }
  }
  band.Finish();
}

// ----------------------------------------------------------------------------------------
// max
// ----------------------------------------------------------------------------------------

// The inside samples of every bin along one axis, with their interpolation taps.
template <typename A>
struct AxisSamples {
  std::vector<SampleRun> run;    // [P]
  std::vector<int64_t> offset;   // [P] into taps
  std::vector<Lerp<A>> taps;     // tap.lo < 0 marks a sample that failed LerpAt
  void Build(const AlignAxis<A>& axis, int64_t pooled, int64_t size) {
    run.resize(pooled);
    offset.resize(pooled);
    taps.clear();
    for (int64_t p = 0; p < pooled; ++p) {
      run[p] = InsideRun(axis, p, size);
      offset[p] = static_cast<int64_t>(taps.size());
      for (int64_t i = run[p].lo; i < run[p].hi; ++i) {
        Lerp<A> t;
        if (!LerpAt(SampleCoord(axis, p, i), size, &t)) t = Lerp<A>{-1, -1, A(0), A(0)};
        taps.push_back(t);
      }
    }
  }
};

// The four taps of one inside sample, as offsets from the image's first channel.
template <typename A>
struct SampleTaps {
  int64_t o1, o2, o3, o4;
  A w1, w2, w3, w4;
  int32_t sample;  // grid index iy * gw + ix: the argmax
};

// Interpolated value of one sample; the sum order is the reference's (winners match bitwise).
template <typename T, typename A>
inline A SampleValue(const T* f, const SampleTaps<A>& t) {
  return t.w1 * Load<A>(f[t.o1]) + t.w2 * Load<A>(f[t.o2]) + t.w3 * Load<A>(f[t.o3]) +
         t.w4 * Load<A>(f[t.o4]);
}

template <typename T, bool kChannelsLast>
JAX_ROI_CPU_KERNEL void AlignMaxFwdTask(const T* feat, const typename Accum<T>::type* rois, T* out,
                     int32_t* argmax, const RoiShape& s, const RoiParams& params, int64_t k,
                     int64_t c0, int64_t cb) {
  using A = typename Accum<T>::type;
  const AlignRoiGeometry<A> roi = AlignRoiOf(rois, k, s, params);
  if (!roi.ok) {
    ZeroRoiOutput<T, kChannelsLast>(out, s, k, c0, cb);
    FillRoi<kChannelsLast>(argmax, s, k, c0, cb, int32_t{-1});
    return;
  }
  thread_local AxisSamples<A> sy, sx;  // reused across tasks, like the avg taps
  sy.Build(roi.y, s.ph, s.h);
  sx.Build(roi.x, s.pw, s.w);
  const int64_t gw = roi.x.grid;
  const int64_t cstep = kChannelsLast ? 1 : s.h * s.w;
  const T* base = feat + FeatureIndex<kChannelsLast>(s, roi.n, c0, 0, 0);
  thread_local std::vector<SampleTaps<A>> taps;
  A best[kMaxChannelBlock];
  int32_t idx[kMaxChannelBlock];
  for (int64_t p = 0; p < s.ph; ++p) {
    for (int64_t q = 0; q < s.pw; ++q) {
      const SampleRun ry = sy.run[p], rx = sx.run[q];
      taps.clear();
      for (int64_t iy = ry.lo; iy < ry.hi; ++iy) {
        const Lerp<A>& ty = sy.taps[sy.offset[p] + iy - ry.lo];
        for (int64_t ix = rx.lo; ix < rx.hi; ++ix) {
          const Lerp<A>& tx = sx.taps[sx.offset[q] + ix - rx.lo];
          SampleTaps<A> t{0, 0, 0, 0, A(0), A(0), A(0), A(0), static_cast<int32_t>(iy * gw + ix)};
          if (ty.lo >= 0 && tx.lo >= 0) {  // always, for an inside sample; stay in bounds
            t.w1 = ty.wlo * tx.wlo, t.w2 = ty.wlo * tx.whi;
            t.w3 = ty.whi * tx.wlo, t.w4 = ty.whi * tx.whi;
            t.o1 = FeatureIndex<kChannelsLast>(s, 0, 0, ty.lo, tx.lo);
            t.o2 = FeatureIndex<kChannelsLast>(s, 0, 0, ty.lo, tx.hi);
            t.o3 = FeatureIndex<kChannelsLast>(s, 0, 0, ty.hi, tx.lo);
            t.o4 = FeatureIndex<kChannelsLast>(s, 0, 0, ty.hi, tx.hi);
          }
          taps.push_back(t);
        }
      }
      const int64_t nt = static_cast<int64_t>(taps.size());
      if (nt == 0) {
        std::fill(best, best + cb, A(0));
        std::fill(idx, idx + cb, -1);
      } else if (kChannelsLast) {
        // Channels innermost: contiguous loads, a vectorisable select per channel.
        for (int64_t c = 0; c < cb; ++c) {
          best[c] = SampleValue(base + c, taps[0]);
          idx[c] = taps[0].sample;
        }
        for (int64_t t = 1; t < nt; ++t)
          for (int64_t c = 0; c < cb; ++c)
            MaxStep(SampleValue(base + c, taps[t]), taps[t].sample, &best[c], &idx[c]);
      } else {
        // kG planes at once: independent max chains hide the compare latency.
        auto planes = [&](auto group, int64_t c) {
          constexpr int kG = decltype(group)::value;
          A b[kG];
          int32_t i[kG];
          for (int j = 0; j < kG; ++j) {
            b[j] = SampleValue(base + (c + j) * cstep, taps[0]);
            i[j] = taps[0].sample;
          }
          for (int64_t t = 1; t < nt; ++t)
            for (int j = 0; j < kG; ++j)
              MaxStep(SampleValue(base + (c + j) * cstep, taps[t]), taps[t].sample, &b[j], &i[j]);
          for (int j = 0; j < kG; ++j) {
            best[c + j] = b[j];
            idx[c + j] = i[j];
          }
        };
        int64_t c = 0;
        for (; c + 4 <= cb; c += 4) planes(std::integral_constant<int, 4>{}, c);
        for (; c < cb; ++c) planes(std::integral_constant<int, 1>{}, c);
      }
      const int64_t outside = FirstOutsideSample(ry, roi.y.grid, rx, gw);
      for (int64_t c = 0; c < cb; ++c) {
        MergeOutsideSample(outside, &best[c], &idx[c]);
        const int64_t o = PooledIndex<kChannelsLast>(s, k, c0 + c, p, q);
        out[o] = Store<T>(best[c]);
        argmax[o] = idx[c];
      }
    }
  }
}

template <typename T, bool kChannelsLast>
JAX_ROI_CPU_KERNEL void AlignMaxBwdTask(const T* grad, const typename Accum<T>::type* rois, const int32_t* argmax,
                     T* dfeat, const RoiShape& s, const RoiParams& params, int64_t n, int64_t c0,
                     int64_t cb) {
  using A = typename Accum<T>::type;
  GradTarget<T, A, kChannelsLast> target(dfeat, s, n, c0, cb);
  for (int64_t k = 0; k < s.k; ++k) {
    if (RoiBatchIndex(rois + 5 * k, s.n) != n) continue;
    const AlignRoiGeometry<A> roi = AlignRoiOf(rois, k, s, params);
    if (!roi.ok) continue;
    const int64_t gh = roi.y.grid, gw = roi.x.grid;
    auto scatter = [&](int64_t c, int64_t p, int64_t q) {
      const int64_t o = PooledIndex<kChannelsLast>(s, k, c0 + c, p, q);
      const int64_t sample = argmax[o];
      if (sample < 0 || sample >= gh * gw) return;
      Lerp<A> ty, tx;
      if (!LerpAt(SampleCoord(roi.y, p, sample / gw), s.h, &ty) ||
          !LerpAt(SampleCoord(roi.x, q, sample % gw), s.w, &tx))
        return;
      const A g = Load<A>(grad[o]);
      *target.At(c, ty.lo, tx.lo) += g * (ty.wlo * tx.wlo);
      *target.At(c, ty.lo, tx.hi) += g * (ty.wlo * tx.whi);
      *target.At(c, ty.hi, tx.lo) += g * (ty.whi * tx.wlo);
      *target.At(c, ty.hi, tx.hi) += g * (ty.whi * tx.whi);
    };
    ForEachPooled<kChannelsLast>(s, cb, scatter);
  }
  target.Finish();
}

}  // namespace

// ----------------------------------------------------------------------------------------
// The CPU kernels of the roi_align targets (cpu_kernels.h)
// ----------------------------------------------------------------------------------------

ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const AlignAttrs& a,
                   ops::RoiAlignAvgFwd) {
  const RoiShape s = c.s;
  const double spatial_scale = a.spatial_scale;
  const RoiParams params = ToRoiParams(a);
  return VisitElementType(c.type, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accum<T>::type;
    const T* f = static_cast<const T*>(c.args[0]);
    const A* r = static_cast<const A*>(c.args[1]);
    T* o = static_cast<T*>(c.rets[0]);
    if (!s.channels_last) {
      if (const int64_t cb = TileChannels(s, sizeof(A), sizeof(T)))
        return AlignAvgFwdThroughTiles(pool, f, r, o, s, params, cb);
    }
    return RunPerRoi(pool, s, r, spatial_scale, sizeof(T), 16, [=](int64_t k, int64_t c0, int64_t cb) {
      if (s.channels_last) AlignAvgFwdTask<T, true>(f, r, o, s, params, k, c0, cb);
      else AlignAvgFwdTask<T, false>(f, r, o, s, params, k, c0, cb);
    }, kAvgFwdNhwcBlock);
  });
}

ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const AlignAttrs& a,
                   ops::RoiAlignAvgBwd) {
  const RoiShape s = c.s;
  const RoiParams params = ToRoiParams(a);
  return VisitElementType(c.type, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accum<T>::type;
    const T* g = static_cast<const T*>(c.args[0]);
    const A* r = static_cast<const A*>(c.args[1]);
    T* d = static_cast<T*>(c.rets[0]);
    PreferHugePages(d, FeatureBytes(s, sizeof(T)));
    const BandPlan plan = PlanBands(s, sizeof(A));
    auto table = AcquireAvgBwdTable<A>();
    table->roi.resize(s.k);
    table->span.resize(s.k);
    const size_t pooled = static_cast<size_t>(s.k * s.c * s.ph * s.pw);
    if (!s.channels_last && pooled > 0) {
      table->grad_cl.reset(new A[pooled]);
      PreferHugePages(table->grad_cl.get(), pooled * sizeof(A));
    }
    return ParallelForAfter(
        pool, s.k,
        [=](int64_t k) {
          BuildAvgBwdRoi<A>(r, k, s, params, table.get());
          if (table->grad_cl && table->span[k].n >= 0)
            TransposeRoiGrad(g, k, s, table->grad_cl.get());
        },
        s.n * plan.blocks * plan.bands, s.n * s.c * s.h * s.w + s.k * s.c * s.ph * s.pw * 16,
        [=](int64_t t) {
          const int64_t n = t / (plan.blocks * plan.bands);
          const int64_t c0 = t / plan.bands % plan.blocks * plan.cb;
          const int64_t y0 = t % plan.bands * plan.rows;
          const int64_t y1 = std::min(s.h, y0 + plan.rows), cb = std::min(plan.cb, s.c - c0);
          if (s.channels_last) AlignAvgBwdBandTask<T, true>(g, *table, d, s, n, y0, y1, c0, cb);
          else AlignAvgBwdBandTask<T, false>(g, *table, d, s, n, y0, y1, c0, cb);
        });
  });
}

ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const AlignAttrs& a,
                   ops::RoiAlignMaxFwd) {
  const RoiShape s = c.s;
  const double spatial_scale = a.spatial_scale;
  const RoiParams params = ToRoiParams(a);
  int32_t* am = static_cast<int32_t*>(c.rets[1]);
  return VisitElementType(c.type, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accum<T>::type;
    const T* f = static_cast<const T*>(c.args[0]);
    const A* r = static_cast<const A*>(c.args[1]);
    T* o = static_cast<T*>(c.rets[0]);
    return RunPerRoi(pool, s, r, spatial_scale, sizeof(T), 32, [=](int64_t k, int64_t c0, int64_t cb) {
      if (s.channels_last) AlignMaxFwdTask<T, true>(f, r, o, am, s, params, k, c0, cb);
      else AlignMaxFwdTask<T, false>(f, r, o, am, s, params, k, c0, cb);
    });
  });
}

ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const AlignAttrs& a,
                   ops::RoiAlignMaxBwd) {
  const RoiShape s = c.s;
  const RoiParams params = ToRoiParams(a);
  const int32_t* am = static_cast<const int32_t*>(c.args[2]);
  return VisitElementType(c.type, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accum<T>::type;
    const T* g = static_cast<const T*>(c.args[0]);
    const A* r = static_cast<const A*>(c.args[1]);
    T* d = static_cast<T*>(c.rets[0]);
    PreferHugePages(d, FeatureBytes(s, sizeof(T)));
    return RunPerImage(pool, s, sizeof(A), 16, [=](int64_t n, int64_t c0, int64_t cb) {
      if (s.channels_last) AlignMaxBwdTask<T, true>(g, r, am, d, s, params, n, c0, cb);
      else AlignMaxBwdTask<T, false>(g, r, am, d, s, params, n, c0, cb);
    });
  });
}

}  // namespace cpu
}  // namespace jax_roi


// roi_align avg forward on the CPU, NCHW and NHWC. Tasks are (roi, channel block) pairs;
// NCHW maps go through a channels-last tile of a block of channels where the output allows.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "cpu_common.h"
#include "cpu_kernels.h"
#include "jax_roi/dtypes.h"
#include "jax_roi/roi_math.h"
#include "roi_align_cpu.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cpu {
namespace {

// ----------------------------------------------------------------------------------------
// avg
// ----------------------------------------------------------------------------------------

// One bin's avg over kN vectors of channels: kN independent accumulation chains. A chain
// adds its taps one after another (no reassociation: the scalar order's bits), so with two
// chains their add latency, not the loads, set the pace; four hide it, eight gain nothing
// more (benchmarks/results/cpu_design.md).
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
// keeps the plane loop.
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

}  // namespace

ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const AlignAttrs& a,
                   ops::RoiAlignAvgFwd) {
  const RoiShape s = c.s;
  const double spatial_scale = a.spatial_scale;
  const RoiParams params = ToRoiParams(a);
  return VisitBuffers(c, [&](const auto* f, const auto* r, auto* o) {
    using T = std::remove_pointer_t<decltype(o)>;
    using A = typename Accum<T>::type;
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

}  // namespace cpu
}  // namespace jax_roi

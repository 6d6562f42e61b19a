// roi_pool on the CPU: quantized bins, max with an int32 argmax, and its scatter backward.
// Same task split as roi_align: (roi, channel block) forward, (image, channel block) backward.
#include <algorithm>
#include <cstdint>

#include "cpu_common.h"
#include "jax_roi/dtypes.h"
#include "cpu_kernels.h"
#include "jax_roi/roi_math.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cpu {
namespace {

template <typename T, bool kChannelsLast>
JAX_ROI_CPU_KERNEL void PoolFwdTask(const T* feat, const typename Accum<T>::type* rois, T* out, int32_t* argmax,
                 const RoiShape& s, double scale, int64_t k, int64_t c0, int64_t cb) {
  using A = typename Accum<T>::type;
  const PoolRoiGeometry<A> roi = PoolRoiAt(rois + 5 * k, s.n, s.ph, s.pw, static_cast<A>(scale));
  const int64_t n = roi.n;
  const PoolAxis<A>& ay = roi.y;
  const PoolAxis<A>& ax = roi.x;
  const bool ok = roi.ok;
  const int64_t cstep = kChannelsLast ? 1 : s.h * s.w;
  A best[kMaxChannelBlock];
  int32_t idx[kMaxChannelBlock];
  for (int64_t p = 0; p < s.ph; ++p) {
    const PixelRange ry = ok ? PoolBin(ay, p, s.h) : PixelRange{0, 0};
    for (int64_t q = 0; q < s.pw; ++q) {
      const PixelRange rx = ok ? PoolBin(ax, q, s.w) : PixelRange{0, 0};
      if (ok && ry.begin < ry.end && rx.begin < rx.end) {
        // The bin's first pixel seeds the maximum; later pixels win only when strictly
        // greater (first maximum in row-major order). Selects, not branches: random features
        // would mispredict a data-dependent branch about every other pixel.
        const T* base = feat + FeatureIndex<kChannelsLast>(s, n, c0, 0, 0);
        const int64_t first = FeatureIndex<kChannelsLast>(s, 0, 0, ry.begin, rx.begin);
        const int32_t first_pixel = static_cast<int32_t>(ry.begin * s.w + rx.begin);
        if (kChannelsLast) {
          for (int64_t c = 0; c < cb; ++c) {
            best[c] = Load<A>(base[first + c]);
            idx[c] = first_pixel;
          }
          for (int64_t y = ry.begin; y < ry.end; ++y) {
            for (int64_t x = (y == ry.begin ? rx.begin + 1 : rx.begin); x < rx.end; ++x) {
              const T* px = base + FeatureIndex<kChannelsLast>(s, 0, 0, y, x);
              const int32_t pixel = static_cast<int32_t>(y * s.w + x);
              for (int64_t c = 0; c < cb; ++c) MaxStep(Load<A>(px[c]), pixel, &best[c], &idx[c]);
            }
          }
        } else {
          // kG planes at once: kG independent max chains hide the compare latency that a
          // single chain waits on.
          auto planes = [&](auto group, int64_t c) {
            constexpr int kG = decltype(group)::value;
            A b[kG];
            int32_t i[kG];
            for (int j = 0; j < kG; ++j) {
              b[j] = Load<A>(base[first + (c + j) * cstep]);
              i[j] = first_pixel;
            }
            for (int64_t y = ry.begin; y < ry.end; ++y) {
              const T* row = base + c * cstep + y * s.w;
              for (int64_t x = (y == ry.begin ? rx.begin + 1 : rx.begin); x < rx.end; ++x) {
                const int32_t pixel = static_cast<int32_t>(y * s.w + x);
                for (int j = 0; j < kG; ++j) MaxStep(Load<A>(row[j * cstep + x]), pixel, &b[j], &i[j]);
              }
            }
            for (int j = 0; j < kG; ++j) {
              best[c + j] = b[j];
              idx[c + j] = i[j];
            }
          };
          int64_t c = 0;
          for (; c + 4 <= cb; c += 4) planes(std::integral_constant<int, 4>{}, c);
          for (; c < cb; ++c) planes(std::integral_constant<int, 1>{}, c);
        }
      } else {
        std::fill(best, best + cb, A(0));
        std::fill(idx, idx + cb, -1);
      }
      for (int64_t c = 0; c < cb; ++c) {
        const int64_t o = PooledIndex<kChannelsLast>(s, k, c0 + c, p, q);
        out[o] = Store<T>(best[c]);
        argmax[o] = idx[c];
      }
    }
  }
}

template <typename T, bool kChannelsLast>
JAX_ROI_CPU_KERNEL void PoolBwdTask(const T* grad, const typename Accum<T>::type* rois, const int32_t* argmax,
                 T* dfeat, const RoiShape& s, int64_t n, int64_t c0, int64_t cb) {
  using A = typename Accum<T>::type;
  GradTarget<T, A, kChannelsLast> target(dfeat, s, n, c0, cb);
  const int64_t plane = s.h * s.w;
  for (int64_t k = 0; k < s.k; ++k) {
    if (RoiBatchIndex(rois + 5 * k, s.n) != n) continue;
    auto scatter = [&](int64_t c, int64_t p, int64_t q) {
      const int64_t o = PooledIndex<kChannelsLast>(s, k, c0 + c, p, q);
      const int64_t pixel = argmax[o];
      if (pixel < 0 || pixel >= plane) return;
      *target.At(c, pixel / s.w, pixel % s.w) += Load<A>(grad[o]);
    };
    ForEachPooled<kChannelsLast>(s, cb, scatter);
  }
  target.Finish();
}

}  // namespace

ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const PoolAttrs& a,
                   ops::RoiPoolFwd) {
  const RoiShape s = c.s;
  const double spatial_scale = a.spatial_scale;
  int32_t* am = static_cast<int32_t*>(c.rets[1]);
  return VisitBuffers(c, [&](const auto* f, const auto* r, auto* o) {
    using T = std::remove_pointer_t<decltype(o)>;
    return RunPerRoi(pool, s, r, spatial_scale, sizeof(T), 8, [=](int64_t k, int64_t c0, int64_t cb) {
      if (s.channels_last) PoolFwdTask<T, true>(f, r, o, am, s, spatial_scale, k, c0, cb);
      else PoolFwdTask<T, false>(f, r, o, am, s, spatial_scale, k, c0, cb);
    });
  });
}

ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const PoolAttrs& a,
                   ops::RoiPoolBwd) {
  const RoiShape s = c.s;
  const int32_t* am = static_cast<const int32_t*>(c.args[2]);
  return VisitBuffers(c, [&](const auto* g, const auto* r, auto* d) {
    using T = std::remove_pointer_t<decltype(d)>;
    using A = typename Accum<T>::type;
    PreferHugePages(d, FeatureBytes(s, sizeof(T)));
    return RunPerImage(pool, s, sizeof(A), 1, [=](int64_t n, int64_t c0, int64_t cb) {
      if (s.channels_last) PoolBwdTask<T, true>(g, r, am, d, s, n, c0, cb);
      else PoolBwdTask<T, false>(g, r, am, d, s, n, c0, cb);
    });
  });
}

}  // namespace cpu
}  // namespace jax_roi


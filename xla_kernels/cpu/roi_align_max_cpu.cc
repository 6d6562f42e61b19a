// roi_align max on the CPU, forward and backward, NCHW and NHWC. Forward tasks are (roi,
// channel block) pairs; backward tasks are (image, channel block) pairs that walk every roi
// of their image in order: one writer per gradient element, the same bits for any thread
// count.
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

ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const AlignAttrs& a,
                   ops::RoiAlignMaxFwd) {
  const RoiShape s = c.s;
  const double spatial_scale = a.spatial_scale;
  const RoiParams params = ToRoiParams(a);
  int32_t* am = static_cast<int32_t*>(c.rets[1]);
  return VisitBuffers(c, [&](const auto* f, const auto* r, auto* o) {
    using T = std::remove_pointer_t<decltype(o)>;
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
  return VisitBuffers(c, [&](const auto* g, const auto* r, auto* d) {
    using T = std::remove_pointer_t<decltype(d)>;
    using A = typename Accum<T>::type;
    PreferHugePages(d, FeatureBytes(s, sizeof(T)));
    return RunPerImage(pool, s, sizeof(A), 16, [=](int64_t n, int64_t c0, int64_t cb) {
      if (s.channels_last) AlignMaxBwdTask<T, true>(g, r, am, d, s, params, n, c0, cb);
      else AlignMaxBwdTask<T, false>(g, r, am, d, s, params, n, c0, cb);
    });
  });
}

}  // namespace cpu
}  // namespace jax_roi

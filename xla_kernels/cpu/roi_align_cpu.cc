// roi_align on the CPU: avg and max modes, forward and backward, NCHW and NHWC.
//
// Forward tasks are (roi, channel block) pairs; backward tasks are (image, channel block)
// pairs that walk every roi of their image in order, so each gradient element has one writer
// and a fixed summation order: bitwise-deterministic results for any thread count.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_common.h"
#include "jax_roi/dtypes.h"
#include "jax_roi/ffi_checks.h"
#include "jax_roi/roi_math.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cpu {
namespace {

struct AlignParams {
  double scale;
  int64_t ratio;
  bool aligned;
};

// ----------------------------------------------------------------------------------------
// avg
// ----------------------------------------------------------------------------------------

template <typename T, bool kCL>
void AlignAvgFwdTask(const T* feat, const typename Accum<T>::type* rois, T* out,
                     const RoiShape& s, const AlignParams& prm, int64_t k, int64_t c0,
                     int64_t cb) {
  using A = typename Accum<T>::type;
  const AlignRoi<A> roi(rois + 5 * k, s, static_cast<A>(prm.scale), prm.aligned, prm.ratio);
  if (!roi.ok) {
    for (int64_t c = c0; c < c0 + cb; ++c)
      for (int64_t p = 0; p < s.ph; ++p)
        for (int64_t q = 0; q < s.pw; ++q) out[PooledIndex<kCL>(s, k, c, p, q)] = Store<T>(A(0));
    return;
  }
  AxisBands<A> by, bx;
  by.Build(roi.y, s.ph, s.h);
  bx.Build(roi.x, s.pw, s.w);
  const A count = roi.Count();
  if (kCL) {
    A acc[64];
    for (int64_t p = 0; p < s.ph; ++p) {
      for (int64_t q = 0; q < s.pw; ++q) {
        std::fill(acc, acc + cb, A(0));
        const A* wy = by.Weights(p);
        const A* wx = bx.Weights(q);
        for (int64_t r = 0; r < by.len; ++r) {
          for (int64_t u = 0; u < bx.len; ++u) {
            const A w = wy[r] * wx[u];
            const T* px = feat + FeatureIndex<kCL>(s, roi.n, c0, by.first[p] + r, bx.first[q] + u);
            for (int64_t c = 0; c < cb; ++c) acc[c] += w * Load<A>(px[c]);
          }
        }
        T* o = out + PooledIndex<kCL>(s, k, c0, p, q);
        for (int64_t c = 0; c < cb; ++c) o[c] = Store<T>(acc[c] / count);
      }
    }
  } else {
    // kG channel planes at once: kG independent accumulation chains per bin keep the FP
    // pipeline busy where one chain would wait on its own additions.
    const int64_t hw = s.h * s.w;
    auto planes = [&](auto lx, auto group, int64_t c) {
      constexpr int kL = decltype(lx)::value;
      constexpr int kG = decltype(group)::value;
      const T* plane = feat + FeatureIndex<kCL>(s, roi.n, c, 0, 0);
      T* o = out + PooledIndex<kCL>(s, k, c, 0, 0);
      const int64_t lx_n = kL > 0 ? kL : bx.len;
      for (int64_t p = 0; p < s.ph; ++p) {
        const A* wy = by.Weights(p);
        for (int64_t q = 0; q < s.pw; ++q) {
          const A* wx = bx.Weights(q);
          const T* px = plane + by.first[p] * s.w + bx.first[q];
          A acc[kG] = {};
          for (int64_t r = 0; r < by.len; ++r, px += s.w) {
            for (int64_t u = 0; u < lx_n; ++u) {
              const A w = wy[r] * wx[u];
              for (int j = 0; j < kG; ++j) acc[j] += w * Load<A>(px[j * hw + u]);
            }
          }
          for (int j = 0; j < kG; ++j) o[j * s.ph * s.pw + p * s.pw + q] = Store<T>(acc[j] / count);
        }
      }
    };
    WithBandLength(bx.len, [&](auto lx) {
      int64_t c = c0;
      for (; c + 4 <= c0 + cb; c += 4) planes(lx, std::integral_constant<int, 4>{}, c);
      for (; c < c0 + cb; ++c) planes(lx, std::integral_constant<int, 1>{}, c);
    });
  }
}

template <typename T, bool kCL>
void AlignAvgBwdTask(const T* grad, const typename Accum<T>::type* rois, T* dfeat,
                     const RoiShape& s, const AlignParams& prm, int64_t n, int64_t c0,
                     int64_t cb) {
  using A = typename Accum<T>::type;
  GradTarget<T, A, kCL> target(dfeat, s, n, c0, cb);
  AxisBands<A> by, bx;
  for (int64_t k = 0; k < s.k; ++k) {
    if (RoiBatchIndex(rois + 5 * k, s.n) != n) continue;
    const AlignRoi<A> roi(rois + 5 * k, s, static_cast<A>(prm.scale), prm.aligned, prm.ratio);
    if (!roi.ok) continue;
    by.Build(roi.y, s.ph, s.h);
    bx.Build(roi.x, s.pw, s.w);
    const A count = roi.Count();
    if (kCL) {
      // Channels innermost: contiguous gradient reads and feature-gradient writes.
      for (int64_t p = 0; p < s.ph; ++p) {
        const A* wy = by.Weights(p);
        for (int64_t q = 0; q < s.pw; ++q) {
          const A* wx = bx.Weights(q);
          const T* g = grad + PooledIndex<kCL>(s, k, c0, p, q);
          for (int64_t r = 0; r < by.len; ++r) {
            for (int64_t u = 0; u < bx.len; ++u) {
              const A w = wy[r] * wx[u] / count;
              A* d = target.At(0, by.first[p] + r, bx.first[q] + u);
              for (int64_t c = 0; c < cb; ++c) d[c] += w * Load<A>(g[c]);
            }
          }
        }
      }
    } else {
      // kG channel planes at a time (independent read-modify-write streams); the band rows
      // are contiguous.
      auto planes = [&](auto group, int64_t c) {
        constexpr int kG = decltype(group)::value;
        const T* g = grad + PooledIndex<kCL>(s, k, c0 + c, 0, 0);
        const int64_t gstep = s.ph * s.pw;
        const int64_t dstep = target.sc;
        for (int64_t p = 0; p < s.ph; ++p) {
          const A* wy = by.Weights(p);
          for (int64_t q = 0; q < s.pw; ++q) {
            const A* wx = bx.Weights(q);
            A gv[kG];
            for (int j = 0; j < kG; ++j) gv[j] = Load<A>(g[j * gstep + p * s.pw + q]) / count;
            A* row = target.At(c, by.first[p], bx.first[q]);
            for (int64_t r = 0; r < by.len; ++r, row += target.sy) {
              for (int64_t u = 0; u < bx.len; ++u) {
                const A w = wy[r] * wx[u];
                for (int j = 0; j < kG; ++j) row[j * dstep + u] += gv[j] * w;
              }
            }
          }
        }
      };
      int64_t c = 0;
      for (; c + 4 <= cb; c += 4) planes(std::integral_constant<int, 4>{}, c);
      for (; c < cb; ++c) planes(std::integral_constant<int, 1>{}, c);
    }
  }
  target.Finish();
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

// Folds the first out-of-map sample (value 0, grid index `outside`) into the running maximum
// of the inside samples, in grid order: the later of the two must be strictly greater.
template <typename A>
inline void MergeOutside(int64_t outside, A* best, int32_t* idx) {
  if (outside < 0) return;
  const bool inside_wins =
      *idx >= 0 && (*idx < outside ? !(A(0) > *best) : (*best > A(0)));
  if (!inside_wins) {
    *best = A(0);
    *idx = -1;  // an out-of-map winner passes no gradient
  }
}

template <typename T, bool kCL>
void AlignMaxFwdTask(const T* feat, const typename Accum<T>::type* rois, T* out,
                     int32_t* argmax, const RoiShape& s, const AlignParams& prm, int64_t k,
                     int64_t c0, int64_t cb) {
  using A = typename Accum<T>::type;
  const AlignRoi<A> roi(rois + 5 * k, s, static_cast<A>(prm.scale), prm.aligned, prm.ratio);
  if (!roi.ok) {
    for (int64_t c = c0; c < c0 + cb; ++c)
      for (int64_t p = 0; p < s.ph; ++p)
        for (int64_t q = 0; q < s.pw; ++q) {
          out[PooledIndex<kCL>(s, k, c, p, q)] = Store<T>(A(0));
          argmax[PooledIndex<kCL>(s, k, c, p, q)] = -1;
        }
    return;
  }
  AxisSamples<A> sy, sx;
  sy.Build(roi.y, s.ph, s.h);
  sx.Build(roi.x, s.pw, s.w);
  const int64_t gw = roi.x.grid;
  const int64_t cstep = kCL ? 1 : s.h * s.w;
  const T* base = feat + FeatureIndex<kCL>(s, roi.n, c0, 0, 0);
  A best[64];
  int32_t idx[64];
  for (int64_t p = 0; p < s.ph; ++p) {
    for (int64_t q = 0; q < s.pw; ++q) {
      std::fill(best, best + cb, A(0));
      std::fill(idx, idx + cb, -1);
      const SampleRun ry = sy.run[p], rx = sx.run[q];
      for (int64_t iy = ry.lo; iy < ry.hi; ++iy) {
        const Lerp<A>& ty = sy.taps[sy.offset[p] + iy - ry.lo];
        for (int64_t ix = rx.lo; ix < rx.hi; ++ix) {
          const Lerp<A>& tx = sx.taps[sx.offset[q] + ix - rx.lo];
          const int32_t sample = static_cast<int32_t>(iy * gw + ix);
          A w1 = ty.wlo * tx.wlo, w2 = ty.wlo * tx.whi, w3 = ty.whi * tx.wlo, w4 = ty.whi * tx.whi;
          int64_t o1 = 0, o2 = 0, o3 = 0, o4 = 0;
          if (ty.lo < 0 || tx.lo < 0) {
            w1 = w2 = w3 = w4 = A(0);  // cannot happen for an inside sample; stay in bounds
          } else {
            o1 = FeatureIndex<kCL>(s, 0, 0, ty.lo, tx.lo);
            o2 = FeatureIndex<kCL>(s, 0, 0, ty.lo, tx.hi);
            o3 = FeatureIndex<kCL>(s, 0, 0, ty.hi, tx.lo);
            o4 = FeatureIndex<kCL>(s, 0, 0, ty.hi, tx.hi);
          }
          for (int64_t c = 0; c < cb; ++c) {
            const T* f = base + c * cstep;
            const A v = w1 * Load<A>(f[o1]) + w2 * Load<A>(f[o2]) + w3 * Load<A>(f[o3]) +
                        w4 * Load<A>(f[o4]);
            if (idx[c] < 0 || v > best[c]) {
              best[c] = v;
              idx[c] = sample;
            }
          }
        }
      }
      const int64_t outside = FirstOutsideSample(ry, roi.y.grid, rx, gw);
      for (int64_t c = 0; c < cb; ++c) {
        MergeOutside(outside, &best[c], &idx[c]);
        const int64_t o = PooledIndex<kCL>(s, k, c0 + c, p, q);
        out[o] = Store<T>(best[c]);
        argmax[o] = idx[c];
      }
    }
  }
}

template <typename T, bool kCL>
void AlignMaxBwdTask(const T* grad, const typename Accum<T>::type* rois, const int32_t* argmax,
                     T* dfeat, const RoiShape& s, const AlignParams& prm, int64_t n, int64_t c0,
                     int64_t cb) {
  using A = typename Accum<T>::type;
  GradTarget<T, A, kCL> target(dfeat, s, n, c0, cb);
  for (int64_t k = 0; k < s.k; ++k) {
    if (RoiBatchIndex(rois + 5 * k, s.n) != n) continue;
    const AlignRoi<A> roi(rois + 5 * k, s, static_cast<A>(prm.scale), prm.aligned, prm.ratio);
    if (!roi.ok) continue;
    const int64_t gh = roi.y.grid, gw = roi.x.grid;
    auto scatter = [&](int64_t c, int64_t p, int64_t q) {
      const int64_t o = PooledIndex<kCL>(s, k, c0 + c, p, q);
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
    ForEachPooled<kCL>(s, cb, scatter);
  }
  target.Finish();
}

// ----------------------------------------------------------------------------------------
// FFI handlers
// ----------------------------------------------------------------------------------------

ffi::Future RoiAlignAvgFwdImpl(ffi::ThreadPool pool, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                               ffi::Result<ffi::AnyBuffer> out, int64_t pooled_h,
                               int64_t pooled_w, double spatial_scale, int64_t sampling_ratio,
                               bool aligned, bool channels_last) {
  RoiShape s;
  if (auto e = CheckRoiOp("roi_align_avg_fwd", "features", features.dimensions(),
                          features.element_type(), rois, "output", out->dimensions(),
                          out->element_type(), nullptr,
                          {pooled_h, pooled_w, spatial_scale, sampling_ratio, channels_last}, &s);
      e.failure())
    return ErrorFuture(e);
  const AlignParams prm{spatial_scale, sampling_ratio, aligned};
  return VisitFloatType(features.element_type(), "roi_align", [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accum<T>::type;
    const T* f = reinterpret_cast<const T*>(features.untyped_data());
    const A* r = reinterpret_cast<const A*>(rois.untyped_data());
    T* o = reinterpret_cast<T*>(out->untyped_data());
    return RunPerRoi(pool, s, 16, [=](int64_t k, int64_t c0, int64_t cb) {
      if (s.channels_last) AlignAvgFwdTask<T, true>(f, r, o, s, prm, k, c0, cb);
      else AlignAvgFwdTask<T, false>(f, r, o, s, prm, k, c0, cb);
    });
  });
}

ffi::Future RoiAlignAvgBwdImpl(ffi::ThreadPool pool, ffi::AnyBuffer grad, ffi::AnyBuffer rois,
                               ffi::Result<ffi::AnyBuffer> dfeat, int64_t pooled_h,
                               int64_t pooled_w, double spatial_scale, int64_t sampling_ratio,
                               bool aligned, bool channels_last) {
  RoiShape s;
  if (auto e = CheckRoiOp("roi_align_avg_bwd", "grad_features", dfeat->dimensions(),
                          dfeat->element_type(), rois, "grad", grad.dimensions(),
                          grad.element_type(), nullptr,
                          {pooled_h, pooled_w, spatial_scale, sampling_ratio, channels_last}, &s);
      e.failure())
    return ErrorFuture(e);
  const AlignParams prm{spatial_scale, sampling_ratio, aligned};
  return VisitFloatType(grad.element_type(), "roi_align", [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accum<T>::type;
    const T* g = reinterpret_cast<const T*>(grad.untyped_data());
    const A* r = reinterpret_cast<const A*>(rois.untyped_data());
    T* d = reinterpret_cast<T*>(dfeat->untyped_data());
    return RunPerImage(pool, s, 16, [=](int64_t n, int64_t c0, int64_t cb) {
      if (s.channels_last) AlignAvgBwdTask<T, true>(g, r, d, s, prm, n, c0, cb);
      else AlignAvgBwdTask<T, false>(g, r, d, s, prm, n, c0, cb);
    });
  });
}

ffi::Future RoiAlignMaxFwdImpl(ffi::ThreadPool pool, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                               ffi::Result<ffi::AnyBuffer> out,
                               ffi::Result<ffi::Buffer<ffi::S32>> argmax, int64_t pooled_h,
                               int64_t pooled_w, double spatial_scale, int64_t sampling_ratio,
                               bool aligned, bool channels_last) {
  RoiShape s;
  const auto argmax_dims = argmax->dimensions();
  if (auto e = CheckRoiOp("roi_align_max_fwd", "features", features.dimensions(),
                          features.element_type(), rois, "output", out->dimensions(),
                          out->element_type(), &argmax_dims,
                          {pooled_h, pooled_w, spatial_scale, sampling_ratio, channels_last}, &s);
      e.failure())
    return ErrorFuture(e);
  const AlignParams prm{spatial_scale, sampling_ratio, aligned};
  int32_t* am = argmax->typed_data();
  return VisitFloatType(features.element_type(), "roi_align", [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accum<T>::type;
    const T* f = reinterpret_cast<const T*>(features.untyped_data());
    const A* r = reinterpret_cast<const A*>(rois.untyped_data());
    T* o = reinterpret_cast<T*>(out->untyped_data());
    return RunPerRoi(pool, s, 32, [=](int64_t k, int64_t c0, int64_t cb) {
      if (s.channels_last) AlignMaxFwdTask<T, true>(f, r, o, am, s, prm, k, c0, cb);
      else AlignMaxFwdTask<T, false>(f, r, o, am, s, prm, k, c0, cb);
    });
  });
}

ffi::Future RoiAlignMaxBwdImpl(ffi::ThreadPool pool, ffi::AnyBuffer grad, ffi::AnyBuffer rois,
                               ffi::Buffer<ffi::S32> argmax, ffi::Result<ffi::AnyBuffer> dfeat,
                               int64_t pooled_h, int64_t pooled_w, double spatial_scale,
                               int64_t sampling_ratio, bool aligned, bool channels_last) {
  RoiShape s;
  const auto argmax_dims = argmax.dimensions();
  if (auto e = CheckRoiOp("roi_align_max_bwd", "grad_features", dfeat->dimensions(),
                          dfeat->element_type(), rois, "grad", grad.dimensions(),
                          grad.element_type(), &argmax_dims,
                          {pooled_h, pooled_w, spatial_scale, sampling_ratio, channels_last}, &s);
      e.failure())
    return ErrorFuture(e);
  const AlignParams prm{spatial_scale, sampling_ratio, aligned};
  const int32_t* am = argmax.typed_data();
  return VisitFloatType(grad.element_type(), "roi_align", [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accum<T>::type;
    const T* g = reinterpret_cast<const T*>(grad.untyped_data());
    const A* r = reinterpret_cast<const A*>(rois.untyped_data());
    T* d = reinterpret_cast<T*>(dfeat->untyped_data());
    return RunPerImage(pool, s, 16, [=](int64_t n, int64_t c0, int64_t cb) {
      if (s.channels_last) AlignMaxBwdTask<T, true>(g, r, am, d, s, prm, n, c0, cb);
      else AlignMaxBwdTask<T, false>(g, r, am, d, s, prm, n, c0, cb);
    });
  });
}

}  // namespace
}  // namespace cpu
}  // namespace jax_roi

namespace ffi = xla::ffi;

#define JAX_ROI_ALIGN_ATTRS                 \
  .Attr<int64_t>("pooled_h")                \
      .Attr<int64_t>("pooled_w")            \
      .Attr<double>("spatial_scale")        \
      .Attr<int64_t>("sampling_ratio")      \
      .Attr<bool>("aligned")                \
      .Attr<bool>("channels_last")

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignAvgFwdCpu, jax_roi::cpu::RoiAlignAvgFwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JAX_ROI_ALIGN_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignAvgBwdCpu, jax_roi::cpu::RoiAlignAvgBwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JAX_ROI_ALIGN_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignMaxFwdCpu, jax_roi::cpu::RoiAlignMaxFwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::S32>>() JAX_ROI_ALIGN_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignMaxBwdCpu, jax_roi::cpu::RoiAlignMaxBwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>() JAX_ROI_ALIGN_ATTRS);

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

template <typename A>
AlignRoiGeometry<A> RoiAt(const A* rois, int64_t k, const RoiShape& s, const AlignParams& prm) {
  return AlignRoiAt(rois + 5 * k, s.n, s.ph, s.pw, static_cast<A>(prm.scale), prm.aligned,
                    prm.ratio);
}

// ----------------------------------------------------------------------------------------
// avg
// ----------------------------------------------------------------------------------------

template <typename T, bool kCL>
JAX_ROI_CPU_KERNEL void AlignAvgFwdTask(const T* feat, const typename Accum<T>::type* rois, T* out,
                     const RoiShape& s, const AlignParams& prm, int64_t k, int64_t c0,
                     int64_t cb) {
  using A = typename Accum<T>::type;
  const AlignRoiGeometry<A> roi = RoiAt<A>(rois, k, s, prm);
  if (!roi.ok) {
    for (int64_t c = c0; c < c0 + cb; ++c)
      for (int64_t p = 0; p < s.ph; ++p)
        for (int64_t q = 0; q < s.pw; ++q) out[PooledIndex<kCL>(s, k, c, p, q)] = Store<T>(A(0));
    return;
  }
  // Per-thread tables, reused across tasks: a task is small (one roi, one channel block)
  // and allocating them per task cost as much as a sixth of the forward.
  thread_local AxisTaps<A> ty, tx;
  ty.Build(roi.y, s.ph, s.h);
  tx.Build(roi.x, s.pw, s.w);
  const A count = AlignSampleCount(roi);
  const T* image = feat + FeatureIndex<kCL>(s, roi.n, c0, 0, 0);
  if (kCL) {
    // kV channels at a time in two vector registers, the taps as the inner loops: each
    // feature vector is loaded once per tap and the accumulators never touch memory.
    using V = typename Lanes<A>::type;
    constexpr int64_t kL = Lanes<A>::kCount, kV = 2 * kL;
    const int64_t row_step = s.w * s.c;
    for (int64_t p = 0; p < s.ph; ++p) {
      const int64_t* py = ty.Pixels(p);
      const A* wy = ty.Weights(p);
      for (int64_t q = 0; q < s.pw; ++q) {
        const int64_t* px = tx.Pixels(q);
        const A* wx = tx.Weights(q);
        T* o = out + PooledIndex<kCL>(s, k, c0, p, q);
        int64_t c = 0;
        for (; c + kV <= cb; c += kV) {
          V acc0 = {}, acc1 = {};
          for (int64_t r = 0; r < ty.len; ++r) {
            const T* row = image + py[r] * row_step + c;
            for (int64_t u = 0; u < tx.len; ++u) {
              const V w = V{} + wy[r] * wx[u];
              const T* v = row + px[u] * s.c;
              V x0, x1;
              LoadLanes<A>(v, &x0);
              LoadLanes<A>(v + kL, &x1);
              acc0 += w * x0;
              acc1 += w * x1;
            }
          }
          acc0 /= count;
          acc1 /= count;
          for (int64_t j = 0; j < kL; ++j) {
            o[c + j] = Store<T>(acc0[j]);
            o[c + kL + j] = Store<T>(acc1[j]);
          }
        }
        for (; c < cb; ++c) {
          A acc = A(0);
          for (int64_t r = 0; r < ty.len; ++r)
            for (int64_t u = 0; u < tx.len; ++u)
              acc += wy[r] * wx[u] * Load<A>(image[py[r] * row_step + px[u] * s.c + c]);
          o[c] = Store<T>(acc / count);
        }
      }
    }
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
    T* o = out + PooledIndex<kCL>(s, k, c0, 0, 0);
    for (int64_t i = 0; i < cb * s.ph * s.pw; ++i) o[i] = Store<T>(sums[i] / count);
  }
}

// The avg backward of one roi is separable like its forward:
//   dF[y, x, c] += sum_p Wy[p](y) * (sum_q Wx[q](x) * g[p, q, c])
// so it runs in two passes: the inner sums per (bin row, x pixel) into a small buffer, then
// one update per footprint pixel (y, x). Neighbouring bins share pixels, so this is several
// times fewer read-modify-writes of the gradient than one per (bin, tap).
template <typename T, bool kCL>
JAX_ROI_CPU_KERNEL void AlignAvgBwdTask(const T* grad, const typename Accum<T>::type* rois, T* dfeat,
                     const RoiShape& s, const AlignParams& prm, int64_t n, int64_t c0,
                     int64_t cb) {
  using A = typename Accum<T>::type;
  GradTarget<T, A, kCL> target(dfeat, s, n, c0, cb);
  AxisTaps<A> ty, tx;
  AxisFootprint<A> fy, fx;
  std::vector<A> rows;  // NHWC [PH, nx, cb]; NCHW [cb, PH, nx]
  for (int64_t k = 0; k < s.k; ++k) {
    if (RoiBatchIndex(rois + 5 * k, s.n) != n) continue;
    const AlignRoiGeometry<A> roi = RoiAt<A>(rois, k, s, prm);
    if (!roi.ok) continue;
    ty.Build(roi.y, s.ph, s.h, AlignSampleCount(roi));  // the mean's 1/count, once per row weight
    tx.Build(roi.x, s.pw, s.w);
    fy.Build(ty, s.ph);
    fx.Build(tx, s.pw);
    const int64_t nx = fx.size(), ny = fy.size();
    if (nx == 0 || ny == 0) continue;
    rows.assign(static_cast<size_t>(s.ph * nx * cb), A(0));
    if (kCL) {
      for (int64_t p = 0; p < s.ph; ++p)
        for (int64_t i = 0; i < nx; ++i) {
          A* t = rows.data() + (p * nx + i) * cb;
          for (int64_t e = fx.start[i]; e < fx.start[i + 1]; ++e) {
            const A w = fx.weight[e];
            const T* g = grad + PooledIndex<kCL>(s, k, c0, p, fx.bin[e]);
            for (int64_t c = 0; c < cb; ++c) t[c] += w * Load<A>(g[c]);
          }
        }
      using V = typename Lanes<A>::type;
      constexpr int64_t kV = Lanes<A>::kCount;
      for (int64_t j = 0; j < ny; ++j) {
        for (int64_t i = 0; i < nx; ++i) {
          A* d = target.At(0, fy.pixel[j], fx.pixel[i]);
          int64_t c = 0;
          for (; c + kV <= cb; c += kV) {
            V acc = {};
            for (int64_t e = fy.start[j]; e < fy.start[j + 1]; ++e) {
              V t;
              LoadLanes<A>(rows.data() + (fy.bin[e] * nx + i) * cb + c, &t);
              acc += (V{} + fy.weight[e]) * t;
            }
            V dv;
            LoadLanes<A>(d + c, &dv);
            dv += acc;
            std::memcpy(d + c, &dv, sizeof dv);
          }
          for (; c < cb; ++c) {
            A acc = A(0);
            for (int64_t e = fy.start[j]; e < fy.start[j + 1]; ++e)
              acc += fy.weight[e] * rows[(fy.bin[e] * nx + i) * cb + c];
            d[c] += acc;
          }
        }
      }
    } else {
      for (int64_t c = 0; c < cb; ++c) {
        const T* g = grad + PooledIndex<kCL>(s, k, c0 + c, 0, 0);
        A* t = rows.data() + c * s.ph * nx;
        for (int64_t p = 0; p < s.ph; ++p)
          for (int64_t i = 0; i < nx; ++i) {
            A acc = A(0);
            for (int64_t e = fx.start[i]; e < fx.start[i + 1]; ++e)
              acc += fx.weight[e] * Load<A>(g[p * s.pw + fx.bin[e]]);
            t[p * nx + i] = acc;
          }
      }
      // Contiguous footprints (the usual case) update whole row segments: vectorisable.
      auto update = [&](auto contiguous) {
        constexpr bool kContiguous = decltype(contiguous)::value;
        for (int64_t c = 0; c < cb; ++c) {
          const A* t = rows.data() + c * s.ph * nx;
          for (int64_t j = 0; j < ny; ++j) {
            A* d = target.At(c, fy.pixel[j], 0);
            if (kContiguous) d += fx.pixel[0];
            for (int64_t e = fy.start[j]; e < fy.start[j + 1]; ++e) {
              const A w = fy.weight[e];
              const A* tr = t + fy.bin[e] * nx;
              if (kContiguous) {
                for (int64_t i = 0; i < nx; ++i) d[i] += w * tr[i];
              } else {
                for (int64_t i = 0; i < nx; ++i) d[fx.pixel[i]] += w * tr[i];
              }
            }
          }
        }
      };
      if (fx.contiguous) update(std::true_type{});
      else update(std::false_type{});
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

template <typename T, bool kCL>
JAX_ROI_CPU_KERNEL void AlignMaxFwdTask(const T* feat, const typename Accum<T>::type* rois, T* out,
                     int32_t* argmax, const RoiShape& s, const AlignParams& prm, int64_t k,
                     int64_t c0, int64_t cb) {
  using A = typename Accum<T>::type;
  const AlignRoiGeometry<A> roi = RoiAt<A>(rois, k, s, prm);
  if (!roi.ok) {
    for (int64_t c = c0; c < c0 + cb; ++c)
      for (int64_t p = 0; p < s.ph; ++p)
        for (int64_t q = 0; q < s.pw; ++q) {
          out[PooledIndex<kCL>(s, k, c, p, q)] = Store<T>(A(0));
          argmax[PooledIndex<kCL>(s, k, c, p, q)] = -1;
        }
    return;
  }
  thread_local AxisSamples<A> sy, sx;  // reused across tasks, like the avg taps
  sy.Build(roi.y, s.ph, s.h);
  sx.Build(roi.x, s.pw, s.w);
  const int64_t gw = roi.x.grid;
  const int64_t cstep = kCL ? 1 : s.h * s.w;
  const T* base = feat + FeatureIndex<kCL>(s, roi.n, c0, 0, 0);
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
            t.o1 = FeatureIndex<kCL>(s, 0, 0, ty.lo, tx.lo);
            t.o2 = FeatureIndex<kCL>(s, 0, 0, ty.lo, tx.hi);
            t.o3 = FeatureIndex<kCL>(s, 0, 0, ty.hi, tx.lo);
            t.o4 = FeatureIndex<kCL>(s, 0, 0, ty.hi, tx.hi);
          }
          taps.push_back(t);
        }
      }
      const int64_t nt = static_cast<int64_t>(taps.size());
      if (nt == 0) {
        std::fill(best, best + cb, A(0));
        std::fill(idx, idx + cb, -1);
      } else if (kCL) {
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
        const int64_t o = PooledIndex<kCL>(s, k, c0 + c, p, q);
        out[o] = Store<T>(best[c]);
        argmax[o] = idx[c];
      }
    }
  }
}

template <typename T, bool kCL>
JAX_ROI_CPU_KERNEL void AlignMaxBwdTask(const T* grad, const typename Accum<T>::type* rois, const int32_t* argmax,
                     T* dfeat, const RoiShape& s, const AlignParams& prm, int64_t n, int64_t c0,
                     int64_t cb) {
  using A = typename Accum<T>::type;
  GradTarget<T, A, kCL> target(dfeat, s, n, c0, cb);
  for (int64_t k = 0; k < s.k; ++k) {
    if (RoiBatchIndex(rois + 5 * k, s.n) != n) continue;
    const AlignRoiGeometry<A> roi = RoiAt<A>(rois, k, s, prm);
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
    return RunPerRoi(pool, s, sizeof(T), 16, [=](int64_t k, int64_t c0, int64_t cb) {
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
    return RunPerImage(pool, s, sizeof(A), 16, [=](int64_t n, int64_t c0, int64_t cb) {
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
    return RunPerRoi(pool, s, sizeof(T), 32, [=](int64_t k, int64_t c0, int64_t cb) {
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
    return RunPerImage(pool, s, sizeof(A), 16, [=](int64_t n, int64_t c0, int64_t cb) {
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

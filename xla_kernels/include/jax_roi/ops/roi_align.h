// roi_align: its device bodies (avg and max modes: forward, atomic scatter, deterministic
// gather, footprint; the math is roi_math.h's) and the policies of its four targets. The CPU's
// hand-tuned kernels are in xla_kernels/cpu/roi_align_*_cpu.cc.
#ifndef JAX_ROI_OPS_ROI_ALIGN_H_
#define JAX_ROI_OPS_ROI_ALIGN_H_

#include <cstdint>

#include "jax_roi/dtypes.h"
#include "jax_roi/ops/policies.h"
#include "jax_roi/roi_call.h"
#include "jax_roi/roi_device_ops.h"
#include "jax_roi/roi_math.h"

namespace jax_roi {

// ---------------------------------------------------------------------------------------
// Device bodies (per-thread code: CUDA, the emulation, the CPU's generic executor)
// ---------------------------------------------------------------------------------------

namespace device {

// One bilinear sample of a channel plane. The expression (weights formed first, summed
// left to right) is the CPU max kernel's, so max-mode values and winners agree bit for bit.
template <typename T, typename A>
JAX_ROI_HD A BilinearAt(const T* plane, const Strides& st, const Lerp<A>& ty, const Lerp<A>& tx) {
  const A w1 = ty.wlo * tx.wlo, w2 = ty.wlo * tx.whi, w3 = ty.whi * tx.wlo, w4 = ty.whi * tx.whi;
  return w1 * Load<A>(plane[ty.lo * st.y + tx.lo * st.x]) +
         w2 * Load<A>(plane[ty.lo * st.y + tx.hi * st.x]) +
         w3 * Load<A>(plane[ty.hi * st.y + tx.lo * st.x]) +
         w4 * Load<A>(plane[ty.hi * st.y + tx.hi * st.x]);
}

// What both roi_align modes share: the footprint, the bins reaching a pixel, the taps.
struct AlignBody {
  // Roi k's geometry and the bins of it that reach pixel e (false: none).
  template <typename A>
  static JAX_ROI_HD bool Reach(const A* rois, int64_t k, const Layout& L,
                               const RoiParams& params, const GatherPos& e,
                               AlignRoiGeometry<A>* g, BinRange* by, BinRange* bx) {
    *g = AlignRoiOf(rois, k, L.s, params);
    if (!g->ok) return false;
    *by = TouchBins(g->y, L.s.ph, e.y, L.s.h);
    if (by->begin >= by->end) return false;
    *bx = TouchBins(g->x, L.s.pw, e.x, L.s.w);
    return bx->begin < bx->end;
  }

  // v times each of one sample's four bilinear weights, added at its taps in `plane`, corner
  // order (lo, lo), (lo, hi), (hi, lo), (hi, hi).
  template <typename A>
  static JAX_ROI_HD void ScatterTaps(A* plane, const Strides& st, const Lerp<A>& ty,
                                     const Lerp<A>& tx, A v) {
    AtomicAdd(plane + ty.lo * st.y + tx.lo * st.x, v * (ty.wlo * tx.wlo));
    AtomicAdd(plane + ty.lo * st.y + tx.hi * st.x, v * (ty.wlo * tx.whi));
    AtomicAdd(plane + ty.hi * st.y + tx.lo * st.x, v * (ty.whi * tx.wlo));
    AtomicAdd(plane + ty.hi * st.y + tx.hi * st.x, v * (ty.whi * tx.whi));
  }

  // `whole_map`: the whole image for every valid roi, which makes the gather visit what a
  // walk over all rois visits (a test hook: the emulation compares the two bit for bit).
  template <typename A>
  static JAX_ROI_HD RoiFootprint Footprint(const A* rois, int64_t k, const RoiShape& s,
                                           const RoiParams& params, bool whole_map) {
    const AlignRoiGeometry<A> g = AlignRoiOf(rois, k, s, params);
    if (!g.ok) return MakeFootprint(-1, PixelRange{0, 0}, PixelRange{0, 0});
    if (whole_map) return MakeFootprint(g.n, PixelRange{0, s.h}, PixelRange{0, s.w});
    return MakeFootprint(g.n, AlignFootprint(g.y, s.ph, s.h), AlignFootprint(g.x, s.pw, s.w));
  }
};

struct AlignAvg : AlignBody {
  // roi_align avg forward, output element (k, c, p, q): the mean over the bin's sampling grid
  // (out-of-map samples add 0 but count).
  template <typename T, typename A>
  static JAX_ROI_HD A Forward(const T* features, const A* rois, const Layout& L,
                              const RoiParams& params, const PooledPos& e) {
    const AlignRoiGeometry<A> g = AlignRoiOf(rois, e.k, L.s, params);
    if (!g.ok) return A(0);
    const T* plane = features + Offset(L.feat, g.n, e.c, 0, 0);
    const SampleRun ry = InsideRun(g.y, e.p, L.s.h), rx = InsideRun(g.x, e.q, L.s.w);
    A acc = A(0);
    for (int64_t iy = ry.lo; iy < ry.hi; ++iy) {
      Lerp<A> ty;
      if (!LerpAt(SampleCoord(g.y, e.p, iy), L.s.h, &ty)) continue;
      for (int64_t ix = rx.lo; ix < rx.hi; ++ix) {
        Lerp<A> tx;
        if (!LerpAt(SampleCoord(g.x, e.q, ix), L.s.w, &tx)) continue;
        acc += BilinearAt(plane, L.feat, ty, tx);
      }
    }
    return acc / AlignSampleCount(g);
  }

  // roi_align avg backward, scatter form: pooled element (k, c, p, q) spreads g / count over
  // the four taps of each sample of its bin. `target` is features-shaped, in the
  // accumulation type.
  template <typename T, typename A>
  static JAX_ROI_HD void Scatter(const T* grad, const A* rois, const int32_t* argmax, A* target,
                                 const Layout& L, const RoiParams& params, const PooledPos& e) {
    const AlignRoiGeometry<A> g = AlignRoiOf(rois, e.k, L.s, params);
    if (!g.ok) return;
    const A gc = Load<A>(grad[Offset(L.pooled, e.k, e.c, e.p, e.q)]) / AlignSampleCount(g);
    A* plane = target + Offset(L.feat, g.n, e.c, 0, 0);
    const SampleRun ry = InsideRun(g.y, e.p, L.s.h), rx = InsideRun(g.x, e.q, L.s.w);
    for (int64_t iy = ry.lo; iy < ry.hi; ++iy) {
      Lerp<A> ty;
      if (!LerpAt(SampleCoord(g.y, e.p, iy), L.s.h, &ty)) continue;
      for (int64_t ix = rx.lo; ix < rx.hi; ++ix) {
        Lerp<A> tx;
        if (!LerpAt(SampleCoord(g.x, e.q, ix), L.s.w, &tx)) continue;
        ScatterTaps(plane, L.feat, ty, tx, gc);
      }
    }
  }

  // roi_align avg: pixel weight of bin (p, q) = (y-axis weight) * (x-axis weight) / count,
  // the bilinear weights factoring by axis.
  template <typename T, typename A>
  static JAX_ROI_HD void GatherRoi(const T* grad, const A* rois, const int32_t* argmax,
                                   int64_t k, const Layout& L, const RoiParams& params,
                                   const GatherPos& e, A (&acc)[kGatherTile]) {
    AlignRoiGeometry<A> g;
    BinRange by, bx;
    if (!Reach(rois, k, L, params, e, &g, &by, &bx)) return;
    const A count = AlignSampleCount(g);
    for (int64_t p = by.begin; p < by.end; ++p) {
      A wy;
      if (!BinWeightAt(g.y, p, e.y, L.s.h, &wy)) continue;
      for (int64_t q = bx.begin; q < bx.end; ++q) {
        A wx;
        if (!BinWeightAt(g.x, q, e.x, L.s.w, &wx)) continue;
        const A w = wy * wx / count;
        const T* gp = grad + Offset(L.pooled, k, e.c0, p, q);
        JAX_ROI_UNROLL
        for (int j = 0; j < kGatherTile; ++j) {
          if (j < e.cn) acc[j] += w * Load<A>(gp[j * e.cstep * L.pooled.c]);
        }
      }
    }
  }
};

struct AlignMax : AlignBody {
  // roi_align max forward, output element (k, c, p, q): the first maximum over the grid in
  // row-major order (strict >), out-of-map samples competing with value 0.
  template <typename T, typename A>
  static JAX_ROI_HD MaxResult<A> Forward(const T* features, const A* rois, const Layout& L,
                                         const RoiParams& params, const PooledPos& e) {
    MaxResult<A> r{A(0), -1};
    const AlignRoiGeometry<A> g = AlignRoiOf(rois, e.k, L.s, params);
    if (!g.ok) return r;
    const T* plane = features + Offset(L.feat, g.n, e.c, 0, 0);
    const SampleRun ry = InsideRun(g.y, e.p, L.s.h), rx = InsideRun(g.x, e.q, L.s.w);
    const int64_t gw = g.x.grid;
    for (int64_t iy = ry.lo; iy < ry.hi; ++iy) {
      Lerp<A> ty;
      if (!LerpAt(SampleCoord(g.y, e.p, iy), L.s.h, &ty)) continue;
      for (int64_t ix = rx.lo; ix < rx.hi; ++ix) {
        Lerp<A> tx;
        if (!LerpAt(SampleCoord(g.x, e.q, ix), L.s.w, &tx)) continue;
        const A v = BilinearAt(plane, L.feat, ty, tx);
        if (r.index < 0 || v > r.value) {
          r.value = v;
          r.index = static_cast<int32_t>(iy * gw + ix);  // < kMaxGrid^2 = 2^30
        }
      }
    }
    MergeOutsideSample(FirstOutsideSample(ry, g.y.grid, rx, gw), &r.value, &r.index);
    return r;
  }

  // roi_align max backward, scatter form: g goes undivided to the four taps of the winning
  // sample recorded in argmax (an index iy * gw + ix into the bin's grid).
  template <typename T, typename A>
  static JAX_ROI_HD void Scatter(const T* grad, const A* rois, const int32_t* argmax, A* target,
                                 const Layout& L, const RoiParams& params, const PooledPos& e) {
    const AlignRoiGeometry<A> g = AlignRoiOf(rois, e.k, L.s, params);
    if (!g.ok) return;
    const int64_t o = Offset(L.pooled, e.k, e.c, e.p, e.q);
    const int64_t sample = argmax[o];
    const int64_t gw = g.x.grid;
    if (sample < 0 || sample >= g.y.grid * gw) return;
    Lerp<A> ty, tx;
    if (!LerpAt(SampleCoord(g.y, e.p, sample / gw), L.s.h, &ty) ||
        !LerpAt(SampleCoord(g.x, e.q, sample % gw), L.s.w, &tx))
      return;
    const A gv = Load<A>(grad[o]);
    A* plane = target + Offset(L.feat, g.n, e.c, 0, 0);
    ScatterTaps(plane, L.feat, ty, tx, gv);
  }

  // roi_align max: the winner recorded for (k, c, p, q) sends g * (its tap weights) to the
  // pixel when one of its taps lands there; its bin is then among the bins that reach the
  // pixel. Corner order as in the scatter: (lo, lo), (lo, hi), (hi, lo), (hi, hi).
  template <typename T, typename A>
  static JAX_ROI_HD void GatherRoi(const T* grad, const A* rois, const int32_t* argmax,
                                   int64_t k, const Layout& L, const RoiParams& params,
                                   const GatherPos& e, A (&acc)[kGatherTile]) {
    AlignRoiGeometry<A> g;
    BinRange by, bx;
    if (!Reach(rois, k, L, params, e, &g, &by, &bx)) return;
    const int64_t gw = g.x.grid, samples = g.y.grid * gw;
    for (int64_t p = by.begin; p < by.end; ++p) {
      for (int64_t q = bx.begin; q < bx.end; ++q) {
        const int64_t o = Offset(L.pooled, k, e.c0, p, q);
        JAX_ROI_UNROLL
        for (int j = 0; j < kGatherTile; ++j) {
          if (j >= e.cn) continue;
          const int64_t oc = o + j * e.cstep * L.pooled.c;
          const int64_t sample = argmax[oc];
          if (sample < 0 || sample >= samples) continue;
          Lerp<A> ty, tx;
          if (!LerpAt(SampleCoord(g.y, p, sample / gw), L.s.h, &ty) ||
              !LerpAt(SampleCoord(g.x, q, sample % gw), L.s.w, &tx))
            continue;
          const bool ylo = ty.lo == e.y, yhi = ty.hi == e.y;
          const bool xlo = tx.lo == e.x, xhi = tx.hi == e.x;
          if (!((ylo || yhi) && (xlo || xhi))) continue;
          const A gv = Load<A>(grad[oc]);
          if (ylo && xlo) acc[j] += gv * (ty.wlo * tx.wlo);
          if (ylo && xhi) acc[j] += gv * (ty.wlo * tx.whi);
          if (yhi && xlo) acc[j] += gv * (ty.whi * tx.wlo);
          if (yhi && xhi) acc[j] += gv * (ty.whi * tx.whi);
        }
      }
    }
  }
};

}  // namespace device

// ---------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------

namespace ops {

struct RoiAlignAvgFwd : Forward<device::AlignAvg, AlignAttrs> {
  JAX_ROI_TARGET_NAMES("roi_align_avg_fwd", "roi_align")
};

struct RoiAlignAvgBwd : Backward<device::AlignAvg, AlignAttrs> {
  JAX_ROI_TARGET_NAMES("roi_align_avg_bwd", "roi_align")
};

struct RoiAlignMaxFwd : ForwardWithArgmax<device::AlignMax, AlignAttrs> {
  JAX_ROI_TARGET_NAMES("roi_align_max_fwd", "roi_align")
};

struct RoiAlignMaxBwd : BackwardWithArgmax<device::AlignMax, AlignAttrs> {
  JAX_ROI_TARGET_NAMES("roi_align_max_bwd", "roi_align")
};

}  // namespace ops
}  // namespace jax_roi

#endif  // JAX_ROI_OPS_ROI_ALIGN_H_

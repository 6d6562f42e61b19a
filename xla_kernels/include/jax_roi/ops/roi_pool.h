// roi_pool: its device bodies (forward, atomic scatter, deterministic gather, footprint; the
// math is roi_math.h's) and the policies of its two targets. The CPU's hand-tuned kernels are
// in xla_kernels/cpu/roi_pool_cpu.cc.
#ifndef JAX_ROI_OPS_ROI_POOL_H_
#define JAX_ROI_OPS_ROI_POOL_H_

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

struct PoolMax {
  // roi_pool forward, output element (k, c, p, q): the first maximum of the bin's pixels in
  // row-major order (strict >); the winner is stored as y * W + x.
  template <typename T, typename A>
  static JAX_ROI_HD MaxResult<A> Forward(const T* features, const A* rois, const Layout& L,
                                         const RoiParams& params, const PooledPos& e) {
    MaxResult<A> r{A(0), -1};
    const PoolRoiGeometry<A> g = PoolRoiOf(rois, e.k, L.s, params);
    if (!g.ok) return r;
    const T* plane = features + Offset(L.feat, g.n, e.c, 0, 0);
    const PixelRange ry = PoolBin(g.y, e.p, L.s.h), rx = PoolBin(g.x, e.q, L.s.w);
    for (int64_t y = ry.begin; y < ry.end; ++y) {
      for (int64_t x = rx.begin; x < rx.end; ++x) {
        const A v = Load<A>(plane[y * L.feat.y + x * L.feat.x]);
        if (r.index < 0 || v > r.value) {
          r.value = v;
          r.index = static_cast<int32_t>(y * L.s.w + x);  // H * W < 2^31 (checked)
        }
      }
    }
    return r;
  }

  // roi_pool backward, scatter form: g goes to the pixel recorded in argmax.
  template <typename T, typename A>
  static JAX_ROI_HD void Scatter(const T* grad, const A* rois, const int32_t* argmax, A* target,
                                 const Layout& L, const RoiParams& params, const PooledPos& e) {
    const int64_t n = RoiBatchIndex(rois + 5 * e.k, L.s.n);
    if (n < 0) return;
    const int64_t o = Offset(L.pooled, e.k, e.c, e.p, e.q);
    const int64_t pixel = argmax[o];
    if (pixel < 0 || pixel >= L.s.h * L.s.w) return;
    AtomicAdd(target + Offset(L.feat, n, e.c, pixel / L.s.w, pixel % L.s.w), Load<A>(grad[o]));
  }

  // roi_pool: g of (k, c, p, q) goes to the pixel whose index argmax recorded; a winner lies
  // in its bin, so only the bins containing the pixel are read.
  template <typename T, typename A>
  static JAX_ROI_HD void GatherRoi(const T* grad, const A* rois, const int32_t* argmax,
                                   int64_t k, const Layout& L, const RoiParams& params,
                                   const GatherPos& e, A (&acc)[kGatherTile]) {
    const int64_t pixel = e.y * L.s.w + e.x;
    const PoolRoiGeometry<A> g = PoolRoiOf(rois, k, L.s, params);
    if (!g.ok) return;
    const BinRange by = PoolBinsContaining(g.y, L.s.ph, e.y, L.s.h);
    if (by.begin >= by.end) return;
    const BinRange bx = PoolBinsContaining(g.x, L.s.pw, e.x, L.s.w);
    if (bx.begin >= bx.end) return;
    for (int64_t p = by.begin; p < by.end; ++p) {
      for (int64_t q = bx.begin; q < bx.end; ++q) {
        const int64_t o = Offset(L.pooled, k, e.c0, p, q);
        JAX_ROI_UNROLL
        for (int j = 0; j < kGatherTile; ++j) {
          const int64_t oc = o + j * e.cstep * L.pooled.c;
          if (j < e.cn && argmax[oc] == pixel) acc[j] += Load<A>(grad[oc]);
        }
      }
    }
  }

  // The pixels a roi_pool roi's backward can reach (as for roi_align).
  template <typename A>
  static JAX_ROI_HD RoiFootprint Footprint(const A* rois, int64_t k, const RoiShape& s,
                                           const RoiParams& params, bool whole_map) {
    const PoolRoiGeometry<A> g = PoolRoiOf(rois, k, s, params);
    if (!g.ok) return MakeFootprint(-1, PixelRange{0, 0}, PixelRange{0, 0});
    if (whole_map) return MakeFootprint(g.n, PixelRange{0, s.h}, PixelRange{0, s.w});
    return MakeFootprint(g.n, PoolFootprint(g.y, s.ph, s.h), PoolFootprint(g.x, s.pw, s.w));
  }
};

}  // namespace device

// ---------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------

namespace ops {

struct RoiPoolFwd : ForwardWithArgmax<device::PoolMax, PoolAttrs> {
  JAX_ROI_TARGET_NAMES("roi_pool_fwd", "roi_pool")
};

struct RoiPoolBwd : BackwardWithArgmax<device::PoolMax, PoolAttrs> {
  JAX_ROI_TARGET_NAMES("roi_pool_bwd", "roi_pool")
};

}  // namespace ops
}  // namespace jax_roi

#endif  // JAX_ROI_OPS_ROI_POOL_H_

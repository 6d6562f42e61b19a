// The roi_pool targets, forward and backward (conventions as in ops/roi_align.h). The CPU's
// hand-tuned kernels are in xla_kernels/cpu/roi_pool_cpu.cc.
#ifndef JAX_ROI_OPS_ROI_POOL_H_
#define JAX_ROI_OPS_ROI_POOL_H_

#include <cstddef>

#include "jax_roi/roi_call.h"
#include "jax_roi/roi_device_ops.h"

namespace jax_roi {
namespace ops {

struct RoiPoolFwd {
  static constexpr const char* kName = "roi_pool_fwd";
  static constexpr const char* kFamily = "roi_pool";
  using Attrs = PoolAttrs;
  static constexpr Role kArgs[] = {Role::kFeatures, Role::kRois};
  static constexpr Role kRets[] = {Role::kPooled, Role::kArgmax};
  static constexpr bool kUsesScratch = false;  // CUDA-graph safe
  static size_t ScratchBytes(const RoiCall&, const Attrs&) { return 0; }
  template <typename Exec>
  static void Run(Exec& ex, const RoiCall& c, const Attrs& a, void* /*scratch*/) {
    device::RunPoolForward(ex, c.type, c.args[0], c.args[1], c.rets[0],
                           static_cast<int32_t*>(c.rets[1]), c.s, ToRoiParams(a));
  }
};

struct RoiPoolBwd {
  static constexpr const char* kName = "roi_pool_bwd";
  static constexpr const char* kFamily = "roi_pool";
  using Attrs = PoolAttrs;
  static constexpr Role kArgs[] = {Role::kPooled, Role::kRois, Role::kArgmax};
  static constexpr Role kRets[] = {Role::kFeatureGrad};
  static constexpr bool kUsesScratch = true;
  static size_t ScratchBytes(const RoiCall& c, const Attrs& a) {
    return device::BackwardScratchBytes(c.type, c.s, a.deterministic);
  }
  template <typename Exec>
  static void Run(Exec& ex, const RoiCall& c, const Attrs& a, void* scratch,
                  device::RoiListMode lists = device::RoiListMode::kFootprints) {
    device::RunPoolBackward(ex, c.type, c.args[0], c.args[1],
                            static_cast<const int32_t*>(c.args[2]), c.rets[0], scratch, c.s,
                            ToRoiParams(a), a.deterministic, lists);
  }
};

}  // namespace ops
}  // namespace jax_roi

#endif  // JAX_ROI_OPS_ROI_POOL_H_

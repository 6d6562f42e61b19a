// The roi_align targets: avg and max modes, forward and backward. Each struct is an op's
// policy for the generic handlers (roles, attributes, scratch) and its device plan (the
// per-thread code of roi_device_ops.h, run by CUDA, by the emulation and by the CPU's
// generic executor). The CPU's hand-tuned kernels are in xla_kernels/cpu/roi_align_cpu.cc.
#ifndef JAX_ROI_OPS_ROI_ALIGN_H_
#define JAX_ROI_OPS_ROI_ALIGN_H_

#include <cstddef>

#include "jax_roi/roi_call.h"
#include "jax_roi/roi_device_ops.h"

namespace jax_roi {
namespace ops {

struct RoiAlignAvgFwd {
  static constexpr const char* kName = "roi_align_avg_fwd";
  static constexpr const char* kFamily = "roi_align";
  using Attrs = AlignAttrs;
  static constexpr Role kArgs[] = {Role::kFeatures, Role::kRois};
  static constexpr Role kRets[] = {Role::kPooled};
  static constexpr bool kUsesScratch = false;  // CUDA-graph safe
  static size_t ScratchBytes(const RoiCall&, const Attrs&) { return 0; }
  template <typename Exec>
  static void Run(Exec& ex, const RoiCall& c, const Attrs& a, void* /*scratch*/) {
    device::RunAlignAvgForward(ex, c.type, c.args[0], c.args[1], c.rets[0], c.s, ToRoiParams(a));
  }
};

struct RoiAlignAvgBwd {
  static constexpr const char* kName = "roi_align_avg_bwd";
  static constexpr const char* kFamily = "roi_align";
  using Attrs = AlignAttrs;
  static constexpr Role kArgs[] = {Role::kPooled, Role::kRois};
  static constexpr Role kRets[] = {Role::kFeatureGrad};
  static constexpr bool kUsesScratch = true;
  static size_t ScratchBytes(const RoiCall& c, const Attrs& a) {
    return device::BackwardScratchBytes(c.type, c.s, a.deterministic);
  }
  template <typename Exec>
  static void Run(Exec& ex, const RoiCall& c, const Attrs& a, void* scratch,
                  device::RoiListMode lists = device::RoiListMode::kFootprints) {
    device::RunAlignAvgBackward(ex, c.type, c.args[0], c.args[1], c.rets[0], scratch, c.s,
                                ToRoiParams(a), a.deterministic, lists);
  }
};

struct RoiAlignMaxFwd {
  static constexpr const char* kName = "roi_align_max_fwd";
  static constexpr const char* kFamily = "roi_align";
  using Attrs = AlignAttrs;
  static constexpr Role kArgs[] = {Role::kFeatures, Role::kRois};
  static constexpr Role kRets[] = {Role::kPooled, Role::kArgmax};
  static constexpr bool kUsesScratch = false;  // CUDA-graph safe
  static size_t ScratchBytes(const RoiCall&, const Attrs&) { return 0; }
  template <typename Exec>
  static void Run(Exec& ex, const RoiCall& c, const Attrs& a, void* /*scratch*/) {
    device::RunAlignMaxForward(ex, c.type, c.args[0], c.args[1], c.rets[0],
                               static_cast<int32_t*>(c.rets[1]), c.s, ToRoiParams(a));
  }
};

struct RoiAlignMaxBwd {
  static constexpr const char* kName = "roi_align_max_bwd";
  static constexpr const char* kFamily = "roi_align";
  using Attrs = AlignAttrs;
  static constexpr Role kArgs[] = {Role::kPooled, Role::kRois, Role::kArgmax};
  static constexpr Role kRets[] = {Role::kFeatureGrad};
  static constexpr bool kUsesScratch = true;
  static size_t ScratchBytes(const RoiCall& c, const Attrs& a) {
    return device::BackwardScratchBytes(c.type, c.s, a.deterministic);
  }
  template <typename Exec>
  static void Run(Exec& ex, const RoiCall& c, const Attrs& a, void* scratch,
                  device::RoiListMode lists = device::RoiListMode::kFootprints) {
    device::RunAlignMaxBackward(ex, c.type, c.args[0], c.args[1],
                                static_cast<const int32_t*>(c.args[2]), c.rets[0], scratch, c.s,
                                ToRoiParams(a), a.deterministic, lists);
  }
};

}  // namespace ops
}  // namespace jax_roi

#endif  // JAX_ROI_OPS_ROI_ALIGN_H_

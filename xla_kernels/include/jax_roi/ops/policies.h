// The policy shapes shared by the ops (forward or backward, with or without an argmax), for
// the generic handlers: operand roles, scratch, and the device plan that runs the op's
// bodies. An op's policy derives from one and adds its name (the op list's) and family:
//   struct RoiAlignAvgFwd : Forward<device::AlignAvg, AlignAttrs> {
//     JAX_ROI_TARGET_NAMES("roi_align_avg_fwd", "roi_align")
//   };
#ifndef JAX_ROI_OPS_POLICIES_H_
#define JAX_ROI_OPS_POLICIES_H_

#include <cstddef>
#include <cstdint>

#include "jax_roi/roi_call.h"
#include "jax_roi/roi_device_ops.h"

// A policy's kName (as in the op list and the messages) and kFamily (the messages' family).
#define JAX_ROI_TARGET_NAMES(name, family)  \
  static constexpr const char* kName = name; \
  static constexpr const char* kFamily = family;

namespace jax_roi {
namespace ops {

// The call contract's defaults: rois [K, 5], as many output channels as input channels.
// An op overrides them (the position-sensitive ops: C_out = C / (PH * PW), and -1 with
// kChannelsRule "divisible by PH * PW" for a C that does not fit; rotated boxes: rows of 6).
template <typename AttrsT>
struct DefaultContract {
  static constexpr int64_t kRoiWidth = 5;
  static constexpr const char* kChannelsRule = "";
  static int64_t OutChannels(int64_t c, const AttrsT&) { return c; }
};

// (features, rois) -> output [, argmax]. No scratch: CUDA-graph safe.
template <typename Body, typename AttrsT, bool kArgmax>
struct ForwardPolicy : DefaultContract<AttrsT> {
  using Attrs = AttrsT;
  static constexpr bool kUsesScratch = false;
  static size_t ScratchBytes(const RoiCall&, const Attrs&) { return 0; }
  template <typename Exec>
  static void Run(Exec& ex, const RoiCall& c, const Attrs& a, void* /*scratch*/) {
    device::RunForward<Body>(ex, c.type, c.args[0], c.args[1], c.rets[0],
                             kArgmax ? static_cast<int32_t*>(c.rets[1]) : nullptr, c.s,
                             ToRoiParams(a));
  }
};

template <typename Body, typename AttrsT>
struct Forward : ForwardPolicy<Body, AttrsT, false> {
  static constexpr Role kArgs[] = {Role::kFeatures, Role::kRois};
  static constexpr Role kRets[] = {Role::kPooled};
};

template <typename Body, typename AttrsT>
struct ForwardWithArgmax : ForwardPolicy<Body, AttrsT, true> {
  static constexpr Role kArgs[] = {Role::kFeatures, Role::kRois};
  static constexpr Role kRets[] = {Role::kPooled, Role::kArgmax};
};

// (grad, rois [, argmax]) -> grad_features: the atomic scatter or, with `deterministic`, the
// gather over the roi lists; scratch for either (device::BackwardScratchBytes).
template <typename Body, typename AttrsT, bool kArgmax>
struct BackwardPolicy : DefaultContract<AttrsT> {
  using Attrs = AttrsT;
  static constexpr bool kUsesScratch = true;
  static size_t ScratchBytes(const RoiCall& c, const Attrs& a) {
    return device::BackwardScratchBytes(c.type, c.s, a.deterministic);
  }
  template <typename Exec>
  static void Run(Exec& ex, const RoiCall& c, const Attrs& a, void* scratch,
                  device::RoiListMode lists = device::RoiListMode::kFootprints) {
    device::RunBackward<Body>(ex, c.type, c.args[0], c.args[1],
                              kArgmax ? static_cast<const int32_t*>(c.args[2]) : nullptr,
                              c.rets[0], scratch, c.s, ToRoiParams(a), a.deterministic, lists);
  }
};

template <typename Body, typename AttrsT>
struct Backward : BackwardPolicy<Body, AttrsT, false> {
  static constexpr Role kArgs[] = {Role::kPooled, Role::kRois};
  static constexpr Role kRets[] = {Role::kFeatureGrad};
};

template <typename Body, typename AttrsT>
struct BackwardWithArgmax : BackwardPolicy<Body, AttrsT, true> {
  static constexpr Role kArgs[] = {Role::kPooled, Role::kRois, Role::kArgmax};
  static constexpr Role kRets[] = {Role::kFeatureGrad};
};

}  // namespace ops
}  // namespace jax_roi

#endif  // JAX_ROI_OPS_POLICIES_H_

// One kernel call as every backend sees it once the FFI handler has checked its buffers:
// the element type, the sizes, the operand and result pointers in the op's role order, and
// the op family's attributes. No XLA or CUDA types, so that the FFI handlers (g++), the CUDA
// kernels (nvcc) and the host emulation pass the same structs.
#ifndef JAX_ROI_ROI_CALL_H_
#define JAX_ROI_ROI_CALL_H_

#include <cstdint>

#include "jax_roi/roi_shape.h"

namespace jax_roi {

// The attributes of the roi_align targets, in the order (and with the names) of the FFI
// attribute dictionary: the ABI of exported programs (README, "Custom-call ABI"). Every
// target of the family takes all of them on every platform; `deterministic` chooses the CUDA
// backward's algorithm and is ignored where there is one only (the CPU, the forwards).
struct AlignAttrs {
  int64_t pooled_h = 1, pooled_w = 1;
  double spatial_scale = 1.0;
  int64_t sampling_ratio = 0;  // <= 0: adaptive
  bool aligned = false;
  bool channels_last = false;
  bool deterministic = false;
};

// The attributes of the roi_pool targets (as AlignAttrs, without the sampling grid).
struct PoolAttrs {
  int64_t pooled_h = 1, pooled_w = 1;
  double spatial_scale = 1.0;
  bool channels_last = false;
  bool deterministic = false;
};

inline RoiParams ToRoiParams(const AlignAttrs& a) {
  return RoiParams{a.spatial_scale, a.sampling_ratio, a.aligned};
}
inline RoiParams ToRoiParams(const PoolAttrs& a) { return RoiParams{a.spatial_scale, 0, false}; }

// The roles an operand or result can play; each role has one shape check (ffi_handler.h).
enum class Role {
  kFeatures,      // [N, C, H, W] or [N, H, W, C] float: sets the element type, N, C, H, W
  kFeatureGrad,   // the same shape, a result: the gradient w.r.t. the features
  kRois,          // [K, 5] rows (batch_index, x1, y1, x2, y2) in the compute type: sets K
  kPooled,        // [K, C, PH, PW] or [K, PH, PW, C] of the element type
  kArgmax,        // pooled-shaped int32: the recorded winners
};

constexpr int kMaxOperands = 4;

// A checked call. `args` and `rets` follow the op's role lists.
struct RoiCall {
  ElementType type = ElementType::kF32;
  RoiShape s;
  const void* args[kMaxOperands] = {};
  void* rets[kMaxOperands] = {};
};

}  // namespace jax_roi

#endif  // JAX_ROI_ROI_CALL_H_

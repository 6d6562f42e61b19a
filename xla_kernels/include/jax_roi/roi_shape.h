// Plain descriptions of one roi op call: sizes, static parameters, element type.
//
// No XLA or CUDA types, so that FFI handlers (g++), CUDA kernels (nvcc) and the host
// emulation of the kernels all pass the same structs.
#ifndef JAX_ROI_ROI_SHAPE_H_
#define JAX_ROI_ROI_SHAPE_H_

#include <cstdint>

namespace jax_roi {

// Sizes of one roi op, read from its buffers. Features are [N, C, H, W] or [N, H, W, C];
// pooled tensors (outputs, gradients, argmax) are [K, C_out, PH, PW] or [K, PH, PW, C_out],
// where C_out is the op's function of C (C itself but for the position-sensitive ops).
struct RoiShape {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t k = 0, ph = 0, pw = 0;
  int64_t c_out = 0;
  bool channels_last = false;
};

// The static parameters besides the sizes. roi_pool uses only `scale`.
struct RoiParams {
  double scale = 1.0;
  int64_t ratio = 0;  // roi_align sampling_ratio (<= 0: adaptive)
  bool aligned = false;
};

// The four feature element types, as the device code dispatches on them.
enum class ElementType { kF32, kF64, kF16, kBF16 };

}  // namespace jax_roi

#endif  // JAX_ROI_ROI_SHAPE_H_

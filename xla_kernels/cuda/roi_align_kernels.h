// Launchers of the roi_align CUDA kernels: raw device pointers and a stream, no XLA types
// (the FFI handlers in roi_align_ffi.cc, compiled by the host compiler, call these).
// Every launcher is asynchronous on `stream`, allocates nothing, and returns the first
// CUDA error of its launches.
#ifndef JAX_ROI_CUDA_ROI_ALIGN_KERNELS_H_
#define JAX_ROI_CUDA_ROI_ALIGN_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "jax_roi/roi_shape.h"

namespace jax_roi {
namespace cuda {

// features [N, C, H, W] | [N, H, W, C]; rois [K, 5] in float32 (float64 for float64
// features); out [K, C, PH, PW] | [K, PH, PW, C].
cudaError_t LaunchRoiAlignAvgFwd(cudaStream_t stream, ElementType type, const void* features,
                                 const void* rois, void* out, const RoiShape& s,
                                 const RoiParams& prm);

// grad pooled-shaped; dfeat features-shaped; scratch: RoiBackwardScratchBytes(...) bytes
// (null when that is 0).
cudaError_t LaunchRoiAlignAvgBwd(cudaStream_t stream, ElementType type, const void* grad,
                                 const void* rois, void* dfeat, void* scratch,
                                 const RoiShape& s, const RoiParams& prm, bool deterministic);

// argmax: int32 pooled-shaped, the winning sample's grid index iy * gw + ix, or -1.
cudaError_t LaunchRoiAlignMaxFwd(cudaStream_t stream, ElementType type, const void* features,
                                 const void* rois, void* out, int32_t* argmax,
                                 const RoiShape& s, const RoiParams& prm);

cudaError_t LaunchRoiAlignMaxBwd(cudaStream_t stream, ElementType type, const void* grad,
                                 const void* rois, const int32_t* argmax, void* dfeat,
                                 void* scratch, const RoiShape& s, const RoiParams& prm,
                                 bool deterministic);

// Scratch bytes a backward launch needs: float32 accumulators for a 16-bit atomic
// backward (0 for 32/64-bit types), the roi footprints and tile masks for the deterministic
// one (0 when K = 0; SIZE_MAX when it cannot fit). Shared by all three backward ops.
size_t RoiBackwardScratchBytes(ElementType type, const RoiShape& s, bool deterministic);

}  // namespace cuda
}  // namespace jax_roi

#endif  // JAX_ROI_CUDA_ROI_ALIGN_KERNELS_H_

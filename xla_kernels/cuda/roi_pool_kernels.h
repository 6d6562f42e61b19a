// Launchers of the roi_pool CUDA kernels (see roi_align_kernels.h for the conventions).
#ifndef JAX_ROI_CUDA_ROI_POOL_KERNELS_H_
#define JAX_ROI_CUDA_ROI_POOL_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "jax_roi/roi_shape.h"

namespace jax_roi {
namespace cuda {

// argmax: int32 pooled-shaped, the winning pixel's index y * W + x, or -1.
cudaError_t LaunchRoiPoolFwd(cudaStream_t stream, ElementType type, const void* features,
                             const void* rois, void* out, int32_t* argmax, const RoiShape& s,
                             const RoiParams& prm);

cudaError_t LaunchRoiPoolBwd(cudaStream_t stream, ElementType type, const void* grad,
                             const void* rois, const int32_t* argmax, void* dfeat,
                             void* scratch, const RoiShape& s, const RoiParams& prm,
                             bool deterministic);

}  // namespace cuda
}  // namespace jax_roi

#endif  // JAX_ROI_CUDA_ROI_POOL_KERNELS_H_

// roi_pool CUDA kernels: the shared per-thread ops of jax_roi/roi_device_ops.h on a stream.
#include "roi_pool_kernels.h"

#include "cuda_exec.cuh"
#include "jax_roi/roi_device_ops.h"

namespace jax_roi {
namespace cuda {

cudaError_t LaunchRoiPoolFwd(cudaStream_t stream, ElementType type, const void* features,
                             const void* rois, void* out, int32_t* argmax, const RoiShape& s,
                             const RoiParams& prm) {
  StreamExec ex(stream);
  device::RunPoolForward(ex, type, features, rois, out, argmax, s, prm);
  return ex.status();
}

cudaError_t LaunchRoiPoolBwd(cudaStream_t stream, ElementType type, const void* grad,
                             const void* rois, const int32_t* argmax, void* dfeat,
                             void* scratch, const RoiShape& s, const RoiParams& prm,
                             bool deterministic) {
  StreamExec ex(stream);
  device::RunPoolBackward(ex, type, grad, rois, argmax, dfeat, scratch, s, prm, deterministic);
  return ex.status();
}

}  // namespace cuda
}  // namespace jax_roi

// roi_align CUDA kernels: the shared per-thread ops run on a stream. All math is in
// jax_roi/roi_device_ops.h (and roi_math.h), which the host emulation runs too.
#include "roi_align_kernels.h"

#include "cuda_exec.cuh"
#include "jax_roi/roi_device_ops.h"

namespace jax_roi {
namespace cuda {

cudaError_t LaunchRoiAlignAvgFwd(cudaStream_t stream, ElementType type, const void* features,
                                 const void* rois, void* out, const RoiShape& s,
                                 const RoiParams& prm) {
  StreamExec ex(stream);
  device::RunAlignAvgForward(ex, type, features, rois, out, s, prm);
  return ex.status();
}

cudaError_t LaunchRoiAlignAvgBwd(cudaStream_t stream, ElementType type, const void* grad,
                                 const void* rois, void* dfeat, void* scratch,
                                 const RoiShape& s, const RoiParams& prm, bool deterministic) {
  StreamExec ex(stream);
  device::RunAlignAvgBackward(ex, type, grad, rois, dfeat, scratch, s, prm, deterministic);
  return ex.status();
}

cudaError_t LaunchRoiAlignMaxFwd(cudaStream_t stream, ElementType type, const void* features,
                                 const void* rois, void* out, int32_t* argmax,
                                 const RoiShape& s, const RoiParams& prm) {
  StreamExec ex(stream);
  device::RunAlignMaxForward(ex, type, features, rois, out, argmax, s, prm);
  return ex.status();
}

cudaError_t LaunchRoiAlignMaxBwd(cudaStream_t stream, ElementType type, const void* grad,
                                 const void* rois, const int32_t* argmax, void* dfeat,
                                 void* scratch, const RoiShape& s, const RoiParams& prm,
                                 bool deterministic) {
  StreamExec ex(stream);
  device::RunAlignMaxBackward(ex, type, grad, rois, argmax, dfeat, scratch, s, prm,
                              deterministic);
  return ex.status();
}

size_t RoiBackwardScratchBytes(ElementType type, const RoiShape& s, bool deterministic) {
  return device::BackwardScratchBytes(type, s, deterministic);
}

}  // namespace cuda
}  // namespace jax_roi

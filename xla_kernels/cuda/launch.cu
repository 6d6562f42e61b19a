// The CUDA kernels of every op of the op list: its device plan (jax_roi/ops/, over the
// per-thread code of jax_roi/roi_device_ops.h) on a stream. The emulation runs the same plans.
#include "launch.h"

#include "cuda_exec.cuh"
#include "jax_roi/op_list.h"

namespace jax_roi {
namespace cuda {

template <typename Op>
cudaError_t Launch(cudaStream_t stream, const RoiCall& call, const typename Op::Attrs& attrs,
                   void* scratch) {
  StreamExec ex(stream);
  Op::Run(ex, call, attrs, scratch);
  return ex.status();
}

#define JAX_ROI_INSTANTIATE_LAUNCH(name, Op)                                        \
  template cudaError_t Launch<ops::Op>(cudaStream_t, const RoiCall&,               \
                                       const ops::Op::Attrs&, void*);
JAX_ROI_OPS(JAX_ROI_INSTANTIATE_LAUNCH)

}  // namespace cuda
}  // namespace jax_roi

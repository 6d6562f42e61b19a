// Launching an op's device plan on a CUDA stream: compiled by nvcc (launch.cu) for every op
// of the op list, called by the host-compiled FFI handlers (cuda_handlers.cc) through raw
// pointers only, so that the handlers never meet nvcc and the kernels never meet XLA.
#ifndef JAX_ROI_CUDA_LAUNCH_H_
#define JAX_ROI_CUDA_LAUNCH_H_

#include <cuda_runtime_api.h>

#include "jax_roi/roi_call.h"

namespace jax_roi {
namespace cuda {

// Queues op Op's kernels on `stream`; `scratch` holds Op::ScratchBytes(call, attrs) bytes
// (null when that is 0). Returns the first launch error.
template <typename Op>
cudaError_t Launch(cudaStream_t stream, const RoiCall& call, const typename Op::Attrs& attrs,
                   void* scratch);

}  // namespace cuda
}  // namespace jax_roi

#endif  // JAX_ROI_CUDA_LAUNCH_H_

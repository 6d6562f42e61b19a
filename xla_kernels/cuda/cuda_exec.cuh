// Runs the shared per-thread ops (jax_roi/roi_device_ops.h) as CUDA kernels on one stream.
// Included by the *_kernels.cu files only.
#ifndef JAX_ROI_CUDA_EXEC_CUH_
#define JAX_ROI_CUDA_EXEC_CUH_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "jax_roi/roi_device_ops.h"

namespace jax_roi {
namespace cuda {

constexpr int kBlock = 256;
// Grid-stride loops beyond this many blocks: far more than enough threads to fill any GPU,
// and a grid size that fits gridDim.x for any int64 element count.
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

// The only kernel: op(i) for every i in [0, n). Ops are small structs of pointers and sizes,
// passed by value in kernel parameter space.
template <typename Op>
__global__ void __launch_bounds__(kBlock) RunOpKernel(const Op op, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    op(i);
  }
}

// The executor the plans in roi_device_ops.h drive: asynchronous launches and clears on one
// stream, never a synchronisation or an allocation. Keeps the first error; later steps of a
// failed plan are skipped.
class StreamExec {
 public:
  explicit StreamExec(cudaStream_t stream) : stream_(stream) {}

  template <typename Op>
  void Run(const Op& op) {
    const int64_t n = op.size();
    if (status_ != cudaSuccess || n <= 0) return;  // an empty grid is a launch error
    int64_t blocks = CeilDiv(n, kBlock);
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    RunOpKernel<Op><<<static_cast<unsigned>(blocks), kBlock, 0, stream_>>>(op, n);
    status_ = cudaGetLastError();
  }

  void Zero(void* data, size_t bytes) {
    if (status_ != cudaSuccess || bytes == 0) return;
    status_ = cudaMemsetAsync(data, 0, bytes, stream_);  // 0.0f and 0.0 are all-zero bits
  }

  cudaError_t status() const { return status_; }

 private:
  cudaStream_t stream_;
  cudaError_t status_ = cudaSuccess;
};

}  // namespace cuda
}  // namespace jax_roi

#endif  // JAX_ROI_CUDA_EXEC_CUH_

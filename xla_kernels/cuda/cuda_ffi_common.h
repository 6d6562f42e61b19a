// Glue shared by the CUDA FFI handlers: CUDA errors and scratch as ffi::Error.
#ifndef JAX_ROI_CUDA_FFI_COMMON_H_
#define JAX_ROI_CUDA_FFI_COMMON_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "jax_roi/ffi_checks.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cuda {

// The launcher's first error, else whatever the launches left behind (cudaGetLastError
// also clears a sticky launch error so that it is reported once, by this op).
inline ffi::Error CudaStatus(const std::string& op, cudaError_t launched) {
  const cudaError_t last = cudaGetLastError();
  const cudaError_t e = launched != cudaSuccess ? launched : last;
  if (e == cudaSuccess) return ffi::Error::Success();
  return ffi::Error(ffi::ErrorCode::kInternal,
                    "jax_roi " + op + ": CUDA error: " + cudaGetErrorName(e) + ": " +
                        cudaGetErrorString(e));
}

// Scratch from XLA's allocator (never a private cudaMalloc); null when bytes is 0. The
// backward takes it for float32 accumulation of 16-bit gradients (atomic) or for the roi
// footprints and tile masks (deterministic). XLA refuses any alignment above 16 bytes
// (InvalidArgument, which the FFI wrapper reports as a plain failure); its device allocator
// hands out 256-byte aligned blocks anyway, and every sub-array carved from the scratch is
// placed at a multiple of 16 bytes.
inline ffi::Error AllocateScratch(const std::string& op, ffi::ScratchAllocator& scratch,
                                  size_t bytes, void** out) {
  *out = nullptr;
  if (bytes == 0) return ffi::Error::Success();
  auto data = scratch.Allocate(bytes, 16);
  if (!data.has_value()) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                      "jax_roi " + op + ": cannot allocate " + std::to_string(bytes) +
                          " bytes of scratch for the backward");
  }
  *out = *data;
  return ffi::Error::Success();
}

}  // namespace cuda
}  // namespace jax_roi

#endif  // JAX_ROI_CUDA_FFI_COMMON_H_

// The CUDA FFI handlers of every target in the op list: decode and check the call (the same
// checks and messages as the CPU handlers), take the op's scratch from XLA, launch on XLA's
// stream. Compiled by the host compiler.
#include <cuda_runtime_api.h>

#include "cuda_ffi_common.h"
#include "jax_roi/ffi_checks.h"
#include "jax_roi/op_list.h"
#include "launch.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cuda {

// An op without scratch (the forwards) allocates nothing and never synchronises: safe inside
// CUDA graphs.
template <typename Op>
ffi::Error Handler(cudaStream_t stream, ffi::RemainingArgs args, ffi::RemainingRets rets,
                   typename Op::Attrs attrs) {
  static_assert(!Op::kUsesScratch, "an op with scratch binds the allocator");
  RoiCall call;
  JAX_ROI_RETURN_IF_ERROR(DecodeCall<Op>(args, rets, attrs, &call));
  return CudaStatus(Op::kName, Launch<Op>(stream, call, attrs, nullptr));
}

// The backwards may take scratch from XLA's allocator (the 16-bit atomic backward's float
// accumulators, the deterministic backward's roi lists), whose address would not outlive a
// graph capture, so they are not marked graph-safe.
template <typename Op>
ffi::Error ScratchHandler(cudaStream_t stream, ffi::ScratchAllocator scratch,
                          ffi::RemainingArgs args, ffi::RemainingRets rets,
                          typename Op::Attrs attrs) {
  RoiCall call;
  JAX_ROI_RETURN_IF_ERROR(DecodeCall<Op>(args, rets, attrs, &call));
  void* work;
  JAX_ROI_RETURN_IF_ERROR(
      AllocateScratch(Op::kName, scratch, Op::ScratchBytes(call, attrs), &work));
  return CudaStatus(Op::kName, Launch<Op>(stream, call, attrs, work));
}

template <typename Op>
XLA_FFI_Error* Call(XLA_FFI_CallFrame* frame) {
  using Stream = ffi::PlatformStream<cudaStream_t>;
  if constexpr (Op::kUsesScratch) {
    static auto* handler = ffi::Ffi::Bind()
                               .Ctx<Stream>()
                               .Ctx<ffi::ScratchAllocator>()
                               .RemainingArgs()
                               .RemainingRets()
                               .template Attrs<typename Op::Attrs>()
                               .To(ScratchHandler<Op>)
                               .release();
    return handler->Call(frame);
  } else {
    static auto* handler = ffi::Ffi::Bind()
                               .Ctx<Stream>()
                               .RemainingArgs()
                               .RemainingRets()
                               .template Attrs<typename Op::Attrs>()
                               .To(Handler<Op>, {ffi::Traits::kCmdBufferCompatible})
                               .release();
    return handler->Call(frame);
  }
}

}  // namespace cuda
}  // namespace jax_roi

#define JAX_ROI_DEFINE_CUDA_HANDLER(name, Op)                                 \
  extern "C" XLA_FFI_Error* Op##Cuda(XLA_FFI_CallFrame* frame) {             \
    return jax_roi::cuda::Call<jax_roi::ops::Op>(frame);                     \
  }
JAX_ROI_OPS(JAX_ROI_DEFINE_CUDA_HANDLER)

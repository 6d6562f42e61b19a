// roi_pool CUDA FFI handlers (conventions as in roi_align_ffi.cc).
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda_ffi_common.h"
#include "jax_roi/ffi_checks.h"
#include "jax_roi/roi_shape.h"
#include "roi_align_kernels.h"
#include "roi_pool_kernels.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cuda {
namespace {

ffi::Error RoiPoolFwdImpl(cudaStream_t stream, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                          ffi::Result<ffi::AnyBuffer> out,
                          ffi::Result<ffi::Buffer<ffi::S32>> argmax, int64_t pooled_h,
                          int64_t pooled_w, double spatial_scale, bool channels_last) {
  const char* op = "roi_pool_fwd";
  RoiShape s;
  const auto argmax_dims = argmax->dimensions();
  if (auto e = CheckRoiOp(op, "features", features.dimensions(), features.element_type(),
                          rois, "output", out->dimensions(), out->element_type(), &argmax_dims,
                          {pooled_h, pooled_w, spatial_scale, 0, channels_last}, &s);
      e.failure())
    return e;
  ElementType type = ElementType::kF32;
  if (auto e = ReadElementType("roi_pool", features.element_type(), &type); e.failure())
    return e;
  const RoiParams prm{spatial_scale, 0, false};
  return CudaStatus(op, LaunchRoiPoolFwd(stream, type, features.untyped_data(),
                                         rois.untyped_data(), out->untyped_data(),
                                         argmax->typed_data(), s, prm));
}

ffi::Error RoiPoolBwdImpl(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer grad,
                          ffi::AnyBuffer rois, ffi::Buffer<ffi::S32> argmax,
                          ffi::Result<ffi::AnyBuffer> dfeat, int64_t pooled_h, int64_t pooled_w,
                          double spatial_scale, bool channels_last, bool deterministic) {
  const char* op = "roi_pool_bwd";
  RoiShape s;
  const auto argmax_dims = argmax.dimensions();
  if (auto e = CheckRoiOp(op, "grad_features", dfeat->dimensions(), dfeat->element_type(), rois,
                          "grad", grad.dimensions(), grad.element_type(), &argmax_dims,
                          {pooled_h, pooled_w, spatial_scale, 0, channels_last}, &s);
      e.failure())
    return e;
  ElementType type = ElementType::kF32;
  if (auto e = ReadElementType("roi_pool", grad.element_type(), &type); e.failure()) return e;
  void* work;
  if (auto e = AllocateScratch(op, scratch, RoiBackwardScratchBytes(type, s, deterministic),
                               &work);
      e.failure())
    return e;
  const RoiParams prm{spatial_scale, 0, false};
  return CudaStatus(op, LaunchRoiPoolBwd(stream, type, grad.untyped_data(), rois.untyped_data(),
                                         argmax.typed_data(), dfeat->untyped_data(), work, s,
                                         prm, deterministic));
}

}  // namespace
}  // namespace cuda
}  // namespace jax_roi

namespace ffi = xla::ffi;

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiPoolFwdCuda, jax_roi::cuda::RoiPoolFwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("pooled_h")
                                  .Attr<int64_t>("pooled_w")
                                  .Attr<double>("spatial_scale")
                                  .Attr<bool>("channels_last"),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiPoolBwdCuda, jax_roi::cuda::RoiPoolBwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<ffi::ScratchAllocator>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("pooled_h")
                                  .Attr<int64_t>("pooled_w")
                                  .Attr<double>("spatial_scale")
                                  .Attr<bool>("channels_last")
                                  .Attr<bool>("deterministic"));

// roi_align CUDA FFI handlers: decode and check the buffers (the same checks and messages
// as the CPU handlers), then launch on XLA's stream. Compiled by the host compiler.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda_ffi_common.h"
#include "jax_roi/ffi_checks.h"
#include "jax_roi/roi_shape.h"
#include "roi_align_kernels.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cuda {
namespace {

ffi::Error RoiAlignAvgFwdImpl(cudaStream_t stream, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                              ffi::Result<ffi::AnyBuffer> out, int64_t pooled_h,
                              int64_t pooled_w, double spatial_scale, int64_t sampling_ratio,
                              bool aligned, bool channels_last) {
  const char* op = "roi_align_avg_fwd";
  RoiShape s;
  if (auto e = CheckRoiOp(op, "features", features.dimensions(), features.element_type(),
                          rois, "output", out->dimensions(), out->element_type(), nullptr,
                          {pooled_h, pooled_w, spatial_scale, sampling_ratio, channels_last}, &s);
      e.failure())
    return e;
  ElementType type = ElementType::kF32;
  if (auto e = ReadElementType("roi_align", features.element_type(), &type); e.failure())
    return e;
  const RoiParams prm{spatial_scale, sampling_ratio, aligned};
  return CudaStatus(op, LaunchRoiAlignAvgFwd(stream, type, features.untyped_data(),
                                             rois.untyped_data(), out->untyped_data(), s, prm));
}

ffi::Error RoiAlignAvgBwdImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                              ffi::AnyBuffer grad, ffi::AnyBuffer rois,
                              ffi::Result<ffi::AnyBuffer> dfeat, int64_t pooled_h,
                              int64_t pooled_w, double spatial_scale, int64_t sampling_ratio,
                              bool aligned, bool channels_last, bool deterministic) {
  const char* op = "roi_align_avg_bwd";
  RoiShape s;
  if (auto e = CheckRoiOp(op, "grad_features", dfeat->dimensions(), dfeat->element_type(), rois,
                          "grad", grad.dimensions(), grad.element_type(), nullptr,
                          {pooled_h, pooled_w, spatial_scale, sampling_ratio, channels_last}, &s);
      e.failure())
    return e;
  ElementType type = ElementType::kF32;
  if (auto e = ReadElementType("roi_align", grad.element_type(), &type); e.failure()) return e;
  void* work;
  if (auto e = AllocateScratch(op, scratch, RoiBackwardScratchBytes(type, s, deterministic),
                               &work);
      e.failure())
    return e;
  const RoiParams prm{spatial_scale, sampling_ratio, aligned};
  return CudaStatus(op, LaunchRoiAlignAvgBwd(stream, type, grad.untyped_data(),
                                             rois.untyped_data(), dfeat->untyped_data(), work,
                                             s, prm, deterministic));
}

ffi::Error RoiAlignMaxFwdImpl(cudaStream_t stream, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                              ffi::Result<ffi::AnyBuffer> out,
                              ffi::Result<ffi::Buffer<ffi::S32>> argmax, int64_t pooled_h,
                              int64_t pooled_w, double spatial_scale, int64_t sampling_ratio,
                              bool aligned, bool channels_last) {
  const char* op = "roi_align_max_fwd";
  RoiShape s;
  const auto argmax_dims = argmax->dimensions();
  if (auto e = CheckRoiOp(op, "features", features.dimensions(), features.element_type(),
                          rois, "output", out->dimensions(), out->element_type(), &argmax_dims,
                          {pooled_h, pooled_w, spatial_scale, sampling_ratio, channels_last}, &s);
      e.failure())
    return e;
  ElementType type = ElementType::kF32;
  if (auto e = ReadElementType("roi_align", features.element_type(), &type); e.failure())
    return e;
  const RoiParams prm{spatial_scale, sampling_ratio, aligned};
  return CudaStatus(op, LaunchRoiAlignMaxFwd(stream, type, features.untyped_data(),
                                             rois.untyped_data(), out->untyped_data(),
                                             argmax->typed_data(), s, prm));
}

ffi::Error RoiAlignMaxBwdImpl(cudaStream_t stream, ffi::ScratchAllocator scratch,
                              ffi::AnyBuffer grad, ffi::AnyBuffer rois,
                              ffi::Buffer<ffi::S32> argmax, ffi::Result<ffi::AnyBuffer> dfeat,
                              int64_t pooled_h, int64_t pooled_w, double spatial_scale,
                              int64_t sampling_ratio, bool aligned, bool channels_last,
                              bool deterministic) {
  const char* op = "roi_align_max_bwd";
  RoiShape s;
  const auto argmax_dims = argmax.dimensions();
  if (auto e = CheckRoiOp(op, "grad_features", dfeat->dimensions(), dfeat->element_type(), rois,
                          "grad", grad.dimensions(), grad.element_type(), &argmax_dims,
                          {pooled_h, pooled_w, spatial_scale, sampling_ratio, channels_last}, &s);
      e.failure())
    return e;
  ElementType type = ElementType::kF32;
  if (auto e = ReadElementType("roi_align", grad.element_type(), &type); e.failure()) return e;
  void* work;
  if (auto e = AllocateScratch(op, scratch, RoiBackwardScratchBytes(type, s, deterministic),
                               &work);
      e.failure())
    return e;
  const RoiParams prm{spatial_scale, sampling_ratio, aligned};
  return CudaStatus(op, LaunchRoiAlignMaxBwd(stream, type, grad.untyped_data(),
                                             rois.untyped_data(), argmax.typed_data(),
                                             dfeat->untyped_data(), work, s, prm,
                                             deterministic));
}

}  // namespace
}  // namespace cuda
}  // namespace jax_roi

namespace ffi = xla::ffi;

#define JAX_ROI_ALIGN_ATTRS                 \
  .Attr<int64_t>("pooled_h")                \
      .Attr<int64_t>("pooled_w")            \
      .Attr<double>("spatial_scale")        \
      .Attr<int64_t>("sampling_ratio")      \
      .Attr<bool>("aligned")                \
      .Attr<bool>("channels_last")

// Forward handlers allocate nothing and never synchronise: safe inside CUDA graphs. The
// backward handlers may take scratch from XLA's allocator (16-bit atomic backward, and the
// deterministic backward's roi lists), whose address would not outlive a graph capture, so
// they are not marked.
XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignAvgFwdCuda, jax_roi::cuda::RoiAlignAvgFwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JAX_ROI_ALIGN_ATTRS,
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignAvgBwdCuda, jax_roi::cuda::RoiAlignAvgBwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<ffi::ScratchAllocator>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JAX_ROI_ALIGN_ATTRS
                                  .Attr<bool>("deterministic"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignMaxFwdCuda, jax_roi::cuda::RoiAlignMaxFwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::S32>>() JAX_ROI_ALIGN_ATTRS,
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignMaxBwdCuda, jax_roi::cuda::RoiAlignMaxBwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<ffi::ScratchAllocator>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>() JAX_ROI_ALIGN_ATTRS
                                  .Attr<bool>("deterministic"));

// Host emulation of the CUDA kernels, for testing their math on machines without a GPU.
//
// CPU FFI targets `jax_roi_emu_<op>`, with the CUDA targets' attributes, that run the very
// plans and per-thread ops the CUDA kernels run (jax_roi/roi_device_ops.h), serially over
// the same index spaces: thread i of a kernel is call op(i) here. The atomic backward's
// atomicAdd is a plain += (AtomicAdd in that header), so the emulated scatter sums in
// index order, one of the orders a GPU may use. Nothing here is fast or meant for use.
#include <cstdint>
#include <cstring>
#include <vector>

#include "jax_roi/ffi_checks.h"
#include "jax_roi/roi_device_ops.h"
#include "jax_roi/roi_shape.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace emulation {
namespace {

// The executor of the plans: one host thread, kernels in launch order.
struct SerialExec {
  template <typename Op>
  void Run(const Op& op) {
    const int64_t n = op.size();
    for (int64_t i = 0; i < n; ++i) op(i);
  }
  void Zero(void* data, size_t bytes) {
    if (bytes) std::memset(data, 0, bytes);
  }
};

// Float32 scratch as the CUDA handler would get it from XLA (a heap vector here).
struct Scratch {
  std::vector<float> data;
  void* Get(ElementType type, const RoiShape& s, bool deterministic) {
    data.resize(device::BackwardScratchBytes(type, s, deterministic) / sizeof(float));
    return data.empty() ? nullptr : data.data();
  }
};

ffi::Error AlignAvgFwd(ffi::AnyBuffer features, ffi::AnyBuffer rois,
                       ffi::Result<ffi::AnyBuffer> out, int64_t pooled_h, int64_t pooled_w,
                       double spatial_scale, int64_t sampling_ratio, bool aligned,
                       bool channels_last) {
  RoiShape s;
  if (auto e = CheckRoiOp("roi_align_avg_fwd", "features", features.dimensions(),
                          features.element_type(), rois, "output", out->dimensions(),
                          out->element_type(), nullptr,
                          {pooled_h, pooled_w, spatial_scale, sampling_ratio, channels_last}, &s);
      e.failure())
    return e;
  ElementType type = ElementType::kF32;
  if (auto e = ReadElementType("roi_align", features.element_type(), &type); e.failure())
    return e;
  SerialExec ex;
  device::RunAlignAvgForward(ex, type, features.untyped_data(), rois.untyped_data(),
                             out->untyped_data(), s, {spatial_scale, sampling_ratio, aligned});
  return ffi::Error::Success();
}

ffi::Error AlignAvgBwd(ffi::AnyBuffer grad, ffi::AnyBuffer rois,
                       ffi::Result<ffi::AnyBuffer> dfeat, int64_t pooled_h, int64_t pooled_w,
                       double spatial_scale, int64_t sampling_ratio, bool aligned,
                       bool channels_last, bool deterministic) {
  RoiShape s;
  if (auto e = CheckRoiOp("roi_align_avg_bwd", "grad_features", dfeat->dimensions(),
                          dfeat->element_type(), rois, "grad", grad.dimensions(),
                          grad.element_type(), nullptr,
                          {pooled_h, pooled_w, spatial_scale, sampling_ratio, channels_last}, &s);
      e.failure())
    return e;
  ElementType type = ElementType::kF32;
  if (auto e = ReadElementType("roi_align", grad.element_type(), &type); e.failure()) return e;
  SerialExec ex;
  Scratch scratch;
  device::RunAlignAvgBackward(ex, type, grad.untyped_data(), rois.untyped_data(),
                              dfeat->untyped_data(), scratch.Get(type, s, deterministic), s,
                              {spatial_scale, sampling_ratio, aligned}, deterministic);
  return ffi::Error::Success();
}

ffi::Error AlignMaxFwd(ffi::AnyBuffer features, ffi::AnyBuffer rois,
                       ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::Buffer<ffi::S32>> argmax,
                       int64_t pooled_h, int64_t pooled_w, double spatial_scale,
                       int64_t sampling_ratio, bool aligned, bool channels_last) {
  RoiShape s;
  const auto argmax_dims = argmax->dimensions();
  if (auto e = CheckRoiOp("roi_align_max_fwd", "features", features.dimensions(),
                          features.element_type(), rois, "output", out->dimensions(),
                          out->element_type(), &argmax_dims,
                          {pooled_h, pooled_w, spatial_scale, sampling_ratio, channels_last}, &s);
      e.failure())
    return e;
  ElementType type = ElementType::kF32;
  if (auto e = ReadElementType("roi_align", features.element_type(), &type); e.failure())
    return e;
  SerialExec ex;
  device::RunAlignMaxForward(ex, type, features.untyped_data(), rois.untyped_data(),
                             out->untyped_data(), argmax->typed_data(), s,
                             {spatial_scale, sampling_ratio, aligned});
  return ffi::Error::Success();
}

ffi::Error AlignMaxBwd(ffi::AnyBuffer grad, ffi::AnyBuffer rois, ffi::Buffer<ffi::S32> argmax,
                       ffi::Result<ffi::AnyBuffer> dfeat, int64_t pooled_h, int64_t pooled_w,
                       double spatial_scale, int64_t sampling_ratio, bool aligned,
                       bool channels_last, bool deterministic) {
  RoiShape s;
  const auto argmax_dims = argmax.dimensions();
  if (auto e = CheckRoiOp("roi_align_max_bwd", "grad_features", dfeat->dimensions(),
                          dfeat->element_type(), rois, "grad", grad.dimensions(),
                          grad.element_type(), &argmax_dims,
                          {pooled_h, pooled_w, spatial_scale, sampling_ratio, channels_last}, &s);
      e.failure())
    return e;
  ElementType type = ElementType::kF32;
  if (auto e = ReadElementType("roi_align", grad.element_type(), &type); e.failure()) return e;
  SerialExec ex;
  Scratch scratch;
  device::RunAlignMaxBackward(ex, type, grad.untyped_data(), rois.untyped_data(),
                              argmax.typed_data(), dfeat->untyped_data(),
                              scratch.Get(type, s, deterministic), s,
                              {spatial_scale, sampling_ratio, aligned}, deterministic);
  return ffi::Error::Success();
}

ffi::Error PoolFwd(ffi::AnyBuffer features, ffi::AnyBuffer rois, ffi::Result<ffi::AnyBuffer> out,
                   ffi::Result<ffi::Buffer<ffi::S32>> argmax, int64_t pooled_h,
                   int64_t pooled_w, double spatial_scale, bool channels_last) {
  RoiShape s;
  const auto argmax_dims = argmax->dimensions();
  if (auto e = CheckRoiOp("roi_pool_fwd", "features", features.dimensions(),
                          features.element_type(), rois, "output", out->dimensions(),
                          out->element_type(), &argmax_dims,
                          {pooled_h, pooled_w, spatial_scale, 0, channels_last}, &s);
      e.failure())
    return e;
  ElementType type = ElementType::kF32;
  if (auto e = ReadElementType("roi_pool", features.element_type(), &type); e.failure())
    return e;
  SerialExec ex;
  device::RunPoolForward(ex, type, features.untyped_data(), rois.untyped_data(),
                         out->untyped_data(), argmax->typed_data(), s, {spatial_scale, 0, false});
  return ffi::Error::Success();
}

ffi::Error PoolBwd(ffi::AnyBuffer grad, ffi::AnyBuffer rois, ffi::Buffer<ffi::S32> argmax,
                   ffi::Result<ffi::AnyBuffer> dfeat, int64_t pooled_h, int64_t pooled_w,
                   double spatial_scale, bool channels_last, bool deterministic) {
  RoiShape s;
  const auto argmax_dims = argmax.dimensions();
  if (auto e = CheckRoiOp("roi_pool_bwd", "grad_features", dfeat->dimensions(),
                          dfeat->element_type(), rois, "grad", grad.dimensions(),
                          grad.element_type(), &argmax_dims,
                          {pooled_h, pooled_w, spatial_scale, 0, channels_last}, &s);
      e.failure())
    return e;
  ElementType type = ElementType::kF32;
  if (auto e = ReadElementType("roi_pool", grad.element_type(), &type); e.failure()) return e;
  SerialExec ex;
  Scratch scratch;
  device::RunPoolBackward(ex, type, grad.untyped_data(), rois.untyped_data(),
                          argmax.typed_data(), dfeat->untyped_data(),
                          scratch.Get(type, s, deterministic), s, {spatial_scale, 0, false},
                          deterministic);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace emulation
}  // namespace jax_roi

namespace ffi = xla::ffi;

#define JAX_ROI_ALIGN_ATTRS                 \
  .Attr<int64_t>("pooled_h")                \
      .Attr<int64_t>("pooled_w")            \
      .Attr<double>("spatial_scale")        \
      .Attr<int64_t>("sampling_ratio")      \
      .Attr<bool>("aligned")                \
      .Attr<bool>("channels_last")

#define JAX_ROI_POOL_ATTRS                  \
  .Attr<int64_t>("pooled_h")                \
      .Attr<int64_t>("pooled_w")            \
      .Attr<double>("spatial_scale")        \
      .Attr<bool>("channels_last")

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignAvgFwdEmu, jax_roi::emulation::AlignAvgFwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JAX_ROI_ALIGN_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignAvgBwdEmu, jax_roi::emulation::AlignAvgBwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JAX_ROI_ALIGN_ATTRS
                                  .Attr<bool>("deterministic"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignMaxFwdEmu, jax_roi::emulation::AlignMaxFwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::S32>>() JAX_ROI_ALIGN_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignMaxBwdEmu, jax_roi::emulation::AlignMaxBwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>() JAX_ROI_ALIGN_ATTRS
                                  .Attr<bool>("deterministic"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiPoolFwdEmu, jax_roi::emulation::PoolFwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::S32>>() JAX_ROI_POOL_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiPoolBwdEmu, jax_roi::emulation::PoolBwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>() JAX_ROI_POOL_ATTRS
                                  .Attr<bool>("deterministic"));

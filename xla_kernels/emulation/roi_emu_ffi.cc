// Host emulation of the CUDA kernels, for testing their math on machines without a GPU.
//
// CPU FFI targets `jax_roi_emu_<op>`, with the CUDA targets' attributes, that run the very
// plans and per-thread ops the CUDA kernels run (jax_roi/roi_device_ops.h), serially over
// the same index spaces: thread i of a kernel is call op(i) here. The atomic backward's
// atomicAdd is a plain += (AtomicAdd in that header), so the emulated scatter sums in
// index order, one of the orders a GPU may use. Nothing here is fast or meant for use.
//
// Test-only extras: `jax_roi_emu_<op>_bwd_whole_map` runs the deterministic backward with
// every valid roi listed in every tile of its image (RoiListMode::kWholeMap: what a walk
// over all rois visits), and `jax_roi_emu_roi_footprints` returns the footprints the
// deterministic backward computes, so that tests can check them against every sample.
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
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

// Scratch as the CUDA handler would get it from XLA (a heap vector here, 8-byte aligned
// like the footprints it holds); an error where the CUDA handler's allocation would fail.
struct Scratch {
  std::vector<uint64_t> data;
  ffi::Error Get(const char* op, ElementType type, const RoiShape& s, bool deterministic,
                 void** out) {
    *out = nullptr;
    const size_t bytes = device::BackwardScratchBytes(type, s, deterministic);
    if (bytes == 0) return ffi::Error::Success();
    try {
      data.resize(bytes / sizeof(uint64_t) + 1);
    } catch (const std::exception&) {  // bad_alloc, length_error
      return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                        std::string("jax_roi ") + op + ": cannot allocate " +
                            std::to_string(bytes) + " bytes of scratch for the backward");
    }
    *out = data.data();
    return ffi::Error::Success();
  }
};

template <bool kWholeMap>
constexpr device::RoiListMode ListMode() {
  return kWholeMap ? device::RoiListMode::kWholeMap : device::RoiListMode::kFootprints;
}

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

template <bool kWholeMap>
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
  void* work;
  if (auto e = scratch.Get("roi_align_avg_bwd", type, s, deterministic, &work); e.failure())
    return e;
  device::RunAlignAvgBackward(ex, type, grad.untyped_data(), rois.untyped_data(),
                              dfeat->untyped_data(), work, s,
                              {spatial_scale, sampling_ratio, aligned}, deterministic,
                              ListMode<kWholeMap>());
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

template <bool kWholeMap>
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
  void* work;
  if (auto e = scratch.Get("roi_align_max_bwd", type, s, deterministic, &work); e.failure())
    return e;
  device::RunAlignMaxBackward(ex, type, grad.untyped_data(), rois.untyped_data(),
                              argmax.typed_data(), dfeat->untyped_data(), work, s,
                              {spatial_scale, sampling_ratio, aligned}, deterministic,
                              ListMode<kWholeMap>());
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

template <bool kWholeMap>
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
  void* work;
  if (auto e = scratch.Get("roi_pool_bwd", type, s, deterministic, &work); e.failure())
    return e;
  device::RunPoolBackward(ex, type, grad.untyped_data(), rois.untyped_data(),
                          argmax.typed_data(), dfeat->untyped_data(), work, s,
                          {spatial_scale, 0, false}, deterministic, ListMode<kWholeMap>());
  return ffi::Error::Success();
}

// Footprints [K, 5] int64 rows (n, y0, y1, x0, x1) of roi_align (`pool` false) or roi_pool
// rois on a map of `images` x `height` x `width`, computed by the deterministic backward's
// own footprint op.
ffi::Error Footprints(ffi::AnyBuffer rois, ffi::Result<ffi::Buffer<ffi::S64>> out, bool pool,
                      int64_t images, int64_t height, int64_t width, int64_t pooled_h,
                      int64_t pooled_w, double spatial_scale, int64_t sampling_ratio,
                      bool aligned) {
  const auto d = rois.dimensions();
  const auto od = out->dimensions();
  const bool f64 = rois.element_type() == ffi::DataType::F64;
  if (d.size() != 2 || d[1] != 5 || (!f64 && rois.element_type() != ffi::DataType::F32) ||
      od.size() != 2 || od[0] != d[0] || od[1] != 5 || images < 0 || height < 1 ||
      width < 1 || pooled_h < 1 || pooled_w < 1 || !(spatial_scale > 0)) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jax_roi roi_footprints: bad call");
  }
  RoiShape s;
  s.n = images;
  s.c = 1;
  s.h = height;
  s.w = width;
  s.k = d[0];
  s.ph = pooled_h;
  s.pw = pooled_w;
  const RoiParams prm{spatial_scale, sampling_ratio, aligned};
  std::vector<device::RoiFootprint> fp(static_cast<size_t>(s.k));
  SerialExec ex;
  auto run = [&](auto tag) {
    using A = decltype(tag);
    const A* r = static_cast<const A*>(rois.untyped_data());
    if (pool) {
      ex.Run(device::PoolFootprintOp<A>{r, fp.data(), s, prm, false});
    } else {
      ex.Run(device::AlignFootprintOp<A>{r, fp.data(), s, prm, false});
    }
  };
  if (f64) run(double{}); else run(float{});
  int64_t* o = out->typed_data();
  for (int64_t k = 0; k < s.k; ++k) {
    const device::RoiFootprint& f = fp[k];
    o[5 * k + 0] = f.n;
    o[5 * k + 1] = f.y0;
    o[5 * k + 2] = f.y1;
    o[5 * k + 3] = f.x0;
    o[5 * k + 4] = f.x1;
  }
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

#define JAX_ROI_ALIGN_AVG_BWD_BINDING   \
  ffi::Ffi::Bind()                        \
      .Arg<ffi::AnyBuffer>()              \
      .Arg<ffi::AnyBuffer>()              \
      .Ret<ffi::AnyBuffer>() JAX_ROI_ALIGN_ATTRS.Attr<bool>("deterministic")

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignAvgBwdEmu, jax_roi::emulation::AlignAvgBwd<false>,
                              JAX_ROI_ALIGN_AVG_BWD_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignAvgBwdWholeMapEmu, jax_roi::emulation::AlignAvgBwd<true>,
                              JAX_ROI_ALIGN_AVG_BWD_BINDING);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignMaxFwdEmu, jax_roi::emulation::AlignMaxFwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::S32>>() JAX_ROI_ALIGN_ATTRS);

#define JAX_ROI_ALIGN_MAX_BWD_BINDING   \
  ffi::Ffi::Bind()                        \
      .Arg<ffi::AnyBuffer>()              \
      .Arg<ffi::AnyBuffer>()              \
      .Arg<ffi::Buffer<ffi::S32>>()       \
      .Ret<ffi::AnyBuffer>() JAX_ROI_ALIGN_ATTRS.Attr<bool>("deterministic")

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignMaxBwdEmu, jax_roi::emulation::AlignMaxBwd<false>,
                              JAX_ROI_ALIGN_MAX_BWD_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiAlignMaxBwdWholeMapEmu, jax_roi::emulation::AlignMaxBwd<true>,
                              JAX_ROI_ALIGN_MAX_BWD_BINDING);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiPoolFwdEmu, jax_roi::emulation::PoolFwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::S32>>() JAX_ROI_POOL_ATTRS);

#define JAX_ROI_POOL_BWD_BINDING        \
  ffi::Ffi::Bind()                        \
      .Arg<ffi::AnyBuffer>()              \
      .Arg<ffi::AnyBuffer>()              \
      .Arg<ffi::Buffer<ffi::S32>>()       \
      .Ret<ffi::AnyBuffer>() JAX_ROI_POOL_ATTRS.Attr<bool>("deterministic")

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiPoolBwdEmu, jax_roi::emulation::PoolBwd<false>,
                              JAX_ROI_POOL_BWD_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiPoolBwdWholeMapEmu, jax_roi::emulation::PoolBwd<true>,
                              JAX_ROI_POOL_BWD_BINDING);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiFootprintsEmu, jax_roi::emulation::Footprints,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::S64>>()
                                  .Attr<bool>("pool")
                                  .Attr<int64_t>("images")
                                  .Attr<int64_t>("height")
                                  .Attr<int64_t>("width")
                                  .Attr<int64_t>("pooled_h")
                                  .Attr<int64_t>("pooled_w")
                                  .Attr<double>("spatial_scale")
                                  .Attr<int64_t>("sampling_ratio")
                                  .Attr<bool>("aligned"));

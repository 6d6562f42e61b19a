// Host emulation of the CUDA kernels, for testing their math on machines without a GPU.
//
// CPU FFI targets `jax_roi_emu_<name>` for every target of the op list, with the same
// attributes, that run the very plans and per-thread ops the CUDA kernels run
// (jax_roi/roi_device_ops.h, through each op's policy in jax_roi/ops/), serially over the
// same index spaces: thread i of a kernel is call op(i) here. The atomic backward's atomicAdd
// is a plain += (AtomicAdd in that header), so the emulated scatter sums in index order, one
// of the orders a GPU may use. Nothing here is fast or meant for use.
//
// `jax_roi_emu_<name>_on_pool` is the CPU handler of the op with its hand-tuned kernel
// hidden (cpu::OnPool): the same plan through the CPU's generic executor
// (xla_kernels/cpu/cpu_executor.h: threaded on XLA's pool, deterministic backward), which
// serves the ops that have no hand-tuned CPU kernel; tests compare it with the serial run.
//
// Test-only extras: `jax_roi_emu_<name>_whole_map` for each backward runs the deterministic
// backward with every valid roi listed in every tile of its image (RoiListMode::kWholeMap:
// what a walk over all rois visits), and `jax_roi_emu_roi_footprints` returns the footprints
// the deterministic backward computes, so that tests can check them against every sample.
#include "emulation_handlers.h"

#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "../cpu/cpu_kernels.h"
#include "jax_roi/ffi_checks.h"
#include "jax_roi/op_list.h"
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
ffi::Error GetScratch(const char* op, size_t bytes, std::vector<uint64_t>* data, void** out) {
  *out = nullptr;
  if (bytes == 0) return ffi::Error::Success();
  try {
    data->resize(bytes / sizeof(uint64_t) + 1);
  } catch (const std::exception&) {  // bad_alloc, length_error
    return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                      std::string("jax_roi ") + op + ": cannot allocate " +
                          std::to_string(bytes) + " bytes of scratch for the backward");
  }
  *out = data->data();
  return ffi::Error::Success();
}

// The deterministic backward of `Op` with whole-map roi lists.
template <typename Op>
struct WholeMap : Op {
  template <typename Exec>
  static void Run(Exec& ex, const RoiCall& c, const typename Op::Attrs& a, void* scratch) {
    Op::Run(ex, c, a, scratch, device::RoiListMode::kWholeMap);
  }
};

}  // namespace

template <typename Op>
ffi::Error Handler(ffi::RemainingArgs args, ffi::RemainingRets rets, typename Op::Attrs attrs) {
  RoiCall call;
  JAX_ROI_RETURN_IF_ERROR(DecodeCall<Op>(args, rets, attrs, &call));
  std::vector<uint64_t> data;
  void* scratch;
  JAX_ROI_RETURN_IF_ERROR(GetScratch(Op::kName, Op::ScratchBytes(call, attrs), &data, &scratch));
  SerialExec ex;
  Op::Run(ex, call, attrs, scratch);
  return ffi::Error::Success();
}

namespace {

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
  const RoiParams params{spatial_scale, sampling_ratio, aligned};
  std::vector<device::RoiFootprint> fp(static_cast<size_t>(s.k));
  SerialExec ex;
  auto run = [&](auto tag) {
    using A = decltype(tag);
    const A* r = static_cast<const A*>(rois.untyped_data());
    if (pool) {
      ex.Run(device::FootprintKernel<device::PoolMax, A>{r, fp.data(), s, params, false});
    } else {
      ex.Run(device::FootprintKernel<device::AlignAvg, A>{r, fp.data(), s, params, false});
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

#define JAX_ROI_EMU_BINDING(Op)            \
  xla::ffi::Ffi::Bind()                    \
      .RemainingArgs()                     \
      .RemainingRets()                     \
      .Attrs<jax_roi::ops::Op::Attrs>()

#define JAX_ROI_DEFINE_EMU_HANDLER(name, Op)                                          \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(Op##Emu, jax_roi::emulation::Handler<jax_roi::ops::Op>, \
                                JAX_ROI_EMU_BINDING(Op));
JAX_ROI_OPS(JAX_ROI_DEFINE_EMU_HANDLER)

#define JAX_ROI_DEFINE_EMU_ON_POOL(name, Op)                                        \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(Op##OnPoolEmu,                                      \
                                jax_roi::cpu::Handler<jax_roi::cpu::OnPool<jax_roi::ops::Op>>, \
                                JAX_ROI_CPU_BINDING(jax_roi::ops::Op::Attrs));
JAX_ROI_OPS(JAX_ROI_DEFINE_EMU_ON_POOL)

#define JAX_ROI_DEFINE_EMU_WHOLE_MAP(name, Op)                                    \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                                  \
      Op##WholeMapEmu,                                                            \
      jax_roi::emulation::Handler<jax_roi::emulation::WholeMap<jax_roi::ops::Op>>, \
      JAX_ROI_EMU_BINDING(Op));
JAX_ROI_EMU_BACKWARD_OPS(JAX_ROI_DEFINE_EMU_WHOLE_MAP)

XLA_FFI_DEFINE_HANDLER_SYMBOL(RoiFootprintsEmu, jax_roi::emulation::Footprints,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::Buffer<xla::ffi::S64>>()
                                  .Attr<bool>("pool")
                                  .Attr<int64_t>("images")
                                  .Attr<int64_t>("height")
                                  .Attr<int64_t>("width")
                                  .Attr<int64_t>("pooled_h")
                                  .Attr<int64_t>("pooled_w")
                                  .Attr<double>("spatial_scale")
                                  .Attr<int64_t>("sampling_ratio")
                                  .Attr<bool>("aligned"));

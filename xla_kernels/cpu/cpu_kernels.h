// The CPU kernels of the FFI targets, one overload of RunCpu per op, chosen by the op's
// policy type. An op with a hand-tuned kernel declares its overload here (and defines it in
// its cpu/*.cc); every other op runs its device plan on XLA's thread pool
// (cpu_executor.h), so a new op has a threaded, deterministic CPU kernel from its CUDA code.
#ifndef JAX_ROI_CPU_KERNELS_H_
#define JAX_ROI_CPU_KERNELS_H_

#include <utility>

#include "cpu_executor.h"
#include "jax_roi/ffi_checks.h"
#include "jax_roi/op_list.h"
#include "jax_roi/roi_call.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cpu {

namespace ffi = xla::ffi;

// Hand-tuned: roi_align_avg_fwd_cpu.cc, roi_align_avg_bwd_cpu.cc, roi_align_max_cpu.cc.
ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const AlignAttrs& a,
                   ops::RoiAlignAvgFwd);
ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const AlignAttrs& a,
                   ops::RoiAlignAvgBwd);
ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const AlignAttrs& a,
                   ops::RoiAlignMaxFwd);
ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const AlignAttrs& a,
                   ops::RoiAlignMaxBwd);
// Hand-tuned: roi_pool_cpu.cc.
ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const PoolAttrs& a, ops::RoiPoolFwd);
ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const PoolAttrs& a, ops::RoiPoolBwd);

// Every other op: its device plan on the pool (the non-template overloads above win).
template <typename Op>
ffi::Future RunCpu(ffi::ThreadPool& pool, const RoiCall& c, const typename Op::Attrs& a, Op) {
  return RunDevicePlan<Op>(pool, c, a);
}

// `Op` with its hand-tuned kernel hidden: RunCpu takes the generic executor (the exact match
// of the template beats the tuned overload's conversion to the base). For tests.
template <typename Op>
struct OnPool : Op {};

// The CPU FFI handler of op `Op` (cpu_handlers.cc binds one per op of the op list): decode
// and check the call (ffi_checks.h), then its CPU kernel on XLA's intra-op pool. It returns a
// future that the last task completes, never blocking a pool thread.
template <typename Op>
ffi::Future Handler(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets,
                    typename Op::Attrs attrs) {
  RoiCall call;
  if (ffi::Error e = DecodeCall<Op>(args, rets, attrs, &call); e.failure()) {
    return ErrorFuture(std::move(e));
  }
  return RunCpu(pool, call, attrs, Op{});
}

// The binding of every CPU handler.
#define JAX_ROI_CPU_BINDING(AttrsType) \
  ::xla::ffi::Ffi::Bind()              \
      .Ctx<::xla::ffi::ThreadPool>()   \
      .RemainingArgs()                 \
      .RemainingRets()                 \
      .Attrs<AttrsType>()

}  // namespace cpu
}  // namespace jax_roi

#endif  // JAX_ROI_CPU_KERNELS_H_

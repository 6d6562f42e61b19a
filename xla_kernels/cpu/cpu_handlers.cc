// The CPU FFI handlers of every target in the op list: decode and check the call
// (ffi_checks.h), then the op's CPU kernel (cpu_kernels.h) on XLA's intra-op pool. The
// handlers return a future that the last task completes, never blocking a pool thread.
#include "cpu_kernels.h"
#include "jax_roi/ffi_checks.h"
#include "jax_roi/op_list.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cpu {

template <typename Op>
ffi::Future Handler(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets,
                    typename Op::Attrs attrs) {
  RoiCall call;
  if (ffi::Error e = DecodeCall<Op>(args, rets, attrs, &call); e.failure()) {
    return ErrorFuture(std::move(e));
  }
  return RunCpu(pool, call, attrs, Op{});
}

}  // namespace cpu
}  // namespace jax_roi

#define JAX_ROI_DEFINE_CPU_HANDLER(name, Op)                                          \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(Op##Cpu, jax_roi::cpu::Handler<jax_roi::ops::Op>,     \
                                xla::ffi::Ffi::Bind()                                 \
                                    .Ctx<xla::ffi::ThreadPool>()                      \
                                    .RemainingArgs()                                  \
                                    .RemainingRets()                                  \
                                    .Attrs<jax_roi::ops::Op::Attrs>());
JAX_ROI_OPS(JAX_ROI_DEFINE_CPU_HANDLER)

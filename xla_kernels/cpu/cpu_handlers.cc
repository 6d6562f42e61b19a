// The CPU FFI handlers of every target in the op list (cpu_kernels.h: cpu::Handler).
#include "cpu_kernels.h"
#include "jax_roi/op_list.h"
#include "xla/ffi/api/ffi.h"

#define JAX_ROI_DEFINE_CPU_HANDLER(name, Op)                                      \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(Op##Cpu, jax_roi::cpu::Handler<jax_roi::ops::Op>, \
                                JAX_ROI_CPU_BINDING(jax_roi::ops::Op::Attrs));
JAX_ROI_OPS(JAX_ROI_DEFINE_CPU_HANDLER)

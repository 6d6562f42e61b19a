// The CPU FFI handler symbols, one per primitive (jax_roi/_primitives.py mirrors the names).
#ifndef JAX_ROI_CPU_HANDLERS_H_
#define JAX_ROI_CPU_HANDLERS_H_

#include "xla/ffi/api/ffi.h"

XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignAvgFwdCpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignAvgBwdCpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignMaxFwdCpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignMaxBwdCpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiPoolFwdCpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiPoolBwdCpu);

#endif  // JAX_ROI_CPU_HANDLERS_H_

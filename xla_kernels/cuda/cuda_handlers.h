// The CUDA FFI handler symbols, one per primitive (jax_roi/_primitives.py mirrors the names;
// the CPU handlers are the same targets on platform "cpu").
#ifndef JAX_ROI_CUDA_HANDLERS_H_
#define JAX_ROI_CUDA_HANDLERS_H_

#include "xla/ffi/api/ffi.h"

XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignAvgFwdCuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignAvgBwdCuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignMaxFwdCuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignMaxBwdCuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiPoolFwdCuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiPoolBwdCuda);

#endif  // JAX_ROI_CUDA_HANDLERS_H_

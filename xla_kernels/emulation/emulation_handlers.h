// The emulation FFI handler symbols (targets `jax_roi_emu_<op>`, platform "cpu").
#ifndef JAX_ROI_EMULATION_HANDLERS_H_
#define JAX_ROI_EMULATION_HANDLERS_H_

#include "xla/ffi/api/ffi.h"

XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignAvgFwdEmu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignAvgBwdEmu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignMaxFwdEmu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignMaxBwdEmu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiPoolFwdEmu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiPoolBwdEmu);

#endif  // JAX_ROI_EMULATION_HANDLERS_H_

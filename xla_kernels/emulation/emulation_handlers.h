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

// Test-only: the deterministic backward with whole-map roi lists, and the roi footprints.
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignAvgBwdWholeMapEmu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiAlignMaxBwdWholeMapEmu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiPoolBwdWholeMapEmu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiFootprintsEmu);

#endif  // JAX_ROI_EMULATION_HANDLERS_H_

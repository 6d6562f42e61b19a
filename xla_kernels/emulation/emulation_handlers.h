// The emulation FFI handler symbols (targets `jax_roi_emu_<name>`, platform "cpu"): one per
// target of the op list, and the test-only extras.
#ifndef JAX_ROI_EMULATION_HANDLERS_H_
#define JAX_ROI_EMULATION_HANDLERS_H_

#include "jax_roi/op_list.h"
#include "xla/ffi/api/ffi.h"

// The backward targets, which also get a whole-map variant (`..._whole_map`).
#define JAX_ROI_EMU_BACKWARD_OPS(X)    \
  X(roi_align_avg_bwd, RoiAlignAvgBwd) \
  X(roi_align_max_bwd, RoiAlignMaxBwd) \
  X(roi_pool_bwd, RoiPoolBwd)

#define JAX_ROI_DECLARE_EMU_WHOLE_MAP(name, Op) XLA_FFI_DECLARE_HANDLER_SYMBOL(Op##WholeMapEmu);
JAX_ROI_EMU_BACKWARD_OPS(JAX_ROI_DECLARE_EMU_WHOLE_MAP)
#undef JAX_ROI_DECLARE_EMU_WHOLE_MAP

// Every op's device plan through the CPU's generic executor (`..._on_pool`).
#define JAX_ROI_DECLARE_EMU_ON_POOL(name, Op) XLA_FFI_DECLARE_HANDLER_SYMBOL(Op##OnPoolEmu);
JAX_ROI_OPS(JAX_ROI_DECLARE_EMU_ON_POOL)
#undef JAX_ROI_DECLARE_EMU_ON_POOL

XLA_FFI_DECLARE_HANDLER_SYMBOL(RoiFootprintsEmu);

#endif  // JAX_ROI_EMULATION_HANDLERS_H_

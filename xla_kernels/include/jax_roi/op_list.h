// Every FFI target of jax_roi, named once. Each platform's registrations (CPU, CUDA, the
// emulation), the pybind11 module and Python's list of targets (and so
// export_disabled_checks()) are generated from this list.
//
// JAX_ROI_OPS(X) calls X(name, Op) per target: the target is "jax_roi_<name>", `Op` the
// policy struct in namespace jax_roi::ops (its header included here), and the handler
// symbols are <Op>Cpu, <Op>Cuda and <Op>Emu. The names are the ABI of exported programs.
#ifndef JAX_ROI_OP_LIST_H_
#define JAX_ROI_OP_LIST_H_

#include "jax_roi/ops/roi_align.h"
#include "jax_roi/ops/roi_pool.h"

#define JAX_ROI_OPS(X)                     \
  X(roi_align_avg_fwd, RoiAlignAvgFwd)     \
  X(roi_align_avg_bwd, RoiAlignAvgBwd)     \
  X(roi_align_max_fwd, RoiAlignMaxFwd)     \
  X(roi_align_max_bwd, RoiAlignMaxBwd)     \
  X(roi_pool_fwd, RoiPoolFwd)              \
  X(roi_pool_bwd, RoiPoolBwd)

#endif  // JAX_ROI_OP_LIST_H_

// The CPU kernels of the FFI targets, one overload of RunCpu per op, chosen by the op's
// policy type; each is defined in its cpu/*.cc. (Next: a generic overload that runs an op's
// device plan on XLA's thread pool, for ops without a hand-tuned kernel.)
#ifndef JAX_ROI_CPU_KERNELS_H_
#define JAX_ROI_CPU_KERNELS_H_

#include "cpu_common.h"
#include "jax_roi/op_list.h"
#include "jax_roi/roi_call.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roi {
namespace cpu {

namespace ffi = xla::ffi;

// Hand-tuned: roi_align_cpu.cc.
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

}  // namespace cpu
}  // namespace jax_roi

#endif  // JAX_ROI_CPU_KERNELS_H_
